"""Imagic Save Finetune / Imagic Load Finetune on the real ComfyUI executor, with ComfyUI's own LoRA nodes.

One fine-tune graph (tiny SD1.5 model, few steps) is run and saved once; every test then loads that file
in other graphs -- after clearing the executor's caches, in a fresh Python process, through the stock
LoraLoaderModelOnly -- or breaks a copy of it. Sampled latents are compared with ``atol=1e-5`` (the same
float32 computation on the same CPU: in practice they are bit-identical).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from asserts import assert_clear, validation_message
from graphs import TARGET_TEXT, imagic_graph, write_input_image
from pack import sub

title = sub("nodes.errors").title

FAST = dict(embed_steps=4, embed_lr=2e-2, tune_steps=6, tune_lr=3e-3, sample_steps=3, eta=0.7, seed=5)
ATOL = 1e-5
TESTS = Path(__file__).resolve().parent


def save_node(prefix="imagic/test", lora=("6", 1), model=("1", 0), text="", storage="exact", rank=8, eta=0.7):
    return {"class_type": "ImagicSaveFinetune",
            "inputs": {"lora": list(lora), "optimized": ["5", 0], "model": list(model), "target_text": text,
                       "filename_prefix": prefix, "full_storage": storage, "svd_rank": rank, "suggested_eta": eta}}


def load_graph(image: str, name: str, *, loader="imagic", model_seed=0, family="sd15", check="warn", text=None,
               strength=1.0) -> dict:
    """Tiny checkpoint -> Imagic Load Finetune -> CLIP Text Encode(stored or new text) -> Interpolate(stored
    e_opt, eta = stored suggestion) -> KSampler, with FAST's sampler settings; no training node.
    ``loader="stock"``: the KSampler's model comes from LoraLoaderModelOnly on the same file instead."""
    graph = imagic_graph(image, family=family, model_seed=model_seed, **FAST)
    del graph["5"], graph["6"]
    graph["30"] = {"class_type": "ImagicLoadFinetune",
                   "inputs": {"lora_name": name, "model": ["1", 0], "strength": strength, "fingerprint_check": check}}
    graph["2"]["inputs"]["text"] = ["30", 2] if text is None else text
    graph["7"]["inputs"].update(optimized=["30", 1], eta=["30", 3])
    graph["8"]["inputs"]["model"] = ["30", 0]
    if loader == "stock":
        graph["31"] = {"class_type": "LoraLoaderModelOnly",
                       "inputs": {"model": ["1", 0], "lora_name": name, "strength_model": strength}}
        graph["8"]["inputs"]["model"] = ["31", 0]
    graph["40"] = {"class_type": "PreviewAny", "inputs": {"source": ["30", 2]}}  # an output node on the loader
    return graph


def lora_keys_not_loaded(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage()]


def loras_dir(comfy) -> Path:
    return comfy.base / "models" / "loras"


def error_of(comfy) -> dict:
    errors = comfy.events("execution_error")
    assert errors, "expected an execution error"
    return errors[0]


@pytest.fixture(scope="module")
def image(comfy):
    return write_input_image(comfy.base / "input", name="finetune_file.png")


@pytest.fixture(scope="module")
def saved(comfy, image):
    """Fine-tune (lora), sample at eta 0.7 in memory, and save; the file's name and the in-memory results."""
    graph = imagic_graph(image, **FAST)
    graph["20"] = save_node()
    comfy.run(graph)
    name = comfy.output("20")
    untuned_graph = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in graph.items()}
    untuned_graph["8"]["inputs"]["model"] = ["1", 0]
    out = {"graph": graph, "name": name, "path": loras_dir(comfy) / name, "latent": comfy.output("8")["samples"],
           "e_opt": comfy.output("5"), "lora": comfy.output("6", 1)}
    comfy.run(untuned_graph)
    out["untuned"] = comfy.output("8")["samples"]
    assert not torch.allclose(out["untuned"], out["latent"], atol=1e-3)  # the fine-tune changes the result
    return out


def test_saves_one_safetensors_in_the_loras_folder_with_the_lora_and_e_opt(comfy, saved):
    assert saved["name"] == os.path.join("imagic", "test_00001_.safetensors")
    assert saved["name"] in comfy.nodes.folder_paths.get_filename_list("loras")
    assert [p.name for p in saved["path"].parent.iterdir()] == ["test_00001_.safetensors"]  # no temp file left
    sd = safetensors.torch.load_file(saved["path"])
    lora = saved["lora"]
    assert {k for k in sd if k.startswith("diffusion_model.")} == set(lora)
    assert all(torch.equal(sd[k], v) for k, v in lora.items())
    (tensor, extras), = saved["e_opt"]
    assert set(sd) - set(lora) == {"imagic.e_opt.0.cross_attn", "imagic.e_opt.0.pooled_output"}
    assert torch.equal(sd["imagic.e_opt.0.cross_attn"], tensor)
    assert torch.equal(sd["imagic.e_opt.0.pooled_output"], extras["pooled_output"])


def test_metadata_describes_the_finetune(comfy, saved):
    with safetensors.safe_open(saved["path"], "pt") as f:
        meta = f.metadata()
    assert meta["imagic.format"] == "imagic-finetune" and meta["imagic.format_version"] == "1"
    assert meta["imagic.method"] == "lora" and meta["imagic.unet_storage"] == "lora"
    assert meta["imagic.model_family"] == "SD15"  # the ComfyUI family, not the tiny test class
    assert meta["imagic.target_text"] == TARGET_TEXT  # taken from the CLIP Text Encode feeding step A
    assert float(meta["imagic.suggested_eta"]) == 0.7
    # steps, learning rates and seeds as set on the Imagic nodes of the graph
    assert int(meta["imagic.embedding_steps"]) == FAST["embed_steps"]
    assert float(meta["imagic.embedding_learning_rate"]) == FAST["embed_lr"]
    assert int(meta["imagic.finetune_steps"]) == FAST["tune_steps"]
    assert float(meta["imagic.finetune_learning_rate"]) == FAST["tune_lr"]
    assert int(meta["imagic.embedding_seed"]) == int(meta["imagic.finetune_seed"]) == FAST["seed"]
    # the steps that trained (early stopping off here: all of them; tests/test_early_stop.py: fewer)
    assert int(meta["imagic.embedding_steps_trained"]) == FAST["embed_steps"]
    assert int(meta["imagic.finetune_steps_trained"]) == FAST["tune_steps"]
    assert int(meta["imagic.lora_rank"]) == 8
    assert meta["imagic.lora_blocks"] == "all"  # the fine-tune's lora_blocks (tests/test_lora_blocks.py: others)
    fingerprint = json.loads(meta["imagic.base_fingerprint"])
    assert len(fingerprint["architecture"]) == 32 and len(fingerprint["sample"]) >= 64
    layout = json.loads(meta["imagic.e_opt"])
    assert layout == [{"tensors": ["cross_attn", "pooled_output"], "values": {}}]


def test_round_trip_in_a_fresh_process_gives_the_in_memory_latent(comfy, saved, image, tmp_path):
    """A new Python process boots ComfyUI on the same folders, loads the file and samples."""
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps(load_graph(image, saved["name"])))
    result = tmp_path / "latent.safetensors"
    child = (
        "import json, sys; from pathlib import Path\n"
        "import safetensors.torch\n"
        "from conftest import Comfy\n"
        "c = Comfy(Path(sys.argv[2])); c.run(json.loads(Path(sys.argv[3]).read_text()))\n"
        "safetensors.torch.save_file({'samples': c.output('8')['samples'].contiguous(), "
        "'e_opt': c.output('30', 1)[0][0].contiguous()}, sys.argv[4])\n")
    proc = subprocess.run([sys.executable, "-c", child, str(TESTS), str(comfy.base), str(prompt), str(result)],
                          check=False, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(TESTS)))  # the tests' conftest, by its name
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = safetensors.torch.load_file(result)
    assert torch.equal(out["e_opt"], saved["e_opt"][0][0])
    assert torch.allclose(out["samples"], saved["latent"], atol=ATOL, rtol=0), \
        float((out["samples"] - saved["latent"]).abs().max())


def test_strength_matches_the_stock_loader(comfy, saved, image):
    comfy.run(load_graph(image, saved["name"], strength=0.5))
    half = comfy.output("8")["samples"]
    comfy.run(load_graph(image, saved["name"], strength=0.5, loader="stock"))
    assert torch.allclose(comfy.output("8")["samples"], half, atol=ATOL, rtol=0)
    assert not torch.allclose(half, saved["latent"], atol=1e-3)


def test_a_new_target_text_edits_again_without_retraining(comfy, saved, image):
    comfy.run(load_graph(image, saved["name"], text="a photo of a jumping cat"))
    edited = comfy.output("8")["samples"]
    assert torch.isfinite(edited).all() and not torch.allclose(edited, saved["latent"], atol=1e-3)
    events = [e["node"] for e in comfy.events("executing") if e.get("node")]
    assert "5" not in events and "6" not in events  # no training node in this graph


def test_interop_with_comfyuis_save_lora_and_lora_model_loader(comfy, saved, image):
    """Our LORA_MODEL through ComfyUI's SaveLoRA -> a plain LoRA file that LoraLoaderModelOnly loads to the same
    model; LoraModelLoader on the LORA_MODEL gives it too; Imagic Load Finetune refuses that plain file."""
    graph = dict(saved["graph"])
    graph["21"] = {"class_type": "SaveLoRANode", "inputs": {"lora": ["6", 1], "prefix": "loras/plain"}}
    graph["22"] = {"class_type": "LoraModelLoader",
                   "inputs": {"model": ["1", 0], "lora": ["6", 1], "strength_model": 1.0}}
    graph["8"] = {"class_type": graph["8"]["class_type"], "inputs": dict(graph["8"]["inputs"], model=["22", 0])}
    comfy.run(graph)
    assert torch.allclose(comfy.output("8")["samples"], saved["latent"], atol=ATOL, rtol=0)
    plain = comfy.base / "output" / "loras" / "plain_00001_.safetensors"
    assert plain.is_file()
    (loras_dir(comfy) / "plain").mkdir(exist_ok=True)
    shutil.copy(plain, loras_dir(comfy) / "plain" / plain.name)
    name = os.path.join("plain", plain.name)
    stock = load_graph(image, saved["name"], loader="stock")
    stock["31"]["inputs"]["lora_name"] = name
    comfy.run(stock)
    assert torch.allclose(comfy.output("8")["samples"], saved["latent"], atol=ATOL, rtol=0)
    comfy.run(load_graph(image, name), expect_success=False)
    message = error_of(comfy)["exception_message"]
    assert_clear(message, "ImagicLoadFinetune", name, "plain LoRA")


@pytest.mark.parametrize("family, seed, check, outcome", [
    ("sd15", 1, "error", "error"),  # same architecture, other weights
    ("sd15", 1, "warn", "warning"),
    ("sd15", 1, "off", "silent"),
    ("sd2", 0, "warn", "error"),  # another architecture: cannot apply, an error even in warn mode
])
def test_loading_onto_another_base_model(comfy, saved, image, caplog, family, seed, check, outcome):
    caplog.clear()
    graph = load_graph(image, saved["name"], family=family, model_seed=seed, check=check)
    if family != "sd15":  # the sampler half would not run with an SD1.5 e_opt; load only
        graph = {k: graph[k] for k in ("1", "30", "40")}
    with caplog.at_level(logging.WARNING):
        comfy.run(graph, expect_success=outcome != "error")
    warnings = [r.getMessage() for r in caplog.records if "another base model" in r.getMessage()]
    if outcome == "error":
        message = error_of(comfy)["exception_message"]
        assert message.startswith(title("ImagicLoadFinetune") + ":") and saved["name"] in message, message
        assert "another base model" in message and "Fix:" in message, message
        assert ("another architecture" if family != "sd15" else "other weights") in message, message
    elif outcome == "warning":
        assert len(warnings) == 1 and saved["name"] in warnings[0] and "other weights" in warnings[0], warnings
    else:
        assert not warnings


def test_the_same_weights_as_a_patched_clone_pass_the_check(comfy, saved, image):
    """The fingerprint is taken from the weights the model computes with (its patches applied)."""
    graph = load_graph(image, saved["name"], check="error")
    graph = {k: graph[k] for k in ("1", "30", "40")}
    graph["42"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["1", 0], "ratio": 0.5}}
    graph["30"]["inputs"]["model"] = ["42", 0]  # the same weights as a patched clone: still the same base
    comfy.run(graph)


def _pickle_with_side_effect(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create ``marker`` if anything unpickled it

    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)


def _break(kind: str, good: Path, target: Path, marker: Path) -> None:
    data = good.read_bytes()
    if kind == "corrupt":
        target.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif kind == "damaged":  # valid header, flipped bytes in the tensor data
        broken = bytearray(data)
        for i in range(len(data) - 64, len(data) - 32):
            broken[i] ^= 0xFF
        target.write_bytes(bytes(broken))
    elif kind == "plain":
        sd = safetensors.torch.load_file(good)
        safetensors.torch.save_file({k: v for k, v in sd.items() if k.startswith("diffusion_model.")}, target)
    elif kind == "edited":  # an Imagic file whose metadata says a newer format
        sd = safetensors.torch.load_file(good)
        with safetensors.safe_open(good, "pt") as f:
            meta = dict(f.metadata(), **{"imagic.format_version": "99"})
        safetensors.torch.save_file(sd, target, metadata=meta)
    else:  # "pickle": .pt / .ckpt
        _pickle_with_side_effect(target, marker)


@pytest.mark.parametrize("kind, filename, words", [
    ("corrupt", "bad/corrupt.safetensors", ["cannot be read as safetensors", "corrupt"]),
    ("truncated", "bad/truncated.safetensors", ["cannot be read as safetensors", "incomplete"]),
    ("damaged", "bad/damaged.safetensors", ["checksum"]),
    ("plain", "bad/plain.safetensors", ["plain LoRA", "Load LoRA"]),
    ("edited", "bad/newer.safetensors", ["format version 99", "update comfyui-imagic"]),
    ("pickle", "bad/evil.pt", ["'.pt' file", "never opens"]),
    ("pickle", "bad/evil.ckpt", ["'.ckpt' file", "never opens"]),
])
def test_bad_files_fail_with_a_clear_error_naming_the_file(comfy, saved, image, tmp_path, kind, filename, words):
    target = loras_dir(comfy) / filename
    target.parent.mkdir(exist_ok=True)
    marker = tmp_path / "unpickled"
    _break(kind, saved["path"], target, marker)
    name = os.path.join(*filename.split("/"))
    graph = load_graph(image, name)
    comfy.run({k: graph[k] for k in ("1", "30", "40")}, expect_success=False)
    error = error_of(comfy)
    message = error["exception_message"]
    assert error["node_type"] == "ImagicLoadFinetune", error
    assert_clear(message, "ImagicLoadFinetune", f"'{name}'")
    for w in words:
        assert w in message, message
    assert not marker.exists()  # nothing was unpickled


@pytest.mark.parametrize("prefix", ["../escaped", "imagic/../../escaped", "/tmp/imagic_escaped",
                                    "imagic/", ""])
def test_the_prefix_cannot_leave_the_loras_folder(comfy, saved, prefix):
    graph = dict(saved["graph"], **{"20": save_node(prefix=prefix)})
    before = sorted(p for p in comfy.base.rglob("*") if p.is_file())
    _, _, _, node_errors = comfy.validate(graph)  # refused by validation, before any training
    message = validation_message(node_errors, "20")
    assert_clear(message, "ImagicSaveFinetune", "filename_prefix")
    assert sorted(p for p in comfy.base.rglob("*") if p.is_file()) == before
    assert not Path("/tmp/imagic_escaped_00001_.safetensors").exists()


def test_saving_the_finetuned_model_as_base_is_refused(comfy, saved):
    graph = dict(saved["graph"], **{"20": save_node(model=("6", 0))})
    comfy.run(graph, expect_success=False)
    message = error_of(comfy)["exception_message"]
    assert "fine-tuned model" in message and "Fix:" in message, message


def test_a_failed_write_leaves_no_file(comfy, saved, monkeypatch):
    """A crash in the middle of writing (disk full) leaves neither a half file nor the temp file."""
    import comfy.utils as comfy_utils

    real = comfy_utils.save_torch_file

    def half_then_fail(sd, path, metadata=None):
        real(sd, path, metadata=metadata)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(comfy_utils, "save_torch_file", half_then_fail)
    folder = loras_dir(comfy) / "crash"
    comfy.run(dict(saved["graph"], **{"20": save_node(prefix="crash/finetune")}), expect_success=False)
    assert "No space left" in error_of(comfy)["exception_message"]
    assert list(folder.iterdir()) == []


def test_full_method_exact_and_svd_storage(comfy, image, caplog):
    """method=full: 'exact' stores the .diff (same latent as in memory, through both loaders); 'svd' stores
    ComfyUI-style lora_up/lora_down of the chosen rank (smaller file; both loaders still agree)."""
    graph = imagic_graph(image, **dict(FAST, method="full", tune_lr=1e-3))
    graph["20"] = save_node(prefix="full/exact")
    graph["21"] = save_node(prefix="full/svd", storage="svd", rank=4, text="a custom text", eta=0.5)
    comfy.run(graph)
    in_memory = comfy.output("8")["samples"]
    exact, svd = comfy.output("20"), comfy.output("21")
    lora = comfy.output("6", 1)
    for name in (exact, svd):
        with safetensors.safe_open(loras_dir(comfy) / name, "pt") as f:
            meta, keys = f.metadata(), set(f.keys())
        assert meta["imagic.method"] == "full"
        if name == exact:
            assert meta["imagic.unet_storage"] == "exact"
            assert {k for k in keys if k.startswith("diffusion_model.")} == set(lora)
        else:
            assert meta["imagic.unet_storage"] == "svd" and meta["imagic.svd_rank"] == "4"
            assert meta["imagic.target_text"] == "a custom text" and meta["imagic.suggested_eta"] == "0.5"
            assert not any(k.endswith(".diff") and lora[k].ndim >= 2 for k in keys)
            assert any(k.endswith(".lora_up.weight") for k in keys)
    assert os.path.getsize(loras_dir(comfy) / svd) < os.path.getsize(loras_dir(comfy) / exact)
    samples = {}
    for name in (exact, svd):
        for loader in ("imagic", "stock"):
            comfy.run(load_graph(image, name, loader=loader))
            samples[name, loader] = comfy.output("8")["samples"]
    assert torch.allclose(samples[exact, "imagic"], in_memory, atol=ATOL, rtol=0)
    assert torch.allclose(samples[exact, "stock"], in_memory, atol=ATOL, rtol=0)
    assert torch.allclose(samples[svd, "stock"], samples[svd, "imagic"], atol=ATOL, rtol=0)


def test_training_settings_are_read_through_primitive_nodes(comfy):
    """The metadata's steps/learning rates/seeds come from the queued prompt, also when a widget is fed by a
    primitive node; learning_rate 0 on Imagic Finetune UNet means the method's default."""
    ff = sub("nodes.prompt_graph")
    prompt = {
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ["12", 0]}},
        "5": {"class_type": "ImagicOptimizeEmbedding", "inputs": {"conditioning": ["2", 0], "steps": ["11", 0],
                                                                  "learning_rate": 0.002, "seed": 3}},
        "6": {"class_type": "ImagicFinetuneUNet",
              "inputs": {"conditioning": ["5", 0], "steps": 1500, "learning_rate": 0.0,
                         "method": "lora", "seed": ["13", 0]}},
        "11": {"class_type": "PrimitiveInt", "inputs": {"value": 1000}},
        "12": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a dog"}},
        "13": {"class_type": "SomeSeedNode", "inputs": {"a": 1, "b": 2}},  # not a primitive: left out
        "20": save_node(),
    }
    settings = ff.graph_settings(prompt, "20")
    lora_default = sub("core.defaults").LEARNING_RATE["lora"]  # learning_rate 0: the method's default
    assert settings.training == {"embedding_steps": 1000, "embedding_learning_rate": 0.002, "embedding_seed": 3,
                                 "finetune_steps": 1500, "finetune_learning_rate": lora_default}
    assert settings.target_text == "a dog" and settings.wrong_e_opt is None
    prompt["20"]["inputs"]["optimized"] = ["99", 0]  # an e_opt other than the fine-tune's
    assert "#5 ImagicOptimizeEmbedding" in ff.graph_settings(prompt, "20").wrong_e_opt
    assert ff.graph_settings(None, None).training == {}


def test_svd_extraction_is_comfyuis(comfy):
    """core.lora.svd_extract with ComfyUI's clamp gives the factors of
    comfy_extras.nodes_lora_extract.extract_lora; without it (the default) it is closer to the delta."""
    from comfy_extras.nodes_lora_extract import extract_lora

    lora = sub("core.lora")
    g = torch.Generator().manual_seed(0)
    for shape, rank in (((48, 40), 8), ((32, 16, 3, 3), 6), ((24, 20, 1, 1), 5)):
        diff = torch.randn(shape, generator=g)
        up, down = lora.svd_extract(diff, rank, clamp_quantile=0.99)
        ref_up, ref_down = extract_lora(diff, rank)
        assert up.shape == ref_up.shape and down.shape == ref_down.shape
        product = up.flatten(1) @ down.flatten(1)
        ref = ref_up.flatten(1) @ ref_down.flatten(1)
        assert torch.allclose(product, ref, atol=1e-4), float((product - ref).abs().max())
        up, down = lora.svd_extract(diff, rank)
        error = float((up.flatten(1) @ down.flatten(1) - diff.flatten(1)).norm())
        assert error < float((ref - diff.flatten(1)).norm())


def test_cancel_during_svd_extraction_leaves_no_file(comfy, image):
    import comfy.utils as comfy_utils

    def hook(value, total, preview, prompt_id=None, node_id=None):
        if total > 20 and value == 2:  # the save node's SVD extractions (training and sampling have fewer steps)
            comfy.nodes.interrupt_processing()

    graph = imagic_graph(image, **dict(FAST, method="full", tune_lr=1e-3))
    graph["20"] = save_node(prefix="cancel/finetune", storage="svd", rank=2)
    comfy_utils.set_progress_bar_global_hook(hook)
    try:
        comfy.run(graph, expect_success=False)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    interrupted = comfy.events("execution_interrupted")
    assert interrupted and interrupted[0]["node_type"] == "ImagicSaveFinetune"
    assert not (loras_dir(comfy) / "cancel").exists() or list((loras_dir(comfy) / "cancel").iterdir()) == []


def test_nodes_have_tooltips_and_help_pages(comfy):
    root = TESTS.parent
    for node_id in ("ImagicSaveFinetune", "ImagicLoadFinetune"):
        cls = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
        schema = cls.GET_SCHEMA()
        assert schema.category == "Imagic" and schema.description
        assert all(i.tooltip for i in schema.inputs), node_id
        assert all(o.tooltip for o in schema.outputs), node_id
        assert (root / "js" / "docs" / node_id / "en.md").is_file()


# Last: it clears the executor's caches, which the tests above rely on to skip retraining.
def test_after_clearing_caches_imagic_and_stock_loaders_give_the_in_memory_latent(comfy, saved, image, caplog):
    comfy.executor.reset()  # nothing cached: the tiny model, the file, the sampler all run again
    sub("nodes.finetune_file")._CACHE.clear()  # and the loader's last-file cache
    comfy.run(load_graph(image, saved["name"]))
    ours = comfy.output("8")["samples"]
    assert torch.allclose(ours, saved["latent"], atol=ATOL, rtol=0)
    (tensor, extras), = comfy.output("30", 1)
    (ref_tensor, ref_extras), = saved["e_opt"]
    assert torch.equal(tensor, ref_tensor) and torch.equal(extras["pooled_output"], ref_extras["pooled_output"])
    assert comfy.output("30", 2) == TARGET_TEXT and comfy.output("30", 3) == 0.7

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        comfy.run(load_graph(image, saved["name"], loader="stock"))
    assert torch.allclose(comfy.output("8")["samples"], ours, atol=ATOL, rtol=0)
    # The stock loader skips the two e_opt tensors with one line each, and nothing else.
    assert sorted(lora_keys_not_loaded(caplog)) == ["lora key not loaded: imagic.e_opt.0.cross_attn",
                                                    "lora key not loaded: imagic.e_opt.0.pooled_output"]
    assert not [r for r in caplog.records if "NOT LOADED" in r.getMessage()]
