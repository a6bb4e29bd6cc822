"""Text-to-image of the shapes model on the held-out captions, read back from pixels; prints the accuracy.

    python cli/bench.py shapes_text_to_image     # 8 held-out captions x 5 seeds, sampled as the model is (SAMPLING)

Runs the stock node functions (CLIP Text Encode, Empty Latent Image, KSampler, VAE Decode) in this process on
the shipped checkpoint (or --ckpt), and reads colour, shape and position of every picture with
``demo/shapes_world.read``; a blended colour counts as wrong.
"""
from __future__ import annotations

if __name__ == "__main__":  # a benchmark is the pack's module
    raise SystemExit("run it as: python cli/bench.py shapes_text_to_image [options]")

import argparse
import json
from pathlib import Path

import numpy as np

from . import host

ROOT = Path(__file__).resolve().parents[1]


def text_to_image(model, clip, vae, text: str, seed: int, steps: int, cfg: float) -> np.ndarray:
    """One 128x128 picture for ``text`` through the stock nodes, (H, W, 3) in [0, 1]."""
    import torch

    import nodes

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return _text_to_image(nodes, model, clip, vae, text, seed, steps, cfg)


def _text_to_image(nodes, model, clip, vae, text, seed, steps, cfg):
    positive = nodes.CLIPTextEncode().encode(clip, text)[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = nodes.EmptyLatentImage().generate(128, 128, 1)[0]
    out = nodes.KSampler().sample(model, seed, steps, cfg, "euler", "normal", positive, negative, latent)[0]
    return nodes.VAEDecode().decode(vae, out)[0][0].cpu().numpy()


def measure_t2i(world, model, clip, vae, per_caption: int, cfg: float, steps: int) -> dict:
    """Fraction of held-out pictures whose colour / shape / position the reader finds as captioned."""
    hits = {"colour": 0, "shape": 0, "position": 0}
    n = 0
    for ci, combo in enumerate(world.HELD_OUT):
        for k in range(per_caption):
            picture = text_to_image(model, clip, vae, world.caption(*combo), 1000 * ci + k, steps, cfg)
            for key, ok in world.read(picture).matches(*combo).items():
                hits[key] += ok
            n += 1
    return {k: round(v / n, 3) for k, v in hits.items()} | {"n": n, "cfg": cfg, "steps": steps, "sampler": "euler"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, help="a shapes checkpoint (default: the shipped one)")
    p.add_argument("--per-caption", type=int, default=5, help="seeds per held-out caption")
    p.add_argument("--cfg", type=float, help="default: the model's (demo/shapes_checkpoint.py: SAMPLING)")
    p.add_argument("--steps", type=int, help="default: the model's")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    pack = host.boot(cpu=True)
    sc = pack("demo.shapes_checkpoint")
    model, clip, vae = sc.load_shapes_checkpoint(args.ckpt or sc.CHECKPOINT)
    cfg, steps = args.cfg or sc.SAMPLING["cfg"], args.steps or sc.SAMPLING["steps"]
    result = measure_t2i(pack("demo.shapes_world"), model, clip, vae, args.per_caption, cfg, steps)
    print(json.dumps(result))

