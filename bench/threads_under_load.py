"""Training time with torch's default thread count against core.threads' choice, on an idle and a loaded CPU.

    python cli/bench.py threads_under_load                 # 40 + 40 steps, 2 rounds, 2 busy processes for "loaded"
    python cli/bench.py threads_under_load --steps 20 --rounds 1 --busy 2

Runs the shapes demo's two training nodes (Imagic Optimize Embedding, then Imagic Finetune UNet, lora, as in
``python cli/edit.py --demo``) on the shipped shapes model, in-process on ComfyUI's CPU path. "loaded" starts
``--busy`` processes that spin (``while 1: pass``) for the time of those runs. "default" trains at torch's own
thread count (one per core), "chosen" lets the nodes pick (``core.threads.training_threads``). The rows
alternate within each round. Prints seconds per run, and the thread count chosen.

``--sample``: also ComfyUI's own KSampler (the demo's 20 euler steps, cfg 2, on the same model), which the
pack does not set threads for, at torch's count and at one thread.
"""
from __future__ import annotations

if __name__ == "__main__":  # a benchmark is the pack's module
    raise SystemExit("run it as: python cli/bench.py threads_under_load [options]")

import argparse
import contextlib
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import host

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


@contextlib.contextmanager
def busy(n: int):
    """``n`` processes that keep a CPU each busy, stopped on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]
    try:
        time.sleep(1.0 if n else 0.0)  # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="steps of each training node (default 40)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--busy", type=int, default=2, help="spinning processes for the loaded rows (default 2)")
    p.add_argument("--sample", action="store_true", help="also time ComfyUI's KSampler at torch's count and at 1")
    args = p.parse_args(argv)

    pack = host.boot(cpu=True)
    threads = pack("core.threads")
    world = pack("demo.shapes_world")
    demo = pack("demo.shapes_demo")
    a_node, b_node = pack("nodes.optimize_embedding").ImagicOptimizeEmbedding, pack(
        "nodes.finetune_unet").ImagicFinetuneUNet
    with torch.inference_mode():
        model, clip, vae = pack("demo.shapes_checkpoint").load_shapes_checkpoint()
        cond = clip.encode_from_tokens_scheduled(clip.tokenize(demo.DEMO_TEXT))
        pixels = torch.from_numpy(world.render(world.scene_for_seed(*demo.SOURCE, demo.SCENE_SEED))).float()
        latent = {"samples": vae.encode(pixels[None, ..., :3])}

    chosen = []
    real_choice = threads.training_threads

    def choice() -> int:
        chosen.append(real_choice())
        return chosen[-1]

    def train(pick) -> float:
        threads.training_threads = pick
        start = time.perf_counter()
        with torch.inference_mode():
            a = demo.TRAINING["ImagicOptimizeEmbedding"]
            (e_opt, _), = [a_node.execute(model=model, conditioning=cond, latent=latent, steps=args.steps,
                                          seed=0, **a).args]
            b = demo.TRAINING["ImagicFinetuneUNet"]
            b_node.execute(model=model, conditioning=e_opt, latent=latent, steps=args.steps, seed=0, **b)
        return time.perf_counter() - start

    def sample(threads_: int) -> float:
        import nodes as comfy_nodes

        sampling = pack("demo.shapes_checkpoint").SAMPLING
        before = torch.get_num_threads()
        torch.set_num_threads(threads_)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                comfy_nodes.common_ksampler(model, 0, sampling["steps"], sampling["cfg"], sampling["sampler_name"],
                                            sampling["scheduler"], cond, cond, {"samples": torch.zeros_like(
                                                latent["samples"])})
        finally:
            torch.set_num_threads(before)
        return time.perf_counter() - start

    default = torch.get_num_threads()
    rows = {(load, how): [] for load in ("idle", "loaded") for how in ("default", "chosen")}
    if args.sample:
        counts = sorted({default, 1}, reverse=True)
        rows.update({(load, f"KSampler {n}"): [] for load in ("idle", "loaded") for n in counts})
    train(choice)  # warm-up (first-call costs), not counted
    chosen.clear()
    for _ in range(args.rounds):
        for load, n in (("idle", 0), ("loaded", args.busy)):
            with busy(n):
                for how, pick in (("default", lambda: default), ("chosen", choice)):
                    before = len(chosen)
                    seconds = train(pick)
                    picked = chosen[before] if len(chosen) > before else default
                    rows[(load, how)].append((seconds, picked))
                    print(f"{load:6} {how:7} threads {picked}: {seconds:.1f} s", flush=True)
                if args.sample:
                    for n in counts:
                        seconds = sample(n)
                        rows[(load, f"KSampler {n}")].append((seconds, n))
                        print(f"{load:6} KSampler threads {n}: {seconds:.1f} s", flush=True)
    threads.training_threads = real_choice

    print(f"\n{cpu_name()}, {threads.usable_cpus()} usable CPUs, torch {torch.__version__} "
          f"(default {default} threads); A {args.steps} + B {args.steps} lora steps on the shapes model; "
          f"loaded = {args.busy} spinning processes")
    print("| CPU | torch threads | runs (s) | mean (s) |\n|---|---|---|---|")
    for (load, how), runs in rows.items():
        counts = sorted({t for _, t in runs})
        print(f"| {load} | {how}: {', '.join(map(str, counts))} | {', '.join(f'{s:.1f}' for s, _ in runs)} | "
              f"{statistics.mean(s for s, _ in runs):.1f} |")
    return 0

