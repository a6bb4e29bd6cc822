"""Train the shapes model (nodes/shapes_checkpoint.py) on the shapes world (core/shapes_world.py); one seeded run.

    python bench/train_shapes_model.py                      # the shipped recipe -> assets/imagic_shapes.safetensors
    python bench/train_shapes_model.py --out /tmp/x.safetensors --vae-steps 100 --unet-steps 200   # a pilot

Three phases, all on the CPU:
1. the VAE: a TAESD trained as an autoencoder on 64x64 crops of rendered scenes (latent-aligned), with a little
   noise on the latent so the decoder tolerates the UNet's imprecision; then ``vae_scale``/``vae_shift`` are
   set so the latents the model sees (VAE Encode -> process_latent_in) have zero mean and unit spread;
2. the UNet: through ComfyUI's own model object (``private_model`` + ``ComfyDenoiser`` + the pack's
   ``denoising_loss``, SD1's eps schedule), on the encoded latents of scenes of the training captions, 10 %
   caption dropout (the empty text), offset noise, an EMA of the weights;
3. the measurement: text-to-image on the held-out captions through the stock KSampler and VAE Decode node
   functions, read by ``shapes_world.read``; stored with the recipe in the file's metadata.
"""
from __future__ import annotations

import argparse
import json
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
from shapes_text_to_image import boot, measure_t2i

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


def train_vae(world, sc, args, taesd=None, decoder_only: bool = False, rank: int = 0):
    """Train the TAESD as an autoencoder (data parallel over ``args.vae_ranks``), or, ``decoder_only``, its
    decoder on the frozen encoder's latents (one process)."""
    ranks = 1 if decoder_only else args.vae_ranks
    torch.manual_seed(args.seed)
    taesd = taesd or sc.build_taesd(args.seed)
    steps = args.decoder_steps if decoder_only else args.vae_steps
    params = list(taesd.taesd_decoder.parameters()) + ([] if decoder_only else list(taesd.taesd_encoder.parameters()))
    opt = torch.optim.Adam(params, lr=args.vae_lr)
    rng = np.random.default_rng(args.seed + 1 + 100 * decoder_only + 1000 * rank)
    gen = torch.Generator().manual_seed(args.seed + 2 + 100 * decoder_only + 1000 * rank)
    crop = args.vae_crop
    for step in range(steps):
        scenes = world.random_scenes(args.vae_batch // ranks, int(rng.integers(1 << 31)), world.ALL_COMBOS)
        full = to_nchw(world.render_batch(scenes))
        offs = rng.integers(0, (world.SIZE - crop) // 8 + 1, size=(len(scenes), 2)) * 8
        x = torch.stack([full[i, :, oy:oy + crop, ox:ox + crop] for i, (oy, ox) in enumerate(offs)])
        for g in opt.param_groups:
            g["lr"] = args.vae_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        with torch.set_grad_enabled(not decoder_only):
            z = taesd.taesd_encoder(x)
        rec = taesd.taesd_decoder(z + args.vae_latent_noise * torch.randn(z.shape, generator=gen))
        mse = torch.nn.functional.mse_loss(rec, x)
        loss = mse + torch.nn.functional.l1_loss(rec, x) + 1e-2 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, ranks)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            log(f"{'decoder' if decoder_only else 'vae'} {step} mse {mse.item():.5f} z std {z.std().item():.3f}")
    return taesd


@torch.no_grad()
def encode(taesd, images: np.ndarray, batch: int = 32) -> torch.Tensor:
    return torch.cat([taesd.taesd_encoder(to_nchw(images[i:i + batch])) for i in range(0, len(images), batch)])


# ---------------------------------------------------------------------------------------------------
# 2. UNet


def train_unet(sc, pack, clip, latents: torch.Tensor, captions: list[int], texts: list[str], args, rank: int = 0):
    """Data parallel over ``args.ranks`` processes (gloo): each takes batch/ranks items, the gradients are
    averaged, every rank takes the same optimiser step. Returns the ModelPatcher with the EMA weights."""
    ranks = args.ranks
    cm = pack("nodes.comfy_model")
    diffusion = pack("core.diffusion")
    patcher = sc.build_unet(args.seed)
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
            g["lr"] = args.unet_lr * min(1.0, (step + 1) / 100)
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


def _attributes(r) -> tuple:
    return r.colour, r.shape, r.position


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "imagic_shapes.safetensors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=300, help="autoencoder steps (encoder and decoder)")
    p.add_argument("--decoder-steps", type=int, default=700, help="then decoder-only steps, beside the UNet")
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-crop", type=int, default=48, help="training crop (pixels, a multiple of 8)")
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-latent-noise", type=float, default=0.1)
    p.add_argument("--n-data", type=int, default=3200, help="encoded scenes the UNet trains on")
    p.add_argument("--unet-steps", type=int, default=1000)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--offset-noise", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--eval-per-caption", type=int, default=5)
    p.add_argument("--eval-cfg", type=float, default=5.0)
    p.add_argument("--vae-ranks", type=int, default=2, help="data-parallel autoencoder processes (1 thread each)")
    p.add_argument("--ranks", type=int, default=4, help="data-parallel UNet processes (one torch thread each)")
    p.add_argument("--resume", type=Path, help="the work folder of an interrupted run: reuse its autoencoder, "
                                               "latents and (running or finished) decoder phase")
    p.add_argument("--encoders", type=int, default=2, help="processes that encode the training scenes")
    # internal: the worker processes
    p.add_argument("--role", default="main", choices=["main", "vae", "decoder", "encode", "unet"],
                   help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def spawn(argv: list[str], *extra: str) -> subprocess.Popen:
    """A worker process of this script, in a session of its own (the scheduler shares the CPU by session)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, __file__, *argv, *extra], env=env, start_new_session=True)


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


def load_taesd(sc, path: Path):
    taesd = sc.build_taesd()
    taesd.load_state_dict(safetensors.torch.load_file(str(path)))
    return taesd


def load_latents(args) -> torch.Tensor:
    parts = [safetensors.torch.load_file(str(args.work / f"latents_{i}.safetensors"))["raw"]
             for i in range(args.encoders)]
    raw = torch.empty((args.n_data,) + tuple(parts[0].shape[1:]))
    for i, part in enumerate(parts):
        raw[i::args.encoders] = part
    return raw


def worker(args, pack, world, sc) -> None:
    if args.role == "vae":
        join(args.vae_ranks, args.rank, args.port)
        train_vae(world, sc, args, rank=args.rank)
        leave(args.vae_ranks)
    elif args.role == "decoder":
        taesd = train_vae(world, sc, args, load_taesd(sc, args.work / "taesd_joint.safetensors"), decoder_only=True)
        safetensors.torch.save_file(taesd.taesd_decoder.state_dict(), str(args.work / "decoder.safetensors"))
    elif args.role == "encode":
        taesd = load_taesd(sc, args.work / "taesd_joint.safetensors")
        scenes = training_data(world, args)[0][args.rank::args.encoders]
        raw = encode(taesd, world.render_batch(scenes))
        safetensors.torch.save_file({"raw": raw}, str(args.work / f"latents_{args.rank}.safetensors"))
    elif args.role == "unet":
        raw = load_latents(args)
        _, texts, captions = training_data(world, args)
        mu, s = raw.mean().item(), raw.std().item()
        join(args.ranks, args.rank, args.port)
        train_unet(sc, pack, sc.build_clip(), (raw - mu) / s, captions, texts, args, rank=args.rank)
        leave(args.ranks)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(1)
    pack = boot()
    world = pack("core.shapes_world")
    sc = pack("nodes.shapes_checkpoint")
    if args.role != "main":
        return worker(args, pack, world, sc)
    started = time.time()
    work = args.resume or Path(tempfile.mkdtemp(prefix="imagic_shapes_train_"))
    common = [*argv, "--work", str(work)]

    if (work / "taesd_joint.safetensors").is_file():
        log(f"phase 1: VAE, from {work}")
        taesd = load_taesd(sc, work / "taesd_joint.safetensors")
    else:
        log("phase 1: VAE")
        port = free_port()
        others = [spawn(common, "--role", "vae", "--rank", str(r), "--port", str(port))
                  for r in range(1, args.vae_ranks)]
        join(args.vae_ranks, 0, port)
        taesd = train_vae(world, sc, args)
        leave(args.vae_ranks)
        wait(others)
        safetensors.torch.save_file(taesd.state_dict(), str(work / "taesd_joint.safetensors"))
    decoder = None if args.resume else spawn(common, "--role", "decoder")  # a resumed run's goes on by itself
    if not all((work / f"latents_{i}.safetensors").is_file() for i in range(args.encoders)):
        wait([spawn(common, "--role", "encode", "--rank", str(i)) for i in range(args.encoders)])
    args.work = work
    raw = load_latents(args)
    mu, s = raw.mean().item(), raw.std().item()
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
    while not (work / "decoder.safetensors").is_file():  # a resumed run: the interrupted run's decoder phase
        time.sleep(5)
    time.sleep(2)
    taesd.taesd_decoder.load_state_dict(safetensors.torch.load_file(str(work / "decoder.safetensors")))
    taesd_sd = {k: v.detach().clone() for k, v in taesd.state_dict().items()}
    taesd_sd["vae_scale"] = torch.tensor(scale * s)
    taesd_sd["vae_shift"] = torch.tensor(-mu / (scale * s))
    vae = sc.vae_from_taesd(taesd_sd)

    with torch.inference_mode():  # VAE round trip on scenes of all combinations
        test = world.render_batch(world.random_scenes(32, args.seed + 20, world.ALL_COMBOS))
        back = vae.decode(vae.encode(torch.from_numpy(test))).cpu().numpy()
        vae_mse = float(((back - test) ** 2).mean())
        kept = [_attributes(world.read(b)) == _attributes(world.read(t)) for b, t in zip(back, test, strict=True)]
        vae_read = float(np.mean(kept))
    log(f"VAE round trip mse {vae_mse:.5f}, attributes kept {vae_read:.3f}")
    state = sc.checkpoint_state_dict(model, clip, taesd_sd)
    state = {k: v.half() if v.is_floating_point() and v.ndim > 0 else v for k, v in state.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import comfy.utils

    comfy.utils.save_torch_file(state, str(args.out))  # measured as shipped (fp16), then rewritten with metadata
    model, clip, vae = sc.load_shapes_checkpoint(args.out)
    log("phase 3: text-to-image on held-out captions")
    t2i = measure_t2i(world, model, clip, vae, args.eval_per_caption, args.eval_cfg)
    log(f"held-out text-to-image: {t2i}")
    minutes = (time.time() - started) / 60
    recipe = {k: v for k, v in vars(args).items() if k not in ("out", "work", "role", "rank", "port", "resume")}
    metadata = {
        "imagic.kind": "shapes_model",
        "imagic.recipe": json.dumps(recipe),
        "imagic.unet_config": json.dumps(sc.UNET),
        "imagic.text_config": json.dumps(sc.TEXT_CONFIG),
        "imagic.latent_stats": json.dumps({"raw_mean": mu, "raw_std": s}),
        "imagic.reader_accuracy_true_renders": json.dumps(world.reader_accuracy()),
        "imagic.vae_round_trip": json.dumps({"mse": round(vae_mse, 5), "attributes_kept": vae_read}),
        "imagic.heldout_text_to_image": json.dumps(t2i),
        "imagic.held_out_combos": json.dumps(world.HELD_OUT),
        "imagic.train_minutes": json.dumps(round(minutes, 1)),
        "imagic.trained_on": f"CPU, torch {torch.__version__}, {args.ranks} UNet processes of 1 thread",
    }
    comfy.utils.save_torch_file(state, str(args.out), metadata=metadata)
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {minutes:.1f} min")


if __name__ == "__main__":
    main()
