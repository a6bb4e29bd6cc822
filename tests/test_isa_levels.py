"""The family reconstruction test once more per CPU instruction-set level below this machine's best (issue 18).

A fine-tune's quality must not depend on the CPU it runs on: on an Intel CPU with AMX, bf16 training once made
the tiny Flux model's eta=0 reconstruction 4x worse than on AVX512-BF16 or AVX2, and CI went red only on such
machines. The suite itself runs at the machine's best level; here the same test (the Flux and SDXL families, a
transformer and a UNet) runs in a child pytest with oneDNN and MKL held to a lower level, so an AVX512 machine
also checks AVX2, and an AMX machine also checks AVX512-BF16 and AVX2. The per-level MSEs are printed (-s).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELECTION = "test_b_finetuned_model_reconstructs_the_input_at_eta_0 and (flux or sdxl) and not refiner"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def lower_levels(flags: set[str]) -> list[str]:
    """oneDNN ISA levels to emulate: AVX2 always (on an AVX2-only CPU it is the suite's own level once more,
    a cheap repeat), AVX512_CORE_BF16 on a CPU with AMX (whose own level the suite covers)."""
    return ["AVX2"] + (["AVX512_CORE_BF16"] if "amx_bf16" in flags else [])


def test_lower_levels_are_chosen_from_the_cpu_flags():
    assert lower_levels({"avx2"}) == ["AVX2"]
    assert lower_levels({"avx2", "avx512f", "avx512_bf16"}) == ["AVX2"]
    assert lower_levels({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}) == ["AVX2", "AVX512_CORE_BF16"]


@pytest.mark.parametrize("level", lower_levels(cpu_flags()))
def test_family_reconstruction_at_a_lower_instruction_set_level(comfy, level):
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": level,
           "MKL_ENABLE_INSTRUCTIONS": "AVX2" if level == "AVX2" else "AVX512"}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_families.py"), "-q", "-s",
           "-p", "no:cacheprovider", "-k", SELECTION]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    lines = re.findall(r"(\w+): (eta=0 sample MSE to the input latent: .*)", proc.stdout)  # pytest -q puts dots first
    for family, reading in lines:
        print(f"{level}: {family}: {reading}")
    assert proc.returncode == 0, f"{level}:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    # both ran: the selection still matches the test and the two families
    assert sorted(family for family, _ in lines) == ["flux", "sdxl"], proc.stdout[-2000:]
