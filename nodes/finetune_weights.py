"""What ImagicFinetuneUNet trains on the private model copy, and the result as a ComfyUI LoRA dict.

``full`` (the paper): every weight and bias of the diffusion model; the result is the exact difference
under ComfyUI's ``.diff`` / ``.diff_b`` keys. ``lora``: ComfyUI's own LoRA training adapters
(``comfy.weight_adapter``) on every linear and convolution weight; the result uses
``lora_up`` / ``lora_down`` / ``alpha`` keys. Both load with ComfyUI's stock LoRA loaders.
"""
from __future__ import annotations

import torch

from comfy.weight_adapter.lora import LoRAAdapter

PREFIX = "diffusion_model."


class FullFinetune:
    def __init__(self, base, keep_device):
        self.module = base.diffusion_model
        self.params = {n: p for n, p in self.module.named_parameters() if n.endswith((".weight", ".bias"))}
        self.initial = {n: p.detach().to(keep_device, copy=True) for n, p in self.params.items()}
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
    def __init__(self, base, rank: int, seed: int):
        self.adapters = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, m in base.diffusion_model.named_modules():
                weight = getattr(m, "weight", None)
                if hasattr(m, "weight_function") and isinstance(weight, torch.Tensor) and weight.ndim >= 2:
                    r = min(rank, weight.shape[0], weight[0].numel())
                    adapter = LoRAAdapter.create_train(weight, rank=r, alpha=float(r))  # scale alpha/r = 1
                    adapter.to(weight.device)
                    m.weight_function = list(m.weight_function) + [adapter]  # the copy's own list
                    self.adapters[name] = (adapter, tuple(weight.shape))

    def parameters(self) -> list[torch.Tensor]:
        return [p for adapter, _ in self.adapters.values() for p in adapter.parameters() if p.requires_grad]

    def delta(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (adapter, shape) in self.adapters.items():
            up = adapter.lora_up.weight.detach().float().cpu()
            down = adapter.lora_down.weight.detach().float().cpu()
            if len(shape) > 2:  # conventional conv LoRA shapes: up (out, r, 1, 1), down (r, in, kh, kw)
                up = up.reshape(shape[0], up.shape[1], *([1] * (len(shape) - 2)))
                down = down.reshape(down.shape[0], *shape[1:])
            key = f"{PREFIX}{name}"
            out[f"{key}.lora_up.weight"] = up.contiguous()
            out[f"{key}.lora_down.weight"] = down.contiguous()
            out[f"{key}.alpha"] = adapter.alpha.detach().float().cpu().reshape(())
        return out
