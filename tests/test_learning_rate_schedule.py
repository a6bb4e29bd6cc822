"""Imagic Finetune UNet's ``learning_rate_schedule`` on the real host (tiny SD1.5-family model): an optional combo
whose default is core/defaults.py's, which reaches the training loop (a graph without the input, as every graph
saved before it, trains with the default; constant is the fine-tune of before), the templates set it, and a
schedule the node does not know stops the graph with a message naming the node and the choices. The rates
themselves: tests/test_core.py. What it does to an edit: tests/test_shapes_model.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asserts import assert_clear
from graphs import imagic_graph, write_input_image
from pack import sub
from tiny_parts import finetune, sd15_parts

defaults = sub("core.defaults")
training = sub("core.training")
NODE_ID = "ImagicFinetuneUNet"
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.fixture(scope="module")
def tiny(comfy):
    return sd15_parts()


def test_the_input_is_an_optional_combo_with_a_tooltip_and_the_default_of_core_defaults(comfy):
    spec = comfy.nodes.NODE_CLASS_MAPPINGS[NODE_ID].INPUT_TYPES()["optional"]["learning_rate_schedule"]
    assert spec[0] == "COMBO"
    assert spec[1]["options"] == list(training.SCHEDULES) == ["linear_decay", "constant"]
    assert spec[1]["default"] == defaults.TUNE_SCHEDULE == "linear_decay"
    assert "never above learning_rate" in spec[1]["tooltip"] and "constant" in spec[1]["tooltip"]


def test_the_schedule_changes_the_finetune_and_constant_is_the_finetune_of_before(tiny):
    before = finetune(tiny, steps=4)  # TrainingSettings without a schedule: step A's, constant
    constant = finetune(tiny, steps=4, settings={"schedule": "constant"})
    decayed = finetune(tiny, steps=4, settings={"schedule": "linear_decay"})
    assert before.keys() == constant.keys() == decayed.keys()
    assert all(torch.equal(before[k], constant[k]) for k in before)
    assert any(not torch.equal(decayed[k], constant[k]) for k in decayed)


def outputs(comfy, image: str, schedule: str | None) -> torch.Tensor:
    graph = imagic_graph(image, embed_steps=4, tune_steps=6, tune_lr=3e-3, sample_steps=3)
    if schedule is not None:
        graph["6"]["inputs"]["learning_rate_schedule"] = schedule
    comfy.run(graph)
    return comfy.output("9").clone()


def test_on_the_executor_a_graph_without_the_input_trains_with_the_default(comfy):
    image = write_input_image(comfy.base / "input", "schedule.png")
    omitted, default, constant = (outputs(comfy, image, s) for s in (None, defaults.TUNE_SCHEDULE, "constant"))
    assert torch.equal(omitted, default)
    assert not torch.equal(default, constant)


def test_an_unknown_schedule_stops_the_node_naming_the_node_and_the_choices(comfy):
    """An API prompt can carry any value: the pack's check of combo values (nodes/widget_values.py) stops it."""
    image = write_input_image(comfy.base / "input", "schedule_bad.png")
    graph = imagic_graph(image, embed_steps=2, tune_steps=2, sample_steps=2)
    graph["6"]["inputs"]["learning_rate_schedule"] = "cosine"
    comfy.run(graph, expect_success=False)
    errors = comfy.events("execution_error")
    assert not comfy.executor.success and [e["node_id"] for e in errors] == ["6"]
    assert_clear(errors[0]["exception_message"], NODE_ID, "learning_rate_schedule is 'cosine'",
                 "'linear_decay', 'constant'")


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKFLOWS.glob("*.json")))
def test_every_template_fine_tunes_with_the_default_schedule(name):
    """The templates' Imagic Finetune UNet nodes carry the schedule (last widget) the benchmark measured."""
    nodes = [n for n in json.loads((WORKFLOWS / f"{name}.json").read_text())["nodes"] if n["type"] == NODE_ID]
    assert all(n["widgets_values"][-1] == defaults.TUNE_SCHEDULE for n in nodes), name
