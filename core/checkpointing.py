"""Gradient checkpointing by block: a block keeps only its inputs for the backward pass and recomputes its
activations there (one more forward of the block, far less activation memory)."""
from __future__ import annotations

import functools
import weakref

import torch
import torch.utils.checkpoint

_CONTAINERS = (torch.nn.ModuleList, torch.nn.Sequential, torch.nn.ModuleDict)


def blocks(root: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost modules under ``root`` that are not containers and hold parameters (a UNet's res/attention
    blocks, a DiT's transformer blocks; containers are looked into, since models often call their items directly)."""
    found = []
    for child in root.children():
        if isinstance(child, _CONTAINERS):
            found += blocks(child)
        elif any(True for _ in child.parameters()):
            found.append(child)
    return found


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _forward_on_copies(block, *args, **kwargs):
    """The block's forward on copies of its tensor arguments: a block may add into its inputs in place
    (ComfyUI's Flux blocks do: ``x += ...``), which must not change the inputs its recomputation starts from."""
    return type(block).forward(block, *map(_copy, args), **{k: _copy(v) for k, v in kwargs.items()})


def _checkpointed(block_ref, *args, **kwargs):
    block = block_ref()  # a weak reference: the wrapper must not keep the model alive through a cycle
    # preserve_rng_state=False: the diffusion models draw no random numbers in their forward (eval mode).
    return torch.utils.checkpoint.checkpoint(_forward_on_copies, block, *args, use_reentrant=False,
                                             preserve_rng_state=False, **kwargs)


def checkpoint_blocks(root: torch.nn.Module) -> int:
    """Checkpoint every block of ``root`` in place (an instance ``forward`` wrapping the class one); returns the count.

    Forward hooks inside a block (LoRA adapters) run inside the checkpoint and are recomputed with it.
    """
    found = blocks(root)
    for block in found:
        block.forward = functools.partial(_checkpointed, weakref.ref(block))
    return len(found)
