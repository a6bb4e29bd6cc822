"""Hardening, round 2 (issue 23) on the real ComfyUI executor: the newer nodes (Imagic Labelled Grid, Imagic
Auto Eta, the shapes checkpoint, Imagic Save Finetune) with bad or hostile input. Each case stops with an error
that names the node and the fix (``asserts.assert_clear``), or, for the grid, stays fast and cancellable. The
command-line cases are in ``test_cli_hardening.py``."""
from __future__ import annotations

import threading
import time

import pytest

from asserts import assert_clear
from pack import ROOT, sub

grid = sub("core.grid")
GRID = "ImagicLabelledGrid"


# ---------------------------------------------------------------------------------------------------------------
# Bug 1: long labels were fitted in quadratic time (24,000 characters: 195 s) and Cancel waited for the node.


def _within(seconds: float, work) -> bool:
    """Whether ``work()`` returns within ``seconds`` (run in a daemon thread: a runaway does not block the suite)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_100000_character_label_is_fitted_in_under_a_second():
    start = time.perf_counter()
    assert _within(5.0, lambda: grid.label_strip("x" * 100_000, 128, 22)), "label fitting took over 5 s"
    assert time.perf_counter() - start < 1.0
    from PIL import Image, ImageDraw

    text, font = grid._fit(ImageDraw.Draw(Image.new("RGB", (1, 1))), "x" * 100_000, 124, 14)
    assert text.endswith(grid.ELLIPSIS) and 1 < len(text) < 124 and font.size == grid.MIN_FONT


def _long_label_graph(length: int) -> dict:
    return {
        "1": {"class_type": "ImagicShapesScene", "inputs": {"colour": "red", "shape": "circle", "position": "left",
                                                            "seed": 0}},
        "2": {"class_type": GRID, "inputs": {"images": ["1", 0], "images_2": ["1", 0], "images_3": ["1", 0],
                                             "labels": "\n".join(c * length for c in "xyz"), "columns": 0}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def test_long_labels_do_not_stall_the_executor(comfy):
    """The issue's graph (scene -> grid with long labels): 6,000 characters took ~12 s per tile before."""
    start = time.perf_counter()
    comfy.run(_long_label_graph(6000))
    assert time.perf_counter() - start < 3.0
    assert tuple(comfy.output("2").shape[1:]) == (round(grid.font_size(128) * 1.6) + 128, 3 * 128 + 2 * grid.GAP, 3)


def test_cancel_stops_the_grid_between_tiles(comfy):
    """An interrupt (Cancel) raised while the grid lays out its tiles stops it at the next tile."""
    from comfy import model_management, utils

    calls = []

    def hook(value, total, preview, node_id=None):
        calls.append((value, total))
        model_management.interrupt_current_processing(True)  # the user presses Cancel during the first tile

    before = utils.PROGRESS_BAR_HOOK
    utils.set_progress_bar_global_hook(hook)
    try:
        comfy.run(_long_label_graph(10), expect_success=False)
    finally:
        utils.set_progress_bar_global_hook(before)
        model_management.interrupt_current_processing(False)
    interrupted = comfy.events("execution_interrupted")
    assert interrupted and interrupted[0]["node_id"] == "2", comfy.executor.status_messages
    assert calls == [(0, 3)]


# ---------------------------------------------------------------------------------------------------------------
# Bug 6 (the node side): a label that names the eta comes from the eta wired in; the font's coverage is stated.


def _two_tiles(labels: str, **more) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}},
        "2": {"class_type": GRID, "inputs": {"images": ["1", 0], "images_2": ["1", 0], "labels": labels,
                                             "columns": 0, **more}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def test_eta_in_a_label_is_the_eta_wired_beside_its_tile(comfy):
    graph = _two_tiles("input\nedit, eta {eta}", eta_2=["4", 0])
    graph["4"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 0.85}}
    comfy.run(graph)
    strip = round(grid.font_size(64) * 1.6)
    label = comfy.output("2")[0, :strip, 64 + grid.GAP:]
    expected = grid.pil_to_tensor(grid.label_strip("edit, eta 0.85", 64, strip))[0]
    assert (label - expected).abs().max() < 1e-6


def test_eta_in_a_label_with_no_eta_wired_is_refused(comfy):
    comfy.run(_two_tiles("input\nedit, eta {eta}"), expect_success=False)
    assert_clear(comfy.error_message().split(": ", 1)[1], GRID, "label line 2", "eta_2", "images_2",
                 "Imagic Interpolate Conditioning")


def test_the_grid_says_its_font_draws_latin_letters_only():
    schema = sub("nodes.labelled_grid").ImagicLabelledGrid.define_schema()
    (labels,) = [i for i in schema.inputs if i.id == "labels"]
    assert "Latin letters only" in labels.tooltip and "emoji" in labels.tooltip
    assert "Latin letters only" in (ROOT / "js" / "docs" / "ImagicLabelledGrid" / "en.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The shipped shapes checkpoint, damaged: checked against the sha256 recorded beside it ("reinstall the pack").


def _damage(kind: str, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "bit-flipped":
        data = bytearray(good)
        data[len(data) // 2] ^= 0x10  # inside the tensors: loads, then trains to NaN
        return bytes(data)
    import safetensors.torch
    import torch

    return safetensors.torch.save({"weight": torch.zeros(4, 4)})  # another safetensors file


@pytest.mark.parametrize("kind", ["truncated", "bit-flipped", "another safetensors"])
def test_a_damaged_shapes_checkpoint_says_reinstall(comfy, tmp_path, monkeypatch, kind):
    sc = sub("demo.shapes_checkpoint")
    shipped = sc.CHECKPOINT
    assert sc.digest_path(shipped).is_file(), "the shipped checkpoint's sha256 is not beside it"
    copy = tmp_path / shipped.name
    copy.write_bytes(_damage(kind, shipped.read_bytes()))
    sc.digest_path(copy).write_bytes(sc.digest_path(shipped).read_bytes())
    monkeypatch.setattr(sc, "CHECKPOINT", copy)
    comfy.run({"1": {"class_type": "ImagicShapesCheckpoint", "inputs": {}},
               "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
               "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}, expect_success=False)
    assert_clear(comfy.error_message().split(": ", 1)[1], "ImagicShapesCheckpoint", str(copy),
                 "damaged or was replaced", "sha256", "reinstall the pack")


def test_the_shipped_shapes_checkpoint_matches_its_recorded_sha256():
    sc = sub("demo.shapes_checkpoint")
    sc.check_shipped(sc.CHECKPOINT)
