"""core/blocks.py: which layers Imagic Finetune UNet's ``lora_blocks`` trains, by module name. Host-free on name
lists, and on the real module names of ComfyUI's full-size SD1.5, SDXL, SD3.5 and Flux networks (built on the meta
device: no memory, no weights)."""
from __future__ import annotations

import pytest
import torch

from pack import sub

blocks = sub("core.blocks")
lora = sub("core.lora")

# ---------------------------------------------------------------------------------------------------------------
# Host-free


def test_dit_blocks_in_forward_order_and_split_in_halves_the_middle_one_to_the_encoder():
    names = ["single_blocks.1.linear1", "double_blocks.1.img_attn.qkv", "single_blocks.0", "double_blocks.0",
             "single_blocks.2.linear2", "double_blocks.10.img_mlp.0", "img_in", "txt_in", "final_layer.linear"]
    order = blocks.transformer_blocks(names)
    assert order == ["double_blocks.0", "double_blocks.1", "double_blocks.10", "single_blocks.0", "single_blocks.1",
                     "single_blocks.2"]  # by number, not as text; double before single
    parts = {n: blocks.part(n, order) for n in names}
    assert parts == {"single_blocks.1.linear1": "decoder", "double_blocks.1.img_attn.qkv": "encoder",
                     "single_blocks.0": "decoder", "double_blocks.0": "encoder", "single_blocks.2.linear2": "decoder",
                     "double_blocks.10.img_mlp.0": "encoder", "img_in": "encoder", "txt_in": None,
                     "final_layer.linear": "decoder"}
    odd = [f"joint_blocks.{i}" for i in range(5)]
    assert [blocks.part(f"{b}.x_block.attn.qkv", odd) for b in odd] == ["encoder"] * 3 + ["decoder"] * 2
    assert blocks.transformer_blocks(["input_blocks.1.0.in_layers.2", "out.2"]) == []


@pytest.mark.parametrize("name, part", [
    ("input_blocks.0.0", "encoder"), ("input_blocks.11.0.out_layers.3", "encoder"),
    ("middle_block.1.proj_in", "encoder"), ("output_blocks.0.0.skip_connection", "decoder"), ("out.2", "decoder"),
    ("time_embed.0", None), ("label_emb.0.0", None), ("outside.0", None), ("output", None)])
def test_unet_parts(name, part):
    assert blocks.part(name) == part


@pytest.mark.parametrize("name, attention", [
    ("input_blocks.1.1.transformer_blocks.0.attn1.to_q", True),
    ("output_blocks.5.1.transformer_blocks.0.attn2.to_out.0", True),
    ("input_blocks.1.1.proj_in", False), ("input_blocks.1.1.transformer_blocks.0.ff.net.0.proj", False),
    ("input_blocks.1.1.transformer_blocks.0.attn1", False),  # the attention module itself holds no weight
    ("joint_blocks.3.context_block.attn.qkv", True), ("joint_blocks.3.x_block.attn2.proj", True),
    ("joint_blocks.3.x_block.mlp.fc1", False), ("joint_blocks.3.x_block.adaLN_modulation.1", False),
    ("double_blocks.0.img_attn.proj", True), ("double_blocks.0.txt_attn.qkv", True),
    ("double_blocks.0.img_mlp.0", False), ("double_blocks.0.img_mod.lin", False),
    ("single_blocks.7.linear1", True), ("single_blocks.7.linear2", True), ("single_blocks.7.modulation.lin", False),
    ("attention.linear1", False), ("attnx.to_q", False)])
def test_attention_layers(name, attention):
    assert blocks.is_attention(name) is attention
    assert blocks.adapts(name, "attention") is attention


def test_all_adapts_everything_and_an_unknown_choice_is_refused():
    assert all(blocks.adapts(n, "all") for n in ("time_embed.0", "whatever", ""))
    with pytest.raises(ValueError, match="unknown lora_blocks 'middle'"):
        blocks.adapts("out.2", "middle")
    with pytest.raises(ValueError, match="encoder, decoder"):
        blocks.chooser(["out.2"], "Decoder")
    keep = blocks.chooser(["joint_blocks.0.x_block.attn.qkv", "joint_blocks.1.x_block.attn.qkv"], "decoder")
    assert [keep("joint_blocks.0.x_block.attn.qkv"), keep("joint_blocks.1.x_block.attn.qkv")] == [False, True]


def test_attach_adapts_only_the_kept_layers_and_all_keeps_todays_draws():
    def net():
        torch.manual_seed(0)
        root = torch.nn.Module()
        root.input_blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Conv2d(4, 4, 3)])
        root.output_blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
        return root

    everything = lora.attach(net(), rank=2, seed=3)
    assert sorted(everything) == ["input_blocks.0", "input_blocks.1", "output_blocks.0"]
    kept = lora.attach(net(), rank=2, seed=3, keep=lambda n: blocks.adapts(n, "decoder"))
    assert list(kept) == ["output_blocks.0"]
    same = lora.attach(net(), rank=2, seed=3, keep=lambda n: blocks.adapts(n, "all"))
    assert all(torch.equal(same[k].up, everything[k].up) for k in everything)


# ---------------------------------------------------------------------------------------------------------------
# ComfyUI's full-size networks, their real module names (meta device)

SD15 = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
            use_linear_in_transformer=False, context_dim=768, num_heads=8,
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], use_temporal_attention=False,
            use_temporal_resblock=False)
SDXL = dict(SD15, num_classes="sequential", adm_in_channels=2816, num_res_blocks=[2, 2, 2],
            transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4], transformer_depth_middle=10,
            use_linear_in_transformer=True, context_dim=2048, num_heads=-1, num_head_channels=64,
            transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10])
SD35_MEDIUM = dict(in_channels=16, out_channels=16, patch_size=2, depth=24, input_size=None, adm_in_channels=2048,
                   pos_embed_scaling_factor=None, pos_embed_max_size=384, num_patches=147456, qk_norm="rms",
                   context_embedder_config={"target": "torch.nn.Linear",
                                            "params": {"in_features": 4096, "out_features": 1536}},
                   x_block_self_attn_layers=list(range(13)))
FLUX_DEV = dict(image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768,
                context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38,
                axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True)


def layer_names(family: str) -> list[str]:
    """The adaptable layers of ComfyUI's full-size network of ``family``, by name, in module order."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    ops = comfy.ops.disable_weight_init
    build = {"sd15": lambda: UNetModel(**SD15, operations=ops), "sdxl": lambda: UNetModel(**SDXL, operations=ops),
             "sd35": lambda: OpenAISignatureMMDITWrapper(**SD35_MEDIUM, operations=ops),
             "flux": lambda: Flux(**FLUX_DEV, operations=ops)}
    with torch.device("meta"):
        net = build[family]()
    return [n for n, m in net.named_modules() if lora.adaptable(m)]


def chosen(names: list[str], choice: str) -> list[str]:
    keep = blocks.chooser(names, choice)
    return [n for n in names if keep(n)]


def heads(names: list[str], depth: int = 1) -> set[str]:
    return {".".join(n.split(".")[:depth]) for n in names}


@pytest.mark.parametrize("family, transformer_blocks", [("sd15", 16), ("sdxl", 70)])
def test_unet_encoder_is_input_and_middle_blocks_decoder_output_blocks_and_out(comfy, family, transformer_blocks):
    names = layer_names(family)
    encoder, decoder, attention = (chosen(names, c) for c in ("encoder", "decoder", "attention"))
    assert chosen(names, "all") == names
    assert heads(encoder) == {"input_blocks", "middle_block"} and heads(decoder) == {"output_blocks", "out"}
    assert "input_blocks.0.0" in encoder and decoder[-1] == "out.2"  # the first and the last convolution
    embeddings = {"time_embed"} | ({"label_emb"} if family == "sdxl" else set())
    assert heads(set(names) - set(encoder) - set(decoder)) == embeddings  # only "all" trains them
    # attn1 and attn2 of every transformer block: q, k, v, out; in the encoder and the decoder alike
    assert len(attention) == 8 * transformer_blocks
    assert {n.split("transformer_blocks.")[1].split(".", 1)[1] for n in attention} == {
        f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")}
    assert heads(attention) == {"input_blocks", "middle_block", "output_blocks"}


def test_sd35_halves_are_joint_blocks_0_to_11_and_12_to_23_attention_both_streams(comfy):
    names = layer_names("sd35")
    encoder, decoder, attention = (chosen(names, c) for c in ("encoder", "decoder", "attention"))
    assert heads(encoder, 2) == {"x_embedder.proj"} | {f"joint_blocks.{i}" for i in range(12)}
    assert heads(decoder, 2) == {"final_layer.linear", "final_layer.adaLN_modulation"} | {
        f"joint_blocks.{i}" for i in range(12, 24)}
    assert heads(set(names) - set(encoder) - set(decoder)) == {"t_embedder", "y_embedder", "context_embedder"}
    # attn (both streams; the last context block has no proj) and the x stream's attn2 in blocks 0-12
    assert len(attention) == (24 * 2 - 1) + 24 * 2 + 13 * 2
    assert {n.split(".", 3)[3] for n in attention} == {"attn.qkv", "attn.proj", "attn2.qkv", "attn2.proj"}
    assert "joint_blocks.12.x_block.attn2.qkv" in attention and "joint_blocks.13.x_block.attn2.qkv" not in names


def test_flux_dev_encoder_is_the_double_blocks_and_single_blocks_0_to_9_attention_includes_the_fused_layers(comfy):
    names = layer_names("flux")
    encoder, decoder, attention = (chosen(names, c) for c in ("encoder", "decoder", "attention"))
    assert heads(encoder, 2) == {"img_in"} | {f"double_blocks.{i}" for i in range(19)} | {
        f"single_blocks.{i}" for i in range(10)}
    assert heads(decoder, 2) == {f"single_blocks.{i}" for i in range(10, 38)} | {
        "final_layer.linear", "final_layer.adaLN_modulation"}
    assert heads(set(names) - set(encoder) - set(decoder)) == {"time_in", "vector_in", "guidance_in", "txt_in"}
    assert len(attention) == 19 * 4 + 38 * 2
    assert {n.split(".", 2)[2] for n in attention} == {"img_attn.qkv", "img_attn.proj", "txt_attn.qkv",
                                                       "txt_attn.proj", "linear1", "linear2"}
