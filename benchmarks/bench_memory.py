"""Peak memory and CPU of a process tree, Ray's daemons included (for landcover_bench.py)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence

SAMPLE_EVERY = 0.2  # seconds between memory samples


_SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_(\d+)")


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _stat_ppid(pid: int) -> int | None:
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = text[text.rfind(")") + 2 :].split()
    return int(rest[1])


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    rest = text[text.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> str:
    text = _read(f"/proc/{pid}/cmdline")
    return (text or "").replace("\0", " ").strip()


def _memory_kb(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) in kB from smaps_rollup; (RSS, RSS) from status when smaps is unreadable."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    pss = rss = None
    if text:
        for line in text.splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    if pss is not None and rss is not None:
        return pss, rss
    text = _read(f"/proc/{pid}/status")
    if text:
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                v = int(line.split()[1])
                return v, v
    return None


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def ray_daemons_running() -> list[str]:
    """Running Ray daemons (raylet, gcs_server): a sign that another Ray is up."""
    found = []
    if os.environ.get("RAY_ADDRESS"):
        found.append(f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} (the runs use RAY_ADDRESS=local)")
    for pid in _pids():
        comm = (_read(f"/proc/{pid}/comm") or "").strip()
        if comm in ("raylet", "gcs_server"):
            found.append(f"{comm} (pid {pid})")
    return found


def _short_name(cmd: str) -> str:
    if cmd.startswith("ray::"):
        return cmd.split()[0].split(".")[0]  # ray::InferenceActor.run -> ray::InferenceActor
    parts = cmd.split()
    if not parts:
        return "?"
    exe = os.path.basename(parts[0])
    if exe.startswith("python"):
        args = [a for a in parts[1:] if not a.startswith("-")]
        if args:
            return f"python {os.path.basename(args[0])}"
    return exe


class MemorySampler:
    """Samples the summed memory of a run's processes every ``interval`` seconds.

    Which processes: the root (the subprocess) and its descendants; and, among processes that
    did not exist when the sampler was created, those whose command line contains ``ray`` and
    either names the root's Ray session (``session_..._<root pid>``: gcs_server, raylet, the
    agents) or that were re-parented to init -- with their descendants. A process once counted
    stays counted while it lives (re-parenting cannot hide it). Processes of another Ray
    session (its owner such as someone's ``ray start``, its daemons, their workers) are never
    counted, so a smoke run next to another Ray measures only its own processes; on a quiet
    machine all this simply means "the run's processes".

    What: PSS (``/proc/PID/smaps_rollup``; shared pages, such as Ray's object store mapped by
    several processes, are split among them) read exactly for every process when first seen
    and every ``pss_every`` seconds; in between, each process's PSS is carried forward by its
    RSS change since the exact read (``/proc/PID/statm``, cheap). New memory is private heap
    almost always, so the estimate follows growth at the full 0.2 s rate at a fraction of the
    cost (reading smaps_rollup costs 2-10 ms per large process); it can only over-count, by the
    shared pages a process newly touched since its last exact read. ``pss_every=interval``
    reads PSS exactly at every sample. The RSS sum is kept too, for reference.
    """

    def __init__(self, interval: float = SAMPLE_EVERY, pss_every: float = 1.0) -> None:
        self.interval = interval
        self.pss_every = max(pss_every, interval)
        self.before = set(_pids())
        self.me = os.getpid()
        self.root: int | None = None
        self._info: dict[int, tuple[int, float]] = {}  # pid -> (ppid at first sight, first seen)
        self._before_cmd: dict[int, str] = {}
        self._ours: set[int] = set()
        self._foreign: set[int] = set()
        self._undecided: set[int] = set()
        self._names: dict[int, str] = {}
        self._exact: dict[int, tuple[int, int]] = {}  # pid -> (PSS, RSS) at the last exact read
        self._last_exact = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mem-sampler", daemon=True)
        self.samples = 0
        self.peak_pss_kb = 0
        self.peak_rss_kb = 0
        self.peak_procs = 0
        self.peak_breakdown: list[tuple[int, str, int]] = []
        self.seen: dict[int, str] = {}
        self.cpu_s = 0.0  # CPU time the sampler itself used
        self.proc_cpu: dict[int, float] = {}  # pid -> CPU seconds at its last sample
        self.page_kb = os.sysconf("SC_PAGE_SIZE") // 1024

    def start(self, root: int) -> None:
        self.root = root
        self._ours.add(root)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        cpu0 = time.thread_time()
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                self.sample()
                self._stop.wait(max(self.interval - (time.perf_counter() - t0), 0.01))
            self.sample()
        finally:
            self.cpu_s = time.thread_time() - cpu0

    def _classify(self, live: set[int], now: float) -> None:
        assert self.root is not None
        for pid in [p for p in self._info if p not in live]:
            self._info.pop(pid, None)
            for group in (self._ours, self._foreign, self._undecided):
                group.discard(pid)
            self._exact.pop(pid, None)
        for pid in live - self._info.keys():
            ppid = _stat_ppid(pid)
            if ppid is None:
                continue
            self._info[pid] = (ppid, now)
            if pid in self.before:
                cmd = self._before_cmd.get(pid)
                if cmd is None:
                    cmd = self._before_cmd[pid] = _cmdline(pid)
                m = _SESSION.search(cmd)
                if m and int(m.group(1)) != self.root:
                    self._foreign.add(pid)
            elif pid != self.me and pid not in self._ours:
                self._undecided.add(pid)
        changed = True
        while changed and self._undecided:
            changed = False
            for pid in sorted(self._undecided):
                ppid, first = self._info[pid]
                if ppid in self._ours or ppid in self._foreign:
                    (self._ours if ppid in self._ours else self._foreign).add(pid)
                    self._undecided.discard(pid)
                    changed = True
                    continue
                cmd = _cmdline(pid)  # re-read while young: fork, then exec
                m = _SESSION.search(cmd)
                if m:
                    owner = int(m.group(1))
                    if owner == self.root:
                        self._ours.add(pid)
                    else:
                        self._foreign.add(pid)
                        if owner in live and owner not in self._ours:
                            self._foreign.add(owner)
                            self._undecided.discard(owner)
                    self._undecided.discard(pid)
                    changed = True
                elif "ray" in cmd.lower() and (ppid == 1 or ppid not in live):
                    self._ours.add(pid)  # a re-parented Ray process
                    self._undecided.discard(pid)
                    changed = True
                elif now - first > 2.0:
                    self._undecided.discard(pid)  # settled: not part of this run

    def members(self) -> list[int]:
        """The pids counted right now."""
        live = set(_pids())
        self._classify(live, time.monotonic())
        return sorted(p for p in self._ours if p in live)

    def _rss_kb(self, pid: int) -> int | None:
        text = _read(f"/proc/{pid}/statm")
        if not text:
            return None
        return int(text.split()[1]) * self.page_kb

    def sample(self) -> None:
        try:
            procs = self.members()
        except Exception:  # never let a /proc race kill the run
            return
        now = time.monotonic()
        exact_all = now - self._last_exact >= self.pss_every
        if exact_all:
            self._last_exact = now
        pss = rss = 0
        breakdown = []
        for pid in procs:
            if exact_all or pid not in self._exact:
                mem = _memory_kb(pid)
                if mem is None:
                    continue
                self._exact[pid] = mem
                p_kb, r_kb = mem
                self._names[pid] = _short_name(_cmdline(pid))
            else:
                r_kb = self._rss_kb(pid)
                if r_kb is None:
                    continue
                base_pss, base_rss = self._exact[pid]
                p_kb = max(base_pss + r_kb - base_rss, 0)
            pss += p_kb
            rss += r_kb
            cpu = _cpu_s(pid)
            if cpu is not None:
                self.proc_cpu[pid] = cpu
            name = self._names.get(pid, "?")
            breakdown.append((pid, name, p_kb))
            self.seen.setdefault(pid, name)
        self.samples += 1
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        if pss > self.peak_pss_kb:
            self.peak_pss_kb = pss
            self.peak_procs = len(breakdown)
            self.peak_breakdown = sorted(breakdown, key=lambda t: -t[2])

    def latest_name(self, pid: int) -> str:
        """The process's short name at its last exact read (Ray workers rename themselves)."""
        return self._names.get(pid) or self.seen.get(pid, "?")

    def alive(self) -> list[int]:
        """Counted processes still running, other than the root."""
        return [p for p in self.members() if p != self.root]

    def describe(self, pids: Sequence[int]) -> list[str]:
        return [f"{p} {_cmdline(p)[:160]}" for p in pids]


# ------------------------------------------------------------------------------------------
# Running one measured subprocess
# ------------------------------------------------------------------------------------------
