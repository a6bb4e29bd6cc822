"""Per-step wall time and peak memory of one benchmark stage."""
from __future__ import annotations

import itertools
import resource
import statistics
import time
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory inside the ``with`` block: ``torch.cuda.max_memory_allocated`` on CUDA; on a CPU the
    process's peak resident set size (Linux: the high-water mark is reset on entry, so the figure is this
    block's; elsewhere ``ru_maxrss``, the peak since the process started)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes = 0
        self.kind = "max_memory_allocated" if device.type == "cuda" else "peak RSS"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                _CLEAR_REFS.write_text("5")  # reset VmHWM to the current RSS
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.bytes = _vm_hwm() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StepClock:
    """Call ``tick()`` at the end of every step (after the step's loss was read back, so an accelerator has
    finished it); ``median(warmup)`` is the median step time after ``warmup`` steps."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def tick(self, *_args, **_kwargs) -> None:
        self.stamps.append(time.perf_counter())

    def durations(self) -> list[float]:
        edges = [self.start] + self.stamps
        return [b - a for a, b in itertools.pairwise(edges)]

    def median(self, warmup: int) -> float:
        times = self.durations()[warmup:] or self.durations()
        return statistics.median(times) if times else float("nan")
