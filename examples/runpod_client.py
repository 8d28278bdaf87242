"""RunPod's own client (``pip install runpod``) sending one job with ``run_sync``.

``python -m app fake-api`` prints this command with the settings it reads: RUNPOD_ENDPOINT_BASE_URL
(read by ``runpod`` itself), RUNPOD_ENDPOINT_ID and RUNPOD_API_KEY. On RunPod, the same script
calls a real endpoint (leave RUNPOD_ENDPOINT_BASE_URL unset there).

It sends the input of ``test_inputs.json`` (or of the file named as its argument; the first job
of a list), prints the output with long strings cut, and saves each image the output carries as
a data URL (podworker's ``STORAGE=base64``) to ``client-<n>.png``. Exit code 0 when the job
succeeded, 1 when it failed or did not finish.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import runpod  # type: ignore[import-not-found]  # RunPod's package, in the client's Python


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "test_inputs.json")
    jobs = json.loads(path.read_text(encoding="utf-8"))
    job = jobs[0] if isinstance(jobs, list) else jobs
    runpod.api_key = os.environ["RUNPOD_API_KEY"]
    endpoint = runpod.Endpoint(os.environ["RUNPOD_ENDPOINT_ID"])
    output = endpoint.run_sync(job["input"], timeout=600)
    if output is None:  # run_sync gives no output for a job that failed or timed out
        print("no output: the job failed or did not finish (the worker's log says why)")
        return 1
    print(json.dumps(shortened(output), indent=2))
    for number, data_url in enumerate(data_urls(output)):
        target = Path(f"client-{number}.png")
        target.write_bytes(base64.b64decode(data_url.partition(",")[2]))
        print(f"saved {target}")
    return 0


def data_urls(value: Any) -> list[str]:
    """Every ``data:image/...;base64,`` string in ``value``, in order."""
    if isinstance(value, str):
        return [value] if value.startswith("data:image/") else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [url for item in value for url in data_urls(item)]
    return []


def shortened(value: Any, limit: int = 80) -> Any:
    """``value`` with strings longer than ``limit`` cut (a base64 image is many kilobytes)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value)} characters)"
    if isinstance(value, dict):
        return {key: shortened(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [shortened(item, limit) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main(sys.argv))
