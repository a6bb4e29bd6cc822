"""The benchmark (bench/imagic_bench.py) at a tiny size, so it cannot rot: it runs every row and prints the
table. No timing is asserted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HOST, NO_HOST

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_every_row_and_prints_the_table():
    if HOST is None:
        pytest.skip(NO_HOST)
    pytest.importorskip("diffusers")
    cmd = [sys.executable, str(ROOT / "bench" / "imagic_bench.py"), "--model", "mini", "--size", "8", "--steps", "1",
           "--warmup", "1", "--threads", "1", "--no-isolate", "--edit", "on", "--edit-steps", "2", "2", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, COMFYUI_PATH=str(HOST)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| stage | implementation | low_memory | s/step (median) |" in out and "ours/reference |" in out
    for stage in ("A: embedding", "B: finetune (all weights)", "B: finetune full", "B: finetune lora"):
        assert f"| {stage} |" in out, out
    assert out.count("| ours (nodes) |") == 8  # 3 stages x 2 modes + the whole edit in 2 modes
    assert "failed" not in out, out
