"""The headless edit command (cli/edit.py) as a user runs it: a separate process, --demo, the batch mode, and
one clear line and nothing written for each kind of bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import HOST, NO_HOST
from graphs import write_input_image
from pack import ROOT, comfy_host, sub

pytestmark = pytest.mark.skipif(HOST is None, reason=NO_HOST)
EDIT = ROOT / "cli" / "edit.py"


def run_edit(*args, env_extra=None, cwd=None):
    # one torch thread: this shared 2-core machine runs tiny models far faster so (see conftest.py)
    # tests only: the stand-ins where torchvision/spandrel have no build here (the command itself never adds them)
    env = comfy_host.child_env({**os.environ, "COMFYUI_PATH": str(HOST), "OMP_NUM_THREADS": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, str(EDIT), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600, check=False)


def wrote(result) -> list[str]:
    return [line.removeprefix("wrote ") for line in result.stdout.splitlines() if line.startswith("wrote ")]


def embedded_prompt(path) -> dict:
    """The API prompt ComfyUI's Save Image writes into the PNG."""
    with Image.open(path) as image:
        return json.loads(image.info["prompt"])


def inputs_of(prompt: dict, class_type: str) -> list[dict]:
    return [n["inputs"] for n in prompt.values() if n["class_type"] == class_type]


def test_demo_edits_a_held_out_picture_with_the_shapes_model(tmp_path):
    out = tmp_path / "out"
    result = run_edit("--demo", "--eta", "0.5", "0.9", "--save-finetune", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    files = wrote(result)
    assert sorted(os.path.basename(f) for f in files) == [
        "demo_eta0.50_00001_.png", "demo_eta0.50_input_edit_00001_.png", "demo_eta0.90_00001_.png",
        "demo_eta0.90_input_edit_00001_.png", "demo_finetune_00001_.safetensors", "demo_input.png",
        "demo_side_by_side.png"]
    assert all(os.path.isfile(f) and os.path.dirname(f) == str(out) for f in files)
    assert result.stdout.splitlines()[-1] == f"7 file(s) in {out}"
    assert "Imagic: optimize embedding" in result.stderr and "Imagic: finetune" in result.stderr  # progress bars
    prompt = embedded_prompt(out / "demo_eta0.90_00001_.png")
    assert inputs_of(prompt, "ImagicShapesCheckpoint") == [{}] and not inputs_of(prompt, "CheckpointLoaderSimple")
    assert inputs_of(prompt, "ImagicInterpolateConditioning")[0]["eta"] == 0.9
    assert inputs_of(prompt, "CLIPTextEncode")[0]["text"] == "a blue circle on the left"
    world = sub("demo.shapes_world")
    with Image.open(out / "demo_input.png") as image:
        source = world.read(np.asarray(image.convert("RGB"), np.float32) / 255)
    assert (source.colour, source.shape, source.position) == ("red", "circle", "left")  # held out of training
    with Image.open(out / "demo_eta0.90_00001_.png") as image:
        assert image.size == (128, 128)
        edit = np.asarray(image.convert("RGB"))
    reading = world.read(edit.astype(np.float32) / 255)
    assert (reading.colour, reading.position) == ("blue", "left"), reading  # the edit, where the input was
    # input | eta 0.5 | eta 0.9, each under its label, the last tile this edit
    grid = sub("core.grid")
    strip = round(grid.font_size(128) * 1.6)
    with Image.open(out / "demo_side_by_side.png") as image:
        assert image.size == (3 * 128 + 2 * grid.GAP, strip + 128)
        row = np.asarray(image.convert("RGB"))
    assert np.array_equal(row[strip:, 2 * (128 + grid.GAP):], edit)
    assert (row[:strip] < 128).any(), "no label drawn"


def test_batch_mode_takes_a_tedbench_list(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_input_image(images, "cat.png")
    write_input_image(images, "dog.png", size=48)
    entries = [{"img_name": "cat.png", "target_text": "a photo of a cat wearing a hat"},
               {"img_name": "dog.png", "target_text": "a photo of a sitting dog"}]
    (tmp_path / "input_list.json").write_text(json.dumps(entries))
    out = tmp_path / "out"
    result = run_edit("--demo", "--batch", tmp_path / "input_list.json", "--image-dir", images,
                      "--eta", "0.6", "0.8", "--embed-steps", 3, "--tune-steps", 3, "--sample-steps", 2, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(os.path.basename(f) for f in wrote(result))
    assert names == sorted(f"{stem}_eta{eta}{kind}_00001_.png" for stem in ("001_cat", "002_dog")
                           for eta in ("0.60", "0.80") for kind in ("", "_input_edit"))
    assert "[1/2] cat.png" in result.stdout and "[2/2] dog.png" in result.stdout
    prompt = embedded_prompt(out / "002_dog_eta0.80_00001_.png")
    texts = [i["text"] for i in inputs_of(prompt, "CLIPTextEncode")]
    assert "a photo of a sitting dog" in texts
    assert inputs_of(prompt, "ImagicInterpolateConditioning")[0]["eta"] == 0.8


def _bad_inputs(tmp_path):
    good = tmp_path / write_input_image(tmp_path, "good.png")
    (tmp_path / "broken.png").write_text("not a picture")
    (tmp_path / "list.json").write_text(json.dumps([{"img_name": "good.png", "target_text": "a dog"},
                                                    {"img_name": "gone.png", "target_text": "a cat"}]))
    return {
        "bad image path": (["--image", tmp_path / "missing.png", "--text", "a dog"], {}, "image not found"),
        "unreadable image": (["--image", tmp_path / "broken.png", "--text", "a dog"], {}, "cannot read image"),
        "missing checkpoint": (["--image", good, "--text", "a dog", "--ckpt", "no-such-model.safetensors"], {},
                               "checkpoint not found: no-such-model.safetensors"),
        "unknown ComfyUI path (--comfyui)": (["--demo", "--comfyui", tmp_path / "nowhere"], {},
                                             "not a ComfyUI folder"),
        "unknown ComfyUI path (COMFYUI_PATH)": (["--demo"], {"COMFYUI_PATH": str(tmp_path / "nowhere")},
                                                "is not a ComfyUI folder"),
        "batch entry with a missing image": (["--demo", "--batch", tmp_path / "list.json"], {},
                                             "entry 2: image not found"),
    }


@pytest.mark.parametrize("case", ["bad image path", "unreadable image", "missing checkpoint",
                                  "unknown ComfyUI path (--comfyui)", "unknown ComfyUI path (COMFYUI_PATH)",
                                  "batch entry with a missing image"])
def test_bad_input_gives_one_clear_line_and_writes_nothing(tmp_path, case):
    args, env, phrase = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    result = run_edit(*args, "--out", out, env_extra=env, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("imagic-edit: error: ") and phrase in lines[0], result.stderr
    assert result.stdout == ""
    assert not out.exists()


def test_thread_count_is_the_training_nodes_choice_unless_the_user_sets_one(monkeypatch):
    """One thread per CPU that other work leaves free (core.threads, as the training nodes choose; torch's one
    per core collapsed on a busy CPU: bench/threads_under_load.py), unless --threads or OMP_NUM_THREADS say."""
    import torch

    edit = sub("cli.edit")
    threads = sub("core.threads")
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_cpus", lambda cpus, seconds=0: float(cpus))  # every CPU taken
    try:
        torch.set_num_threads(2)
        assert edit.set_threads(edit.parse_args(["--demo"])) == 1
        assert edit.set_threads(edit.parse_args(["--image", "x.png"])) == 1
        assert edit.set_threads(edit.parse_args(["--demo", "--threads", "2"])) == 2
        with pytest.raises(sub("cli.edit_inputs").InputError):
            edit.set_threads(edit.parse_args(["--demo", "--threads", "0"]))
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert edit.set_threads(edit.parse_args(["--demo"])) == 2  # the user's setting stays
    finally:
        torch.set_num_threads(before)


def test_method_from_the_command_line_takes_its_own_default_learning_rate(comfy):
    """--method full on a workflow that has lora's default rate trains at full's (0 = the method's default), not
    at lora's; a rate the workflow's author typed stays."""
    edit_prompt = sub("cli.edit_prompt")
    defaults = sub("core.defaults").LEARNING_RATE
    workflow_api = sub("cli.workflow_api")
    prompt = workflow_api.to_api(json.loads((ROOT / "workflows" / "imagic_edit.json").read_text()),
                                 workflow_api.object_info_in_process())
    (tune,) = [n for n in prompt.values() if n["class_type"] == "ImagicFinetuneUNet"]
    assert tune["inputs"]["learning_rate"] == defaults["lora"]
    full = edit_prompt.apply_settings(prompt, edit_prompt.EditSettings(method="full"))
    (tune,) = [n for n in full.values() if n["class_type"] == "ImagicFinetuneUNet"]
    assert tune["inputs"]["method"] == "full" and tune["inputs"]["learning_rate"] == 0
    tune_id = next(k for k, n in prompt.items() if n["class_type"] == "ImagicFinetuneUNet")
    prompt[tune_id]["inputs"]["learning_rate"] = 3e-6
    kept = edit_prompt.apply_settings(prompt, edit_prompt.EditSettings(method="full"))
    assert kept[tune_id]["inputs"]["learning_rate"] == 3e-6
