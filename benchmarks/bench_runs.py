"""Running a contender as a measured subprocess: wall time, the memory sampler, its result line,
and geoseg's phases from its log. Shared by every benchmark here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_memory import MemorySampler

#: Prefix of the one JSON line a contender subprocess prints with its own timings.
RESULT_TAG = "BENCH_RESULT "

@dataclass
class Run:
    kind: str
    repeat: int
    scenes: int
    pixels: int
    windows: int
    wall_s: float = 0.0
    inner_s: float | None = None  # the contender's own timing (geoseg's job seconds, ...)
    peak_pss_mib: float = 0.0
    peak_rss_sum_mib: float = 0.0
    peak_processes: int = 0
    peak_top: list[tuple[str, float]] = field(default_factory=list)
    cpu_by_process: list[tuple[str, float]] = field(default_factory=list)  # CPU s, last sample
    processes_seen: int = 0
    samples: int = 0
    sampler_cpu_s: float = 0.0
    lingering_after_exit: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measured(cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
             settle_s: float = 30.0, pss_every: float = 1.0) -> tuple[float, MemorySampler, str, int]:
    """Run ``cmd``; return (wall seconds, sampler, stdout, return code). stderr goes to ``log_path``."""
    sampler = MemorySampler(pss_every=pss_every)
    full_env = dict(os.environ)
    # geoseg must start its own local Ray. Its ray.init(address=None) joins any cluster named by
    # RAY_ADDRESS or /tmp/ray/ray_current_cluster (left by `ray start`); RAY_ADDRESS=local makes
    # Ray start a new local instance instead (no effect on a machine without another Ray).
    full_env["RAY_ADDRESS"] = "local"
    full_env.update(env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as err:
        t0 = time.perf_counter()
        sampler.launched = time.time()  # type: ignore[attr-defined]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=full_env)
        sampler.start(proc.pid)
        out, _ = proc.communicate()
        wall = time.perf_counter() - t0
    sampler.stop()
    # wait for Ray daemons of this run to go away so they do not overlap with the next run
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and sampler.alive():
        time.sleep(0.25)
    sampler.lingering = sampler.describe(sampler.alive())  # type: ignore[attr-defined]
    if sampler.lingering:  # type: ignore[attr-defined]
        log(f"  still running {settle_s:.0f} s after exit: {sampler.lingering}")  # type: ignore[attr-defined]
    return wall, sampler, out.decode("utf-8", "replace"), proc.returncode


def fill_run(run: Run, wall: float, s: MemorySampler) -> Run:
    run.wall_s = wall
    run.peak_pss_mib = s.peak_pss_kb / 1024
    run.peak_rss_sum_mib = s.peak_rss_kb / 1024
    run.peak_processes = s.peak_procs
    top: dict[str, float] = {}
    for _, name, kb in s.peak_breakdown:
        top[name] = top.get(name, 0.0) + kb / 1024
    run.peak_top = sorted(((k, round(v, 1)) for k, v in top.items()), key=lambda t: -t[1])[:8]
    cpu: dict[str, float] = {}
    for pid, sec in s.proc_cpu.items():
        name = s.latest_name(pid)
        cpu[name] = cpu.get(name, 0.0) + sec
    run.cpu_by_process = sorted(((k, round(v, 2)) for k, v in cpu.items()), key=lambda t: -t[1])
    run.processes_seen = len(s.seen)
    run.samples = s.samples
    run.sampler_cpu_s = s.cpu_s
    run.lingering_after_exit = getattr(s, "lingering", [])
    return run


def result_line(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError("the subprocess printed no result line")


def fail(what: str, rc: int, log_path: Path, stdout: str) -> None:
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:] if log_path.exists() else ""
    raise SystemExit(f"{what} failed (exit {rc}); stdout:\n{stdout[-2000:]}\nstderr ({log_path}):\n{tail}")


def thread_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


_LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d) ")


def geoseg_phases(log_path: Path, launched: float) -> dict[str, float]:
    """Seconds after launch (1 s resolution, from geoseg's INFO log) at which: Ray was up and the
    actors were requested; the first item was planned (actors up, model loaded and probed); the
    last item was done. The rest, up to the exit, is the last COG commit and Ray's shutdown."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    lt = time.localtime(launched)
    base = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (launched % 1.0)

    def t(line: str) -> float | None:
        m = _LOG_TIME.match(line)
        if not m:
            return None
        v = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) - base
        return v + 86400 if v < -43200 else v  # past midnight

    marks: dict[str, float] = {}
    for line in lines:
        ts = t(line)
        if ts is None:
            continue
        if "starting" in line and "inference actor" in line:
            marks.setdefault("actors_requested", ts)
        if "windows in" in line and ("tasks" in line or "band" in line):
            marks.setdefault("first_item_planned", ts)
        if " item " in line and (": ok" in line or ": failed" in line):
            marks["last_item_done"] = ts
    return {k: round(max(v, 0.0), 1) for k, v in marks.items()}
