"""demo/shapes_world.py: captions, the held-out split, reproducible scenes, and a reader that recovers the
attributes of true renders and refuses blends (no ComfyUI needed)."""
from __future__ import annotations

import numpy as np

from pack import sub

world = sub("demo.shapes_world")


def test_caption_and_its_parse():
    assert world.caption("red", "circle", "left") == "a red circle on the left"
    assert world.caption("blue", "square", "top") == "a blue square at the top"
    for combo in world.ALL_COMBOS:
        assert world.parse_caption(world.caption(*combo)) == combo
    assert world.parse_caption("a photo of a dog") is None


def test_held_out_combinations_cover_every_value_and_are_not_trained():
    assert not set(world.HELD_OUT) & set(world.TRAIN_COMBOS)
    assert len(world.TRAIN_COMBOS) + len(world.HELD_OUT) == len(world.ALL_COMBOS) == 48
    for i, values in enumerate((world.COLOURS, world.SHAPES, world.POSITIONS)):
        assert {c[i] for c in world.HELD_OUT} == set(values)


def test_scenes_are_reproducible_and_vary_the_unnamed_details():
    a = world.render(world.scene_for_seed("red", "circle", "left", 3))
    assert np.array_equal(a, world.render(world.scene_for_seed("red", "circle", "left", 3)))
    scenes = [world.scene_for_seed("red", "circle", "left", s) for s in range(20)]
    assert np.ptp([s.background for s in scenes]) > 0.2 and np.ptp([s.size for s in scenes]) > 0.02
    assert a.shape == (128, 128, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1


def test_reader_recovers_true_renders():
    acc = world.reader_accuracy(n=300, seed=7)
    assert acc["colour"] >= 0.98 and acc["position"] >= 0.98 and acc["shape"] >= 0.95, acc
    assert acc["size_max_error"] < 0.02 and acc["background_max_error"] < 0.01, acc


def test_reader_counts_a_blended_colour_and_an_empty_picture_as_failures():
    scene = world.scene_for_seed("red", "circle", "left", 0)
    red = world.render(scene)
    blue = world.render(world.Scene(**{**scene.__dict__, "colour": "blue"}))
    assert world.read(red).colour == "red" and world.read(blue).colour == "blue"
    assert world.read(0.5 * red + 0.5 * blue).colour is None  # purple: neither red nor blue
    empty = world.read(np.full((128, 128, 3), 0.4, np.float32))
    assert empty.colour is None and empty.shape is None and empty.position is None and empty.size == 0
    assert abs(empty.background - 0.4) < 1e-6


def test_size_as_drawn_is_what_the_reader_finds_for_the_object_redrawn_in_another_shape():
    """An edit that turns the input's circle into a triangle keeps its size when the reader finds the triangle's
    size of the same extent, not the circle's (the benchmark's "unnamed kept")."""
    scene = world.scene_for_seed("red", "circle", "left", 4)
    triangle = world.Scene(**{**scene.__dict__, "shape": "triangle"})
    as_drawn = world.size_as_drawn(scene, "triangle", "square")
    assert abs(world.read(world.render(triangle)).size - as_drawn) < 0.02
    assert as_drawn < world.true_size(scene) - 0.03  # the circle's size would fail a correct shape edit
    assert world.size_as_drawn(scene, None, "square") == world.true_size(world.Scene(**{**scene.__dict__,
                                                                                     "shape": "square"}))
