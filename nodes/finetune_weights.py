"""What ImagicFinetuneUNet trains on the private model copy, and the result as a ComfyUI LoRA dict.

``full`` (the paper): every weight and bias of the diffusion model; the result is the exact difference
under ComfyUI's ``.diff`` / ``.diff_b`` keys. ``lora``: low-rank adapters (``core.lora``) on every linear and
convolution weight; the result uses ``lora_up`` / ``lora_down`` / ``alpha`` keys with the conventional shapes.
Both load with ComfyUI's stock LoRA loaders, which reproduce the trained network. ``blocks`` (the node's
``lora_blocks``, ``core.blocks``) narrows either method to a part of the network: the weights / layers outside
it stay frozen and are not in the result. ``NoLayerChosen`` when the part holds none of them.
"""
from __future__ import annotations

import torch

from ..core import blocks as parts
from ..core import defaults, lora

PREFIX = "diffusion_model."


def _chooser(module: torch.nn.Module, blocks: str):
    return parts.chooser((name for name, _ in module.named_modules()), blocks)


class FullFinetune:
    """Trains the copy's own (fp32) weights; the delta is taken against the given model's weights as loaded
    (``source``, its patches applied), kept on ``keep_device`` -- where they already are, by reference."""

    def __init__(self, base, source, keep_device, blocks: str = defaults.LORA_BLOCKS):
        self.module = base.diffusion_model
        keep = _chooser(self.module, blocks)
        self.params = {n: p for n, p in self.module.named_parameters()
                       if n.endswith((".weight", ".bias")) and keep(n.rsplit(".", 1)[0])}
        if not self.params:
            raise parts.NoLayerChosen(blocks)
        initial = dict(source.diffusion_model.named_parameters())
        self.initial = {n: initial[n].detach().to(keep_device) for n in self.params}
        for p in self.params.values():
            p.requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def delta(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, p in self.params.items():
            diff = p.detach().to(self.initial[name].device, torch.float32) - self.initial[name].float()
            if not torch.any(diff):
                continue
            module, kind = name.rsplit(".", 1)
            out[f"{PREFIX}{module}.{'diff' if kind == 'weight' else 'diff_b'}"] = diff
        return out


class LoraFinetune:
    """``core.lora`` adapters (fp32) on every linear/conv layer of the copy (of the chosen ``blocks``);
    ``alpha`` = rank (scale 1)."""

    def __init__(self, base, rank: int, seed: int, blocks: str = defaults.LORA_BLOCKS):
        module = base.diffusion_model
        keep = None if blocks == "all" else _chooser(module, blocks)  # all: every layer, as before the choice
        self.adapters = lora.attach(module, rank, seed, keep)
        if not self.adapters:
            raise parts.NoLayerChosen(blocks)

    def parameters(self) -> list[torch.Tensor]:
        return [p for adapter in self.adapters.values() for p in adapter.parameters()]

    def delta(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, adapter in self.adapters.items():
            key = f"{PREFIX}{name}"
            out[f"{key}.lora_up.weight"] = adapter.up.detach().float().cpu().contiguous()
            out[f"{key}.lora_down.weight"] = adapter.down.detach().float().cpu().contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(adapter.rank))
        return out
