"""Early stopping (issue 21) on the real ComfyUI executor: a training node with ``early_stop`` on ends a plateauing
run before its ``steps``, says where in its loss chart (ui output) and log, and Imagic Save Finetune records the
steps that trained. The stop rule itself is tested host-free in tests/test_core.py."""
from __future__ import annotations

import logging

import pytest
import safetensors

from graphs import imagic_graph, write_input_image
from pack import sub

defaults = sub("core.defaults")
EVERY = 2  # checks every 2 steps here (the nodes read core/defaults.py when they train): a short test
STEPS = 60  # far more than the stop needs: a plateau stops after EARLY_STOP_MIN_CHECKS checks
# Learning rates too small to move anything: the held-out loss is flat from the first check (a plateau)
PLATEAU = dict(embed_steps=STEPS, embed_lr=1e-7, tune_steps=STEPS, tune_lr=1e-9, sample_steps=2, seed=3)
FIRST_STOP = EVERY * max(defaults.EARLY_STOP_MIN_CHECKS, defaults.EARLY_STOP_PATIENCE + 1)


@pytest.fixture(scope="module", autouse=True)
def checks_often():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(defaults, "EARLY_STOP_EVERY", EVERY)
        yield


@pytest.fixture(scope="module")
def stopped(comfy):
    """One graph, both training nodes with early stop on, saved by Imagic Save Finetune."""
    image = write_input_image(comfy.base / "input", name="early_stop.png")
    graph = imagic_graph(image, **PLATEAU, early_stop=True)
    graph["20"] = {"class_type": "ImagicSaveFinetune",
                   "inputs": {"lora": ["6", 1], "optimized": ["5", 0], "model": ["1", 0], "target_text": "",
                              "filename_prefix": "imagic_early_stop/run", "full_storage": "exact", "svd_rank": 8,
                              "suggested_eta": 0.7}}
    comfy.run(graph)
    with safetensors.safe_open(comfy.base / "models" / "loras" / comfy.output("20"), "pt") as f:
        meta = f.metadata()
    return {"ui": {n: comfy.executor.caches.ui.get(n)["output"]["imagic_loss"][0] for n in ("5", "6")},
            "loss": {"5": comfy.output("5", 1)["loss"], "6": comfy.output("6", 2)["loss"]}, "meta": meta}


def test_both_nodes_stop_a_plateauing_run_before_steps_and_the_chart_says_where(stopped):
    for node in ("5", "6"):
        run, losses = stopped["ui"][node], stopped["loss"][node]
        assert len(losses) == FIRST_STOP < STEPS  # flat from the first check: stops after the fewest checks
        assert run["steps"] == STEPS and run["stopped_at"] == FIRST_STOP and len(run["losses"]) == FIRST_STOP


def test_the_saved_finetune_records_the_steps_that_trained(stopped):
    meta = stopped["meta"]
    assert int(meta["imagic.embedding_steps"]) == int(meta["imagic.finetune_steps"]) == STEPS  # the nodes' bound
    assert int(meta["imagic.embedding_steps_trained"]) == int(meta["imagic.finetune_steps_trained"]) == FIRST_STOP
    info = sub("core.finetune_format").read_metadata(meta)
    assert info.training["embedding_steps_trained"] == info.training["finetune_steps_trained"] == FIRST_STOP


def test_with_early_stop_off_every_step_trains_and_nothing_is_marked_stopped(comfy, caplog):
    image = write_input_image(comfy.base / "input", name="early_stop.png")
    graph = imagic_graph(image, **{**PLATEAU, "embed_steps": FIRST_STOP + 5, "tune_steps": 3}, early_stop=False)
    with caplog.at_level(logging.INFO):
        comfy.run(graph)
    run = comfy.executor.caches.ui.get("5")["output"]["imagic_loss"][0]
    assert len(comfy.output("5", 1)["loss"]) == run["steps"] == FIRST_STOP + 5 and run["stopped_at"] is None
    assert sub("nodes.training_run").steps_trained(comfy.output("6", 1)) == 3
    assert not [r for r in caplog.records if "stopped early" in r.getMessage()]


def test_both_training_nodes_offer_early_stop_with_a_tooltip_and_the_default_of_core_defaults(comfy):
    for node_id in ("ImagicOptimizeEmbedding", "ImagicFinetuneUNet"):
        spec = comfy.nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["optional"]["early_stop"]
        assert spec[0] == "BOOLEAN" and spec[1]["default"] is defaults.EARLY_STOP
        assert "held-out" in spec[1]["tooltip"] and "steps" in spec[1]["tooltip"]
