"""Does a batch of several noise/timestep draws per step lower the steps Imagic needs for the same loss?

    python cli/bench.py batch_curve [--batches 1 2 4 8] [--seeds 0 1] [--out bench/out/batch_curve.md]

Loss-vs-steps curves on the tiny SD1.5-family model (``demo/tiny_checkpoint.py``) with the test suite's
input photo and settings (A: lr 2e-2; B: LoRA rank 8, lr 3e-3, on the e_opt of A's 40 steps), trained by the
nodes' own functions (``optimize`` / ``finetune``) in fp32 (``low_memory`` off), for each batch size and step
count. The figure is the held-out reconstruction loss: Imagic's loss on 64 fixed draws that training never
saw (A: on the frozen model with the optimised embedding; B: on the fine-tuned model with e_opt), averaged
over the seeds. A step with batch B costs up to B times a batch-1 step (on a CPU, about B times).
"""
from __future__ import annotations

if __name__ == "__main__":  # a benchmark is the pack's module
    raise SystemExit("run it as: python cli/bench.py batch_curve [options]")

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..demo.tiny_prompt import write_demo_image
from . import host

A_STEPS, B_STEPS = (10, 20, 40, 80, 160), (15, 30, 60, 120, 240)
A_LR, B_LR, RANK = 2e-2, 3e-3, 8


def test_photo_latent(vae) -> dict:
    from PIL import Image

    path = write_demo_image(Path(tempfile.mkdtemp(prefix="imagic_curve_")) / "photo.png")
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return {"samples": vae.encode(torch.from_numpy(image)[None])}


def heldout_loss(pack, model, conditioning, latent) -> float:
    return pack("nodes.training_run").heldout_loss(model, conditioning, latent)


def curves(pack, args) -> dict:
    tiny = pack("demo.tiny_checkpoint")
    a_node, b_node = pack("nodes.optimize_embedding"), pack("nodes.finetune_unet")
    training = pack("nodes.training_run")
    with torch.inference_mode():
        model, clip, vae = tiny.build_tiny_checkpoint("sd15", 0)
        target = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a sitting dog"))
        latent = test_photo_latent(vae)

    def run(fn, *a, **kw):
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*a, **kw)

    def settings(steps: int, lr: float, seed: int, batch: int = 1):
        return training.TrainingSettings(steps, lr, seed, low_memory=False, batch_size=batch)

    e_opt = run(a_node.optimize, model, target, latent, settings(40, A_LR, 0))[0]
    out = {"A": {"before": heldout_loss(pack, model, target, latent)},
           "B": {"before": heldout_loss(pack, model, e_opt, latent)}}
    for batch in args.batches:
        for stage, steps in (("A", A_STEPS), ("B", B_STEPS)):
            row, seconds = {}, []
            for n in steps:
                losses = []
                for seed in args.seeds:
                    start = time.perf_counter()
                    if stage == "A":
                        e = run(a_node.optimize, model, target, latent, settings(n, A_LR, seed, batch))[0]
                        losses.append(heldout_loss(pack, model, e, latent))
                    else:
                        delta = run(b_node.finetune, model, e_opt, latent, settings(n, B_LR, seed, batch),
                                    method="lora", lora_rank=RANK)[0]
                        losses.append(heldout_loss(pack, b_node.finetuned_model(model, delta), e_opt, latent))
                    seconds.append((time.perf_counter() - start) / n)
                row[n] = statistics.mean(losses)
            out[stage][batch] = {"loss": row, "s_per_step": statistics.median(seconds)}
            print(f"{stage} batch {batch}: " + ", ".join(f"{n}: {v:.4f}" for n, v in row.items()), flush=True)
    return out


def markdown(result: dict, args) -> str:
    lines = [f"Held-out reconstruction loss (mean of seeds {', '.join(map(str, args.seeds))}; lower is better), tiny "
             "SD1.5-family model, fp32, this machine's CPU with 1 thread.", ""]
    titles = (("A", A_STEPS, "A: embedding (lr 2e-2)"), ("B", B_STEPS, "B: LoRA fine-tune (rank 8, lr 3e-3)"))
    for stage, steps, title in titles:
        lines += [f"**{title}** — before training: {result[stage]['before']:.4f}", "",
                  "| batch | " + " | ".join(f"{n} steps" for n in steps) + " | s/step (tiny, CPU) |",
                  "|---" * (len(steps) + 2) + "|"]
        for batch in args.batches:
            r = result[stage][batch]
            lines.append(f"| {batch} | " + " | ".join(f"{r['loss'][n]:.4f}" for n in steps)
                         + f" | {r['s_per_step']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, help="write the markdown tables here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pack = host.boot(cpu=True)
    text = markdown(curves(pack, args), args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0
