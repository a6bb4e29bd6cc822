"""Imagic Finetune UNet's ``lora_blocks`` on the real host (tiny SD1.5-family model): a part trains only its layers
(LoRA and full), autograd never runs below the first trained block (gradient checkpointing included), ``all`` is
the fine-tune of before, a decoder-only fine-tune still reconstructs the photo, Imagic Save Finetune records the
choice and Imagic Load Finetune reads files saved before it existed. The name rules: tests/test_blocks.py."""
from __future__ import annotations

import collections
import types

import pytest
import safetensors
import safetensors.torch
import torch
import torch.utils.checkpoint

from asserts import assert_clear
from graphs import imagic_graph, sampler_only, write_input_image
from pack import sub
from tiny_parts import finetune, sd15_parts

blocks = sub("core.blocks")
defaults = sub("core.defaults")
NODE_ID = "ImagicFinetuneUNet"


def in_decoder(key: str) -> bool:
    return key.startswith(("diffusion_model.output_blocks.", "diffusion_model.out."))


@pytest.fixture(scope="module")
def tiny(comfy):
    """The tiny SD1.5-family model, its e_opt stand-in (the encoded text) and a latent."""
    return sd15_parts()


def test_all_is_the_finetune_of_before_every_layer_the_same_draws(tiny):
    before = finetune(tiny)  # no lora_blocks: what every graph saved before the option gives
    chosen = finetune(tiny, lora_blocks="all")
    assert before.keys() == chosen.keys() and all(torch.equal(before[k], chosen[k]) for k in before)
    layers = [n for n, m in tiny.model.model.diffusion_model.named_modules() if sub("core.lora").adaptable(m)]
    assert {k.rsplit(".", 2)[0] for k in before if k.endswith(".lora_up.weight")} == {
        f"diffusion_model.{n}" for n in layers}  # time_embed included


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_part_trains_only_its_layers(tiny, method):
    delta = finetune(tiny, method, lora_blocks="decoder")
    assert delta and all(in_decoder(k) for k in delta), sorted(k for k in delta if not in_decoder(k))[:3]
    assert sub("nodes.training_run").trained_blocks(delta) == "decoder"
    if method == "full":  # weights and biases of the decoder's convolutions, linears and norms
        assert {k.rsplit(".", 1)[1] for k in delta} == {"diff", "diff_b"}
        assert "diffusion_model.out.0.diff" in delta  # the last GroupNorm's gain
    attention = finetune(tiny, method, lora_blocks="attention")
    assert attention and all(".attn1." in k or ".attn2." in k for k in attention)


@pytest.mark.parametrize("low_memory", [False, True])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_no_backward_pass_below_the_first_trained_block(tiny, method, low_memory):
    """Issue 21 item 2. A decoder-only step: no encoder activation needs a gradient, so autograd never enters the
    encoder; with low_memory's checkpointing the encoder's blocks are not recomputed either (a layer inside
    runs once per step, a decoder layer twice: forward and recomputation)."""
    tr, weights = sub("nodes.training_run"), sub("nodes.finetune_unet")
    conditioning_io, diffusion = sub("nodes.conditioning_io"), sub("core.diffusion")
    # layers inside blocks (checkpointing recomputes a block by its forward, which runs these layers' hooks again)
    watched = ("input_blocks.1.0.in_layers.2", "input_blocks.3.1.proj_out", "middle_block.2.out_layers.3",
               "output_blocks.0.0.in_layers.2", "output_blocks.3.1.proj_out")
    calls, needs_grad = collections.Counter(), {}
    settings = tr.TrainingSettings(steps=1, learning_rate=1e-3, low_memory=low_memory)
    with tr.training_mode(), tr.TrainingSetup(tiny.model, tiny.latent, settings, train_weights=method == "full") as s:
        trainer = weights.make_trainer(tiny.model, s.base, method, 4, 0, "decoder")
        for name, module in s.base.diffusion_model.named_modules():
            if name in watched:
                def hook(_, args, out, name=name):
                    calls[name] += 1
                    needs_grad[name] = out.requires_grad
                module.register_forward_hook(hook)
        entries = conditioning_io.model_entries(tiny.cond, s.device)
        noise, sigma = diffusion.NoiseDraws(s.denoiser, s.x0, 0).draw()
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):  # a recomputation runs its block to the end
            diffusion.mean_loss(s.denoiser, s.x0, entries, noise, sigma).backward()
        grads = [p.grad for p in trainer.parameters()]
    assert needs_grad == {n: n.startswith("output_blocks") for n in watched}
    recomputed = 2 if low_memory else 1
    assert dict(calls) == {n: recomputed if needs_grad[n] else 1 for n in watched}
    assert all(g is not None for g in grads) and any(bool(g.any()) for g in grads)


def test_a_part_that_selects_no_layer_is_an_error_that_names_the_node_and_the_fix(tiny):
    foreign = types.SimpleNamespace(diffusion_model=torch.nn.Sequential(torch.nn.Linear(2, 2)))
    make = sub("nodes.finetune_unet").make_trainer
    for method in ("lora", "full"):
        with pytest.raises(sub("nodes.errors").ImagicInputError) as e:
            make(tiny.model, foreign, method, 4, 0, "encoder")
        assert_clear(e.value, NODE_ID, "lora_blocks 'encoder' selects no layer", "SD15", "set lora_blocks to 'all'")
    assert make(tiny.model, foreign, "lora", 4, 0, "all").adapters.keys() == {"0"}


def test_lora_blocks_is_an_optional_combo_with_a_tooltip_and_the_default_of_core_defaults(comfy):
    spec = comfy.nodes.NODE_CLASS_MAPPINGS[NODE_ID].INPUT_TYPES()["optional"]["lora_blocks"]
    assert spec[0] == "COMBO"
    assert spec[1]["options"] == list(blocks.CHOICES) == ["all", "encoder", "decoder", "attention"]
    assert spec[1]["default"] == defaults.LORA_BLOCKS == "all" and "decoder" in spec[1]["tooltip"]


def test_old_files_without_the_key_read_as_all(tiny, comfy, tmp_path):
    """A file saved before lora_blocks existed (no imagic.lora_blocks) loads through Imagic Load Finetune."""
    fmt = sub("core.finetune_format")
    delta = finetune(tiny)
    tensors, meta, _ = fmt.build_file(delta, tiny.cond, storage="exact", svd_rank=8,
                                      fingerprint=sub("nodes.base_model").model_fingerprint(tiny.model),
                                      model_family="SD15", target_text="a dog", suggested_eta=0.7,
                                      training={"lora_blocks": "all", "lora_rank": 8})
    assert meta["imagic.lora_blocks"] == "all" and fmt.read_metadata(meta).lora_blocks == "all"
    del meta["imagic.lora_blocks"]
    folder = comfy.base / "models" / "loras" / "imagic_blocks_old"
    folder.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, folder / "old.safetensors", metadata=meta)
    name = "imagic_blocks_old/old.safetensors"
    assert sub("nodes.finetune_file").read_finetune("ImagicLoadFinetune", name).info.lora_blocks == "all"
    node = comfy.nodes.NODE_CLASS_MAPPINGS["ImagicLoadFinetune"]
    with torch.inference_mode():
        loaded = node.execute(name, tiny.model, 1.0, "error").result
    assert loaded[0].patches and loaded[2] == "a dog"


# ---------------------------------------------------------------------------------------------------------------
# Through the executor

DECODER = dict(method="lora", tune_lr=3e-3, tune_steps=60, embed_steps=20)


@pytest.fixture(scope="module")
def decoder_edit(comfy):
    image = write_input_image(comfy.base / "input", name="lora_blocks.png")
    graph = imagic_graph(image, eta=0.0, **DECODER)
    graph["6"]["inputs"]["lora_blocks"] = "decoder"
    graph["20"] = {"class_type": "ImagicSaveFinetune",
                   "inputs": {"lora": ["6", 1], "optimized": ["5", 0], "model": ["1", 0], "target_text": "",
                              "filename_prefix": "imagic_blocks/decoder", "full_storage": "exact", "svd_rank": 8,
                              "suggested_eta": 0.7}}
    comfy.run(graph)
    with safetensors.safe_open(comfy.base / "models" / "loras" / comfy.output("20"), "pt") as f:
        meta = f.metadata()
    out = {"lora": comfy.output("6", 1), "eta0": comfy.output("8")["samples"], "latent": comfy.output("4")["samples"],
           "meta": meta, "title": comfy.executor.caches.ui.get("6")["output"]["imagic_loss"][0]["title"]}
    comfy.run(sampler_only(graph, ["1", 0], ["7", 0]))  # the untuned model, same e_opt, same noise
    out["untuned"] = comfy.output("8")["samples"]
    return out


def test_a_decoder_only_finetune_is_in_the_decoder_and_reconstructs_the_photo(decoder_edit):
    lora = decoder_edit["lora"]
    assert lora and all(in_decoder(k) for k in lora)
    assert any(k.startswith("diffusion_model.output_blocks.0.") for k in lora) and "diffusion_model.out.2.alpha" in lora
    tuned = float(((decoder_edit["eta0"] - decoder_edit["latent"]) ** 2).mean())
    untuned = float(((decoder_edit["untuned"] - decoder_edit["latent"]) ** 2).mean())
    print(f"\neta=0 reconstruction MSE: decoder-only {tuned:.3f}, untuned {untuned:.3f}")
    assert tuned < 0.5 * untuned, (tuned, untuned)
    assert decoder_edit["title"] == "Imagic: finetune (lora, decoder)"


def test_the_saved_finetune_records_the_blocks(decoder_edit):
    meta = decoder_edit["meta"]
    assert meta["imagic.lora_blocks"] == "decoder" and meta["imagic.method"] == "lora"
    assert sub("core.finetune_format").read_metadata(meta).lora_blocks == "decoder"
