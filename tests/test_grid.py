"""core/grid.py and Imagic Labelled Grid: tiles kept pixel for pixel, a legible label above each, the node in
ComfyUI's executor, and a clear error when labels and tiles do not match."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from asserts import assert_clear
from pack import ROOT, sub

grid = sub("core.grid")


def _tile(seed: int, size=(128, 128)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _ink_box(strip: Image.Image):
    """(left, top, right, bottom) of the non-background pixels, or None."""
    dark = np.asarray(strip.convert("L")) < 128
    if not dark.any():
        return None
    ys, xs = np.nonzero(dark)
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_row_keeps_every_tile_and_writes_each_label_above_it():
    tiles = [_tile(i) for i in range(3)]
    out = grid.labelled_row(tiles, ["input", "eta 0.7", "eta 1.0"])
    strip = round(grid.font_size(128) * 1.6)
    assert out.size == (3 * 128 + 2 * grid.GAP, strip + 128)
    strips = []
    for i, tile in enumerate(tiles):
        x = i * (128 + grid.GAP)
        assert np.array_equal(np.asarray(out.crop((x, strip, x + 128, strip + 128))), np.asarray(tile))
        strips.append(np.asarray(out.crop((x, 0, x + 128, strip))))
        assert _ink_box(out.crop((x, 0, x + 128, strip))) is not None, f"label {i} not drawn"
    assert not np.array_equal(strips[1], strips[2]), "different labels drew the same strip"


def test_label_is_legible_on_a_128_px_tile_and_stays_inside_it():
    strip = grid.label_strip("eta 0.7", 128, round(grid.font_size(128) * 1.6))
    left, top, right, bottom = _ink_box(strip)
    assert bottom - top + 1 >= 10, f"text only {bottom - top + 1} px high"  # digits and 't' of 14 px type
    assert right - left + 1 >= 40
    long = grid.label_strip("edit: a photo of a sitting dog on a red sofa, eta 0.7", 128, 22)
    left, _, right, _ = _ink_box(long)
    assert left >= 1 and right <= 126, "a long label ran off its tile"


def test_grid_rows_columns_and_tiles_of_different_sizes():
    tiles = [_tile(0, (64, 64)), _tile(1, (128, 96)), _tile(2, (32, 32))]
    out = grid.labelled_grid(tiles, ["", "", ""], columns=2)
    # no label: no strip; cells of the largest tile; 2 rows
    assert out.size == (2 * 128 + grid.GAP, 2 * 96 + grid.GAP)
    x, y = (128 - 64) // 2, (96 - 64) // 2
    assert np.array_equal(np.asarray(out.crop((x, y, x + 64, y + 64))), np.asarray(tiles[0]))
    x, y = (128 - 32) // 2, 96 + grid.GAP + (96 - 32) // 2
    assert np.array_equal(np.asarray(out.crop((x, y, x + 32, y + 32))), np.asarray(tiles[2]))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        grid.labelled_grid(tiles, ["a", "b"])


def test_tensor_round_trip():
    images = torch.rand(2, 16, 24, 3)
    pils = grid.tensor_to_pils(images)
    assert [p.size for p in pils] == [(24, 16)] * 2
    back = grid.pil_to_tensor(pils[1])
    assert back.shape == (1, 16, 24, 3) and 0 <= (images[1] - back[0]).min() and (images[1] - back[0]).max() < 1 / 255


def _graph(labels: str, columns: int = 0) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0xFF0000}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 0x0000FF}},
        "3": {"class_type": "ImagicLabelledGrid",
              "inputs": {"images": ["1", 0], "images_2": ["2", 0], "labels": labels, "columns": columns}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def test_node_in_the_executor_lays_out_every_frame_in_input_order(comfy):
    comfy.run(_graph("input\neta 0.5\neta 1.0\n", columns=2))
    out = comfy.output("3")
    strip = round(grid.font_size(64) * 1.6)
    assert out.shape == (1, 2 * (strip + 48) + grid.GAP, 2 * 64 + grid.GAP, 3)
    cells = [(0, strip), (64 + grid.GAP, strip), (0, 2 * strip + 48 + grid.GAP)]
    colours = [(1, 0, 0), (0, 0, 1), (0, 0, 1)]
    for (x, y), rgb in zip(cells, colours, strict=True):
        assert torch.equal(out[0, y + 24, x + 32], torch.tensor(rgb, dtype=out.dtype))
    assert out[0, :strip, :64].min() < 0.5, "the first label was not drawn"


def test_node_refuses_labels_that_do_not_match_the_tiles(comfy):
    comfy.run(_graph("input\nedit"), expect_success=False)
    error = comfy.events("execution_error")[0]
    assert error["node_type"] == "ImagicLabelledGrid"
    assert_clear(Exception(error["exception_message"]), "ImagicLabelledGrid", "3 tiles", "2 label lines")


def test_schema_has_tooltips_and_a_help_page(comfy):
    schema = sub("nodes.labelled_grid").ImagicLabelledGrid.define_schema()
    assert schema.description and all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    assert (ROOT / "js" / "docs" / "ImagicLabelledGrid" / "en.md").is_file()
