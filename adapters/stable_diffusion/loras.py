"""LoRA adapters on the device: loaded once, kept in an LRU, activated per pipeline call.

:class:`LoraAdapters` belongs to one pipeline and is used only on the device thread, before each
call (:meth:`LoraAdapters.activate`). What it promises:

- **An LRU of loaded adapters.** A LoRA (one per file content, :class:`.lora_sources.
  ResolvedLora`) is loaded into the pipeline's denoiser and text encoders with diffusers'
  ``load_lora_weights`` the first time a call needs it, and stays loaded: at most ``capacity``
  (``LORA_CACHE_MAX``) at once, the least recently used one deleted first, never one the
  current call needs. A call then activates exactly its set with its scales (``set_adapters``).
- **A call without LoRA gets the base model, bit for bit.** Without compilation, the adapters are
  disabled (PEFT's layers then call the base layer alone: the same operation on the same
  weights). With compilation (``unload_for_base``), they are unloaded instead (PEFT's layers are
  replaced by the original ones), because the compiled graphs were traced on the original
  modules; :meth:`prepare` freezes the base weights at load (``requires_grad`` off, as PEFT
  leaves them), so the graphs' guards hold after an unload and nothing is compiled again. LoRA
  calls run eager then (:func:`.generation.generate`'s ``eager``). No fusing: fused weights are
  not restored bit for bit when unfused (W + BA - BA), which would break this promise.
- **A LoRA that does not fit is refused, and leaves nothing behind.** A load that raises (the
  shapes of another architecture), that leaves keys of the file unused, or that loads into no
  layer at all (a LoRA for another family) deletes what it loaded and raises ``InvalidInput``
  naming the LoRA; the adapters already loaded and the next calls are unaffected. Out of memory
  and a lost device are mapped as for any pipeline call (:mod:`.faults`).

diffusers' own warnings while loading (a text encoder the LoRA does not touch) are read here:
the ones about unused keys refuse the LoRA, the others are logged at DEBUG.

**Text encoders and transformers' PEFT gate.** diffusers loads a LoRA's text-encoder layers
through transformers' ``load_adapter``, which (transformers 5.x) refuses to run unless PEFT is at
least its ``MIN_PEFT_VERSION`` (0.22 for transformers 5.25, a PEFT not released when this was
written; 0.21.2 is the newest). Only that call is gated: setting, disabling and deleting
adapters go through PEFT's own functions. While a LoRA loads, on the device thread, the gate is
lifted when, and only when, it would refuse; a test shows the text encoder then computes exactly
what PEFT's own reference model computes with the same weights
(``tests/integration/test_sd_loras.py``).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from adapters.stable_diffusion.faults import describe, forget, job_error
from adapters.stable_diffusion.lora_sources import ResolvedLora
from domain.errors import DeviceLost, InvalidInput, ModelError, OutOfMemory

log = logging.getLogger("podworker.model")

LOADABLE = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
"""The pipeline parts a LoRA may hold weights for (diffusers' ``_lora_loadable_modules``)."""
_UNUSED_KEYS = ("led to unexpected keys", "led to missing keys")


class LoraAdapters:
    """The adapters loaded into one pipeline (see the module docstring)."""

    def __init__(self, capacity: int, *, unload_for_base: bool = False,
                 family_label: str = "this") -> None:
        self.capacity = max(1, capacity)
        self.unload_for_base = unload_for_base
        self.family_label = family_label
        self.loads = 0  # adapters loaded from their files, for tests and logs
        self._loaded: collections.OrderedDict[str, str] = collections.OrderedDict()  # key->name
        self._touched = False  # PEFT layers may be in the model (a load was tried since)

    @property
    def loaded(self) -> list[str]:
        """The keys (content hashes) of the loaded adapters, least recently used first."""
        return list(self._loaded)

    def prepare(self, pipe: Any) -> None:
        """Freeze the weights LoRAs can touch (inference only; see the module docstring)."""
        for part in LOADABLE:
            module = getattr(pipe, part, None)
            if module is not None:
                module.requires_grad_(False)

    def activate(self, torch: Any, pipe: Any, loras: Sequence[ResolvedLora], *,
                 device: str) -> None:
        """Make ``pipe`` run with exactly ``loras`` at their scales (the base model when none).
        Raises ``InvalidInput`` for a LoRA that does not fit, ``OutOfMemory``/``DeviceLost``/
        ``ModelError`` as a pipeline call would."""
        if not loras:
            self._base(pipe)
            return
        wanted = {lora.key for lora in loras}
        for lora in loras:
            if lora.key in self._loaded:
                self._loaded.move_to_end(lora.key)
                continue
            self._make_room(pipe, wanted)
            self._load(torch, pipe, lora, device=device)
        try:
            pipe.enable_lora()
            pipe.set_adapters([lora.adapter_name for lora in loras],
                              adapter_weights=[lora.scale for lora in loras])
        except Exception as exc:
            raise _mapped(torch, exc, device, "activating LoRAs") from None

    # --- inside -------------------------------------------------------------------------------

    def _base(self, pipe: Any) -> None:
        if not self._touched:
            return
        if self.unload_for_base:
            pipe.unload_lora_weights()
            self._loaded.clear()
            self._touched = False
            log.info("LoRAs unloaded for a job without LoRA (the compiled model runs)",
                     extra={"event": "lora_unloaded"})
        else:
            pipe.disable_lora()

    def _make_room(self, pipe: Any, wanted: set[str]) -> None:
        while len(self._loaded) >= self.capacity:
            victim = next((key for key in self._loaded if key not in wanted), None)
            if victim is None:
                return  # capacity >= LoRAs per job is checked at start; never drop a wanted one
            name = self._loaded.pop(victim)
            _delete(pipe, name)
            log.info("LoRA %s dropped from memory (least recently used)", victim[:12],
                     extra={"event": "lora_evicted"})

    def _load(self, torch: Any, pipe: Any, lora: ResolvedLora, *, device: str) -> None:
        name = lora.adapter_name
        self._touched = True
        with _diffusers_warnings() as warnings, _peft_gate_lifted():
            try:
                pipe.load_lora_weights(str(lora.file), adapter_name=name, use_safetensors=True)
            except Exception as exc:
                _delete(pipe, name)
                error = _mapped(torch, exc, device, f"loading {lora.label}")
                if isinstance(error, OutOfMemory | DeviceLost):
                    raise error from None
                raise InvalidInput(
                    f"invalid input: {lora.label}: does not fit this {self.family_label} model "
                    f"(a LoRA for another architecture?): {_why(exc)}") from None
        unused = [text for text in warnings if any(mark in text for mark in _UNUSED_KEYS)]
        loaded = any(name in names for names in pipe.get_list_adapters().values())
        for text in warnings:
            log.debug("while loading %s: %s", lora.label, _first_line(text),
                      extra={"event": "lora_load_warning"})
        if unused or not loaded:
            _delete(pipe, name)
            why = ("some of its layers are not in this model" if unused
                   else "none of its layers is in this model")
            raise InvalidInput(f"invalid input: {lora.label}: does not fit this "
                               f"{self.family_label} model ({why}: a LoRA for another "
                               "architecture?)")
        self._loaded[lora.key] = name
        self.loads += 1
        log.info("LoRA %s loaded (rank %d, %d in memory)", lora.label, lora.rank,
                 len(self._loaded), extra={"event": "lora_loaded"})


def _delete(pipe: Any, name: str) -> None:
    """Remove adapter ``name`` from every part that has it (what a failed load left too), as
    diffusers' ``delete_adapters`` does, part by part: a diffusers model deletes its own, a
    transformers text encoder through PEFT's layers (not transformers' gated method)."""
    diffusers: Any = importlib.import_module("diffusers")
    peft_utils: Any = importlib.import_module("diffusers.utils.peft_utils")
    for part in LOADABLE:
        module = getattr(pipe, part, None)
        config = getattr(module, "peft_config", None)
        if module is None or not isinstance(config, dict) or name not in config:
            continue
        try:
            if isinstance(module, diffusers.ModelMixin):
                module.delete_adapters([name])
            else:
                peft_utils.delete_adapter_layers(module, name)
        except Exception as exc:  # best effort: the adapter is inactive either way
            log.warning("could not delete LoRA adapter %s from %s: %s", name, part,
                        describe(exc), extra={"event": "lora_delete_failed"})
            forget(exc)


def _mapped(torch: Any, exc: Exception, device: str, doing: str) -> ModelError:
    """``exc`` as the worker reports it (out of memory, a lost device, or a model error)."""
    error = job_error(torch, exc, device=device, oom_advice=f"{doing}: use fewer or smaller "
                      "LoRAs, or a lower LORA_CACHE_MAX")
    forget(exc)
    return error


def _why(exc: BaseException) -> str:
    """``Class: <the line that says what did not fit>``, without the adapter's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "mismatch" in line), lines[0] if lines else "")
    text = f"{type(exc).__name__}: {re.sub(r'[.]lora_[0-9a-f]{20}', '', detail)}"
    return text if len(text) <= 300 else text[:297] + "..."


def _first_line(value: object) -> str:
    text = str(value).strip().splitlines()
    first = " ".join(line.strip() for line in text[:2])
    return first if len(first) <= 200 else first[:197] + "..."


@contextlib.contextmanager
def _diffusers_warnings() -> Iterator[list[str]]:
    """The messages diffusers logs on this thread meanwhile (warnings and above)."""
    messages: list[str] = []
    thread = threading.get_ident()

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                messages.append(record.getMessage())

    recorder = Recorder(logging.WARNING)
    logger = logging.getLogger("diffusers")
    logger.addHandler(recorder)
    try:
        yield messages
    finally:
        logger.removeHandler(recorder)


@contextlib.contextmanager
def _peft_gate_lifted() -> Iterator[None]:
    """transformers' PEFT version gate off meanwhile, where it would refuse (see the module
    docstring); left as it is otherwise."""
    try:
        integration: Any = importlib.import_module("transformers.integrations.peft")
    except ImportError:
        yield
        return
    gate = getattr(integration, "check_peft_version", None)
    needed = getattr(integration, "MIN_PEFT_VERSION", None)
    try:
        if gate is not None and needed is not None:
            gate(min_version=needed)
        refused = False
    except ValueError:
        refused = True
    if not refused:
        yield
        return
    integration.check_peft_version = lambda min_version: None
    try:
        yield
    finally:
        integration.check_peft_version = gate
