"""podworker beside RunPod's SDK worker (PyPI ``runpod``), against one fake job API, in one run.

    .venv/bin/python bench/compare.py            # the full run (``make bench``, about 6 minutes)
    .venv/bin/python bench/compare.py --quick    # smaller counts: a smoke check (about 2 minutes)

What it does, in order:

1. finds RunPod's SDK (pinned) in ``.venv-runpod``, which ``make setup`` made;
2. starts the fake job API (``fakeplatform``) in this process on 127.0.0.1 with a 1 s long-poll,
   and checks that each answer comes in one packet (else delayed ACKs add about 40 ms per answer
   and every figure below is wrong);
3. runs the scenarios, each worker in its own process, one after the other, on the same server,
   each stopped with SIGTERM once its results are in:

   - floor: ``bench/floor_client.py``, a bare take-and-post client on one keep-alive connection,
     in turns with podworker's no-op at concurrency 1 (the target is a share of the floor);
   - no-op at concurrency 1, 8 and 64: podworker ``MODEL=echo`` with ``CONCURRENCY``, the SDK's
     handler returning its input with ``concurrency_modifier`` at the same values, and the SDK
     at higher concurrencies (512) for its best figure;
   - no-op through a Redis queue (``JOB_QUEUE``, ``bench/redis_queue.py``) at concurrency 1
     and 64, with the manifest's ``appendfsync always`` and Redis's default ``everysec``,
     beside podworker's own no-op figures on the RunPod fake;
   - the 1 s I/O-bound model at concurrency 32, async and sync: podworker
     ``MODEL=bench.models:io_async`` / ``io_sync`` with ``CONCURRENCY=32``, the SDK's ``async
     def`` / ``def`` handler with a ``concurrency_modifier`` returning 32; 128 jobs;
   - a RunPod handler file, unchanged: ``bench/sdk_handler.py`` (the SDK side's own file) under
     podworker's ``python -m app handler``, no-op at concurrency 1 and the sync 1 s handler at
     32, beside the SDK's runs of the same file above;
   - streaming: podworker ``MODEL=echo`` with input ``{"_echo": {"stream": N}}`` and
     ``RUNPOD_WEBHOOK_POST_STREAM`` set to the fake's stream route, the SDK's generator handler
     yielding the same chunks; chunks per second, and each job's chunks checked: in order, once,
     before its final result;
   - 200 ms model + 150 ms storage: podworker ``MODEL=bench.models:sleepy`` with
     ``STORAGE=bench.models:slow_storage``; the SDK handler waits 200 ms, then "uploads" for
     150 ms on its own thread, as an SDK handler does;
   - start-up (``Popen`` to the first take) and idle memory (RSS and USS of the worker and all
     its children, after one job and 2 s idle), and SIGTERM to exit;
   - a job API slow to accept results (``bench/backlog.py``): 20,000 no-op jobs at
     ``CONCURRENCY=32`` while job-done answers in 20 ms, podworker only; the most jobs held
     (against ``MAX_UNDELIVERED``) and the worker's memory, sampled throughout;
   - Stable Diffusion dynamic batching (``bench/sd_batching.py``, in this process): 8 small
     jobs at once on the tiny pipeline (64x64, 4 steps, CPU), ``SD_BATCH_MAX=8`` vs 1;
   - loading full-size SD 1.5 weights (``bench/load_time.py``, each load in its own process):
     podworker's loader vs plain ``from_pretrained(...).to(device)``, on the CPU (``--quick``:
     skipped; the weights, about 2 GB, are built once under ``bench/.sd15-weights``);

   every run checks that each job was delivered exactly once (``bench/scenarios.py``);
4. prints a table and one JSON line, and writes the JSON to ``bench/results/latest.json``.

The SDK sleeps 1 s whenever its slots are full, so its runs at low concurrency are capped in time
and measured on the jobs they did. Both workers run with their defaults otherwise (the SDK logs
at DEBUG by default; podworker logs JSON at INFO). ``bench/ab.py`` compares the no-op figure of
two checkouts; ``bench/profile_podworker.py`` shows where podworker's time goes (py-spy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, sys.path[0] is bench/
    sys.path.insert(0, str(REPO))

from bench import backlog, load_time, redis_queue, runpod_venv, sd_batching  # noqa: E402
from bench.harness import API_KEY, LONG_POLL_S, BenchServer, check_one_packet  # noqa: E402
from bench.report import IO_CONCURRENCY, machine, machine_busy, render, summarise  # noqa: E402
from bench.scenarios import (  # noqa: E402
    repeated,
    run_jobs,
    startup_and_memory,
    stream_input,
)
from bench.workers import Workers  # noqa: E402

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
STORAGE_SPEC = "bench.models:slow_storage"
NOOP_CONCURRENCIES = (1, 8, 64)


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does: ``--quick`` shrinks everything."""

    floor: int = 2000
    noop: int = 1000
    sdk_noop_cap_s: float = 20.0  # the SDK sleeps 1 s per full queue: its no-op runs are capped
    io: int = 128
    sdk_io_cap_s: float = 40.0
    stream_jobs: int = 8
    stream_chunks: int = 250
    sleepy: int = 50
    repeats: int = 3
    sdk_concurrencies: tuple[int, ...] = (512,)
    batching_jobs: int = 8  # SD dynamic batching: jobs at once, on the tiny pipeline
    backlog: int = 20_000  # no-op jobs at concurrency 32 against a job-done taking 20 ms
    load_rounds: int = 3  # loads of SD 1.5's weights per loader (0: not measured)


QUICK = Sizes(floor=300, noop=150, sdk_noop_cap_s=6.0, io=64, sdk_io_cap_s=10.0, stream_jobs=3,
              stream_chunks=100, sleepy=10, repeats=1, sdk_concurrencies=(), backlog=2_000,
              load_rounds=0)


def ensure_runpod_venv() -> tuple[Path, str, str]:
    """``.venv-runpod`` (``make setup``): RunPod's SDK, pinned, with podworker beside it;
    (python, runpod version, python version)."""
    try:
        venv = runpod_venv.runpod_venv()
    except runpod_venv.RunpodVenvError as exc:
        raise SystemExit(f"bench: {exc}") from None
    print(f"runpod {venv.runpod_version} (Python {venv.python_version})", flush=True)
    return venv.python, venv.runpod_version, venv.python_version


def step(title: str) -> None:
    print(f"... {title}", flush=True)


def run_all(server: BenchServer, workers: Workers, z: Sizes, sdk_cs: list[int],
            f: dict[str, Any]) -> None:
    """Every scenario, in order, its figures into ``f``."""
    n = range(z.repeats)
    # The share of the floor compares two figures: measured in turns, floor then podworker, so
    # a change of load on a shared machine lands on both.
    step(f"floor ({z.floor} jobs) and podworker's no-op at concurrency 1 ({z.noop} jobs), in "
         f"turns, {z.repeats} runs each")
    floor, c1 = [], []
    for k in n:
        floor.append(run_jobs(server, workers.floor(f"floor{k}", z.floor, 120), f"floor{k}",
                              z.floor, 150))
        c1.append(run_jobs(server, workers.podworker(f"pw-noop-c1-{k}", concurrency=1),
                           f"pw-noop-c1-{k}", z.noop, 120))
    f["floor"], f["noop_podworker_c1"] = repeated(floor), repeated(c1)
    for c in NOOP_CONCURRENCIES[1:]:
        step(f"no-op, concurrency {c}, {z.noop} jobs: podworker, {z.repeats} runs")
        f[f"noop_podworker_c{c}"] = repeated([run_jobs(
            server, workers.podworker(f"pw-noop-c{c}-{k}", concurrency=c), f"pw-noop-c{c}-{k}",
            z.noop, 120) for k in n])
    for fsync in ("always", "everysec"):
        step(f"no-op through Redis (appendfsync {fsync}), concurrency "
             f"{' and '.join(map(str, redis_queue.CONCURRENCIES))}, {z.noop} jobs, "
             f"{z.repeats} runs each")
        try:
            f[f"redis_noop_{fsync}"] = redis_queue.measure(z.noop, z.repeats, fsync)
        except (OSError, RuntimeError) as exc:  # no redis-server here: say so, go on
            print(f"WARNING: the Redis runs were skipped: {exc}", flush=True)
    for c in sdk_cs:
        step(f"no-op, {z.noop} jobs: runpod SDK at concurrency {c} (capped at "
             f"{z.sdk_noop_cap_s:g} s)")
        tag = f"rp-noop-c{c}"
        f[f"noop_runpod_c{c}"] = run_jobs(server, workers.runpod(tag, concurrency=c), tag,
                                          z.noop, z.sdk_noop_cap_s)
    for kind in ("io_async", "io_sync"):
        step(f"1 s I/O-bound model ({kind}), {z.io} jobs at concurrency {IO_CONCURRENCY}: "
             "podworker, then runpod SDK")
        tag = f"pw-{kind}"
        f[f"{kind}_podworker"] = run_jobs(server, workers.podworker(
            tag, f"bench.models:{kind}", concurrency=IO_CONCURRENCY), tag, z.io, 60 + z.io)
        tag = f"rp-{kind}"
        f[f"{kind}_runpod"] = run_jobs(server, workers.runpod(
            tag, kind, concurrency=IO_CONCURRENCY), tag, z.io, z.sdk_io_cap_s)
    run_handler_scenarios(server, workers, z, f)
    step(f"streaming, {z.stream_jobs} jobs x {z.stream_chunks} chunks: podworker, runpod SDK")
    inputs = stream_input(z.stream_chunks)
    f["stream_podworker"] = run_jobs(server, workers.podworker("pw-stream", stream=True),
                                     "pw-stream", z.stream_jobs, 120, "stream", inputs)
    f["stream_runpod"] = run_jobs(server, workers.runpod("rp-stream", "stream"), "rp-stream",
                                  z.stream_jobs, 120, "stream", inputs)
    for who in ("podworker", "runpod"):
        f[f"stream_{who}"]["chunks_per_job"] = z.stream_chunks
    f["storage_via"] = "python -m app run, STORAGE=" + STORAGE_SPEC
    step(f"200 ms model + 150 ms storage, {z.sleepy} jobs: podworker, runpod SDK")
    f["sleepy_podworker"] = run_jobs(
        server, workers.podworker("pw-sleepy", "bench.models:sleepy", storage=STORAGE_SPEC),
        "pw-sleepy", z.sleepy, 30 + z.sleepy * 0.5, expect="image")
    f["sleepy_runpod"] = run_jobs(server, workers.runpod("rp-sleepy", "sleepy"), "rp-sleepy",
                                  z.sleepy, 30 + z.sleepy * 2, expect="image")
    startups: dict[str, list[dict[str, Any]]] = {"podworker": [], "runpod": []}
    for k in n:
        step(f"start-up and idle memory, round {k + 1} of {z.repeats}")
        startups["podworker"].append(
            startup_and_memory(server, workers.podworker(f"pw-start{k}"), f"pw-start{k}"))
        startups["runpod"].append(
            startup_and_memory(server, workers.runpod(f"rp-start{k}"), f"rp-start{k}"))
    f["startup"] = startups
    step(f"job-done answering in 20 ms: {z.backlog} no-op jobs at concurrency 32, podworker "
         "(held results and memory sampled throughout)")
    f["backlog_podworker"] = backlog.run_backlog(server, workers, z.backlog)
    step(f"Stable Diffusion dynamic batching: {z.batching_jobs} small jobs at once on the tiny "
         f"pipeline, SD_BATCH_MAX={z.batching_jobs} vs 1, {z.repeats} runs each, in turns")
    with tempfile.TemporaryDirectory(prefix="podworker-batching-") as folder:
        f["sd_batching"] = sd_batching.measure(sd_batching.tiny_model(Path(folder)),
                                               jobs=z.batching_jobs, runs=z.repeats)
    if z.load_rounds:
        step(f"loading SD 1.5's weights (random, fp16): podworker's loader vs plain "
             f"from_pretrained().to(), {z.load_rounds} loads each, in turns")
        weights = load_time.build(BENCH / ".sd15-weights", "fp16")
        f["load_time"] = load_time.measure(weights, rounds=z.load_rounds)
        print("   ", load_time.summary(f["load_time"]), flush=True)


def run_handler_scenarios(server: BenchServer, workers: Workers, z: Sizes,
                          f: dict[str, Any]) -> None:
    """The SDK's own handler file (``bench/sdk_handler.py``), unchanged, under podworker
    (``python -m app handler``): the no-op at concurrency 1 and the sync 1 s handler at 32,
    beside the SDK running that file (``noop_runpod_c1``, ``io_sync_runpod``)."""
    step(f"the SDK's handler file under podworker (python -m app handler): no-op at "
         f"concurrency 1 ({z.noop} jobs), sync 1 s handler at {IO_CONCURRENCY} ({z.io} jobs)")
    tag = "pwh-noop-c1"
    f["handler_noop_c1_podworker"] = run_jobs(server, workers.handler(tag, "noop"), tag,
                                              z.noop, 120)
    tag = "pwh-io_sync"
    f["handler_io_sync_podworker"] = run_jobs(server, workers.handler(
        tag, "io_sync", IO_CONCURRENCY), tag, z.io, 60 + z.io)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="podworker vs the runpod SDK worker")
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke check")
    parser.add_argument("--sdk-concurrency", default=None,
                        help="the SDK's extra no-op concurrencies, comma-separated "
                             "(default 512; none with --quick)")
    args = parser.parse_args(argv)
    z = QUICK if args.quick else Sizes()
    extra = (tuple(int(c) for c in args.sdk_concurrency.split(",") if c.strip())
             if args.sdk_concurrency is not None else z.sdk_concurrencies)
    sdk_cs = sorted({*NOOP_CONCURRENCIES, *extra})

    runpod_python, runpod_version, runpod_python_version = ensure_runpod_venv()
    RESULTS.mkdir(parents=True, exist_ok=True)
    f: dict[str, Any] = {"machine": machine(), "runpod_version": runpod_version,
                         "runpod_python": runpod_python_version, "quick": args.quick,
                         "machine_busy_before": machine_busy()}
    print(f"machine: {f['machine']['cpu']}, {f['machine']['cores']} cores, "
          f"Python {f['machine']['python']}, load average {f['machine_busy_before']}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="podworker-bench-") as tmp_name, \
            BenchServer(host="127.0.0.1", port=0, long_poll_s=LONG_POLL_S,
                        api_key=API_KEY) as server:
        workers = Workers(server, Path(tmp_name), runpod_python)
        f["server"] = {"url": server.url, "long_poll_s": LONG_POLL_S, **check_one_packet(server)}
        s = f["server"]
        print(f"fake job API {server.url}: {s['answers_whole_in_first_recv']} answers whole in "
              f"one packet, TCP_NODELAY {s['tcp_nodelay']}, round trip {s['rtt_ms_median']} ms",
              flush=True)
        if not s["one_packet"] or not s["tcp_nodelay"] or s["rtt_ms_median"] > 10:
            print("WARNING: the fake job API does not answer in one packet with TCP_NODELAY: "
                  "delayed ACKs distort every figure below", flush=True)
        run_all(server, workers, z, sdk_cs, f)
        f["server"]["stats"] = server.stats()
        f["server"]["connection_resets"] = server.connection_resets
    f["machine_busy_after"] = machine_busy()

    summary = summarise(f, list(NOOP_CONCURRENCIES), sdk_cs)
    f["summary"] = summary
    print()
    print(render(f, summary, list(NOOP_CONCURRENCIES), sdk_cs))
    problems = [f"{k}: {v.get('errors')} errors, {v.get('wrong_outputs')} wrong outputs, "
                f"{v.get('missing')} missing, {v.get('duplicates')} duplicates"
                + (f", {v.get('wrong_streams')} wrong streams, {v.get('late_chunks')} late "
                   "chunks" if "wrong_streams" in v else "")
                for k, v in f.items() if isinstance(v, dict)
                and v.get("delivered_once") is False]
    for problem in problems:
        print("WARNING:", problem)
    mine = [p for p in problems if "podworker" in p or p.startswith(("floor", "redis"))]
    line = json.dumps(f, separators=(",", ":"))
    (RESULTS / "latest.json").write_text(json.dumps(f, indent=2) + "\n")
    print(line)
    print(f"(written to {(RESULTS / 'latest.json').relative_to(REPO)})")
    return 1 if mine else 0  # the SDK's own problems are reported, not failed on


if __name__ == "__main__":
    sys.exit(main())
