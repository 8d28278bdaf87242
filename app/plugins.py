"""Your own model and storage: ``MODEL=module:factory`` and ``STORAGE=module:factory``.

Exists so that users extend podworker without forking it: the factory is imported, called with
the settings when its signature takes an argument (or with nothing), and what it returns is
checked for the port's methods, so a mistake is one clear start-up error (exit code 2) rather
than a failure at the first job. A ``TypeError`` raised *inside* a factory is reported as it is,
never mistaken for a call with the wrong arguments.

An error the module's import or the factory itself raises (:class:`FactoryRaised`: weights
read at import or in a constructor, say; a module or name that is not there stays a bad setting)
is not a mistaken setting but a model that could not start: the worker builds
:class:`FactoryFailed` in its place, whose load fails in phase ``import``, so the start fails as
a load does (one job told why, the start recorded, exit code 4) rather than exiting 2 in a crash
loop that only the pod's log shows.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from app.settings import Settings
from domain.errors import ConfigurationError, ModelError
from domain.job import Artifact
from domain.outputs import describe_error, store_one_by_one
from domain.ports import JobContext, StartupReport


class FactoryRaised(ConfigurationError):
    """The module's import or the factory raised: ``error`` says which, and its error."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


class FactoryFailed:
    """Stands in for a model whose factory raised: its ``load`` reports phase ``import`` and
    fails with the factory's error; it never runs a job."""

    def __init__(self, spec: str, error: str) -> None:
        self.spec, self.error = spec, error

    def load(self, startup: StartupReport | None = None) -> None:
        if startup is not None:
            startup.phase("import")
        raise ModelError(f"MODEL={self.spec}: {self.error}")

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        raise ModelError(f"MODEL={self.spec}: {self.error}")


def load_factory(spec: str, setting: str, settings: Settings, methods: tuple[str, ...]) -> Any:
    """Import ``module:factory`` and call ``factory(settings)`` (or ``factory()``).

    Used for your own model (``MODEL=``) and storage (``STORAGE=``); the object it returns must
    have the port's methods (``methods``), checked here so a mistake is a clear start-up error.
    """
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"invalid setting {setting} ({spec!r}): {exc}") from None
    except Exception as exc:  # the module's own code raised while it was imported
        error = f"importing {module_name} raised {describe_error(exc)}"
        raise FactoryRaised(f"invalid setting {setting} ({spec!r}): {error}", error) from None
    try:
        built = factory(settings) if _takes_an_argument(factory) else factory()
    except ConfigurationError:
        raise
    except Exception as exc:  # the factory's own error, as it said it: a start-up error
        error = f"the factory raised {describe_error(exc)}"
        raise FactoryRaised(f"invalid setting {setting} ({spec!r}): {error}", error) from None
    for method in methods:
        if not callable(getattr(built, method, None)):
            raise ConfigurationError(
                f"invalid setting {setting} ({spec!r}): what the factory returned has no "
                f"{method}() method"
            )
    return built


def _takes_an_argument(factory: Any) -> bool:
    """Whether ``factory`` can be called with the settings (decided from its signature, so a
    ``TypeError`` raised inside it is reported, not mistaken for a wrong call)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: try the settings
        return True
    try:
        signature.bind(None)
    except TypeError:
        return False
    return True


class OneByOneStorage:
    """Your own storage (``STORAGE=module:factory``, with ``store(job_id, index, artifact)``) as
    the ``Storage`` port: one job's outputs stored one after the other."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def store_all(
        self, job_id: str, artifacts: Sequence[Artifact], first_index: int = 0
    ) -> list[str]:
        return store_one_by_one(lambda job, index, artifact: str(
            self._store.store(job, index, artifact)), job_id, artifacts, first_index)
