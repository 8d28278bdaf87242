"""``python -m app bake-weights``: put a Stable Diffusion pipeline into a folder, at image build.

Why it exists: a pod must start without downloading anything. Weights are gigabytes, and a
worker that fetches them at start-up pays for it on every cold start (and fails when the hub
is slow or down). The Dockerfile runs this command once, at build time; the worker then loads
the folder with ``local_files_only`` (``MODEL_PATH``). Any broken bake fails the image build,
not the first job.

This module is the command line: options, the hub token (``--token-file``, the ``hf_token``
build secret, or else ``HF_TOKEN``; never printed, and masked in any error message that would
contain it), progress and summary lines. The bake itself (one download, whole or nothing,
verified through the worker's own model, idempotent, readable by the worker) is
:mod:`adapters.stable_diffusion.baking`, next to the model it bakes for.

Exit codes: 0 baked or already baked; 1 the bake failed, with one line on stderr starting
``podworker bake-weights:``; 2 bad arguments. torch and diffusers are imported only once the
arguments and folders have been checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from adapters.stable_diffusion.baking import DTYPES, BakeError, BakeRequest, BakeResult, bake

_PREFIX = "podworker bake-weights"


def add_bake_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bake-weights`` options (the subcommand itself is declared in ``app.cli``)."""
    parser.add_argument(
        "--model", required=True, metavar="MODEL_ID_OR_PATH",
        help="hub id (such as stable-diffusion-v1-5/stable-diffusion-v1-5) or a local "
        "diffusers pipeline folder",
    )
    parser.add_argument(
        "--dest", required=True, type=Path, metavar="DIR",
        help="folder to bake into (MODEL_PATH at run time); created whole or not at all",
    )
    parser.add_argument(
        "--revision", default=None, metavar="R",
        help="hub branch, tag or commit (pin a commit for reproducible images); empty: default",
    )
    parser.add_argument(
        "--variant", default=None, metavar="V",
        help="hub weight variant to download, such as fp16; empty: the plain weights",
    )
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPES,
        help="dtype the weights are saved in (default: auto, the family's own: bfloat16 for "
        "SD3 and Flux, float16 for the others)",
    )
    parser.add_argument(
        "--cache-dir", default=None, type=Path, metavar="DIR",
        help="hub download cache to use and keep (default: a temporary one, deleted)",
    )
    parser.add_argument(
        "--token-file", default=None, type=Path, metavar="FILE",
        help="file holding a hub token (a build secret); used when it exists, else HF_TOKEN",
    )


def bake_from_args(args: argparse.Namespace, out: TextIO | None = None,
                   err: TextIO | None = None) -> int:
    """Run the bake the parsed arguments ask for; print progress and a summary. Exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    request = BakeRequest(
        model=args.model.strip(),
        dest=args.dest,
        revision=(args.revision or "").strip() or None,
        variant=(args.variant or "").strip() or None,
        dtype=args.dtype,
        cache_dir=args.cache_dir,
        hub_offline=_truthy(os.environ.get("HF_HUB_OFFLINE")),
    )
    token = read_token(args.token_file)
    try:
        result = bake(request, token=token, say=lambda line: _say(out, line))
    except BakeError as exc:
        message = str(exc).replace(token, "***") if token else str(exc)
        print(f"{_PREFIX}: {' '.join(message.split())}", file=err, flush=True)
        return 1
    for line in summary(request, result):
        print(line, file=out)
    out.flush()
    return 0


def read_token(token_file: Path | None) -> str | None:
    """The hub token: the token file's content when it exists and is not empty, else HF_TOKEN."""
    if token_file is not None and token_file.is_file():
        token = token_file.read_text(encoding="utf-8").strip()
        if token:
            return token
    return os.environ.get("HF_TOKEN", "").strip() or None


def summary(request: BakeRequest, result: BakeResult) -> list[str]:
    """The lines printed after a bake: what, where, every file with its size, the total."""
    what = request.model
    details = [
        f"revision {request.revision}" if request.revision else None,
        f"variant {request.variant}" if request.variant else None,
        request.dtype,
    ]
    verb = "baked" if result.downloaded else "already baked (nothing downloaded)"
    lines = [f"{_PREFIX}: {verb}: {what} ({', '.join(d for d in details if d)}) in {result.dest}"]
    width = max((len(name) for name, _ in result.files), default=0)
    lines += [f"  {name:<{width}}  {_size(size):>10}" for name, size in result.files]
    lines.append(
        f"{_PREFIX}: {len(result.files)} files, {_size(result.total_bytes)}; verified in "
        f"{result.verify_seconds:.1f} s: loaded with local files only, made a 64x64 image"
    )
    return lines


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _say(out: TextIO, message: str) -> None:
    print(f"{_PREFIX}: {message}", file=out, flush=True)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"
