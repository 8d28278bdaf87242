"""Shared pytest set-up. Fixture modules live in tests/support/ and are registered here."""

from typing import Any

import freezegun
import pytest

# freezegun scans every loaded module when it starts; the ML libraries' lazy modules import
# dozens of optional pipelines when scanned (and some fail), so they are left out of the scan,
# and hypothesis keeps reading the real clock.
freezegun.configure(
    extend_ignore_list=["torch", "diffusers", "transformers", "accelerate", "safetensors",
                        "huggingface_hub", "botocore", "boto3", "hypothesis", "PIL", "scipy"]
)

pytest_plugins: list[str] = [
    # each fixture module in tests/support/ is added here, one line each
    "tests.support.s3_server",
    "tests.support.s3_storage_kit",
    "tests.support.tiny_sd",
    "tests.support.dynamo_kit",
    "tests.support.http_fixtures",
    "tests.support.fault_kit",
    "tests.support.hostile_server",
    "tests.support.dockerfile_kit",
    "tests.support.image_fetch_kit",
    "tests.support.small_disk",
    "tests.support.hostile_s3",
    "tests.support.redis_server",
    "tests.support.redis_queue_kit",
    "tests.support.tiny_lora",
]


# --- pytest-xdist: the fuzz run's case counts come back from each worker -------------------
def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.support.fuzz_kit import CASES

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the counts to the controller
        workeroutput["fuzz_cases"] = dict(CASES)


def pytest_testnodedown(node: Any, error: Any) -> None:
    from tests.support.fuzz_kit import CASES

    CASES.update(getattr(node, "workeroutput", {}).get("fuzz_cases", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzz run's closing line: how many generated cases ran, in all and per test."""
    from tests.support.fuzz_kit import CASES

    if not CASES:
        return
    terminalreporter.section("fuzz cases")
    for name, count in sorted(CASES.items()):
        terminalreporter.write_line(f"{count:>7}  {name}")
    terminalreporter.write_line(f"{sum(CASES.values()):>7}  generated cases in all")
