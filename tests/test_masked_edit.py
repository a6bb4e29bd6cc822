"""The masked edit (workflows/imagic_edit_masked.json, built from imagic_edit by cli/family_templates.py): stock
nodes only, training on the whole photo, the edit sampled inside the mask (Set Latent Noise Mask) and pasted onto
the photo (ImageCompositeMasked). On the shipped shapes model through the real executor, as ``cli/edit.py --demo
--mask`` runs it: outside the mask the result is the input, pixel for pixel (and the sampled latent decodes there
within the VAE round trip of the input); inside, the target text's colour is reached."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import HOST, NO_HOST
from pack import ROOT, sub
from workflow_env import load

world = sub("demo.shapes_world")
MASKED = "imagic_edit_masked"
SOURCE, SCENE_SEED = ("green", "square", "right"), 101  # held out of training (tests/test_shapes_model.py EDITS)
TARGET = ("blue", "square", "right")
MARGIN = 8  # pixels around the mask where the decoder's reach mixes inside and outside


def by_type(prompt: dict, class_type: str) -> list[str]:
    return [k for k, n in prompt.items() if n["class_type"] == class_type]


def test_masked_template_is_built_from_imagic_edit_as_committed():
    build = sub("cli.family_templates").build_masked
    assert json.loads((ROOT / "workflows" / f"{MASKED}.json").read_text(encoding="utf-8")) == build()


def test_masked_template_trains_on_the_whole_photo_and_edits_inside_the_mask():
    """Wiring, from the file as the frontend saves it: A and B take the photo's latent without a mask; the
    sampler starts from the same latent with the mask as its noise mask; what is saved is the decoded edit
    pasted onto the photo through the same mask; only stock nodes besides the Imagic ones."""
    workflow = load(MASKED)
    assert {n["type"] for n in workflow["nodes"] if not n["type"].startswith("Imagic")} <= {
        "MarkdownNote", "CheckpointLoaderSimple", "LoadImage", "LoadImageMask", "MaskToImage", "ImageScale",
        "ImageToMask", "VAEEncode", "CLIPTextEncode", "SetLatentNoiseMask", "KSampler", "VAEDecode",
        "ImageCompositeMasked", "SaveImage"}
    links = {k[0]: k for k in workflow["links"]}
    nodes = {n["id"]: n for n in workflow["nodes"]}

    def source(node_id: int, name: str) -> dict:
        (item,) = [i for i in nodes[node_id]["inputs"] if i["name"] == name]
        return nodes[links[item["link"]][1]]

    def one(node_type: str) -> int:
        (node,) = [n["id"] for n in workflow["nodes"] if n["type"] == node_type and n["mode"] == 0]
        return node

    encode = one("VAEEncode")
    for trainer in ("ImagicOptimizeEmbedding", "ImagicFinetuneUNet"):
        assert source(one(trainer), "latent")["id"] == encode  # the whole photo
    noise_mask = source(one("KSampler"), "latent_image")
    assert noise_mask["type"] == "SetLatentNoiseMask" and source(noise_mask["id"], "samples")["id"] == encode
    mask = source(noise_mask["id"], "mask")
    composite = one("ImageCompositeMasked")
    assert source(composite, "mask") is mask and source(composite, "source")["type"] == "VAEDecode"
    assert source(composite, "destination") is source(encode, "pixels")  # the photo as the edit sees it
    assert all(source(n["id"], "images")["id"] in (composite, one("ImagicLabelledGrid"))
               for n in workflow["nodes"] if n["type"] == "SaveImage")
    scales = [n for n in workflow["nodes"] if n["type"] == "ImageScale"]  # the mask resized like the photo
    assert len(scales) == 2 and len({tuple(n["widgets_values"][1:]) for n in scales}) == 1
    assert not [n for n in workflow["nodes"] if n["type"] in ("EmptyLatentImage", "ImagicAutoEta")]


def object_mask(scene, size: int = world.SIZE, room: float = 0.06) -> np.ndarray:
    """A square mask (1 = edit) over the scene's object with ``room`` (fraction of the side) around it."""
    cx, cy = world.centre(scene)
    half = scene.size * 1.15 + room  # the triangle's reach, the largest of the three shapes
    ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size
    return ((np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)).astype(np.float32)


@pytest.fixture(scope="module")
def masked_edit(comfy):
    """The masked template on the shapes model as ``cli/edit.py --demo --mask`` builds it (its settings: the node
    defaults, 128 px), one training run; plus the VAE round trip of the input, to compare the outside with."""
    if HOST is None:
        pytest.skip(NO_HOST)
    edit_prompt, demo = sub("cli.edit_prompt"), sub("demo.shapes_demo")
    workflow_api = sub("cli.workflow_api")
    scene = world.scene_for_seed(*SOURCE, SCENE_SEED)
    pixels = world.render(scene)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(comfy.base / "input" / "masked_photo.png")
    mask = object_mask(scene)
    Image.fromarray((mask * 255).astype(np.uint8), "L").save(comfy.base / "input" / "masked_mask.png")
    prompt = demo.use_shapes_model(workflow_api.to_api(load(MASKED), workflow_api.object_info_in_process()))
    prompt = edit_prompt.apply_settings(prompt, edit_prompt.EditSettings(**demo.SETTINGS))
    prompt = edit_prompt.for_edit(prompt, "masked_photo.png", world.caption(*TARGET), 0.8, "masked_edit",
                                  mask="masked_mask.png")
    (encode,) = by_type(prompt, "VAEEncode")
    (decode,) = by_type(prompt, "VAEDecode")
    (composite,) = by_type(prompt, "ImageCompositeMasked")
    photo = prompt[encode]["inputs"]["pixels"][0]
    prompt["900"] = {"class_type": "VAEDecode", "inputs": {"samples": [encode, 0], "vae": prompt[decode]["inputs"]
                                                           ["vae"]}}  # the round trip
    prompt["901"] = {"class_type": "PreviewImage", "inputs": {"images": ["900", 0]}}
    comfy.run(prompt)
    out = {name: comfy.output(node)[0].float().numpy() for name, node in
           (("photo", photo), ("round_trip", "900"), ("decoded", decode), ("result", composite))}
    return scene, mask, out


def test_outside_the_mask_is_the_input_and_inside_reaches_the_target(masked_edit):
    scene, mask, out = masked_edit
    assert np.array_equal(out["photo"], world.render(scene))  # 128 px in: the resize changes nothing
    outside = mask == 0
    # away from the mask's edge (MARGIN px), where the decoder sees only the outside latent
    far = np.ones_like(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    far[max(ys.min() - MARGIN, 0):ys.max() + MARGIN + 1, max(xs.min() - MARGIN, 0):xs.max() + MARGIN + 1] = False

    def error(picture, where):
        return float(np.abs(picture - out["photo"])[where].mean())

    numbers = {"result_outside_max": float(np.abs(out["result"] - out["photo"])[outside].max()),
               "round_trip_outside": error(out["round_trip"], outside),
               "decoded_outside": error(out["decoded"], outside),
               "round_trip_far": error(out["round_trip"], far), "decoded_far": error(out["decoded"], far),
               "inside_change": error(out["result"], mask == 1)}
    reading = world.read(out["result"])
    report = json.dumps({**{k: round(v, 4) for k, v in numbers.items()},
                         "read": [reading.colour, reading.shape, reading.position]})
    print(report)
    # (a) the composite keeps the photo outside the mask exactly; the sampled latent itself stays there within
    # the VAE round trip (Set Latent Noise Mask holds it to the photo's latent), up to a small margin
    assert numbers["result_outside_max"] == 0.0, report
    assert numbers["decoded_far"] <= numbers["round_trip_far"] + 0.01, report
    # (b) inside, the target: blue, and the square stays a square on the right
    assert (reading.colour, reading.shape, reading.position) == TARGET, report
    assert numbers["inside_change"] > 0.05, report


# ---------------------------------------------------------------------------------------------------------------
# cli/edit.py --mask, as a user runs it (a separate process).

FEW = ["--embed-steps", 3, "--tune-steps", 3, "--sample-steps", 2]
DEMO_SCENE = ("red", "circle", "left"), 100  # demo/shapes_demo.py: the demo's picture


def write_mask(path, mask: np.ndarray):
    Image.fromarray((mask * 255).astype(np.uint8), "L").save(path)
    return path


@pytest.mark.skipif(HOST is None, reason=NO_HOST)
def test_cli_mask_runs_the_masked_template_and_keeps_the_outside(tmp_path):
    from test_cli import embedded_prompt, run_edit, wrote

    mask = object_mask(world.scene_for_seed(*DEMO_SCENE[0], DEMO_SCENE[1]))
    out = tmp_path / "out"
    result = run_edit("--demo", "--mask", write_mask(tmp_path / "mask.png", mask), "--eta", "0.8", *FEW,
                      "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.rsplit("/", 1)[1] for p in wrote(result)) == [
        "demo_eta0.80_00001_.png", "demo_eta0.80_input_edit_00001_.png", "demo_input.png", "demo_side_by_side.png"]
    with Image.open(out / "demo_input.png") as a, Image.open(out / "demo_eta0.80_00001_.png") as b:
        photo, edit = (np.asarray(i.convert("RGB")).astype(int) for i in (a, b))
    assert np.array_equal(photo[mask == 0], edit[mask == 0])  # the photo, pixel for pixel
    assert np.abs(photo - edit)[mask == 1].mean() > 1  # something was drawn inside
    prompt = embedded_prompt(out / "demo_eta0.80_00001_.png")
    (loader,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "LoadImageMask"]
    assert loader["channel"] == "red" and loader["image"] == "001_mask.png"
    assert [n for n in prompt.values() if n["class_type"] == "SetLatentNoiseMask"]


def _bad_masks(tmp_path):
    from graphs import write_input_image

    good = write_mask(tmp_path / "good.png", np.ones((128, 128), np.float32))
    (tmp_path / "broken.png").write_text("not a picture")
    write_input_image(tmp_path, "photo.png", size=64)
    (tmp_path / "list.json").write_text(json.dumps([{"img_name": "photo.png", "target_text": "a dog"}]))
    return {
        "missing": (["--demo", "--mask", tmp_path / "gone.png"], ["mask not found", "gone.png"]),
        "unreadable": (["--demo", "--mask", tmp_path / "broken.png"], ["cannot read mask", "broken.png"]),
        "wrong size": (["--demo", "--mask", write_mask(tmp_path / "small.png", np.ones((64, 64), np.float32))],
                       ["is 64 x 64 pixels but the photo is 128 x 128", "give a mask of the photo's size",
                        "not resized"]),
        "wrong size for --image": (["--image", tmp_path / "photo.png", "--text", "a dog", "--mask", good],
                                   ["is 128 x 128 pixels but the photo is 64 x 64"]),
        "black": (["--demo", "--mask", write_mask(tmp_path / "black.png", np.zeros((128, 128), np.float32))],
                  ["black everywhere", "paint white where the edit goes"]),
        "with --batch": (["--demo", "--batch", tmp_path / "list.json", "--mask", good],
                         ["--mask goes with one photo", "not --batch"]),
        "with --eta auto": (["--demo", "--eta", "auto", "--mask", good], ["--eta auto", "give etas as numbers"]),
    }


@pytest.mark.skipif(HOST is None, reason=NO_HOST)
@pytest.mark.parametrize("case", ["missing", "unreadable", "wrong size", "wrong size for --image", "black",
                                  "with --batch", "with --eta auto"])
def test_cli_bad_mask_is_one_line_before_comfyui_starts_and_writes_nothing(tmp_path, capsys, monkeypatch, case):
    """The command's main() in this process (each check runs before ComfyUI starts); the wrong size also as a
    user runs it, in a separate process."""
    args, words = _bad_masks(tmp_path)[case]
    args = [*map(str, args), "--out", str(tmp_path / "out")]
    monkeypatch.setenv("COMFYUI_PATH", str(HOST))
    assert sub("cli.edit").main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagic-edit: error: "), captured.err[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert captured.out == "" and not (tmp_path / "out").exists()
    if case == "wrong size":
        from test_cli import run_edit

        result = run_edit(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.strip() == lines[0], result.stderr[-2000:]
        assert result.stdout == "" and not (tmp_path / "out").exists()


def test_mask_file_reading_white_or_opaque_is_edit(tmp_path):
    """--mask's reading (cli/edit_inputs.py mask_pixels): a grey's value (16-bit scaled to 8 bits); a picture
    with transparency: its alpha (opaque = edit), whatever its colours; a fully opaque RGBA: its grey."""
    inputs = sub("cli.edit_inputs")
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    Image.fromarray(ramp, "L").save(tmp_path / "grey.png")
    Image.fromarray(ramp.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = ramp  # black everywhere, the alpha the ramp
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    rgba[..., :3], rgba[..., 3] = ramp[..., None], 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    for name in ("grey", "grey16", "alpha", "opaque"):
        assert np.array_equal(inputs.mask_pixels(tmp_path / f"{name}.png"), ramp), name
    staged = inputs.mask_ready(tmp_path / "alpha.png", tmp_path, "staged")
    with Image.open(tmp_path / staged) as image:
        assert image.mode == "L" and np.array_equal(np.asarray(image), ramp)
