"""torch's CPU thread count for training on a CPU that other work also uses.

torch starts one thread per core. On a busy machine those threads wait for each other at every operation
while the other work holds the cores: on a 2-core CPU with two other busy processes a training step with two
threads took several times as long as with one (bench/threads_under_load.py). So training on a CPU takes one
thread per core that the other work leaves free, at least one and never more than torch would use.
"""
from __future__ import annotations

import contextlib
import os
import time

import torch

SAMPLE_SECONDS = 0.2  # how long the other work's share of the CPUs is watched


def threads_for(cpus: int, busy: float, ceiling: int) -> int:
    """Threads for ``cpus`` usable CPUs of which other work keeps ``busy`` (in CPUs) occupied: one per free
    CPU, rounded to the nearest, at least 1 and at most ``ceiling`` (torch's own count, or the user's)."""
    return max(1, min(ceiling, cpus, int(cpus - busy + 0.5)))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it, else every CPU)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (steal counts as busy), or None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    total = sum(fields)
    return total - fields[3] - fields[4], total


def busy_cpus(cpus: int, seconds: float = SAMPLE_SECONDS) -> float:
    """How many of ``cpus`` other work keeps busy: the machine's busy share over ``seconds`` (this process
    sleeps meanwhile) on Linux, else the one-minute load average, else 0."""
    before = _cpu_times()
    if before is not None:
        time.sleep(seconds)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            return cpus * (after[0] - before[0]) / (after[1] - before[1])
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def training_threads() -> int:
    """The thread count for a training run starting now (``threads_for`` on this machine's CPUs and load)."""
    cpus = usable_cpus()
    return threads_for(cpus, busy_cpus(cpus), torch.get_num_threads())


@contextlib.contextmanager
def cpu_threads(device: torch.device | str):
    """torch at ``training_threads()`` threads inside the block when ``device`` is a CPU; restored after."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(training_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)
