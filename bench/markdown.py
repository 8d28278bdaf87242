"""The README's benchmark table, from a run's JSON (``bench/results/latest.json``).

    .venv/bin/python -m bench.markdown [bench/results/latest.json]

Prints the Markdown table the README's "Performance" section shows, figure for figure from the
run, so the README is pasted, not retyped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.report import IDEAL_IO, capped_note, fmt, ratio, verdicts

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"


def markdown(f: dict[str, Any]) -> str:
    s, t = f["summary"], f["summary"]["targets"]

    def verdict(*names: str) -> str:
        return verdicts(t, names, "**missed**")

    def capped(key: str) -> str:
        return capped_note(f, key)

    def row(label: str, v: dict[str, Any], target: str = "", rp_note: str = "",
            pw_note: str = "") -> str:
        return (f"| {label} | **{fmt(v['podworker'])}**{pw_note} | {fmt(v['runpod'])}{rp_note} | "
                f"{fmt(ratio(v['podworker'], v['runpod']), 'x')} | {target} |")

    floor = s["floor_jobs_per_s"]
    lines = ["| scenario | podworker | runpod SDK | podworker / SDK | target (podworker) |",
             "|---|---|---|---|---|",
             f"| floor: bare take + post client, jobs/s | {fmt(floor)} | | | |"]
    noop_cs = sorted(int(c[1:]) for c in s["noop_jobs_per_s"])
    for c in noop_cs:
        v = s["noop_jobs_per_s"][f"c{c}"]
        share = f" ({round(100 * v['podworker'] / floor)}% of the floor)" if floor else ""
        target = {1: verdict("noop_c1_jobs_per_s", "noop_c1_share_of_floor"),
                  max(noop_cs): verdict(f"noop_c{max(noop_cs)}_vs_sdk_best")}.get(c, "")
        lines.append(row(f"no-op, concurrency {c}, jobs/s", v, target,
                         capped(f"noop_runpod_c{c}"), share))
    redis = s.get("noop_redis_jobs_per_s")
    for key in ("c1", "c64") if redis else ():
        v = redis[key]
        lines.append(f"| no-op through Redis (`JOB_QUEUE`), concurrency {key[1:]}, jobs/s | "
                     f"**{fmt(v.get('everysec'))}** (`everysec`), {fmt(v.get('always'))} "
                     f"(`always`) | | {fmt(ratio(v.get('everysec'), v['runpod_path']), 'x')} of "
                     f"the RunPod path's {fmt(v['runpod_path'])} | "
                     f"{verdict(f'redis_noop_{key}_within_2x')} |")
    best = s["noop_runpod_best"]
    for key, value in s["noop_runpod_jobs_per_s"].items():
        if int(key[1:]) not in noop_cs:
            lines.append(f"| no-op, SDK at concurrency {key[1:]}, jobs/s | | {fmt(value)} | | |")
    lines.append(f"| no-op, the SDK's best figure, jobs/s | | {fmt(best['jobs_per_s'])} "
                 f"(concurrency {best['concurrency']}) | | |")
    for kind, label in (("io_async", "async"), ("io_sync", "sync")):
        lines.append(row(f"1 s I/O-bound model, {label}, concurrency 32, "
                         f"{f[kind + '_podworker']['jobs']} jobs, jobs/s "
                         f"(ideal {IDEAL_IO:g})", s[f"{kind}_c32_jobs_per_s"],
                         verdict(f"{kind}_c32_jobs_per_s"), capped(f"{kind}_runpod")))
    sp = f["stream_podworker"]
    lines.append(row(f"streaming, {sp['jobs']} jobs x {sp['chunks_per_job']} chunks, "
                     "concurrency 1, chunks/s", s["stream_chunks_per_s"],
                     verdict("stream_in_order_once")))
    lines.append(row("streaming, within one job's stream, chunks/s (median over jobs)",
                     s["stream_in_stream_chunks_per_s"]))
    lines.append(row("200 ms model + 150 ms storage, jobs/s (ideal 5.0)", s["sleepy_jobs_per_s"],
                     verdict("sleepy_jobs_per_s")))
    lines.append(row("start-up to first take, s", s["startup_s"], verdict("startup_s")))
    rss = s["idle_rss_mb_one_process"]
    procs = s["processes"]
    lines.append(f"| idle RSS, MB (processes) | **{fmt(rss['podworker'])}** "
                 f"({fmt(procs['podworker'])}) | {fmt(s['idle_rss_mb_total']['runpod'])} "
                 f"({fmt(procs['runpod'])}) | "
                 f"{fmt(ratio(rss['podworker'], s['idle_rss_mb_total']['runpod']), 'x')} | "
                 f"{verdict('idle_rss_mb_one_process')} |")
    lines.append(row("SIGTERM to exit when idle, s (the fake's long-poll is 1 s)", s["stop_s"]))
    once = s["delivered_once"]
    lines.append(f"| every job delivered exactly once, all runs | {once['podworker']} | "
                 f"{once['runpod']} | | {verdict('delivered_once')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else LATEST
    print(markdown(json.loads(path.read_text())))
