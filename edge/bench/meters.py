"""What a benchmark part costs the machine: the process's memory (peak and current RSS,
from ``/proc``), the CPU time of each of its threads, and :class:`PartMeter`, the wall
time, CPU time per kind of thread and peak RSS of one part of `bench video`.
"""

from __future__ import annotations

import os
import resource
import threading
import time


def _status_kb(key: str) -> int | None:
    """A ``kB`` line of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS mark (VmHWM) at the current RSS; False where the
    kernel does not allow it (then a part's peak includes what came before)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def process_memory() -> dict:
    """Peak RSS over the process's life (getrusage) and current RSS (VmRSS), in MiB."""
    return {
        "peak_rss_mb": _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "rss_mb": _mb(_status_kb("VmRSS")),
    }


def thread_ids() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _thread_cpu() -> dict[int, tuple[str, int]]:
    """Every thread's name and CPU time (user + system, clock ticks) from /proc."""
    out = {}
    for tid in thread_ids():
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (name, int(rest[11]) + int(rest[12]))
    return out


class ThreadCpu:
    """CPU time per kind of thread over a part, from /proc/self/task sampled a few
    times a second, so threads that end before the part does (capture threads,
    FFmpeg's decoder threads) still count, to within one interval."""

    INTERVAL_S = 0.25

    def __init__(self, model_threads: set[int]):
        self.model_threads = model_threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-cpu", daemon=True)

    def start(self) -> None:
        self._first = _thread_cpu()
        self._last = dict(self._first)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group of threads."""
        self._stop.set()
        self._thread.join()
        self._last.update(_thread_cpu())
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        groups: dict[str, float] = {}
        for tid, (name, ticks) in self._last.items():
            used = (ticks - self._first.get(tid, (name, 0))[1]) / tick
            group = self._group(tid, name)
            if group is not None:
                groups[group] = groups.get(group, 0.0) + used
        return groups

    def _group(self, tid: int, name: str) -> str | None:
        if tid == self._thread.native_id:
            return None  # this sampler
        if tid == os.getpid():
            return "processing"
        if name.startswith("camera-"):
            return "capture"
        if name.startswith("av:"):
            return "ffmpeg_decoders"
        if tid in self.model_threads:
            return "onnxruntime_pool"
        return "other"

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self._last.update(_thread_cpu())


class PartMeter:
    """Wall time, process CPU time (per kind of thread) and peak RSS of one part of the
    benchmark. ``model_threads``: the threads opening the models started (onnxruntime's
    pools)."""

    def __init__(self, model_threads: set[int] = frozenset()):
        self._threads = ThreadCpu(set(model_threads))

    def __enter__(self) -> PartMeter:
        self.peak_reset = _reset_peak_rss()
        self._cpu = _cpu_seconds()
        self._threads.start()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = _cpu_seconds() - self._cpu
        self.by_thread = self._threads.stop()
        self.peak_kb = _status_kb("VmHWM")
        self.rss_kb = _status_kb("VmRSS")

    def to_json(self) -> dict:
        wall = self.wall_s or 1.0
        return {
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 2),
            # Busy cores over the part (all threads: capture, processing, onnxruntime's
            # pool), against os.cpu_count().
            "cpu_cores_busy": round(self.cpu_s / wall, 2),
            "cpu_count": os.cpu_count(),
            "cores_by_thread": {
                name: round(used / wall, 2) for name, used in sorted(self.by_thread.items())
            },
            "peak_rss_mb": _mb(self.peak_kb),
            "peak_rss_is_this_part_only": self.peak_reset,
            "rss_mb_at_end": _mb(self.rss_kb),
        }


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
