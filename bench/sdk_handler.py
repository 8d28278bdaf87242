"""The runpod SDK side of the benchmark: run by ``.venv-runpod``'s Python, never imported
by podworker's.

``BENCH_HANDLER`` picks the handler, the twin of a podworker scenario:

- ``noop``: returns the job's input (podworker: ``MODEL=echo``);
- ``sleepy``: waits ``BENCH_MODEL_S``, then "uploads" a PNG for ``BENCH_STORE_S`` on the
  handler's own thread, as an SDK handler does (podworker: ``bench.models:sleepy`` and
  ``bench.models:slow_storage``);
- ``io_async``: ``async def``, awaits ``BENCH_IO_S`` (``bench.models:io_async``);
- ``io_sync``: plain ``def``, blocks ``BENCH_IO_S`` (``bench.models:io_sync``);
- ``stream``: a generator yielding ``{"i": n, "text": "chunk-n"}`` for n below
  ``input["_echo"]["stream"]``, the echo model's chunks (podworker: ``MODEL=echo``).

``BENCH_CONCURRENCY`` other than 1 adds a ``concurrency_modifier`` returning it.
"""

import asyncio
import os
import threading
import time

import runpod

MODE = os.environ["BENCH_HANDLER"]
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "1"))
MODEL_S = float(os.environ.get("BENCH_MODEL_S", "0.2"))
STORE_S = float(os.environ.get("BENCH_STORE_S", "0.15"))
IO_S = float(os.environ.get("BENCH_IO_S", "1.0"))
OUTPUT_DIR = os.environ.get("BENCH_OUTPUT_DIR", ".")
PNG = bytes.fromhex(os.environ.get("BENCH_PNG_HEX", "00"))
_pause = threading.Event()  # never set: wait() sleeps


def noop(job):
    return job["input"]


def sleepy(job):
    _pause.wait(MODEL_S)  # the model
    started = time.monotonic()  # then the upload, on the handler's thread
    folder = os.path.join(OUTPUT_DIR, job["id"])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "0.png")
    with open(path, "wb") as handle:
        handle.write(PNG)
    _pause.wait(max(0.0, STORE_S - (time.monotonic() - started)))
    return {"image": path, "i": job["input"].get("i")}


async def io_async(job):
    await asyncio.sleep(IO_S)
    return job["input"]


def io_sync(job):
    _pause.wait(IO_S)
    return job["input"]


def stream(job):
    for n in range(int(job["input"]["_echo"]["stream"])):
        yield {"i": n, "text": f"chunk-{n}"}


HANDLERS = {"noop": noop, "sleepy": sleepy, "io_async": io_async, "io_sync": io_sync,
            "stream": stream}

config = {"handler": HANDLERS[MODE]}
if CONCURRENCY != 1:
    config["concurrency_modifier"] = lambda current: CONCURRENCY
runpod.serverless.start(config)
