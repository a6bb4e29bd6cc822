"""File sizes of Imagic fine-tune files (Imagic Save Finetune's format) on the real SD1.5 UNet architecture.

    python cli/bench.py finetune_sizes [--svd-rank 64] [--lora-ranks 4 16 64] [--exact-svd] [--keep DIR]

The UNet is ComfyUI's own SD1.5 model: ``comfy.supported_models.SD15`` with the ``unet_config`` that
``comfy.model_detection`` detects for SD1.5 checkpoints (checked below by detecting it back from the built
model's weight names and shapes), so every weight name and shape is the real one (860M parameters). No weights
are downloaded: the size of a safetensors file depends only on its tensors' shapes and dtypes, so the base
weights are never filled (their memory is never touched) and the deltas are random.

Each file is built by the same code as the node (``core.finetune_format.build_file``: UNet delta + an
SD1.5-shaped e_opt + metadata) and written with the node's atomic writer, then measured:

* ``lora`` rank r: Imagic Finetune UNet's own adapters (``nodes.finetune_weights.LoraFinetune``: every linear
  and conv weight), random values.
* ``full exact``: a ``.diff`` / ``.diff_b`` for every weight and bias (what ``FullFinetune`` gives when every
  weight changed).
* ``full svd`` rank r: the same delta, SVD-extracted per matrix/kernel. By default with
  ``torch.svd_lowrank`` (randomised; same shapes, so the same file size): the exact SVD that the node uses
  takes ~40 minutes for all of SD1.5 on a 2-core CPU (seconds on a GPU). ``--exact-svd`` runs the exact one.

Files go to a temporary folder and are deleted unless ``--keep`` is given. Runs in a few minutes on a CPU (about
4.5 minutes on a shared 2-core machine, 4 of them the SVD extraction) and needs little memory (one SVD'd matrix at
a time; the 3.4 GB exact file is written straight from untouched memory) and about 3.5 GB of disk.
"""
from __future__ import annotations

if __name__ == "__main__":  # a benchmark is the pack's module
    raise SystemExit("run it as: python cli/bench.py finetune_sizes [options]")

import argparse
import tempfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from . import host

# SD1.5's unet_config, exactly as comfy.model_detection detects it from an SD1.5 checkpoint
# (comfy/model_detection.py, unet_config_from_diffusers_unet: ``SD15``); checked by detect_back().
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def sd15_base():
    """ComfyUI's SD1.5 BaseModel with real names/shapes; weights allocated but never written or read."""
    import comfy.model_detection
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(SD15_UNET))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({}, device=torch.device("meta"))
    sd = {f"model.diffusion_model.{k}": v for k, v in base.diffusion_model.state_dict().items()}
    detected = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
    assert type(detected) is comfy.supported_models.SD15, f"detected {type(detected).__name__}, not SD15"
    base.diffusion_model.to_empty(device="cpu")  # untouched memory: costs no RAM until written
    return base


class RandomDelta(Mapping):
    """``.diff`` / ``.diff_b`` for every weight and bias, made on access (random, seeded by name)."""

    def __init__(self, shapes: dict[str, tuple], random: bool):
        self.keys_ = {}
        for name, shape in shapes.items():
            module, kind = name.rsplit(".", 1)
            if kind in ("weight", "bias"):  # nodes/finetune_weights.FullFinetune's naming
                self.keys_[f"diffusion_model.{module}.{'diff' if kind == 'weight' else 'diff_b'}"] = shape
        self.random = random

    def __getitem__(self, key):
        shape = self.keys_[key]
        if not self.random:  # untouched memory: the exact file is written without ever filling 3.4 GB
            return torch.empty(shape)
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        return torch.randn(shape, generator=g) * 1e-4

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self):
        return len(self.keys_)


def e_opt():
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 77, 768, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lora-ranks", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--svd-rank", type=int, nargs="+", default=[64])
    parser.add_argument("--exact-svd", action="store_true", help="the node's exact SVD (slow on a CPU)")
    parser.add_argument("--keep", type=Path, help="keep the files in this folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagic_sizes_"))
    sub = host.boot(cpu=False, base=work / "comfy")
    fmt = sub("core.finetune_format")
    weights = sub("nodes.finetune_weights")
    writer = sub("nodes.finetune_paths")
    out_dir = args.keep or work / "files"
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    base = sd15_base()
    shapes = {k: tuple(v.shape) for k, v in base.diffusion_model.state_dict().items()}
    params = sum(torch.Size(s).numel() for s in shapes.values())
    print(f"SD1.5 UNet (comfy.supported_models.SD15, detected back as SD15): {len(shapes)} tensors, "
          f"{params / 1e6:.1f}M parameters, fp32 {params * 4 / 1e9:.2f} GB; built in {time.perf_counter() - t0:.1f}s")
    common = dict(fingerprint={"architecture": "bench", "tensors": len(shapes), "sample": []}, model_family="SD15",
                  target_text="a photo of a sitting dog", suggested_eta=0.7)
    rows = []

    def write(label: str, delta, storage: str, rank: int = 64, lowrank: bool = False) -> None:
        start = time.perf_counter()
        tensors, metadata, _ = fmt.build_file(delta, e_opt(), storage=storage, svd_rank=rank, lowrank=lowrank, **common)
        path = out_dir / f"{label.replace(' ', '_')}.safetensors"
        writer.write_atomic(tensors, metadata, str(path))
        size = path.stat().st_size
        unet = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith("diffusion_model."))
        rows.append((label, size, len(tensors), time.perf_counter() - start))
        print(f"  {label:<28} {size / 1e6:10.1f} MB  ({len(tensors)} tensors, UNet part {unet / 1e6:.1f} MB)  "
              f"{time.perf_counter() - start:6.1f}s", flush=True)
        if args.keep is None:
            path.unlink()

    for rank in args.lora_ranks:
        for m in base.diffusion_model.modules():  # fresh adapters for each rank
            if hasattr(m, "weight_function"):
                m.weight_function = []
        trainer = weights.LoraFinetune(base, rank, seed=0)
        with torch.no_grad():
            for p in trainer.parameters():
                p.normal_(0.0, 0.01)
        write(f"lora rank {rank}", trainer.delta(), "lora")
    write("full exact", RandomDelta(shapes, random=False), "exact")
    for rank in args.svd_rank:
        how = "exact SVD" if args.exact_svd else "svd_lowrank"
        write(f"full svd rank {rank} ({how})", RandomDelta(shapes, random=True), "svd", rank,
              lowrank=not args.exact_svd)

    print("\n| file | size |\n|---|---|")
    for label, size, _, _ in rows:
        print(f"| {label} | {size / 1e6:,.1f} MB |")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; files {'kept in ' + str(out_dir) if args.keep else 'deleted'}")
    return 0
