"""Hardening, round 2 (issue 23): cli/edit.py as a user runs it (a separate process) with careless input: etas
that are not numbers or too close, an --out that cannot be written, huge and 16-bit pictures, Ctrl+C, and
--eta auto's label. Bad input stops with one line on stderr before ComfyUI starts and writes nothing."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import safetensors
from PIL import Image

from conftest import HOST, NO_HOST
from graphs import write_input_image
from pack import comfy_host, sub
from test_cli import EDIT, embedded_prompt, run_edit, wrote

pytestmark = pytest.mark.skipif(HOST is None, reason=NO_HOST)
FEW = ["--embed-steps", 3, "--tune-steps", 3, "--sample-steps", 2]
grid = sub("core.grid")


def png_header(path, width: int, height: int) -> None:
    """A PNG that says it is ``width`` x ``height`` (no pixel data: Pillow refuses it on opening)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def _cases(tmp_path):
    good = tmp_path / write_input_image(tmp_path, "good.png")
    png_header(tmp_path / "huge.png", 20000, 20000)
    (tmp_path / "a_file").write_text("")
    return {
        "eta nan": (["--demo", "--eta", "nan"], ["--eta nan is not a finite number"]),
        "eta inf": (["--demo", "--eta", "0.8", "inf"], ["--eta inf is not a finite number"]),
        "eta 100": (["--demo", "--eta", "100"], ["--eta 100 is outside -10 ... 10", "give an eta in that range"]),
        "strength 0": (["--demo", "--strength", "0"], ["--strength 0 is outside (0, 1]", "pure noise"]),
        "strength 1.5": (["--demo", "--start", "photo", "--strength", "1.5"], ["--strength 1.5 is outside (0, 1]"]),
        "strength with noise": (["--demo", "--start", "noise", "--strength", "0.8"],
                                ["--strength has no effect on --start noise", "--start photo"]),
        "20000 x 20000 image": (["--image", tmp_path / "huge.png", "--text", "a dog"],
                                ["image too large", "huge.png", "400 megapixels", "scale it down"]),
        "--out is a file": (["--image", good, "--text", "a dog", "--out", tmp_path / "a_file"],
                            ["is a file, not a folder"]),
        "--out under a file": (["--image", good, "--text", "a dog", "--out", tmp_path / "a_file" / "edits"],
                               ["cannot be made", "is a file, not a folder"]),
        "--out not writable": (["--image", good, "--text", "a dog", "--out", "/proc/imagic-edits"],
                               ["--out /proc/imagic-edits is not writable", "a folder you can write to"]),
    }


@pytest.mark.parametrize("case", ["eta nan", "eta inf", "eta 100", "strength 0", "strength 1.5",
                                  "strength with noise", "20000 x 20000 image", "--out is a file",
                                  "--out under a file", "--out not writable"])
def test_bad_input_is_one_line_before_comfyui_starts(tmp_path, case):
    args, words = _cases(tmp_path)[case]
    if "--out" not in args:
        args = [*args, "--out", tmp_path / "out"]
    start = time.perf_counter()
    result = run_edit(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("imagic-edit: error: "), result.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert result.stdout == "" and not (tmp_path / "out").exists()
    assert time.perf_counter() - start < 20  # before ComfyUI's start-up and any training


def test_close_etas_get_their_own_files_and_tiles_and_repeats_run_once(tmp_path):
    """--eta 0.5 0.504 0.5: two edits named apart (eta0.500, eta0.504), the side by side shows each one's own
    edit, and the repeated 0.5 is neither run nor counted twice."""
    out = tmp_path / "out"
    result = run_edit("--demo", "--eta", "0.5", "0.504", "0.5", *FEW, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(os.path.basename(f) for f in wrote(result))
    assert names == ["demo_eta0.500_00001_.png", "demo_eta0.500_input_edit_00001_.png", "demo_eta0.504_00001_.png",
                     "demo_eta0.504_input_edit_00001_.png", "demo_input.png", "demo_side_by_side.png"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert result.stdout.splitlines()[-1] == f"6 file(s) in {out}"
    assert "eta 0.5, 0.504\n" in result.stdout
    for eta in ("0.500", "0.504"):
        mixes = [n["inputs"]["eta"] for n in embedded_prompt(out / f"demo_eta{eta}_00001_.png").values()
                 if n["class_type"] == "ImagicInterpolateConditioning"]
        assert mixes == [float(eta)]
    strip = round(grid.font_size(128) * 1.6)
    with Image.open(out / "demo_side_by_side.png") as image:
        row = np.asarray(image.convert("RGB"))
    for k, eta in enumerate(("0.500", "0.504"), 1):
        with Image.open(out / f"demo_eta{eta}_00001_.png") as edit:
            x = k * (128 + grid.GAP)
            assert np.array_equal(row[strip:, x:x + 128], np.asarray(edit.convert("RGB"))), eta
    x = 2 * (128 + grid.GAP)
    assert np.array_equal(row[:strip, x:x + 128], np.asarray(grid.label_strip("eta 0.504", 128, strip)))


def test_auto_eta_labels_the_edit_with_the_chosen_eta(tmp_path):
    """--eta auto: the input | edit picture says the eta Imagic Auto Eta chose (the one the saved fine-tune
    suggests), not 'eta 0'."""
    out = tmp_path / "out"
    result = run_edit("--demo", "--eta", "auto", "--save-finetune", *FEW, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    (finetune,) = out.glob("demo_finetune_*.safetensors")
    with safetensors.safe_open(finetune, "pt") as f:
        chosen = float(f.metadata()["imagic.suggested_eta"])
    assert f"{chosen:6.2f}" in next(line for line in result.stdout.splitlines() if "<- chosen" in line)
    strip = round(grid.font_size(128) * 1.6)
    with Image.open(out / "demo_auto_input_edit_00001_.png") as image:
        label = np.asarray(image.convert("RGB"))[:strip, 128 + grid.GAP:]
    assert np.array_equal(label, np.asarray(grid.label_strip(f"edit, eta {chosen:g}", 128, strip))), chosen
    assert not np.array_equal(label, np.asarray(grid.label_strip("edit, eta 0", 128, strip)))


@pytest.mark.parametrize("start", [["--start", "inversion", "--strength", "0.9"], ["--start", "noise"]])
def test_start_and_strength_reach_the_graph_that_ran(tmp_path, start):
    """--start/--strength replace the workflow's start with cli/start_graph.py's stock nodes; the edit's PNG
    carries the prompt that ran."""
    out = tmp_path / "out"
    result = run_edit("--demo", *start, "--eta", "0.8", *FEW, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    prompt = embedded_prompt(out / "demo_eta0.80_00001_.png")
    found = sub("cli.start_graph").find(prompt)
    if start[1] == "inversion":
        assert found.start.kind == "inversion" and found.start.strength == 0.9 and not found.start.guided
        assert sorted(n["class_type"] for n in prompt.values() if "Sampler" in n["class_type"]) == [
            "KSamplerSelect", "KSamplerSelect", "SamplerCustom", "SamplerCustom"]
    else:
        assert found.start == sub("cli.start_graph").Start("noise", 1.0)
        latent = prompt[found.node]["inputs"]["latent_image"][0]
        assert prompt[latent]["class_type"] == "EmptyLatentImage" and prompt[latent]["inputs"]["width"] == 128


def test_a_16_bit_greyscale_png_is_read_as_its_grey_not_white(tmp_path):
    """ComfyUI's Load Image divides 16-bit values by 255 and clips (almost white): the command converts the
    picture to 8 bits first. The input tile of input | edit is the picture as the edit saw it."""
    ramp = np.tile(np.linspace(0, 65535, 128).round().astype(np.uint16), (128, 1))
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode == "I;16"
    out = tmp_path / "out"
    result = run_edit("--demo", "--image", tmp_path / "grey16.png", "--eta", "0.8", *FEW, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    strip = round(grid.font_size(128) * 1.6)
    with Image.open(out / "grey16_eta0.80_input_edit_00001_.png") as image:
        seen = np.asarray(image.convert("RGB"))[strip:, :128].astype(int)
    expected = np.round(ramp / 257).astype(int)
    assert np.abs(seen - expected[..., None]).max() <= 1, (seen[0, ::16, 0], expected[0, ::16])


def test_one_ctrl_c_stops_within_a_training_step_and_writes_nothing(tmp_path):
    """One SIGINT during Imagic Finetune UNet: exit 130 before B's last step (a step of the shapes model takes
    milliseconds), no fine-tune, no edit, nothing in --out. (Before: training ran to its end, the fine-tune and
    the first edit were written, then 130.) No bound in seconds: on a loaded machine the interpreter's exit
    alone took over 5 s; the progress bar says where training stopped."""
    out = tmp_path / "out"
    env = comfy_host.child_env({**os.environ, "COMFYUI_PATH": str(HOST), "OMP_NUM_THREADS": "1"})
    process = subprocess.Popen([sys.executable, str(EDIT), "--demo", "--save-finetune", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = bytearray()  # stderr as it comes (the progress bars end their lines with \r, not \n)
    reader = threading.Thread(target=lambda: [seen.extend(b) for b in iter(lambda: process.stderr.read1(4096), b"")],
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while b"Imagic: finetune" not in seen and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"Imagic: finetune" in seen, seen[-2000:]
        time.sleep(1.0)  # well inside B's steps (the default 150: several seconds on a CPU)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        code = process.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    stderr = seen.decode(errors="replace")
    assert code == 130, stderr[-2000:]
    steps = sub("core.defaults").TUNE_STEPS
    assert f"{steps}/{steps}" not in stderr.split("Imagic: finetune", 1)[1], stderr[-2000:]
    assert took < 30, took  # a hang, not a slow exit
    assert stderr.rstrip().endswith("imagic-edit: interrupted"), stderr[-500:]
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))
