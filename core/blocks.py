"""Which layers of a diffusion model a fine-tune covers (Imagic Finetune UNet's ``lora_blocks``), by module name.

The names are those of ``named_modules()`` of ComfyUI's ``diffusion_model`` (the keys of a LoRA file without
``diffusion_model.``). Pure functions of the names: no model, no ComfyUI.

* ``all``: every layer (the default, and the only choice before it existed).
* ``encoder`` / ``decoder``: the two halves of the image path, cut where the network turns from going down to
  coming back up.

  - UNets (SD1.x, SD2.x, SDXL, the refiner: ``input_blocks.N``, ``middle_block``, ``output_blocks.N``, ``out``):
    encoder = ``input_blocks`` (the first convolution included) and ``middle_block``; decoder = ``output_blocks``
    and the final ``out`` layer. Forgedit (Zhang et al. 2023) calls the down blocks the encoder; the middle block
    goes with them here because it runs before every up block, so a decoder-only fine-tune needs no backward pass
    through it (and encoder + decoder cover every block).
  - DiTs (SD3/SD3.5 MMDiT ``joint_blocks.N``; Flux ``double_blocks.N`` then ``single_blocks.N``): the transformer
    blocks in forward order, the first half (the middle block of an odd count included: ceil(n/2)) with the patch
    embedding (``x_embedder`` / ``img_in``) is the encoder, the second half with ``final_layer`` the decoder.
    Flux dev (19 double + 38 single blocks): encoder = the 19 double blocks and single blocks 0-9, decoder =
    single blocks 10-37. SD3 medium (24 joint blocks): 0-11 and 12-23.
  - The conditioning embeddings (UNet ``time_embed``, ``label_emb``; MMDiT ``t_embedder``, ``y_embedder``,
    ``context_embedder``; Flux ``time_in``, ``vector_in``, ``guidance_in``, ``txt_in``) belong to neither: they
    feed every block, and adapt only with ``all``.
* ``attention``: the attention projections inside the transformer blocks, in every part of the network: UNet
  ``attn1`` (self) and ``attn2`` (cross) ``to_q``, ``to_k``, ``to_v``, ``to_out.0``; MMDiT ``attn`` and SD3.5's
  ``attn2`` ``qkv`` and ``proj`` (both streams); Flux double blocks ``img_attn`` / ``txt_attn`` ``qkv`` and
  ``proj``. Not the transformer blocks' ``proj_in`` / ``proj_out`` (UNet), their feed-forward (``ff``, ``mlp``)
  or modulation layers. Flux's single blocks have no separate attention layers: ``linear1`` computes q, k, v and
  the MLP's input in one matrix, ``linear2`` the attention output and the MLP's output; both count as attention
  (an adapter on them also reaches the MLP part of the matrix), ``modulation.lin`` does not.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

CHOICES = ("all", "encoder", "decoder", "attention")

# UNet: top-level module -> part
_UNET_PARTS = {"input_blocks": "encoder", "middle_block": "encoder", "output_blocks": "decoder", "out": "decoder"}
# DiT: the layers before and after the transformer blocks
_DIT_ENDS = {"x_embedder": "encoder", "img_in": "encoder", "final_layer": "decoder"}
# DiT: the lists of transformer blocks, in the order the forward runs them
DIT_STACKS = ("joint_blocks", "double_blocks", "single_blocks")
_ATTENTION = re.compile(r"(?:img_|txt_)?attn\d*")  # attn1, attn2 (UNet), attn, attn2 (MMDiT), img_attn (Flux)
_FUSED_ATTENTION = ("linear1", "linear2")  # Flux single blocks: q, k, v and the MLP in one matrix each


class NoLayerChosen(ValueError):
    """The choice selects no layer of the model (a family whose layout this module does not know)."""


def transformer_blocks(names: Iterable[str]) -> list[str]:
    """A DiT's transformer blocks ('joint_blocks.0', ... / 'double_blocks.0', ..., 'single_blocks.0', ...) in
    forward order, found in its module names; empty for a UNet."""
    found: dict[str, set[int]] = {}
    for name in names:
        parts = name.split(".")
        if len(parts) >= 2 and parts[0] in DIT_STACKS and parts[1].isdigit():
            found.setdefault(parts[0], set()).add(int(parts[1]))
    return [f"{stack}.{i}" for stack in DIT_STACKS for i in sorted(found.get(stack, ()))]


def part(name: str, blocks: Sequence[str] = ()) -> str | None:
    """'encoder', 'decoder' or None (a conditioning embedding, an unknown layout) for the module ``name``;
    ``blocks``: the model's ``transformer_blocks`` (a DiT's halves depend on its depth)."""
    head = name.split(".", 1)[0]
    if head in _UNET_PARTS:
        return _UNET_PARTS[head]
    if head in _DIT_ENDS:
        return _DIT_ENDS[head]
    block = ".".join(name.split(".")[:2])
    if block in blocks:
        return "encoder" if blocks.index(block) < math.ceil(len(blocks) / 2) else "decoder"
    return None


def is_attention(name: str) -> bool:
    """Whether the module ``name`` is (in) an attention projection: see the module docstring."""
    parts = name.split(".")
    if any(_ATTENTION.fullmatch(p) for p in parts[:-1]):
        return True
    return parts[0] == "single_blocks" and parts[-1] in _FUSED_ATTENTION


def adapts(name: str, choice: str, blocks: Sequence[str] = ()) -> bool:
    """Whether a fine-tune with ``lora_blocks`` = ``choice`` trains the module ``name`` (``blocks``: the model's
    ``transformer_blocks``, needed for a DiT's encoder/decoder)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown lora_blocks {choice!r}; expected one of {', '.join(CHOICES)}")
    if choice == "all":
        return True
    if choice == "attention":
        return is_attention(name)
    return part(name, blocks) == choice


def chooser(names: Iterable[str], choice: str) -> Callable[[str], bool]:
    """``adapts`` for the modules of one model (``names``: all its module names), as a one-argument test."""
    if choice not in CHOICES:
        raise ValueError(f"unknown lora_blocks {choice!r}; expected one of {', '.join(CHOICES)}")
    blocks = transformer_blocks(names)
    return lambda name: adapts(name, choice, blocks)
