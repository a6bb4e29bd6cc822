"""The Imagic fine-tune file: one ``.safetensors`` that is both a ComfyUI LoRA and the saved Imagic edit state.

Torch-only (no ComfyUI import), so it is testable without a host. Layout of a file (format version 1):

* the UNet delta under ComfyUI's own LoRA keys: ``diffusion_model.<module>.lora_up.weight`` /
  ``.lora_down.weight`` / ``.alpha`` (``lora``, and ``full`` stored as an SVD extraction), or
  ``diffusion_model.<module>.diff`` / ``.diff_b`` (``full`` stored exactly). Any ComfyUI LoRA loader
  applies them.
* e_opt, every entry, under ``imagic.e_opt.<entry>.cross_attn`` and ``imagic.e_opt.<entry>.<key>`` for
  each tensor the entry carries (``pooled_output`` ...), in their own dtype. ComfyUI's stock LoRA loader
  does not know the ``imagic.`` keys: it skips them with one "lora key not loaded" log line each (two
  for a prompt encoded by CLIP Text Encode), and applies the rest.
* safetensors metadata (strings), all under ``imagic.``: see ``build_metadata``. ``imagic.lora_blocks`` (the
  part of the network the fine-tune covers, ``core.blocks``) is absent from files saved before it existed:
  those covered every layer (``FinetuneInfo.lora_blocks`` reads them as ``all``).

Nothing here ever unpickles: the file is read with safetensors by the caller, this module only
interprets the tensors and the metadata.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from .defaults import LORA_BLOCKS
from .lora import svd_extract

FORMAT = "imagic-finetune"
FORMAT_VERSION = 1
UNET_PREFIX = "diffusion_model."
E_OPT_PREFIX = "imagic.e_opt."
META = "imagic."  # every metadata key starts with this
CROSS_ATTN = "cross_attn"  # the name of an entry's main tensor (as ComfyUI's sampler calls it)
STORAGES = ("lora", "exact", "svd")
UNET_SUFFIXES = (".lora_up.weight", ".lora_down.weight", ".alpha", ".diff", ".diff_b")

# The target text is stored in the safetensors header, which readers cap at 100 MB; a text is refused above
# 1 MB (a prompt is a few hundred bytes), before any work.
MAX_TEXT_BYTES = 1_000_000


class FormatError(ValueError):
    """A file or input the format cannot accept; ``problem`` and ``fix`` are for the user."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem = problem
        self.fix = fix


def first_nonfinite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first key (sorted) whose tensor holds NaN or an infinity, else None: the one finite-values check
    of the fine-tune (on save: the delta and e_opt; on load: every tensor of the file)."""
    for key in sorted(tensors):
        value = tensors[key]
        if value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None


def check_text(text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise FormatError(f"the target text is {size} bytes; a fine-tune file stores at most {MAX_TEXT_BYTES} "
                          "bytes of text", "shorten target_text (a prompt is usually a few hundred bytes)")


# ---------------------------------------------------------------------------------------------------
# e_opt (a ComfyUI CONDITIONING: a list of [tensor, dict]) <-> tensors + a JSON layout


def _json_value(value):
    """``value`` as JSON (tuples become lists), or raise TypeError when it is not plain data."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def conditioning_to_tensors(conditioning: list) -> tuple[dict[str, torch.Tensor], list[dict], list[str]]:
    """(tensors to store, layout for the metadata, names of entry keys that cannot be stored).

    Every tensor of every entry is stored (a copy on the CPU, in its own dtype); plain values
    (numbers, strings, lists of them) go into the layout; anything else (a ControlNet object, hooks)
    is not storable and is reported, not silently lost.
    """
    tensors, layout, dropped = {}, [], []
    for i, entry in enumerate(conditioning):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)
                and isinstance(entry[1], dict)):
            raise FormatError(f"e_opt entry {i} is not a [tensor, dict] pair",
                              "connect the 'optimized' output of Imagic Optimize Embedding")
        main, extras = entry
        names, values = [CROSS_ATTN], {}
        tensors[f"{E_OPT_PREFIX}{i}.{CROSS_ATTN}"] = main.detach().cpu().clone()  # own memory: safetensors
        # refuses tensors that share storage (e.g. views of one encoder output)
        for key, value in extras.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{E_OPT_PREFIX}{i}.{key}"] = value.detach().cpu().clone()
                names.append(key)
                continue
            try:
                values[key] = _json_value(value)
            except TypeError:
                dropped.append(f"{i}.{key}")
        layout.append({"tensors": names, "values": values})
    bad = first_nonfinite(tensors)
    if bad:
        raise FormatError(f"e_opt has NaN or infinite values (in '{bad}')",
                          "run Imagic Optimize Embedding again with a lower learning_rate")
    return tensors, layout, dropped


def conditioning_from_tensors(tensors: Mapping[str, torch.Tensor], layout: list[dict]) -> list:
    """The CONDITIONING stored by ``conditioning_to_tensors``."""
    out = []
    for i, entry in enumerate(layout):
        extras = dict(entry.get("values", {}))
        main = None
        for name in entry["tensors"]:
            key = f"{E_OPT_PREFIX}{i}.{name}"
            if key not in tensors:
                raise FormatError(f"the e_opt tensor '{key}' listed in the metadata is missing",
                                  "the file is damaged: save the fine-tune again")
            if name == CROSS_ATTN:
                main = tensors[key]
            else:
                extras[name] = tensors[key]
        if main is None or main.ndim != 3:
            raise FormatError(f"e_opt entry {i} has no '{CROSS_ATTN}' tensor of shape (batch, tokens, width)",
                              "the file is damaged: save the fine-tune again")
        out.append([main, extras])
    return out


# ---------------------------------------------------------------------------------------------------
# The UNet delta


def method_of(keys: Iterable[str]) -> str:
    """``full`` when the delta has ``.diff`` / ``.diff_b`` keys (ImagicFinetuneUNet's full method; an
    SVD-stored file keeps its vector diffs), else ``lora``; FormatError when it holds no UNet delta."""
    keys = [k for k in keys if k.startswith(UNET_PREFIX)]
    if not keys:
        raise FormatError("the fine-tune holds no UNet weights (no 'diffusion_model.' keys)",
                          "connect the 'lora' output of Imagic Finetune UNet")
    if any(k.endswith((".diff", ".diff_b")) for k in keys):
        return "full"
    return "lora"


def lora_rank_of(delta: Mapping[str, torch.Tensor]) -> int | None:
    ranks = [v.shape[0] for k, v in delta.items() if k.endswith(".lora_down.weight")]
    return max(ranks) if ranks else None


def check_unet_keys(delta: Mapping[str, torch.Tensor]) -> None:
    bad = [k for k in delta if not (k.startswith(UNET_PREFIX) and k.endswith(UNET_SUFFIXES))]
    if bad:
        raise FormatError(f"the fine-tune has {len(bad)} key(s) that are not UNet LoRA/diff weights "
                          f"(e.g. '{bad[0]}')", "connect the 'lora' output of Imagic Finetune UNet")
    bad = first_nonfinite(delta)
    if bad:
        raise FormatError(f"the fine-tune has NaN or infinite values (in '{bad}')",
                          "train again with a lower learning_rate")


_FITS_FIX = "connect the model the fine-tune was trained from (the 'model' input of Imagic Finetune UNet)"


def check_fits(delta: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple]) -> None:
    """Raise FormatError unless every key of ``delta`` patches a weight of that shape in ``shapes``
    (model keys without the ``diffusion_model.`` prefix, e.g. ``input_blocks.0.0.weight``)."""
    for key, value in delta.items():
        module = key[len(UNET_PREFIX):]
        for suffix in UNET_SUFFIXES:
            if module.endswith(suffix):
                module = module[: -len(suffix)]
                break
        target = f"{module}.bias" if key.endswith(".diff_b") else f"{module}.weight"
        shape = shapes.get(target)
        if shape is None:
            raise FormatError(f"the fine-tune patches '{target}', which this model does not have", _FITS_FIX)
        if key.endswith((".diff", ".diff_b")):
            ok = tuple(value.shape) == tuple(shape)
        elif key.endswith(".lora_up.weight"):
            ok = value.shape[0] == shape[0]
        elif key.endswith(".lora_down.weight"):
            ok = value[0].numel() == math.prod(shape[1:])
        else:
            ok = value.numel() == 1
        if not ok:
            raise FormatError(f"'{key}' has shape {tuple(value.shape)}, which does not fit '{target}' {tuple(shape)}",
                              _FITS_FIX)


def unet_tensors(delta: Mapping[str, torch.Tensor], storage: str, svd_rank: int = 64, *, lowrank: bool = False,
                 on_step: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """The UNet part of the file, in ComfyUI LoRA keys.

    ``lora`` and ``exact`` keep the delta as it is. ``svd`` replaces every ``.diff`` of a matrix or kernel
    by ``lora_up`` / ``lora_down`` of rank ``svd_rank`` (no alpha: ComfyUI then scales by 1); vectors
    (norm gains, ``.diff_b`` biases) stay exact, as ComfyUI's extraction does with ``bias_diff``.
    ``on_step(done, total)`` is called after each extraction (progress and Cancel). ``delta`` is only
    read key by key, so it may be a lazy mapping.
    """
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}")
    out = {}
    todo = [k for k in delta if storage == "svd" and k.endswith(".diff") and delta[k].ndim >= 2]
    skip = set(todo)
    for key in delta:
        if key not in skip:
            out[key] = delta[key].detach().cpu().contiguous()
    for i, key in enumerate(todo):
        value = delta[key]
        up, down = svd_extract(value.detach(), svd_rank, lowrank=lowrank)
        module = key[: -len(".diff")]
        out[f"{module}.lora_up.weight"] = up.to(value.dtype).cpu()
        out[f"{module}.lora_down.weight"] = down.to(value.dtype).cpu()
        del value, up, down
        if on_step is not None:
            on_step(i + 1, len(todo))
    return out


def build_file(delta: Mapping[str, torch.Tensor], conditioning: list, *, storage: str, svd_rank: int,
               fingerprint: dict, model_family: str, target_text: str, suggested_eta: float,
               training: Mapping | None = None, lowrank: bool = False,
               on_step: Callable[[int, int], None] | None = None) -> tuple[dict, dict, list[str]]:
    """(tensors, metadata, dropped e_opt keys) of an Imagic file: the whole format in one call.

    ``storage`` ('exact' or 'svd') applies to a ``full`` delta; a ``lora`` delta is stored as it is.
    """
    method = method_of(delta)
    storage = "lora" if method == "lora" else storage
    e_opt, layout, dropped = conditioning_to_tensors(conditioning)
    training = dict(training or {})
    if method == "lora":
        training["lora_rank"] = lora_rank_of(delta)
    elif storage == "svd":
        training["svd_rank"] = svd_rank
    tensors = {**unet_tensors(delta, storage, svd_rank, lowrank=lowrank, on_step=on_step), **e_opt}
    metadata = build_metadata(method=method, storage=storage, fingerprint=fingerprint, model_family=model_family,
                              target_text=target_text, suggested_eta=suggested_eta, e_opt_layout=layout,
                              digest=tensors_digest(tensors), training=training)
    return tensors, metadata, dropped


# ---------------------------------------------------------------------------------------------------
# Content digest and metadata


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every key, dtype, shape and the raw bytes, in key order (detects damaged data)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype!s}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


@dataclass
class FinetuneInfo:
    """What the metadata of an Imagic file says (``read_metadata``)."""

    format_version: int
    method: str
    storage: str
    fingerprint: dict
    model_family: str
    target_text: str
    suggested_eta: float
    e_opt_layout: list[dict]
    digest: str
    training: dict = field(default_factory=dict)  # the optional imagic.* numbers (and lora_blocks), parsed

    @property
    def lora_blocks(self) -> str:
        """The part of the network the fine-tune covers; files saved before the choice existed: every layer."""
        return self.training.get("lora_blocks", LORA_BLOCKS)


# Optional values: metadata key (without "imagic.") -> type (numbers stored as their repr, strings as they are).
TRAINING_FIELDS = {
    "embedding_steps": int, "embedding_learning_rate": float, "embedding_seed": int,
    "finetune_steps": int, "finetune_learning_rate": float, "finetune_seed": int,
    "lora_rank": int, "svd_rank": int,
    # the steps that actually trained (fewer than *_steps when early stopping found the loss converged)
    "embedding_steps_trained": int, "finetune_steps_trained": int,
    # the part of the network the fine-tune covers (Imagic Finetune UNet's lora_blocks, core.blocks.CHOICES)
    "lora_blocks": str,
}


def build_metadata(*, method: str, storage: str, fingerprint: dict, model_family: str, target_text: str,
                   suggested_eta: float, e_opt_layout: list[dict], digest: str, training: Mapping | None = None,
                   ) -> dict[str, str]:
    """safetensors metadata (str -> str). ``training``: the optional ``TRAINING_FIELDS`` that are known."""
    meta = {
        f"{META}format": FORMAT,
        f"{META}format_version": str(FORMAT_VERSION),
        f"{META}method": method,
        f"{META}unet_storage": storage,
        f"{META}base_fingerprint": json.dumps(fingerprint, separators=(",", ":")),
        f"{META}model_family": model_family,
        f"{META}target_text": target_text,
        f"{META}suggested_eta": repr(float(suggested_eta)),
        f"{META}e_opt": json.dumps(e_opt_layout, separators=(",", ":")),
        f"{META}tensors_sha256": digest,
    }
    for name, kind in TRAINING_FIELDS.items():
        value = (training or {}).get(name)
        if value is not None:
            meta[f"{META}{name}"] = str(value) if kind is str else repr(kind(value))
    return meta


def is_imagic(metadata: Mapping[str, str] | None) -> bool:
    return bool(metadata) and metadata.get(f"{META}format") == FORMAT


def read_metadata(metadata: Mapping[str, str]) -> FinetuneInfo:
    """Parse and check the metadata of an Imagic file (``is_imagic`` must be true)."""
    damaged = "the file is damaged or was edited: save the fine-tune again"
    try:
        version = int(metadata[f"{META}format_version"])
    except (KeyError, ValueError):
        raise FormatError("the Imagic metadata has no valid format_version", damaged) from None
    if version > FORMAT_VERSION:
        raise FormatError(f"it was saved in Imagic file format version {version}; this comfyui-imagic reads "
                          f"version {FORMAT_VERSION} and older", "update comfyui-imagic")
    try:
        info = FinetuneInfo(
            format_version=version,
            method=metadata[f"{META}method"],
            storage=metadata[f"{META}unet_storage"],
            fingerprint=json.loads(metadata[f"{META}base_fingerprint"]),
            model_family=metadata.get(f"{META}model_family", ""),
            target_text=metadata.get(f"{META}target_text", ""),
            suggested_eta=float(metadata[f"{META}suggested_eta"]),
            e_opt_layout=json.loads(metadata[f"{META}e_opt"]),
            digest=metadata[f"{META}tensors_sha256"],
        )
    except (KeyError, ValueError) as e:
        raise FormatError(f"the Imagic metadata is incomplete or invalid ({type(e).__name__}: {e})", damaged) from None
    if info.method not in ("lora", "full") or info.storage not in STORAGES:
        raise FormatError(f"unknown method/storage '{info.method}'/'{info.storage}' in the metadata", damaged)
    if not _valid_layout(info.e_opt_layout):
        raise FormatError("the e_opt layout in the metadata (imagic.e_opt) is invalid", damaged)
    if not _valid_fingerprint(info.fingerprint):
        raise FormatError("the base model fingerprint in the metadata (imagic.base_fingerprint) is invalid", damaged)
    if not math.isfinite(info.suggested_eta):
        raise FormatError(f"the suggested eta in the metadata is {info.suggested_eta}, not a finite number", damaged)
    for name, kind in TRAINING_FIELDS.items():
        raw = metadata.get(f"{META}{name}")
        if raw is not None:
            try:
                info.training[name] = kind(raw)
            except ValueError:
                pass
    return info


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _valid_fingerprint(fp) -> bool:
    return (isinstance(fp, dict) and isinstance(fp.get("architecture"), str)
            and isinstance(fp.get("tensors", 0), int) and not isinstance(fp.get("tensors"), bool)
            and isinstance(fp.get("sample"), list) and all(_number(x) for x in fp["sample"]))


def _valid_layout(layout) -> bool:
    """A non-empty list of {"tensors": [names, "cross_attn" among them], "values": {str: plain data}}."""
    return isinstance(layout, list) and bool(layout) and all(
        isinstance(e, dict) and isinstance(e.get("tensors"), list) and CROSS_ATTN in e["tensors"]
        and all(isinstance(n, str) and n for n in e["tensors"]) and isinstance(e.get("values", {}), dict)
        for e in layout)


def split_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(UNet delta, e_opt tensors); raises FormatError on any other key."""
    unet = {k: v for k, v in tensors.items() if k.startswith(UNET_PREFIX)}
    e_opt = {k: v for k, v in tensors.items() if k.startswith(E_OPT_PREFIX)}
    other = [k for k in tensors if k not in unet and k not in e_opt]
    if other:
        raise FormatError(f"the file has {len(other)} unexpected key(s), e.g. '{other[0]}'",
                          "the file is damaged or was edited: save the fine-tune again")
    return unet, e_opt
