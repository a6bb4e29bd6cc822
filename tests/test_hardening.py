"""Hardening (issue 11) on the real ComfyUI executor: a careless user's and an attacker's values and files.

Every case stops with an error that starts with the node's title and says the problem and the fix
(``asserts.assert_clear``), and leaves no file or half-file in ``models/loras``. The values the frontend would
not send (a combo value outside its list, NaN) go through ``/prompt`` in ``test_hardening_server.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from asserts import assert_clear, validation_message
from graphs import imagic_graph, write_input_image
from pack import sub
from test_finetune_file import FAST, error_of, load_graph, loras_dir, save_node

fmt = sub("core.finetune_format")
SAVE, LOAD = "ImagicSaveFinetune", "ImagicLoadFinetune"


def files(comfy) -> list[Path]:
    """Every file under models/loras, hidden ones (temp files) included."""
    return sorted(p for p in loras_dir(comfy).rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture(scope="module")
def image(comfy):
    return write_input_image(comfy.base / "input", name="hardening.png")


@pytest.fixture(scope="module")
def saved(comfy, image):
    graph = imagic_graph(image, **FAST)
    graph["20"] = save_node(prefix="hardening/good")
    comfy.run(graph)
    name = comfy.output("20")
    return {"graph": graph, "name": name, "path": loras_dir(comfy) / name}


def run_error(comfy, graph: dict) -> str:
    """Run ``graph`` (it validates), expect an execution error, return its message."""
    comfy.run(graph, expect_success=False)
    return error_of(comfy)["exception_message"]


def with_save(saved, **kwargs) -> dict:
    return dict(saved["graph"], **{"20": save_node(**{"prefix": "hardening/again", **kwargs})})


# ---------------------------------------------------------------------------------------------------
# Bug 1: the fine-tuned model read back from the file is not a base model


@pytest.mark.parametrize("loader", ["stock", "imagic"])
def test_the_finetuned_model_read_back_from_the_file_is_refused_as_base(comfy, saved, loader):
    graph = with_save(saved, model=("31", 0))
    if loader == "stock":
        graph["31"] = {"class_type": "LoraLoaderModelOnly",
                       "inputs": {"model": ["1", 0], "lora_name": saved["name"], "strength_model": 1.0}}
    else:
        graph["31"] = {"class_type": LOAD, "inputs": {"lora_name": saved["name"], "model": ["1", 0], "strength": 1.0,
                                                      "fingerprint_check": "warn"}}
    before = files(comfy)
    assert_clear(run_error(comfy, graph), SAVE, "already contains this fine-tune", "model that feeds")
    assert files(comfy) == before


def test_the_base_with_another_lora_is_still_a_base(comfy, saved, image):
    """An unrelated LoRA on the base (here: another seed's fine-tune) is not mistaken for this fine-tune."""
    other = imagic_graph(image, **dict(FAST, seed=9))
    other["20"] = save_node(prefix="hardening/other")
    comfy.run(other)
    other_name = comfy.output("20")
    graph = with_save(saved, model=("31", 0), prefix="hardening/stacked")
    graph["31"] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["1", 0], "lora_name": other_name, "strength_model": 1.0}}
    comfy.run(graph)
    assert comfy.output("20").startswith(os.path.join("hardening", "stacked"))


# ---------------------------------------------------------------------------------------------------
# Bug 2 and the prefix weak points: checked by /prompt validation, before any training


@pytest.mark.parametrize("prefix, words", [
    ("a" * 237, ["256 bytes", "allows 255"]),  # 237 + "_00001_.safetensors" = 256
    ("/".join(["d"] * 2000) + "/x", ["nests 2000 folders", "at most 32"]),
    ("imagic/fine\x00tune", ["control character", "U+0000"]),
    ("imagic/fine\ntune", ["control character", "U+000A"]),
    (".hidden/finetune", ["starting with '.'"]),
    ("imagic/.finetune", ["starting with '.'"]),
])
def test_bad_prefixes_are_refused_before_training(comfy, saved, prefix, words):
    before = files(comfy)
    _, _, _, node_errors = comfy.validate(with_save(saved, prefix=prefix))
    assert_clear(validation_message(node_errors, "20"), SAVE, "filename_prefix", *words)
    assert files(comfy) == before


def test_the_longest_prefix_that_fits_saves(comfy, saved):
    """255 bytes with the counter: the temporary name is not longer than the final one any more."""
    comfy.run(with_save(saved, prefix="b" * 236))
    assert comfy.output("20") == "b" * 236 + "_00001_.safetensors"
    assert [p.name for p in files(comfy) if p.name.startswith("b")] == ["b" * 236 + "_00001_.safetensors"]
    assert not [p for p in files(comfy) if p.name.startswith(".")]


def test_a_symlink_out_of_the_loras_folder_is_refused(comfy, saved, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    link = loras_dir(comfy) / "hardening_link"
    link.symlink_to(outside, target_is_directory=True)
    try:
        before = files(comfy)
        _, _, _, node_errors = comfy.validate(with_save(saved, prefix="hardening_link/finetune"))
        assert_clear(validation_message(node_errors, "20"), SAVE, "symbolic link", str(outside), "extra_model_paths")
        # also when the prefix comes through a link the validation cannot see: checked again when saving
        graph = with_save(saved, prefix=["50", 0])
        graph["50"] = {"class_type": "PrimitiveString", "inputs": {"value": "hardening_link/finetune"}}
        assert_clear(run_error(comfy, graph), SAVE, "symbolic link")
        assert files(comfy) == before and not any(outside.iterdir())
    finally:
        link.unlink()


@pytest.mark.parametrize("first", ["5", "6"], ids=["optimize embedding", "finetune unet"])
def test_a_target_text_too_large_for_the_file_is_refused_before_training(comfy, saved, first):
    """Checked by the training node that runs first, before it trains (not by the Save node's validation, which
    would report a bad prefix against target_text too: issue 23). '6': a graph without Optimize Embedding."""
    graph = with_save(saved, text="x" * (fmt.MAX_TEXT_BYTES + 1))
    graph[first] = {**graph[first], "inputs": {**graph[first]["inputs"], "seed": 77}}  # not cached: it runs
    if first == "6":
        graph = {k: v for k, v in graph.items() if k not in ("5", "7", "8", "9", "10")}
        graph["6"]["inputs"]["conditioning"] = graph["20"]["inputs"]["optimized"] = ["2", 0]
    before = files(comfy)
    comfy.run(graph, expect_success=False)  # validation passes it; the training node refuses it
    error = error_of(comfy)
    assert error["node_id"] == first, error
    assert_clear(error["exception_message"], SAVE, "#20", f"{fmt.MAX_TEXT_BYTES + 1} bytes", "before training",
                 "shorten target_text")
    assert "check_texts_to_save" in "".join(error["traceback"])  # at the start of execute, before training
    assert files(comfy) == before


def test_a_bad_prefix_is_reported_once_against_filename_prefix(comfy, saved):
    """Issue 23: ComfyUI reports a failed validate_inputs against each of its arguments; the prefix error was
    reported twice, once against target_text."""
    _, _, _, node_errors = comfy.validate(with_save(saved, prefix="../escaped", text="a photo of a sitting dog"))
    errors = node_errors["20"]["errors"]
    assert [e["extra_info"]["input_name"] for e in errors] == ["filename_prefix"], errors
    assert_clear(validation_message(node_errors, "20"), SAVE, "filename_prefix", "'../escaped'",
                 "short relative prefix inside the loras folder")


def test_optimized_wired_to_the_target_text_is_refused(comfy, saved):
    graph = with_save(saved)
    graph["20"]["inputs"]["optimized"] = ["2", 0]  # e_tgt, not e_opt
    before = files(comfy)
    assert_clear(run_error(comfy, graph), SAVE, "not the e_opt the fine-tune was trained on", "#2 CLIPTextEncode",
                 "#5 ImagicOptimizeEmbedding")
    assert files(comfy) == before


# ---------------------------------------------------------------------------------------------------
# Bugs 4, 5 and the wrong-shape weak point: files edited with a valid checksum


def rewrite(good: Path, target: Path, *, tensors=None, meta=None) -> None:
    """A copy of ``good`` with some tensors and metadata replaced and the checksum recomputed."""
    sd = safetensors.torch.load_file(good)
    with safetensors.safe_open(good, "pt") as f:
        metadata = dict(f.metadata())
    sd.update(tensors(sd) if tensors else {})
    metadata.update(meta or {})
    metadata["imagic.tensors_sha256"] = fmt.tensors_digest(sd)
    safetensors.torch.save_file(sd, target, metadata=metadata)


E_OPT = "imagic.e_opt.0.cross_attn"


def first_up(sd: dict) -> str:
    return sorted(k for k in sd if k.endswith(".lora_up.weight"))[0]


EDITS = {
    "eta_nan": (dict(meta={"imagic.suggested_eta": "nan"}), ["suggested eta", "nan", "not a finite number"]),
    "eta_inf": (dict(meta={"imagic.suggested_eta": "inf"}), ["suggested eta", "inf"]),
    "e_opt_nan": (dict(tensors=lambda sd: {E_OPT: sd[E_OPT] * float("nan")}), [E_OPT, "NaN or infinite"]),
    "unet_inf": (dict(tensors=lambda sd: {first_up(sd): sd[first_up(sd)] + float("inf")}),
                 ["lora_up", "NaN or infinite"]),
    "fingerprint_list": (dict(meta={"imagic.base_fingerprint": "[1,2]"}), ["base model fingerprint", "invalid"]),
    "fingerprint_text": (dict(meta={"imagic.base_fingerprint": '{"architecture": "x", "tensors": 1, "sample": ["a"]}'}),
                         ["base model fingerprint"]),
    "layout_dict": (dict(meta={"imagic.e_opt": '{"tensors": 1}'}), ["e_opt layout", "invalid"]),
    "layout_names": (dict(meta={"imagic.e_opt": '[{"tensors": [1, 2]}]'}), ["e_opt layout"]),
    "e_opt_2d": (dict(tensors=lambda sd: {E_OPT: sd[E_OPT][0]}), ["(batch, tokens, width)"]),
    "unet_shape": (dict(tensors=lambda sd: {first_up(sd): torch.zeros(3, sd[first_up(sd)].shape[1],
                                                                      *sd[first_up(sd)].shape[2:])}),
                   ["does not fit", "lora_up"]),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_files_are_refused_by_name(comfy, saved, image, edit):
    change, words = EDITS[edit]
    name = os.path.join("hardening", f"edited_{edit}.safetensors")
    rewrite(saved["path"], loras_dir(comfy) / name, **change)
    graph = load_graph(image, name, check="off")
    assert_clear(run_error(comfy, {k: graph[k] for k in ("1", "30", "40")}), LOAD, f"'{name}'", *words)


# ---------------------------------------------------------------------------------------------------
# Other weak points: interpolation widths, latents of other families


def test_interpolation_of_embeddings_of_different_widths_names_the_width(comfy):
    graph = {
        "1": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "sd15", "seed": 0}},
        "2": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "sdxl", "seed": 0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a dog"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a dog"}},
        "5": {"class_type": "ImagicInterpolateConditioning", "inputs": {"optimized": ["3", 0], "target": ["4", 0],
                                                                       "eta": 0.7}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }
    message = run_error(comfy, graph)
    assert_clear(message, "ImagicInterpolateConditioning", "widths differ", "2048", "768", "CLIP")
    assert "token length" not in message and "75 tokens" not in message, message


def test_a_latent_with_another_channel_count_is_refused_both_ways(comfy, image):
    """What can be told apart: the channel count. (SD1, SD2 and SDXL latents all have 4 channels and carry
    nothing else that says which VAE made them: README, Bad input.)"""
    graph = imagic_graph(image, family="sd3", embed_steps=2, tune_steps=2)
    graph["31"] = {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "sd15", "seed": 0}}
    graph["4"]["inputs"]["vae"] = ["31", 2]  # an SD1.5 latent (4 channels) into SD3 (16)
    assert_clear(run_error(comfy, graph), "ImagicOptimizeEmbedding", "4 channels", "16-channel", "VAE")



def test_a_text_encoding_of_another_width_is_refused_naming_the_input_and_the_text(comfy, image):
    """SD2's 1024-wide text encoding into SD1.5 (768): the training node refuses it before training (one check,
    shared with Imagic Auto Eta's, names the input and what to re-encode)."""
    graph = imagic_graph(image, family="sd15", embed_steps=2, tune_steps=2)
    graph["31"] = {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "sd2", "seed": 0}}
    graph["2"]["inputs"]["clip"] = ["31", 1]
    assert_clear(run_error(comfy, graph), "ImagicOptimizeEmbedding", "conditioning input is 1024 wide",
                 "SD15 model expects 768", "encode the target text with the CLIP of the same checkpoint")
