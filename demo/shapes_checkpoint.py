"""The shapes model: a small SD1.x-family model trained on the shapes world (demo/shapes_world.py), shipped.

Unlike the tiny random checkpoints (demo/tiny_checkpoint.py) this one draws: text-to-image through the
stock CLIP Text Encode / KSampler / VAE Decode gives the scene a caption names, so an Imagic edit on it can
be seen and measured. It is built from ComfyUI's own classes, as the tiny checkpoint is, only with the
weights read from ``assets/imagic_shapes.safetensors`` (written by ``bench/train_shapes_model.py``):

* the diffusion model: a ``comfy.supported_models.SD15`` subclass (SD1's eps schedule, latent format and
  samplers) with a small cross-attention UNet on 16x16 latents (128 px pictures);
* the text encoder: SD1's ``SDClipModel`` on the shipped SD1 tokenizer, narrowed to a 64-wide, 2-layer
  transformer; its weights are random (seeded) and were never trained -- the UNet learned to read them;
* the VAE: a TAESD (``comfy.sd.VAE`` loads it by its ``taesd_*`` keys) trained on the world; its
  ``vae_scale``/``vae_shift`` put the model's latents at zero mean and unit spread.

The file keeps the checkpoint layout of an SD1 .safetensors: ``model.diffusion_model.*``,
``cond_stage_model.*`` (the text encoder) and ``first_stage_model.*`` (the VAE), plus its recipe and
measured accuracy in the metadata. Two parts that carry no learned information are not stored (``compact``),
which keeps the file at a few MB: the VAE's encoder, which is set by hand (``set_analytic_encoder``), and the
rows of the text encoder's 49,408-token table for tokens no caption of the world uses (random, and never seen
by the UNet); the loader rebuilds both.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.taesd.taesd
import comfy.utils
from comfy_api.latest import io

from ..nodes.errors import fail
from .tiny_checkpoint import init_weights, part_generator

CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "imagic_shapes.safetensors"
REINSTALL = "reinstall the pack (the file is part of it) or run bench/train_shapes_model.py"
CONTEXT = 64  # width of the text encoder = cross-attention context of the UNet


class ShapesSD15(comfy.supported_models.SD15):
    unet_extra_config: ClassVar[dict] = {"num_heads": 4, "num_head_channels": -1}


UNET = {
    "use_checkpoint": False, "image_size": 16, "in_channels": 4, "out_channels": 4,
    "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
    "model_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": [1, 1, 1],
    # no attention at 16x16 (a third of the compute for little gain): cross-attention at 8x8 and 4x4
    "transformer_depth": [0, 1, 1], "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 1, 1, 1, 1],
    "use_temporal_attention": False, "use_temporal_resblock": False,
    "context_dim": CONTEXT, "use_linear_in_transformer": False,
}
TEXT_CONFIG = {"hidden_size": CONTEXT, "num_attention_heads": 2, "num_hidden_layers": 2, "intermediate_size": 128}
TEXT_SEED = 9  # the frozen random text encoder
# How this model is sampled (its text-to-image, the demo, the tests and bench/edit_quality.py): measured on the
# held-out captions (40 pictures), cfg 1.5 / 2 / 2.5 / 3 / 5 drew the right shape in 0.85 / 0.93 / 0.93 / 0.75 /
# 0.45 of them (colour and position 1.00 at every cfg): stronger guidance makes the shapes lumpy.
SAMPLING = {"steps": 20, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal"}


def build_unet(seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    config = ShapesSD15(dict(UNET))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    init_weights(model, part_generator(seed, 0))
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def build_clip(seed: int = TEXT_SEED) -> comfy.sd.CLIP:
    target = ShapesSD15(dict(UNET)).clip_target()
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32, "clip_l_model_config": dict(TEXT_CONFIG)})
    init_weights(clip.cond_stage_model, part_generator(seed, 1))
    return clip


def build_taesd(seed: int = 0) -> comfy.taesd.taesd.TAESD:
    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights(taesd, part_generator(seed, 2))
    return taesd


def set_analytic_encoder(taesd: comfy.taesd.taesd.TAESD) -> comfy.taesd.taesd.TAESD:
    """Set the TAESD's encoder by hand, not by training: three stride-2 2x2 averages, every block a no-op (its
    convolutions zero, so ReLU(x) = x for the non-negative pixels) -- the latent is the 8x8-pixel average of
    R, G, B and a zero 4th channel. Colour, place and size are in the latent by construction; only the decoder
    learns (bench/train_shapes_model.py). No random number is involved, so the loader rebuilds it exactly."""
    enc = taesd.taesd_encoder
    with torch.no_grad():
        for p in enc.parameters():
            p.zero_()
        for i in (0, 14):  # conv(3, 64) and conv(64, 4): channels 0-2 through
            for c in range(3):
                enc[i].weight[c, c, 1, 1] = 1.0
        for i in (2, 6, 10):  # stride-2 convolutions: the 2x2 average of each channel
            for c in range(64):
                enc[i].weight[c, c, 1:, 1:] = 0.25
    return taesd


def vae_from_taesd(sd: dict) -> comfy.sd.VAE:
    return comfy.sd.VAE(sd=dict(sd))


TOKEN_TABLE = "cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding.weight"
TOKEN_IDS = "cond_stage_model.imagic_token_ids"  # the rows of TOKEN_TABLE that are stored ...
TOKEN_ROWS = "cond_stage_model.imagic_token_rows"  # ... and their values


def world_token_ids(clip: comfy.sd.CLIP) -> list[int]:
    """Every token the SD1 tokenizer gives for a caption of the shapes world or the empty text."""
    from . import shapes_world

    texts = [shapes_world.caption(*c) for c in shapes_world.ALL_COMBOS] + [""]
    return sorted({int(t) for text in texts for batch in clip.tokenize(text)["l"] for t, _ in batch})


def compact(sd: dict[str, torch.Tensor], clip: comfy.sd.CLIP) -> dict[str, torch.Tensor]:
    """The stored form of a full checkpoint state dict (see the module docstring): without the hand-set
    encoder, and with only the world's rows of the token table."""
    out = {k: v for k, v in sd.items() if not k.startswith("first_stage_model.taesd_encoder.")}
    if TOKEN_TABLE in out:
        ids = torch.tensor(world_token_ids(clip), dtype=torch.int64)
        out[TOKEN_IDS], out[TOKEN_ROWS] = ids, out.pop(TOKEN_TABLE)[ids].contiguous()
    return out


def checkpoint_state_dict(model, clip, taesd_sd: dict) -> dict[str, torch.Tensor]:
    """One SD1-style state dict of the three parts (see the module docstring), compacted."""
    out = {f"model.{k}": v for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")}
    out.update({f"cond_stage_model.{k}": v for k, v in clip.cond_stage_model.state_dict().items()})
    out.update({f"first_stage_model.{k}": v for k, v in taesd_sd.items()})
    return compact({k: v.detach().contiguous().cpu() for k, v in out.items()}, clip)


def _part(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)}


def load_shapes_checkpoint(path: Path | str = CHECKPOINT):
    """(ModelPatcher, CLIP, VAE) of the trained shapes model, as CheckpointLoaderSimple returns a checkpoint's."""
    sd, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    model = build_unet()
    missing, unexpected = model.model.load_state_dict(_part(sd, "model."), strict=False)
    if [k for k in missing if k.startswith("diffusion_model.")] or unexpected:
        raise RuntimeError(f"{path}: not a shapes checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})")
    clip = build_clip()
    text = _part(sd, "cond_stage_model.")
    if TOKEN_IDS in sd:  # the world's rows over the table as built (other tokens: random, as never trained)
        table = clip.cond_stage_model.state_dict()[TOKEN_TABLE.removeprefix("cond_stage_model.")].clone()
        table[sd[TOKEN_IDS].long()] = sd[TOKEN_ROWS].float()
        for key in (TOKEN_IDS, TOKEN_ROWS):
            text.pop(key.removeprefix("cond_stage_model."))
        text[TOKEN_TABLE.removeprefix("cond_stage_model.")] = table
    clip.cond_stage_model.load_state_dict(text, strict=True)
    encoder = set_analytic_encoder(build_taesd()).state_dict()
    vae = vae_from_taesd({**{k: v for k, v in encoder.items() if k.startswith("taesd_encoder.")},
                          **_part(sd, "first_stage_model.")})
    model.model.shapes_metadata = dict(metadata or {})
    return model, clip, vae


def checkpoint_metadata(path: Path | str = CHECKPOINT) -> dict:
    """The recipe and measurements stored with the checkpoint (JSON values decoded)."""
    _, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    out = {}
    for k, v in (metadata or {}).items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def digest_path(path: Path) -> Path:
    """Where the file's sha256 is recorded: beside it, as ``<name>.sha256`` (sha256sum's format)."""
    return path.with_name(path.name + ".sha256")


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def write_digest(path: Path) -> Path:
    out = digest_path(Path(path))
    out.write_text(f"{file_digest(Path(path))}  {Path(path).name}\n", encoding="utf-8")
    return out


def check_shipped(path: Path) -> None:
    """The shipped file as shipped: present, and its sha256 the one recorded beside it (a truncated, bit-flipped
    or replaced file would otherwise fail later with a message that does not say so)."""
    if not path.is_file():
        raise fail(NODE_ID, f"the shipped model file {path} is missing", REINSTALL)
    recorded = digest_path(path)
    try:
        expected = recorded.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        raise fail(NODE_ID, f"the checksum of the shipped model file is missing or unreadable ({recorded})",
                   REINSTALL) from None
    actual = file_digest(path)
    if actual != expected:
        raise fail(NODE_ID, f"the shipped model file {path} is damaged or was replaced: its sha256 {actual[:16]}... "
                            f"differs from the one recorded in {recorded.name} ({expected[:16]}...)", REINSTALL)


NODE_ID = "ImagicShapesCheckpoint"


class ImagicShapesCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Shapes Checkpoint (demo)",
            category="Imagic/demo",
            description=(
                "Loads the small text-to-image model shipped with the pack, trained on the shapes world (one "
                "coloured square, circle or triangle on a grey background, 128x128). It really draws what the "
                "caption says ('a red circle on the left'), so Imagic edits on it can be seen; no download."
            ),
            inputs=[],
            outputs=[
                io.Model.Output(tooltip="The shapes diffusion model (SD1.x family, eps, 16x16 latents for 128 px)."),
                io.Clip.Output(tooltip="Its text encoder: SD1's CLIP on the SD1 tokenizer, small and frozen."),
                io.Vae.Output(tooltip="Its VAE: a TAESD trained on the shapes world."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls) -> str:
        """A file replaced or repaired (reinstalled) is loaded (and checked) again, not taken from the cache."""
        try:
            stat = CHECKPOINT.stat()
        except OSError:
            return "missing"
        return f"{CHECKPOINT}:{stat.st_size}:{stat.st_mtime_ns}"

    @classmethod
    def execute(cls) -> io.NodeOutput:
        check_shipped(CHECKPOINT)
        try:
            return io.NodeOutput(*load_shapes_checkpoint(CHECKPOINT))
        except Exception as e:  # checked above: a file that matches its checksum and does not load is not ours
            raise fail(NODE_ID, f"the shipped model file {CHECKPOINT} does not load ({e})", REINSTALL) from e
