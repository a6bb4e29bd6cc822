"""Train the shapes model (demo/shapes_checkpoint.py) on the shapes world (demo/shapes_world.py); seeded, CPU.

    python cli/bench.py train_shapes_model --out assets/imagic_shapes.safetensors    # the shipped checkpoint
    python cli/bench.py train_shapes_model --out x.safetensors --measure-only        # measure a checkpoint again

The shipped checkpoint is one run of the first command with the defaults (seed 0): 37.9 minutes on a
shared 2-core CPU. A pilot: ``--decoder-steps 5 --n-data 64 --unet-steps 5 --eval-per-caption 1 --ranks 2``
(about a minute). ``--init`` continues the UNet of an earlier checkpoint (for experiments; the recipe in the
metadata records it).

1. The VAE: a TAESD whose encoder is set by hand (``analytic_taesd``: the 8x8-pixel average of R, G, B) and
   whose decoder is trained on 64x64 crops around the object, with a little noise on the latent so it
   tolerates the UNet's imprecision; ``vae_scale``/``vae_shift`` put the latents the model sees (VAE Encode
   -> process_latent_in) at zero mean and unit spread. It trains in its own process beside the UNet.
2. The UNet: through ComfyUI's own model object (``private_model`` + ``ComfyDenoiser`` + the pack's
   ``denoising_loss``, SD1's eps schedule), on the latents of scenes of the training captions, 10 % caption
   dropout (the empty text), offset noise 0.1, an EMA of the weights; data parallel over ``--ranks``
   processes, each in a session of its own (the CPU scheduler shares by session).
3. The measurement: text-to-image on the held-out captions through the stock node functions
   (bench/shapes_text_to_image.py), the VAE round trip and the reader on true renders, all read by
   ``shapes_world.read``; stored with the recipe in the file's metadata.
"""
from __future__ import annotations

if __name__ == "__main__":  # a benchmark is the pack's module
    raise SystemExit("run it as: python cli/bench.py train_shapes_model [options]")

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from . import host
from .shapes_text_to_image import measure_t2i

ROOT = Path(__file__).resolve().parents[1]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def to_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------------
# 1. VAE


def join(ranks: int, rank: int, port: int) -> None:
    """Join the data-parallel group of ``ranks`` processes (gloo, this machine)."""
    if ranks > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)


def leave(ranks: int) -> None:
    if ranks > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def average_gradients(params: list, ranks: int) -> None:
    """Every rank ends with the mean gradient, so every rank takes the same optimiser step."""
    if ranks > 1:
        import torch.distributed as dist

        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= ranks
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


def analytic_taesd(sc):
    """A TAESD with the hand-set encoder (``set_analytic_encoder``: the latent is the 8x8-pixel average of
    R, G, B and a zero 4th channel) whose decoder starts as nearest upsampling of the same channels, every
    block a no-op with trainable inner convolutions."""
    taesd = sc.set_analytic_encoder(sc.build_taesd(0))
    dec = taesd.taesd_decoder
    with torch.no_grad():
        for block in [m for m in dec.modules() if type(m).__name__ == "Block"]:
            block.conv[4].weight.zero_()
            block.conv[4].bias.zero_()
        for i in (1, 7, 12, 17, 19):  # conv(4, 64), the three after each upsampling, conv(64, 3): identity
            dec[i].weight.zero_()
            if dec[i].bias is not None:
                dec[i].bias.zero_()
            for c in range(3):
                dec[i].weight[c, c, 1, 1] = 1.0
    return taesd


def encode(images: torch.Tensor) -> torch.Tensor:
    """What ``analytic_taesd``'s encoder computes (NCHW pixels in [0, 1]), as one average pooling."""
    pooled = torch.nn.functional.avg_pool2d(images, 8)
    return torch.cat([pooled, torch.zeros_like(pooled[:, :1])], dim=1)


def train_decoder(world, taesd, args):
    """The decoder on 64x64 crops around the object (where the detail is), latents with a little noise."""
    params = list(taesd.taesd_decoder.parameters())
    opt = torch.optim.Adam(params, lr=args.vae_lr)
    rng = np.random.default_rng(args.seed + 1)
    gen = torch.Generator().manual_seed(args.seed + 2)
    crop = 64
    steps = args.decoder_steps
    for step in range(steps):
        scenes = world.random_scenes(args.vae_batch, int(rng.integers(1 << 31)), world.ALL_COMBOS)
        full = to_nchw(world.render_batch(scenes))
        z = encode(full)
        xs, zs = [], []
        for i, sc_ in enumerate(scenes):
            cx, cy = (c * world.SIZE for c in world.centre(sc_))
            jx, jy = rng.integers(-2, 3, size=2)
            ox = int(np.clip(round((cx - crop / 2) / 8) + jx, 0, (world.SIZE - crop) // 8))
            oy = int(np.clip(round((cy - crop / 2) / 8) + jy, 0, (world.SIZE - crop) // 8))
            xs.append(full[i, :, oy * 8:oy * 8 + crop, ox * 8:ox * 8 + crop])
            zs.append(z[i, :, oy:oy + crop // 8, ox:ox + crop // 8])
        x, z = torch.stack(xs), torch.stack(zs)
        for g in opt.param_groups:
            g["lr"] = args.vae_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        rec = taesd.taesd_decoder(z + args.vae_latent_noise * torch.randn(z.shape, generator=gen))
        weight = 1.0 + 4.0 * ((x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) > 0.1).float()  # the object
        mse = torch.nn.functional.mse_loss(rec, x)
        loss = (weight * ((rec - x).abs() + (rec - x) ** 2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            log(f"decoder {step} mse {mse.item():.5f}")
    return taesd


# ---------------------------------------------------------------------------------------------------
# 2. UNet


def train_unet(sc, pack, clip, latents: torch.Tensor, captions: list[int], texts: list[str], args, rank: int = 0):
    """Data parallel over ``args.ranks`` processes (gloo): each takes batch/ranks items, the gradients are
    averaged, every rank takes the same optimiser step. Returns the ModelPatcher with the EMA weights."""
    ranks = args.ranks
    cm = pack("nodes.comfy_model")
    diffusion = pack("core.diffusion")
    patcher = sc.build_unet(args.seed)
    if args.init:  # continue from a checkpoint's UNet
        patcher = sc.load_shapes_checkpoint(args.init)[0]
    base = cm.private_model(patcher, train_weights=True)
    den = cm.ComfyDenoiser(base)
    params = list(base.diffusion_model.parameters())
    for p in params:
        p.requires_grad_(True)
    ema = [p.detach().clone() for p in params]
    with torch.no_grad():
        contexts = torch.cat([clip.encode_from_tokens(clip.tokenize(t)) for t in texts + [""]]).float()
    empty = len(texts)
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 3 + 1000 * rank)
    per_rank = args.unet_batch // ranks
    caption_ids = torch.tensor(captions)
    n = len(latents)
    t0 = time.time()
    for step in range(args.unet_steps):
        idx = torch.randint(0, n, (per_rank,), generator=gen)
        x0 = latents[idx]
        ids = caption_ids[idx].clone()
        ids[torch.rand(len(ids), generator=gen) < args.caption_dropout] = empty
        noise = torch.randn(x0.shape, generator=gen)
        noise = noise + args.offset_noise * torch.randn(x0.shape[:2] + (1, 1), generator=gen)
        sigma = den.sample_sigmas(len(idx), gen)
        for g in opt.param_groups:
            g["lr"] = unet_lr(args, step)
        loss = diffusion.denoising_loss(den, x0, {"cross_attn": contexts[ids]}, noise, sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, ranks)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p, 1 - decay)
        if step % 50 == 0 or step == args.unet_steps - 1:
            log(f"unet {step} loss {loss.item():.4f} ({(time.time() - t0) / (step + 1):.2f} s/step)")
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            p.copy_(e)
    sd = {k: v.detach().clone() for k, v in base.state_dict().items() if k.startswith("diffusion_model.")}
    patcher.model.load_state_dict(sd, strict=False)
    return patcher


def unet_lr(args, step: int) -> float:
    """Warm-up over 100 steps, then constant or a cosine down to a tenth (``--lr-schedule``)."""
    warm = min(1.0, (step + 1) / 100)
    if args.lr_schedule == "constant":
        return args.unet_lr * warm
    return args.unet_lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * step / max(args.unet_steps - 1, 1))))


def _attributes(r) -> tuple:
    return r.colour, r.shape, r.position


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "imagic_shapes.safetensors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoder-steps", type=int, default=450, help="VAE decoder steps (beside the UNet)")
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-latent-noise", type=float, default=0.02)
    p.add_argument("--n-data", type=int, default=3200, help="encoded scenes the UNet trains on")
    p.add_argument("--unet-steps", type=int, default=5000)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--offset-noise", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--eval-per-caption", type=int, default=5)
    p.add_argument("--eval-cfg", type=float, help="default: the model's (demo/shapes_checkpoint.py: SAMPLING)")
    p.add_argument("--init", type=Path, help="continue from this checkpoint: its UNet goes on training, its VAE "
                                             "is kept (no decoder phase)")
    p.add_argument("--history", help="with --measure-only: a note on how the checkpoint was made, kept in it")
    p.add_argument("--measure-only", action="store_true",
                   help="no training: measure the checkpoint at --out again and rewrite its measurements")
    p.add_argument("--ranks", type=int, default=4, help="data-parallel UNet processes (one torch thread each)")
    # internal: the worker processes
    p.add_argument("--role", default="main", choices=["main", "decoder", "unet"], help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def spawn(argv: list[str], *extra: str) -> subprocess.Popen:
    """A worker process of this script, in a session of its own (the scheduler shares the CPU by session)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "cli" / "bench.py"), "train_shapes_model", *argv, *extra]
    return subprocess.Popen(command, env=env, start_new_session=True)


def wait(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.wait() != 0:
            for other in procs:
                other.kill()
            sys.exit(f"a worker failed (exit {proc.returncode}); see the log above")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def training_data(world, args):
    scenes = world.random_scenes(args.n_data, args.seed + 10)
    texts = [world.caption(*c) for c in world.TRAIN_COMBOS]
    return scenes, texts, [texts.index(s.caption) for s in scenes]


def training_latents(world, args) -> torch.Tensor:
    scenes = training_data(world, args)[0]
    return torch.cat([encode(to_nchw(world.render_batch(scenes[i:i + 256]))) for i in range(0, len(scenes), 256)])


def normalise(raw: torch.Tensor) -> tuple[float, float]:
    return raw.mean().item(), raw.std().item()


def worker(args, pack, world, sc) -> None:
    if args.role == "decoder":
        taesd = train_decoder(world, analytic_taesd(sc), args)
        safetensors.torch.save_file(taesd.taesd_decoder.state_dict(), str(args.work / "decoder.safetensors"))
    elif args.role == "unet":
        raw = training_latents(world, args)
        _, texts, captions = training_data(world, args)
        mu, s = normalise(raw)
        join(args.ranks, args.rank, args.port)
        train_unet(sc, pack, sc.build_clip(), (raw - mu) / s, captions, texts, args, rank=args.rank)
        leave(args.ranks)


def vae_round_trip(world, vae, seed: int) -> dict:
    """Encode and decode true renders of all combinations: pixel MSE and how often the reader agrees."""
    with torch.inference_mode():
        test = world.render_batch(world.random_scenes(32, seed + 20, world.ALL_COMBOS))
        back = vae.decode(vae.encode(torch.from_numpy(test))).cpu().numpy()
    kept = [_attributes(world.read(b)) == _attributes(world.read(t)) for b, t in zip(back, test, strict=True)]
    return {"mse": round(float(((back - test) ** 2).mean()), 5), "attributes_kept": float(np.mean(kept))}


def measurements(world, sc, model, clip, vae, args) -> dict:
    t2i = measure_t2i(world, model, clip, vae, args.eval_per_caption, args.eval_cfg, sc.SAMPLING["steps"])
    log(f"held-out text-to-image: {t2i}")
    return {"imagic.reader_accuracy_true_renders": json.dumps(world.reader_accuracy()),
            "imagic.vae_round_trip": json.dumps(vae_round_trip(world, vae, args.seed)),
            "imagic.heldout_text_to_image": json.dumps(t2i)}


def static_metadata(world, sc) -> dict:
    return {"imagic.kind": "shapes_model", "imagic.unet_config": json.dumps(sc.UNET),
            "imagic.text_config": json.dumps(sc.TEXT_CONFIG), "imagic.held_out_combos": json.dumps(world.HELD_OUT)}


def remeasure(args, world, sc) -> None:
    import comfy.utils

    state, metadata = comfy.utils.load_torch_file(str(args.out), safe_load=True, return_metadata=True)
    model, clip, vae = sc.load_shapes_checkpoint(args.out)
    state = sc.compact(state, clip)  # a file written before compaction existed is stored compacted
    metadata = {**static_metadata(world, sc), **(metadata or {}), **measurements(world, sc, model, clip, vae, args)}
    recipe = json.loads(metadata.get("imagic.recipe", "{}"))  # the measurement's own settings are these now
    metadata["imagic.recipe"] = json.dumps({**recipe, "eval_cfg": args.eval_cfg,
                                            "eval_per_caption": args.eval_per_caption})
    if args.history:
        metadata["imagic.history"] = args.history
    comfy.utils.save_torch_file(state, str(args.out), metadata=metadata)
    sc.write_digest(args.out)
    log(f"rewrote the measurements of {args.out}")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(1)
    pack = host.boot(cpu=True)
    world = pack("demo.shapes_world")
    sc = pack("demo.shapes_checkpoint")
    args.eval_cfg = args.eval_cfg or sc.SAMPLING["cfg"]  # the model's own sampling unless told otherwise
    if args.role != "main":
        return worker(args, pack, world, sc)
    if args.measure_only:
        return remeasure(args, world, sc)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="imagic_shapes_train_"))
    common = [*argv, "--work", str(work)]

    log("phase 1: the VAE's decoder (beside the UNet); the encoder is set by hand")
    taesd = analytic_taesd(sc)
    with torch.no_grad():  # the hand-set encoder is the average pooling the UNet's data are made with
        check = to_nchw(world.render_batch(world.random_scenes(4, args.seed + 30, world.ALL_COMBOS)))
        assert torch.allclose(taesd.taesd_encoder(check), encode(check), atol=1e-5)
    decoder = None if args.init else spawn(common, "--role", "decoder")
    raw = training_latents(world, args)
    mu, s = normalise(raw)
    scale = float(sc.ShapesSD15.latent_format().scale_factor)
    latents = (raw - mu) / s
    log(f"latents: raw mean {mu:.3f} std {s:.3f}; per-channel std {latents.std(dim=(0, 2, 3)).tolist()}")

    log("phase 2: UNet")
    port = free_port()
    others = [spawn(common, "--role", "unet", "--rank", str(r), "--port", str(port)) for r in range(1, args.ranks)]
    _, texts, captions = training_data(world, args)
    clip = sc.build_clip()
    join(args.ranks, 0, port)
    model = train_unet(sc, pack, clip, latents, captions, texts, args)
    leave(args.ranks)
    wait(others + ([decoder] if decoder else []))
    if args.init:
        taesd.load_state_dict({k: v for k, v in sc.load_shapes_checkpoint(args.init)[2].first_stage_model
                               .state_dict().items() if k.startswith("taesd_")}, strict=False)
    else:
        taesd.taesd_decoder.load_state_dict(safetensors.torch.load_file(str(work / "decoder.safetensors")))
    taesd_sd = {k: v.detach().clone() for k, v in taesd.state_dict().items()}
    taesd_sd["vae_scale"] = torch.tensor(scale * s)
    taesd_sd["vae_shift"] = torch.tensor(-mu / (scale * s))
    vae = sc.vae_from_taesd(taesd_sd)

    state = sc.checkpoint_state_dict(model, clip, taesd_sd)
    state = {k: v.half() if v.is_floating_point() and v.ndim > 0 else v for k, v in state.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import comfy.utils

    comfy.utils.save_torch_file(state, str(args.out))  # measured as shipped (fp16), then rewritten with metadata
    model, clip, vae = sc.load_shapes_checkpoint(args.out)
    log("phase 3: text-to-image on held-out captions")
    measured = measurements(world, sc, model, clip, vae, args)
    minutes = (time.time() - started) / 60
    recipe = {k: v for k, v in vars(args).items() if k not in ("out", "work", "role", "rank", "port")}
    metadata = {
        "imagic.kind": "shapes_model",
        "imagic.recipe": json.dumps(recipe, default=str),
        "imagic.unet_config": json.dumps(sc.UNET),
        "imagic.text_config": json.dumps(sc.TEXT_CONFIG),
        "imagic.latent_stats": json.dumps({"raw_mean": mu, "raw_std": s}),
        **measured,
        "imagic.held_out_combos": json.dumps(world.HELD_OUT),
        "imagic.train_minutes": json.dumps(round(minutes, 1)),
        "imagic.trained_on": f"CPU, torch {torch.__version__}, {args.ranks} UNet processes of 1 thread",
    }
    comfy.utils.save_torch_file(state, str(args.out), metadata=metadata)
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {minutes:.1f} min")

