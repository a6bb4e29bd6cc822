"""Mixed precision (low_memory): bf16 on a CUDA GPU that computes it natively, fp32 everywhere else (every CPU,
whatever its instruction set), never fp16; what trains is kept in fp32 master copies, frozen matrices in bf16;
training still lowers the loss; and the given model's weights stay bit-identical, for both methods.

The suite runs on a CPU, so the answer to "bf16 here?" is patched for the host tests: both paths run on every
machine (bf16 autocast on a CPU is the GPU path's arithmetic on other kernels, enough to check its wiring).
"""
from __future__ import annotations

import pytest
import torch

from pack import sub

precision = sub("core.precision")


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_mixed_precision_is_bf16_where_native_else_none_never_fp16(monkeypatch, native, device):
    monkeypatch.setattr(precision, "trains_in_bf16", lambda d: native)
    mixed = precision.Precision.for_device(torch.device(device), mixed=True)
    assert mixed.half == (torch.bfloat16 if native else None)
    assert precision.Precision.for_device(torch.device(device), mixed=False).half is None


@pytest.mark.parametrize("avx512_bf16, amx", [(False, False), (True, False), (True, True)])
def test_a_cpu_trains_in_fp32_whatever_its_instruction_set(monkeypatch, avx512_bf16, amx):
    """On a CPU a fine-tune's quality followed the bf16 kernels (4x worse with AMX, issue 18): fp32 on every CPU."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert not precision.trains_in_bf16(torch.device("cpu"))
    assert precision.Precision.for_device(torch.device("cpu"), mixed=True).half is None


@pytest.mark.parametrize("bf16_units", [True, False])
def test_a_cuda_gpu_trains_in_bf16_where_it_has_bf16_units(monkeypatch, bf16_units):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_units)
    assert precision.Precision.for_device(torch.device("cuda"), mixed=True).half == (
        torch.bfloat16 if bf16_units else None)


# ---------------------------------------------------------------------------------------------------
# On the real host: Imagic Finetune UNet on a tiny SD1.5-family model, low_memory on, "native bf16" patched.

RUNS = {"lora": dict(steps=12, learning_rate=3e-3), "full": dict(steps=12, learning_rate=5e-4)}


@pytest.fixture(scope="module")
def parts(comfy):
    """A tiny model (and a copy of its weights as built), e_tgt of a text and the latent of a seeded image."""
    tiny = sub("demo.tiny_checkpoint")
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        model, clip, vae = tiny.build_tiny_checkpoint("sd15", 0)
        cond = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a sitting dog"))
        latent = {"samples": vae.encode(torch.rand((1, 64, 64, 3), generator=g))}
        reference = {k: v.clone() for k, v in model.model.state_dict().items()}
    return model, cond, latent, reference


class Spy:
    """Records, when training starts, the dtype of every trained tensor and of every frozen weight of the
    private copy (wrapping ``training_run``'s ``private_model`` and ``adam_loop``, the real ones run)."""

    def __init__(self, monkeypatch):
        run = sub("nodes.training_run")
        self.bases, self.trained, self.frozen = [], [], {}
        private_model, adam_loop = run.private_model, run.adam_loop

        def spy_private_model(*args, **kwargs):
            self.bases.append(private_model(*args, **kwargs))
            return self.bases[-1]

        def spy_adam_loop(params, *args, **kwargs):
            params = list(params)
            ids = {id(p) for p in params}
            self.trained = [p.dtype for p in params]
            self.frozen = {n: p.dtype for n, p in self.bases[-1].diffusion_model.named_parameters() if id(p) not in ids}
            return adam_loop(params, *args, **kwargs)

        monkeypatch.setattr(run, "private_model", spy_private_model)
        monkeypatch.setattr(run, "adam_loop", spy_adam_loop)


@pytest.mark.parametrize("native", [True, False], ids=["bf16", "fp32"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_low_memory_training_keeps_fp32_masters_lowers_the_loss_and_leaves_the_model_untouched(
        comfy, parts, monkeypatch, method, native):
    import comfy.model_management

    model, cond, latent, reference = parts
    heldout_loss = sub("nodes.training_run").heldout_loss
    monkeypatch.setattr(precision, "trains_in_bf16", lambda d: native)
    spy = Spy(monkeypatch)
    node = sub("nodes.finetune_unet").ImagicFinetuneUNet
    with torch.inference_mode():
        tuned, _, losses = node.execute(model=model, conditioning=cond, latent=latent, method=method, lora_rank=4,
                                        seed=0, low_memory=True, **RUNS[method]).args

    # what trains is fp32 (master copies); frozen matrices are in bf16 exactly when mixed precision is on
    assert spy.trained and all(dtype == torch.float32 for dtype in spy.trained), set(spy.trained)
    weights = dict(spy.bases[-1].diffusion_model.named_parameters())
    if method == "full":
        assert not spy.frozen and len(spy.trained) == len(weights)  # every weight and bias trains
    else:
        assert len(spy.frozen) == len(weights)  # only the adapters train
        matrices = {spy.frozen[n] for n, p in weights.items() if p.ndim >= 2}
        vectors = {spy.frozen[n] for n, p in weights.items() if p.ndim < 2}
        assert matrices == {torch.bfloat16 if native else torch.float32} and vectors == {torch.float32}

    # the given model: no patch added, every weight bit-identical
    assert model.patches == {}
    comfy.model_management.load_models_gpu([model], force_full_load=True)
    after_weights = model.model.state_dict()
    changed = [k for k, v in reference.items() if not torch.equal(v, after_weights[k])]
    assert not changed, changed[:5]

    # a few steps lower the held-out reconstruction loss (measured by the fp32 path)
    before, after = heldout_loss(model, cond, latent), heldout_loss(tuned, cond, latent)
    print(f"\n{method} {'bf16' if native else 'fp32'}: held-out loss {before:.4f} -> {after:.4f}")
    assert len(losses["loss"]) == RUNS[method]["steps"] and after < 0.9 * before, (before, after)
