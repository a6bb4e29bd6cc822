"""core/threads.py: the training nodes' thread count on a CPU that other work also uses (issue 24: the shapes
demo took 25 min in the server on a busy 2-core CPU against 30 s idle; bench/threads_under_load.py)."""
from __future__ import annotations

import pytest
import torch

from pack import sub

threads = sub("core.threads")


@pytest.mark.parametrize(("cpus", "busy", "ceiling", "expected"), [
    (2, 0.0, 2, 2),    # idle: every core, as torch would
    (2, 0.4, 2, 2),    # a little background work rounds away
    (2, 0.6, 2, 1),    # most of a core taken
    (2, 2.0, 2, 1),    # both cores taken by others: one thread, never none
    (2, 7.5, 2, 1),
    (16, 4.2, 16, 12),
    (16, 0.0, 8, 8),   # never more than torch's (or the user's) count
    (16, 0.0, 1, 1),   # OMP_NUM_THREADS=1 stays 1
    (4, 0.0, 32, 4),   # nor more than the CPUs
])
def test_one_thread_per_cpu_the_other_work_leaves_free(cpus, busy, ceiling, expected):
    assert threads.threads_for(cpus, busy, ceiling) == expected


def test_busy_cpus_on_this_machine_is_a_share_of_its_cpus():
    cpus = threads.usable_cpus()
    assert cpus >= 1
    busy = threads.busy_cpus(cpus, seconds=0.05)
    assert busy >= 0.0
    if threads._cpu_times() is not None:  # Linux: the busy share of the CPUs (a load average may exceed them)
        assert busy <= cpus + 1e-9


def test_cpu_threads_sets_the_choice_for_the_block_and_restores_torch_after(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "training_threads", lambda: 1)
    try:
        torch.set_num_threads(2)
        with threads.cpu_threads("cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads.cpu_threads(torch.device("cpu")):
            raise RuntimeError("a failed run restores too")
        assert torch.get_num_threads() == 2
        with threads.cpu_threads("meta"):  # not a CPU (a GPU's device): torch's count untouched
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
