"""One benchmark run: queue jobs, start a worker, wait for its results, stop it, measure, check.

``run_jobs`` queues ``count`` jobs, starts the worker, waits until every result is in (or
``cap_s`` passed: the SDK at concurrency 1 does about a job a second, so some runs are capped and
measured on the jobs done), stops it with SIGTERM and returns its figures:

- ``jobs_per_s``: jobs / (the run's last result at the server - its first take request);
- delivery: ``missing`` (queued, no result; only counted for runs that were not capped),
  ``duplicates`` (a second final result for a job), ``errors``, ``wrong_outputs``, and
  ``delivered_once`` when all of those are zero;
- for a streaming run (``expect="stream"``): ``chunks``, ``chunks_per_s`` (chunks / (last chunk
  - first take)), ``in_stream_chunks_per_s`` (median over jobs of a job's chunks / its first to
  last chunk: the post path alone, without the worker's pauses between jobs), and the checks
  ``streams_in_order_once`` (each job's chunks are exactly 0..N-1, in order, none twice) and
  ``late_chunks`` (chunks that arrived after their job's final result).

``startup_and_memory`` measures start-up (Popen to first take), idle memory and SIGTERM to exit.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil

from bench.harness import BenchServer, Launch, OtherWork, memory_of, start, stop

IDLE_S = 2.0  # how long a worker idles before its memory is read

Inputs = Callable[[int], dict[str, Any]]


def plain_input(i: int) -> dict[str, Any]:
    return {"i": i}


def stream_input(chunks: int) -> Inputs:
    """Job ``i`` asks the echo model (or the SDK's ``stream`` handler) for ``chunks`` chunks."""
    return lambda i: {"i": i, "_echo": {"stream": chunks}}


def expected_chunks(chunks: int) -> list[dict[str, Any]]:
    return [{"i": n, "text": f"chunk-{n}"} for n in range(chunks)]


def output_ok(expect: str, job_input: dict[str, Any], result: Mapping[str, Any]) -> bool:
    """Is a job's result right? ``echo``: its input back; ``image``: a stored reference;
    ``stream``: no error (the chunks are checked apart)."""
    output = result.get("output")
    if result.get("error") is not None:
        return False
    if expect == "stream":
        return True
    if not isinstance(output, dict):
        return False
    if expect == "image":
        return isinstance(output.get("image"), str) and output.get("i") == job_input["i"]
    return output == job_input


def run_jobs(server: BenchServer, launch: Launch, tag: str, count: int, cap_s: float,
             expect: str = "echo", inputs: Inputs = plain_input) -> dict[str, Any]:
    """Queue ``count`` jobs, start the worker, wait for every result (at most ``cap_s`` from
    start), stop it, and measure."""
    ids = [f"{tag}-{i}" for i in range(count)]
    job_inputs = {job_id: inputs(i) for i, job_id in enumerate(ids)}
    for job_id in ids:
        server.submit(job_inputs[job_id], job_id)
    server.begin(ids)
    other = OtherWork()
    proc, started = start(launch)
    deadline = started + cap_s
    while (left := deadline - time.perf_counter()) > 0:  # bounded by cap_s
        if server.all_done.wait(min(0.5, left)) or proc.poll() is not None:
            break
    capped = not server.all_done.is_set()
    other_percent = other.percent(proc.pid)
    stopped = stop(proc, launch)
    done = server.run_results
    window = (server.last_result or 0) - (server.first_take or 0)
    between = (server.last_result or 0) - (server.first_result or 0)  # no fill, no drain
    mine = set(ids)
    results = {i: server.results[i] for i in ids if i in server.results}
    for job_id in ids:  # a capped run leaves jobs queued: drop them before the next run
        if job_id not in server.results:
            server.cancel(job_id)
    figure: dict[str, Any] = {
        "worker": launch.worker,
        "jobs": count,
        "done": done,
        "capped_after_s": round(cap_s, 1) if capped else None,
        "jobs_per_s": round(done / window, 2) if done and window > 0 else 0.0,
        "window_s": round(window, 3),
        "steady_jobs_per_s": round((done - 1) / between, 2) if done > 1 and between > 0 else None,
        "startup_s": round(server.first_take - started, 3) if server.first_take else None,
        "errors": sum(1 for r in results.values() if r.get("error") is not None),
        "wrong_outputs": sum(1 for i, r in results.items()
                             if not output_ok(expect, job_inputs[i], r)),
        "missing": 0 if capped else count - len(results),
        "duplicates": sum(1 for d in server.duplicates if d in mine),
    }
    if expect == "stream":
        figure |= stream_figures(server, ids, job_inputs)
    figure["delivered_once"] = not any(figure.get(k) for k in (
        "errors", "wrong_outputs", "missing", "duplicates", "late_chunks", "wrong_streams"))
    figure |= {
        "exit_code": stopped.exit_code,
        "stop_s": round(stopped.stop_s, 3) if stopped.stop_s is not None else None,
        "killed": stopped.killed,
        "children_left": stopped.children_left,
        "other_programs_cpu_percent": other_percent,
        "log": str(launch.log),
    }
    if (capped and launch.worker != "runpod") or not figure["delivered_once"] or stopped.killed:
        figure["log_tail"] = stopped.log_tail
    return figure


def stream_figures(server: BenchServer, ids: list[str],
                   job_inputs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Chunks per second, and whether every job's chunks came in order, once, before its
    final result."""
    mine = set(ids)
    got: dict[str, list[Any]] = {i: [] for i in ids}
    for job_id, chunk in list(server.streamed):
        if job_id in mine:
            got[job_id].append(chunk)
    times: dict[str, list[float]] = {i: [] for i in ids}
    for job_id, at in server.chunk_times:
        if job_id in mine:
            times[job_id].append(at)
    finished = [i for i in ids if i in server.results]
    wrong = [i for i in finished
             if got[i] != expected_chunks(int(job_inputs[i]["_echo"]["stream"]))]
    chunks = sum(len(c) for c in got.values())
    last = max((t[-1] for t in times.values() if t), default=0.0)
    window = last - (server.first_take or last)
    per_job = [(len(t) - 1) / (t[-1] - t[0]) for t in times.values()
               if len(t) > 1 and t[-1] > t[0]]
    return {
        "chunks": chunks,
        "chunks_per_s": round(chunks / window, 1) if chunks and window > 0 else 0.0,
        "in_stream_chunks_per_s": round(statistics.median(per_job), 1) if per_job else None,
        "streams_checked": len(finished),
        "wrong_streams": len(wrong),
        "late_chunks": sum(1 for j in server.late_stream if j in mine),
        "streams_in_order_once": bool(finished) and not wrong,
    }


def median_of(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> float | None:
    values = [v for v in (get(r) for r in runs) if v is not None]
    return round(statistics.median(values), 3) if values else None


def repeated(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one scenario: the median figures, and every run."""
    return {
        "jobs_per_s": median_of(runs, lambda r: r["jobs_per_s"]),
        "steady_jobs_per_s": median_of(runs, lambda r: r["steady_jobs_per_s"]),
        "all_jobs_per_s": [r["jobs_per_s"] for r in runs],
        "other_programs_cpu_percent": max(r["other_programs_cpu_percent"] for r in runs),
        "delivered_once": all(r["delivered_once"] for r in runs),
        **{k: sum(r[k] for r in runs)
           for k in ("errors", "wrong_outputs", "missing", "duplicates")},
        "runs": runs,
    }


def startup_and_memory(server: BenchServer, launch: Launch, tag: str) -> dict[str, Any]:
    """Start with one job queued: Popen -> first take; after the job and ``IDLE_S`` idle, the
    memory of every process of the worker; then SIGTERM -> exit."""
    ids = [f"{tag}-0"]
    server.submit({"i": 0}, ids[0])
    server.begin(ids)
    proc, started = start(launch)
    server.all_done.wait(60)
    first_take = server.first_take
    first_result = server.last_result
    memory: dict[str, Any] = {}
    if proc.poll() is None and server.all_done.is_set():
        threading.Event().wait(IDLE_S)
        with contextlib.suppress(psutil.NoSuchProcess):
            memory = memory_of(proc.pid)
    stopped = stop(proc, launch)
    if ids[0] not in server.results:
        server.cancel(ids[0])
    return {
        "worker": launch.worker,
        "startup_s": round(first_take - started, 3) if first_take else None,
        "first_result_s": round(first_result - started, 3) if first_result else None,
        "memory": memory,
        "exit_code": stopped.exit_code,
        "stop_s": round(stopped.stop_s, 3) if stopped.stop_s is not None else None,
        "killed": stopped.killed,
        **({"log_tail": stopped.log_tail} if not memory or stopped.killed else {}),
    }
