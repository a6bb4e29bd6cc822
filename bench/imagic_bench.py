"""Imagic training speed and memory: our nodes against a diffusers-style reference, side by side.

    python cli/bench.py imagic_bench                          # CPU: SD1.5 UNet, latent 32x32, a few minutes
    python cli/bench.py imagic_bench --device cuda --size 64  # GPU: 512x512, plus one whole edit per mode

Both sides run the same SD1.5 UNet architecture with the same random weights (``bench/unet_pair.py``; no
download) on the same input: a random latent and a random CLIP-L-sized (1x77x768) text embedding. Rows:

* A, embedding optimisation: ``ImagicOptimizeEmbedding.execute`` vs the reference's step A.
* B, fine-tuning: ``ImagicFinetuneUNet.execute`` with ``method`` full and lora vs the reference's step B
  (Adam on every UNet weight: the community pipeline's only method). ``--blocks`` runs the lora row once per
  ``lora_blocks`` choice (``all`` alone by default), labelled "B: finetune lora (decoder)" and so on.

Our rows run once per ``low_memory`` setting. Each row runs in its own process (``--no-isolate``: all in
this one, faster, but then peak RSS figures include what earlier rows left allocated) and reports the
median seconds per step after the warm-up steps, the peak memory (peak RSS on a CPU,
``torch.cuda.max_memory_allocated`` on a GPU) and, last, the ratio of its time to the reference's.
"""
from __future__ import annotations

if __name__ == "__main__":  # a benchmark is the pack's module
    raise SystemExit("run it as: python cli/bench.py imagic_bench [options]")

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from ..core import blocks as parts
from ..core import defaults
from . import unet_pair

STAGES = {"embed": "A: embedding", "full": "B: finetune full", "lora": "B: finetune lora"}
REFERENCE_OF = {"embed": "embed", "full": "finetune", "lora": "finetune"}
LEARNING_RATES = {"embed": defaults.EMBED_LEARNING_RATE, "finetune": defaults.PAPER["tune_learning_rate"],
                  **defaults.LEARNING_RATE}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(unet_pair.DIFFUSERS_CONFIGS), default="sd15",
                   help="sd15: the real SD1.5 UNet (860M); mini: the same layout shrunk (smoke test)")
    p.add_argument("--size", type=int, default=None, help="latent side (default 32 on a CPU, 64 = 512 px on a GPU)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per row, after the warm-up")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps per row")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--low-memory", choices=["on", "off", "both"], default="both", help="our rows' low_memory")
    p.add_argument("--stages", default="embed,full,lora", help="comma-separated: embed, full, lora")
    p.add_argument("--blocks", nargs="+", choices=parts.CHOICES, default=[defaults.LORA_BLOCKS],
                   help="the lora rows' lora_blocks, one row each (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false", help="all rows in this process")
    p.add_argument("--edit", choices=["auto", "on", "off"], default="auto",
                   help="also time one whole edit per low_memory setting (auto: on a GPU)")
    p.add_argument("--edit-steps", type=int, nargs=3, metavar=("A", "B", "SAMPLE"),
                   default=[defaults.PAPER["embed_steps"], defaults.PAPER["tune_steps"], 20],
                   help="the whole edit's steps (the paper's and KSampler's defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or (64 if args.device.startswith("cuda") else 32)
    return args


# ---------------------------------------------------------------------------------------------------
# One row


def inputs(args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The input both sides get: a latent in the model's space and a CLIP-L-sized text embedding."""
    g = torch.Generator().manual_seed(args.seed)
    latents = torch.randn((1, 4, args.size, args.size), generator=g)
    width = unet_pair.DIFFUSERS_CONFIGS[args.model]["cross_attention_dim"]
    embedding = torch.randn((1, unet_pair.CONTEXT_TOKENS, width), generator=g)
    return latents.to(device), embedding.to(device)


_PACK = {}


def comfy_pack(device: torch.device):
    if "pack" not in _PACK:
        from . import host

        _PACK["pack"] = host.boot(cpu=device.type == "cpu", reference=True)
    return _PACK["pack"]


def run_row(job: dict, args) -> dict:
    """Run one row in this process; returns its result (times, peak memory, losses)."""
    device = torch.device(args.device)
    latents, embedding = inputs(args, device)
    steps = args.warmup + args.steps
    if job["impl"] == "reference":
        from . import reference

        unet = unet_pair.diffusers_unet(args.model, args.seed).to(device)
        clock, peak, losses = reference.run(job["stage"], unet, latents, embedding, steps,
                                            LEARNING_RATES[job["stage"]], args.seed)
    else:
        pack = comfy_pack(device)
        from . import ours  # imports ComfyUI: after the boot
        model = unet_pair.comfy_model(args.model, args.seed, device)
        if job["stage"] == "edit":
            a, b, s = args.edit_steps
            seconds, peak, _ = ours.edit(pack, model, latents, embedding, job["low_memory"], a, b, s, seed=args.seed)
            return dict(job, seconds=seconds, peak_bytes=peak.bytes, peak_kind=peak.kind)
        clock, peak, losses = ours.run(pack, job["stage"], model, latents, embedding, steps,
                                       LEARNING_RATES[job["stage"]], job["low_memory"], args.seed,
                                       lora_blocks=job.get("blocks", defaults.LORA_BLOCKS))
    return dict(job, median_s=clock.median(args.warmup), peak_bytes=peak.bytes, peak_kind=peak.kind,
                first_loss=losses[0], last_loss=losses[-1], steps=len(losses))


def run_isolated(job: dict, argv: list[str]) -> dict:
    launcher = Path(__file__).resolve().parents[1] / "cli" / "bench.py"  # the one way a benchmark runs
    cmd = [sys.executable, str(launcher), "imagic_bench", *argv, "--worker", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return dict(job, error=f"exit {proc.returncode}: {' | '.join(tail)}")


# ---------------------------------------------------------------------------------------------------
# The whole run


def plan(args) -> list[dict]:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        sys.exit(f"unknown stage(s) {sorted(unknown)}; choose from {sorted(STAGES)}")
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.low_memory]
    jobs = []
    for reference in dict.fromkeys(REFERENCE_OF[s] for s in stages):
        jobs.append({"stage": reference, "impl": "reference", "low_memory": None})
    for s in stages:
        for b in (dict.fromkeys(args.blocks) if s == "lora" else [None]):
            jobs += [{"stage": s, "impl": "ours", "low_memory": m, **({"blocks": b} if b else {})} for m in modes]
    if args.edit == "on" or (args.edit == "auto" and args.device.startswith("cuda")):
        jobs += [{"stage": "edit", "impl": "ours", "low_memory": m} for m in modes]
    return jobs


def _gb(n: float | None) -> str:
    return "–" if not n else f"{n / 1e9:.2f} GB"


def table(args, results: list[dict]) -> str:
    ref = {r["stage"]: r.get("median_s") for r in results if r["impl"] == "reference"}
    kind = next((r["peak_kind"] for r in results if "peak_kind" in r), "peak")
    lines = ["| stage | implementation | low_memory | s/step (median) | peak memory "
             f"({kind}) | ours/reference |", "|---|---|---|---|---|---|"]
    order = ["embed", "finetune", "full", "lora"]
    rows = sorted((r for r in results if r["stage"] != "edit"),
                  key=lambda r: (order.index(r["stage"]), r["impl"] != "reference",
                                 parts.CHOICES.index(r.get("blocks", defaults.LORA_BLOCKS)), r["low_memory"] is False))
    for r in rows:
        label = "A: embedding" if r["stage"] == "embed" else STAGES.get(r["stage"], "B: finetune (all weights)")
        if "blocks" in r and (r["blocks"] != defaults.LORA_BLOCKS or len(args.blocks) > 1):
            label += f" ({r['blocks']})"
        impl = "reference (diffusers)" if r["impl"] == "reference" else "ours (nodes)"
        mode = "–" if r["low_memory"] is None else ("on" if r["low_memory"] else "off")
        if "error" in r:
            lines.append(f"| {label} | {impl} | {mode} | failed: {r['error']} | | |")
            continue
        base = ref.get(REFERENCE_OF.get(r["stage"], r["stage"]))
        ratio = f"{r['median_s'] / base:.2f}" if base else "–"
        lines.append(f"| {label} | {impl} | {mode} | {r['median_s']:.3f} | {_gb(r['peak_bytes'])} | {ratio} |")
    edits = [r for r in results if r["stage"] == "edit"]
    if edits:
        a, b, s = args.edit_steps
        lines += ["", f"| whole edit (A {a} + B lora {b} + {s} sampling steps) | low_memory | seconds | peak memory |",
                  "|---|---|---|---|"]
        for r in edits:
            mode = "on" if r["low_memory"] else "off"
            value = f"failed: {r['error']}" if "error" in r else f"{r['seconds']:.1f}"
            lines.append(f"| ours (nodes) | {mode} | {value} | {_gb(r.get('peak_bytes'))} |")
    return "\n".join(lines)


def header(args) -> str:
    shapes = unet_pair.diffusers_unet_shapes(args.model)
    params = sum(v.numel() for v in shapes.values())
    threads = args.threads or torch.get_num_threads()
    where = args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(torch.device(args.device))
    cpu_threads = f", {threads} threads" if args.device == "cpu" else ""
    return (f"Imagic training steps: {args.model} UNet ({params / 1e6:.1f}M parameters), "
            f"latent {args.size}x{args.size} ({args.size * 8} px), {where}{cpu_threads}"
            f"; median of {args.steps} steps after {args.warmup} warm-up; torch {torch.__version__}")


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print("RESULT " + json.dumps(run_row(json.loads(args.worker), args)), flush=True)
        return 0
    print(header(args), flush=True)
    results = []
    for job in plan(args):
        result = run_isolated(job, argv) if args.isolate else run_row(job, args)
        results.append(result)
        print(f"  done: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(table(args, results), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"header": header(args), "results": results}, indent=1))
    return 0
