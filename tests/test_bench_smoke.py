"""The benchmark (bench/imagic_bench.py) at a tiny size, so it cannot rot: it runs every row and prints the
table. No timing is asserted."""
from __future__ import annotations

import os
import re
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
    cmd = [sys.executable, str(ROOT / "cli" / "bench.py"), "imagic_bench", "--model", "mini", "--size", "8",
           "--steps", "1", "--warmup", "1", "--threads", "1", "--no-isolate", "--edit", "on",
           "--edit-steps", "2", "2", "2", "--blocks", "all", "decoder"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, COMFYUI_PATH=str(HOST)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| stage | implementation | low_memory | s/step (median) |" in out and "ours/reference |" in out
    for stage in ("A: embedding", "B: finetune (all weights)", "B: finetune full", "B: finetune lora (all)",
                  "B: finetune lora (decoder)"):
        assert f"| {stage} |" in out, out
    assert out.count("| ours (nodes) |") == 10  # 3 stages x 2 modes, lora decoder in 2, the whole edit in 2
    assert "failed" not in out, out


def test_edit_quality_benchmark_runs_and_summarises_its_own_outputs_alike(tmp_path):
    """bench/edit_quality.py end to end on the shapes model (20 training steps, one input): every row's outputs,
    the table, the grid; and --summarise of the written outputs reproduces the table (the stored outputs are
    judged again by the same rule)."""
    if HOST is None:
        pytest.skip(NO_HOST)
    script = [str(ROOT / "cli" / "bench.py"), "edit_quality"]
    env = dict(os.environ, COMFYUI_PATH=str(HOST))
    cmd = [sys.executable, *script, "--quick", "--inputs", "1", "--seeds", "0", "--rows", "imagic_full", "sdedit",
           "--etas", "0.5", "1.0", "--starts", "noise", "photo:0.8", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = (tmp_path / "run" / "outputs.jsonl").read_text().splitlines()
    # 3 edits x (2 starts x 2 etas + 4 Auto Eta rules x (each start + both starts) + SDEdit at 6 strengths)
    assert len(records) == 3 * (2 * 2 + 4 * 3 + 6)
    table = (tmp_path / "run" / "table.md").read_text()
    for row in ("Imagic full (A 100, B 300 @1e-4), eta 0.5", "Imagic full (A 100, B 300 @1e-4), photo 0.8, eta 1",
                "Imagic full (A 100, B 300 @1e-4), any start, auto (max_gain)", "SDEdit 0.8"):
        # the templates' Imagic Centred Noise, with its default low_frequencies when not 0
        assert re.search(rf"\| {re.escape(row)} \(centred noise(, low frequencies \d+)?\) \| 3 \|", table), (row, table)
    assert (tmp_path / "run" / "grid.png").stat().st_size > 0
    again = subprocess.run([sys.executable, *script, "--summarise", str(tmp_path / "run" / "outputs.jsonl"),
                            "--out", str(tmp_path / "again")], capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again" / "table.md").read_text() == table


def test_threads_under_load_benchmark_runs_every_row():
    """bench/threads_under_load.py with 2 steps per node, one round, no spinning process and one thread (two
    collapse on this busy machine, which is the bench's point but not this test's): every row printed (the
    training nodes at torch's count and at their choice, the KSampler at each count)."""
    if HOST is None:
        pytest.skip(NO_HOST)
    cmd = [sys.executable, str(ROOT / "cli" / "bench.py"), "threads_under_load", "--steps", "2", "--rounds", "1",
           "--busy", "0", "--sample"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, COMFYUI_PATH=str(HOST), OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| idle |", "| loaded |"))]
    assert len(rows) == 6, proc.stdout  # torch's count is 1 here: one KSampler row per load
    assert "usable CPUs" in proc.stdout
