"""The benchmark's summary, its targets, and the table it prints.

``summarise`` turns the raw figures (one entry per scenario run) into the summary that goes into
the JSON line; ``render`` prints it as a table, podworker beside the SDK, one row per scenario,
with each target met or MISSED. The targets (issue 7, then issue 15):

- no-op at concurrency 1: >= 400 jobs/s and >= 25 % of the floor client;
- 200 ms model + 150 ms storage: >= 4.5 jobs/s;
- the 1 s I/O-bound model at concurrency 32, async and sync: >= 0.8 x the ideal 32 jobs/s
  (25.6) and ahead of the SDK;
- no-op at concurrency 64: >= 1.5 x the SDK's best no-op figure at any concurrency;
- streaming: every chunk in order, once, before its job's final result;
- start-up to first take <= 0.5 s; idle RSS of the worker's process <= 50 MB;
- every job of every podworker run delivered exactly once;
- no-op through a Redis queue (issue 27), one worker: within 2x of the same worker's figure on
  the RunPod fake, at concurrency 1 and 64 (with Redis's default ``appendfsync everysec``; the
  manifest's ``always`` is shown beside it: it waits for the disk at every write).
- a RunPod handler file (the SDK's side's own, unchanged) under ``python -m app handler``:
  >= 200 x the SDK's jobs/s on the no-op at concurrency 1, >= 25 x on the sync 1 s handler at
  concurrency 32 (issue 22).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from bench.scenarios import median_of
from bench.workers import IO_S, MODEL_S, REPO

IO_CONCURRENCY = 32
HANDLER_NOOP_TIMES = 200  # a handler file under podworker vs the SDK: no-op, concurrency 1
HANDLER_IO_TIMES = 25  # and the sync 1 s handler at concurrency 32
IDEAL_IO = IO_CONCURRENCY / IO_S  # jobs/s the 1 s model allows at concurrency 32


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True, timeout=30).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit + ("+dirty" if dirty else ""),
    }


def machine_busy() -> dict[str, Any]:
    """How busy the machine is while this script is idle: other work skews every figure."""
    return {"cpu_percent_1s": psutil.cpu_percent(interval=1.0),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = str(value)
    return text + unit


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the summary -----------------------------------------------------------------------------
def summarise(f: dict[str, Any], noop_cs: list[int], sdk_cs: list[int]) -> dict[str, Any]:
    pw, rp = f["startup"]["podworker"], f["startup"]["runpod"]

    def both(pw_key: str, rp_key: str, field: str = "jobs_per_s") -> dict[str, Any]:
        return {"podworker": f[pw_key][field], "runpod": f[rp_key][field]}

    def start_median(who: list[dict[str, Any]], key: str) -> float | None:
        return median_of(who, lambda r: r["memory"].get(key) if key != "stop_s" else r[key])

    noop = {f"c{c}": {"podworker": f[f"noop_podworker_c{c}"]["jobs_per_s"],
                      "runpod": f.get(f"noop_runpod_c{c}", {}).get("jobs_per_s")}
            for c in noop_cs}
    sdk_noop = {c: f[f"noop_runpod_c{c}"]["jobs_per_s"] for c in sdk_cs}
    best_c = max(sdk_noop, key=lambda c: sdk_noop[c] or 0.0)
    s: dict[str, Any] = {
        "floor_jobs_per_s": f["floor"]["jobs_per_s"],
        "noop_c1_jobs_per_s": noop["c1"],
        "noop_jobs_per_s": noop,
        "noop_runpod_jobs_per_s": {f"c{c}": v for c, v in sdk_noop.items()},
        "noop_runpod_best": {"concurrency": best_c, "jobs_per_s": sdk_noop[best_c]},
        "io_async_c32_jobs_per_s": both("io_async_podworker", "io_async_runpod"),
        "io_sync_c32_jobs_per_s": both("io_sync_podworker", "io_sync_runpod"),
        "io_ideal_jobs_per_s": IDEAL_IO,
        "handler_noop_c1_jobs_per_s": both("handler_noop_c1_podworker", "noop_runpod_c1"),
        "handler_io_sync_c32_jobs_per_s": both("handler_io_sync_podworker", "io_sync_runpod"),
        "stream_chunks_per_s": both("stream_podworker", "stream_runpod", "chunks_per_s"),
        "stream_in_stream_chunks_per_s": both("stream_podworker", "stream_runpod",
                                              "in_stream_chunks_per_s"),
        "stream_in_order_once": both("stream_podworker", "stream_runpod",
                                     "streams_in_order_once"),
        "sleepy_jobs_per_s": both("sleepy_podworker", "sleepy_runpod") | {
            "ideal": round(1 / MODEL_S, 2)},
        "startup_s": {"podworker": median_of(pw, lambda r: r["startup_s"]),
                      "runpod": median_of(rp, lambda r: r["startup_s"])},
        "idle_rss_mb_one_process": {"podworker": start_median(pw, "rss_mb_largest"),
                                    "runpod": start_median(rp, "rss_mb_largest")},
        "idle_rss_mb_total": {"podworker": start_median(pw, "rss_mb_total"),
                              "runpod": start_median(rp, "rss_mb_total")},
        "idle_uss_mb_total": {"podworker": start_median(pw, "uss_mb_total"),
                              "runpod": start_median(rp, "uss_mb_total")},
        "processes": {"podworker": start_median(pw, "processes"),
                      "runpod": start_median(rp, "processes")},
        "stop_s": {"podworker": start_median(pw, "stop_s"),
                   "runpod": start_median(rp, "stop_s")},
        "delivered_once": {who: delivered_once(f, who) for who in ("podworker", "runpod")},
        "backlog": f.get("backlog_podworker"),
    }
    s["noop_redis_jobs_per_s"] = redis_summary(f)
    s["targets"] = targets(s, noop_cs)
    return s


def redis_summary(f: dict[str, Any]) -> dict[str, Any] | None:
    """No-op jobs/s through Redis at each concurrency, per fsync policy, beside the RunPod
    fake's figure (None when the Redis runs were skipped)."""
    if "redis_noop_everysec" not in f:
        return None
    out: dict[str, Any] = {}
    for key in ("c1", "c64"):
        out[key] = {fsync: f[f"redis_noop_{fsync}"][key]["jobs_per_s"]
                    for fsync in ("always", "everysec") if f"redis_noop_{fsync}" in f}
        out[key]["runpod_path"] = f[f"noop_podworker_{key}"]["jobs_per_s"]
    out["delivered_once"] = all(f[f"redis_noop_{fsync}"][key]["delivered_once"]
                                for fsync in ("always", "everysec") if f"redis_noop_{fsync}" in f
                                for key in ("c1", "c64"))
    return out


def delivered_once(f: dict[str, Any], who: str) -> bool:
    """Did every run of ``who`` deliver each of its jobs once (none missing, none twice, no
    error, no wrong output, every stream whole and in time)?"""
    runs: list[dict[str, Any]] = []
    for value in f.values():
        if isinstance(value, dict):
            runs.extend(value.get("runs", [value]))
    return all(r.get("delivered_once", True) for r in runs if r.get("worker") == who)


def targets(s: dict[str, Any], noop_cs: list[int]) -> dict[str, dict[str, Any]]:
    """Each target: what it asks, podworker's figure, met (None when not measured)."""
    floor = s["floor_jobs_per_s"]
    c1 = s["noop_c1_jobs_per_s"]["podworker"]
    best = s["noop_runpod_best"]["jobs_per_s"]
    out: dict[str, dict[str, Any]] = {}

    def check(name: str, asks: str, value: Any, met: bool | None) -> None:
        out[name] = {"target": asks, "podworker": value, "met": met}

    check("noop_c1_jobs_per_s", ">= 400", c1, None if c1 is None else c1 >= 400)
    share = round(100 * c1 / floor, 1) if c1 and floor else None
    check("noop_c1_share_of_floor", ">= 25% of the floor", share,
          None if share is None else share >= 25)
    top = max(noop_cs)
    c64 = s["noop_jobs_per_s"][f"c{top}"]["podworker"]
    check(f"noop_c{top}_vs_sdk_best", f">= 1.5 x the SDK's best ({fmt(best)})",
          c64, None if not (c64 and best) else c64 >= 1.5 * best)
    for kind in ("io_async", "io_sync"):
        v = s[f"{kind}_c32_jobs_per_s"]
        met = v["podworker"] >= 0.8 * IDEAL_IO and v["podworker"] > (v["runpod"] or 0.0)
        check(f"{kind}_c32_jobs_per_s", f">= {0.8 * IDEAL_IO:g} and ahead of the SDK",
              v["podworker"], met)
    for key, times in (("handler_noop_c1_jobs_per_s", HANDLER_NOOP_TIMES),
                       ("handler_io_sync_c32_jobs_per_s", HANDLER_IO_TIMES)):
        v = s[key]
        times_sdk = ratio(v["podworker"], v["runpod"])
        check(key, f">= {times:g} x the SDK on the same file", v["podworker"],
              None if times_sdk is None else times_sdk >= times)
    ok = s["stream_in_order_once"]["podworker"]
    check("stream_in_order_once", "every chunk in order, once, before the result", ok, ok)
    sl = s["sleepy_jobs_per_s"]["podworker"]
    check("sleepy_jobs_per_s", ">= 4.5", sl, None if sl is None else sl >= 4.5)
    st = s["startup_s"]["podworker"]
    check("startup_s", "<= 0.5", st, None if st is None else st <= 0.5)
    rss = s["idle_rss_mb_one_process"]["podworker"]
    check("idle_rss_mb_one_process", "<= 50", rss, None if rss is None else rss <= 50)
    once = s["delivered_once"]["podworker"]
    check("delivered_once", "every job delivered exactly once", once, once)
    backlog = s.get("backlog")
    if backlog:
        held = backlog["held_within_bound"] and backlog["rss_flat"]
        check("backlog_held_within_bound", f"held <= {backlog['held_bound']}, RSS flat",
              backlog["most_held"], held)
    redis = s.get("noop_redis_jobs_per_s")
    for key in ("c1", "c64"):
        v = redis[key] if redis else {}
        fast, path = v.get("everysec"), v.get("runpod_path")
        check(f"redis_noop_{key}_within_2x", "within 2x of the RunPod path's", fast,
              None if not (fast and path) else fast >= path / 2)
    return out


# --- the table -------------------------------------------------------------------------------
def verdicts(targets: dict[str, dict[str, Any]], names: tuple[str, ...], missed: str) -> str:
    """"<target>: met" (``missed``, or "?" when not measured) for each target named."""
    return "; ".join(f"{targets[n]['target']}: " + {True: "met", False: missed, None: "?"}[
        targets[n]["met"]] for n in names)


def capped_note(f: dict[str, Any], key: str) -> str:
    """" (N jobs in S s)" for a run that was capped in time, else ""."""
    run = f.get(key, {})
    return f" ({run['done']} jobs in {run['capped_after_s']:g} s)" if run.get(
        "capped_after_s") else ""


def render(f: dict[str, Any], s: dict[str, Any], noop_cs: list[int], sdk_cs: list[int]) -> str:
    floor = s["floor_jobs_per_s"]
    t = s["targets"]

    def mark(*names: str) -> str:
        return verdicts(t, names, "MISSED")

    def capped(key: str) -> str:
        return capped_note(f, key)

    def pair(label: str, v: dict[str, Any], note: str = "", target: str = "",
             rp_note: str = "") -> list[str]:
        return [label, fmt(v["podworker"]), fmt(v["runpod"]) + rp_note,
                fmt(ratio(v["podworker"], v["runpod"]), "x"), note, target]

    def share(v: float | None) -> str:
        return fmt(round(100 * v / floor) if v and floor else None, "% of floor")

    rows = [["scenario", "podworker", "runpod SDK", "podworker/SDK", "note", "target (podworker)"]]
    rows.append(["floor: bare take+post client, jobs/s", fmt(floor), "", "", "100% of floor", ""])
    top = max(noop_cs)
    for c in noop_cs:
        v = s["noop_jobs_per_s"][f"c{c}"]
        target = {1: mark("noop_c1_jobs_per_s", "noop_c1_share_of_floor"),
                  top: mark(f"noop_c{top}_vs_sdk_best")}.get(c, "")
        rows.append(pair(f"no-op, concurrency {c}, jobs/s", v, share(v["podworker"]), target,
                         capped(f"noop_runpod_c{c}")))
    best = s["noop_runpod_best"]
    for c in (c for c in sdk_cs if c not in noop_cs):
        value = s["noop_runpod_jobs_per_s"][f"c{c}"]
        rows.append([f"no-op, SDK at concurrency {c}, jobs/s", "", fmt(value) + capped(
            f"noop_runpod_c{c}"), "", "", ""])
    rows.append(["no-op, SDK's best figure, jobs/s", "", f"{fmt(best['jobs_per_s'])} "
                 f"(c={best['concurrency']})", "", "", ""])
    for kind, label in (("io_async", "async"), ("io_sync", "sync")):
        v = s[f"{kind}_c32_jobs_per_s"]
        rows.append(pair(f"1 s I/O-bound model, {label}, concurrency 32, jobs/s", v,
                         fmt(round(100 * v["podworker"] / IDEAL_IO), f"% of ideal {IDEAL_IO:g}"),
                         mark(f"{kind}_c32_jobs_per_s"), capped(f"{kind}_runpod")))
    for key, label, run in (
            ("handler_noop_c1_jobs_per_s", "no-op, concurrency 1", "noop_runpod_c1"),
            ("handler_io_sync_c32_jobs_per_s", "sync 1 s handler, concurrency 32",
             "io_sync_runpod")):
        rows.append(pair(f"the SDK's handler file under `python -m app handler`: {label}, "
                         "jobs/s", s[key], "same file, same jobs", mark(key), capped(run)))
    sp, sr = f["stream_podworker"], f["stream_runpod"]
    rows.append(pair(f"streaming, {sp['jobs']} jobs x {sp['chunks_per_job']} "
                     "chunks, concurrency 1, chunks/s", s["stream_chunks_per_s"],
                     "in order, once, before result: "
                     f"{sp['streams_in_order_once']}/{sr['streams_in_order_once']}",
                     mark("stream_in_order_once")))
    rows.append(pair("streaming, within one job's stream, chunks/s",
                     s["stream_in_stream_chunks_per_s"], "median over jobs"))
    sl = s["sleepy_jobs_per_s"]
    rows.append(pair("200 ms model + 150 ms storage, jobs/s", sl,
                     fmt(round(100 * sl["podworker"] / sl["ideal"]) if sl["podworker"] else None,
                         f"% of ideal {sl['ideal']:g}"), mark("sleepy_jobs_per_s")))
    rows.append(pair("start-up to first take, s (median)", s["startup_s"], "",
                     mark("startup_s")))
    for key, label in (("idle_rss_mb_one_process", "idle RSS, largest process, MB"),
                       ("idle_rss_mb_total", "idle RSS, all processes, MB"),
                       ("idle_uss_mb_total", "idle USS, all processes, MB"),
                       ("processes", "processes"),
                       ("stop_s", "SIGTERM to exit when idle, s")):
        rows.append(pair(label, s[key], "", mark(key) if key in t else ""))
    b = f.get("sd_batching")
    if b:
        rows.append([f"SD batching: {b['jobs']} jobs {b['size']}, {b['steps']} steps, tiny "
                     f"pipeline, {b['device']}, jobs/s", f"{fmt(b['batched']['jobs_per_s'])} "
                     f"batched, {fmt(b['one_by_one']['jobs_per_s'])} one by one", "",
                     "", fmt(b["speedup"], "x from SD_BATCH_MAX"), ""])
    bl = s.get("backlog")
    if bl:
        rss = bl["rss_mb"]
        rows.append([f"job-done answering in {bl['done_delay_ms']} ms: {bl['jobs']:,} no-op jobs, "
                     f"concurrency {bl['concurrency']}, jobs/s", fmt(bl["jobs_per_s"]), "", "",
                     f"most held {bl['most_held']} (bound {bl['held_bound']}); RSS "
                     f"{fmt(rss['at_10_percent'])} -> {fmt(rss['at_end'])} MB (most "
                     f"{fmt(rss['most'])})", mark("backlog_held_within_bound")])
    redis = s.get("noop_redis_jobs_per_s")
    for key in ("c1", "c64") if redis else ():
        v = redis[key]
        rows.append([f"no-op through Redis (JOB_QUEUE), concurrency {key[1:]}, jobs/s",
                     f"{fmt(v.get('everysec'))} (everysec), {fmt(v.get('always'))} (always)",
                     "", "", f"{fmt(ratio(v.get('everysec'), v['runpod_path']), 'x')} of the "
                     f"RunPod path's {fmt(v['runpod_path'])}",
                     mark(f"redis_noop_{key}_within_2x")])
    lt = f.get("load_time")
    if lt:
        rows.append([f"SD 1.5 weights ({lt['size_gb']} GB {lt['dtype']}) loaded to "
                     f"{lt['device']}, s (median of {lt['rounds']})",
                     fmt(lt["podworker"]["seconds_median"]),
                     f"{fmt(lt['plain']['seconds_median'])} (plain from_pretrained().to())",
                     "", fmt(lt["podworker_over_plain"], "x the time"), ""])
    once = s["delivered_once"]
    rows.append(["every job delivered exactly once (all runs)", str(once["podworker"]),
                 str(once["runpod"]), "", "", mark("delivered_once")])
    m = f["machine"]
    head = (f"podworker vs runpod {f['runpod_version']} | {m['cpu']}, {m['cores']} cores, "
            f"Python {m['python']} | fake job API long-poll {f['server']['long_poll_s']:g} s, "
            f"one packet: {f['server']['one_packet']} | CPU busy before/after "
            f"{f['machine_busy_before']['cpu_percent_1s']:g}%/"
            f"{f['machine_busy_after']['cpu_percent_1s']:g}% | load average before/after "
            f"{f['machine_busy_before']['load_average'][0]:g}/"
            f"{f['machine_busy_after']['load_average'][0]:g}")
    pw_runs = {c: f[f"noop_podworker_c{c}"]["all_jobs_per_s"] for c in noop_cs}
    notes = [
        "jobs/s = jobs / (last result - first take request), at the server; podworker no-op "
        f"and floor: median of {len(f['floor']['runs'])} runs (podworker runs: {pw_runs}); "
        "chunks/s = chunks / (last chunk - first take request)",
        f"storage step in podworker: {f['storage_via']}",
    ]
    busy = max(f["machine_busy_before"]["cpu_percent_1s"],
               f["machine_busy_after"]["cpu_percent_1s"])
    if busy > 20:
        notes.append(f"WARNING: other work used {busy:g}% of the CPUs before or after the run: "
                     "figures are lower than on a quiet machine")
    disturbed = {k: v["other_programs_cpu_percent"] for k, v in f.items()
                 if isinstance(v, dict) and v.get("other_programs_cpu_percent", 0) > 10}
    if disturbed:
        notes.append("WARNING: other programs used the CPUs during "
                     + ", ".join(f"{k} ({v:g}%)" for k, v in disturbed.items())
                     + ": those figures are lower than on a quiet machine")
    return head + "\n" + table(rows) + "\n" + "\n".join(notes)
