"""Host-free tests of core/finetune_format.py (the Imagic file's tensors, metadata and fingerprint)."""
from __future__ import annotations

import pytest
import torch

from pack import sub

fmt = sub("core.finetune_format")
fpr = sub("core.fingerprint")
lora = sub("core.lora")


def conditioning():
    g = torch.Generator().manual_seed(0)
    return [
        [torch.randn(1, 77, 16, generator=g), {"pooled_output": torch.randn(1, 8, generator=g).half(),
                                               "area": (64, 64, 0, 0), "strength": 0.5}],
        [torch.randn(1, 154, 16, generator=g).bfloat16(), {"pooled_output": torch.randn(1, 8, generator=g),
                                                           "control": object()}],
    ]


def test_conditioning_round_trip_keeps_every_entry_tensor_and_dtype():
    cond = conditioning()
    tensors, layout, dropped = fmt.conditioning_to_tensors(cond)
    assert sorted(tensors) == ["imagic.e_opt.0.cross_attn", "imagic.e_opt.0.pooled_output",
                               "imagic.e_opt.1.cross_attn", "imagic.e_opt.1.pooled_output"]
    assert dropped == ["1.control"]  # not plain data: reported, not silently lost
    back = fmt.conditioning_from_tensors(tensors, layout)
    assert len(back) == 2
    for (t, extras), (t0, extras0) in zip(back, cond, strict=True):
        assert t.dtype == t0.dtype and torch.equal(t, t0)
        assert extras["pooled_output"].dtype == extras0["pooled_output"].dtype
        assert torch.equal(extras["pooled_output"], extras0["pooled_output"])
    assert back[0][1]["area"] == [64, 64, 0, 0] and back[0][1]["strength"] == 0.5


def test_conditioning_views_of_one_tensor_can_be_saved():
    import safetensors.torch

    base = torch.randn(2, 77, 16)
    tensors, _, _ = fmt.conditioning_to_tensors([[base[0:1], {"pooled_output": base[1, 0:1]}]])
    loaded = safetensors.torch.load(safetensors.torch.save(tensors))  # safetensors refuses shared memory
    assert torch.equal(loaded["imagic.e_opt.0.cross_attn"], base[0:1])


def test_bad_conditioning_is_a_format_error():
    with pytest.raises(fmt.FormatError, match="not a \\[tensor, dict\\] pair"):
        fmt.conditioning_to_tensors([torch.zeros(1)])
    with pytest.raises(fmt.FormatError, match="missing"):
        fmt.conditioning_from_tensors({}, [{"tensors": ["cross_attn"], "values": {}}])


@pytest.mark.parametrize("shape", [(48, 40), (32, 16, 3, 3), (24, 20, 1, 1)])
def test_svd_extract_shapes_and_quality(shape):
    g = torch.Generator().manual_seed(1)
    # a rank-6 delta plus a little noise: rank r gives the optimal (Eckart-Young) rank-r error
    out, inner = shape[0], int(torch.tensor(shape[1:]).prod())
    delta = (torch.randn(out, 6, generator=g) @ torch.randn(6, inner, generator=g)).reshape(shape)
    delta = delta + 0.01 * torch.randn(shape, generator=g)
    errors = {}
    for rank in (2, 6):
        up, down = lora.svd_extract(delta, rank)
        assert up.shape == ((out, rank) + (1,) * (len(shape) - 2))
        assert down.shape == ((rank,) + shape[1:])
        approx = (up.flatten(1) @ down.flatten(1)).reshape(shape)
        errors[rank] = float((approx - delta).norm() / delta.norm())
        s = torch.linalg.svdvals(delta.reshape(out, -1))
        optimum = float(s[rank:].norm() / s.norm())
        assert errors[rank] <= optimum * 1.001 + 1e-6, (rank, errors[rank], optimum)
    assert errors[6] < 0.01 < errors[2]
    # ComfyUI's 0.99-quantile clamp (optional here) is what makes its extraction worse than the optimum
    up, down = lora.svd_extract(delta, 6, clamp_quantile=0.99)
    clamped = float(((up.flatten(1) @ down.flatten(1)).reshape(shape) - delta).norm() / delta.norm())
    assert clamped > 10 * errors[6], (clamped, errors[6])
    low_up, low_down = lora.svd_extract(delta, 6, lowrank=True)
    assert low_up.shape == up.shape and low_down.shape == down.shape


def full_delta():
    g = torch.Generator().manual_seed(2)
    return {
        "diffusion_model.a.diff": torch.randn(16, 12, generator=g),
        "diffusion_model.a.diff_b": torch.randn(16, generator=g),
        "diffusion_model.conv.diff": torch.randn(8, 4, 3, 3, generator=g),
        "diffusion_model.norm.diff": torch.randn(8, generator=g),
    }


def test_unet_tensors_exact_keeps_the_delta_and_svd_replaces_matrices():
    delta = full_delta()
    exact = fmt.unet_tensors(delta, "exact")
    assert exact.keys() == delta.keys() and all(torch.equal(exact[k], v) for k, v in delta.items())
    steps = []
    svd = fmt.unet_tensors(delta, "svd", 3, on_step=lambda i, n: steps.append((i, n)))
    assert sorted(svd) == ["diffusion_model.a.diff_b", "diffusion_model.a.lora_down.weight",
                           "diffusion_model.a.lora_up.weight", "diffusion_model.conv.lora_down.weight",
                           "diffusion_model.conv.lora_up.weight", "diffusion_model.norm.diff"]
    assert steps == [(1, 2), (2, 2)]
    assert svd["diffusion_model.conv.lora_up.weight"].shape == (8, 3, 1, 1)
    assert svd["diffusion_model.conv.lora_down.weight"].shape == (3, 4, 3, 3)
    assert fmt.method_of(delta) == "full" and fmt.method_of(svd) == "full"


def test_key_and_shape_checks():
    delta = full_delta()
    shapes = {"a.weight": (16, 12), "a.bias": (16,), "conv.weight": (8, 4, 3, 3), "norm.weight": (8,)}
    fmt.check_unet_keys(delta)
    fmt.check_fits(delta, shapes)
    with pytest.raises(fmt.FormatError, match="does not have"):
        fmt.check_fits(delta, {k: v for k, v in shapes.items() if k != "conv.weight"})
    with pytest.raises(fmt.FormatError, match="does not fit"):
        fmt.check_fits(delta, dict(shapes, **{"a.weight": (16, 13)}))
    lora = {"diffusion_model.a.lora_up.weight": torch.zeros(16, 2),
            "diffusion_model.a.lora_down.weight": torch.zeros(2, 12),
            "diffusion_model.a.alpha": torch.tensor(2.0)}
    fmt.check_fits(lora, shapes)
    assert fmt.method_of(lora) == "lora" and fmt.lora_rank_of(lora) == 2
    with pytest.raises(fmt.FormatError, match="not UNet"):
        fmt.check_unet_keys({"text_encoders.x.lora_up.weight": torch.zeros(1)})
    with pytest.raises(fmt.FormatError, match="NaN"):
        fmt.check_unet_keys({"diffusion_model.a.diff": torch.tensor([float("nan")])})
    with pytest.raises(fmt.FormatError, match="no UNet"):
        fmt.method_of({"imagic.e_opt.0.cross_attn": torch.zeros(1)})


def weights(seed=0, dtype=torch.float32, extra=False):
    g = torch.Generator().manual_seed(seed)
    w = {f"block{i}.weight": torch.randn(32, 16 + i, generator=g).to(dtype) for i in range(40)}
    w.update({f"block{i}.bias": torch.zeros(32) for i in range(40)})
    if extra:
        w["extra.weight"] = torch.randn(4, 4, generator=g)
    return w


def fp(w):
    reads = []

    def value(name):
        reads.append(name)
        return w[name]

    out = fpr.fingerprint({k: tuple(v.shape) for k, v in w.items()}, value)
    return out, reads


def test_fingerprint_is_deterministic_cheap_and_tolerates_precision():
    a, reads = fp(weights())
    assert fp(weights())[0] == a
    assert len(reads) == fpr.SAMPLED_TENSORS and len(a["sample"]) == fpr.SAMPLED_TENSORS * fpr.VALUES_PER_TENSOR
    assert fpr.compare_fingerprints(a, a).same
    for dtype in (torch.float16, torch.bfloat16):  # the same checkpoint loaded in another precision
        check = fpr.compare_fingerprints(a, fp(weights(dtype=dtype))[0])
        assert check.same and "another precision" in check.detail, check
    other = fpr.compare_fingerprints(a, fp(weights(seed=1))[0])
    assert not other.same and not other.architecture_differs and "other weights" in other.detail
    arch = fpr.compare_fingerprints(a, fp(weights(extra=True))[0])
    assert not arch.same and arch.architecture_differs


def test_metadata_round_trip_and_version_check():
    tensors, layout, _ = fmt.conditioning_to_tensors(conditioning()[:1])
    meta = fmt.build_metadata(method="lora", storage="lora", fingerprint={"architecture": "x", "sample": [1.0]},
                              model_family="SD15", target_text="a photo of a sitting dog", suggested_eta=0.65,
                              e_opt_layout=layout, digest=fmt.tensors_digest(tensors),
                              training={"finetune_steps": 1500, "finetune_learning_rate": 1e-4, "embedding_seed": None})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert fmt.is_imagic(meta) and not fmt.is_imagic({}) and not fmt.is_imagic(None)
    info = fmt.read_metadata(meta)
    assert info.method == "lora" and info.target_text == "a photo of a sitting dog" and info.suggested_eta == 0.65
    assert info.training == {"finetune_steps": 1500, "finetune_learning_rate": 1e-4}
    assert "imagic.embedding_seed" not in meta  # unknown values are left out, not written as "None"
    with pytest.raises(fmt.FormatError, match="version 2"):
        fmt.read_metadata(dict(meta, **{"imagic.format_version": "2"}))
    with pytest.raises(fmt.FormatError, match="incomplete or invalid"):
        fmt.read_metadata({k: v for k, v in meta.items() if k != "imagic.e_opt"})


def test_lora_blocks_is_stored_as_text_and_read_as_all_when_absent():
    tensors, layout, _ = fmt.conditioning_to_tensors(conditioning()[:1])
    meta = fmt.build_metadata(method="lora", storage="lora", fingerprint={"architecture": "x", "sample": [1.0]},
                              model_family="SD15", target_text="", suggested_eta=0.7, e_opt_layout=layout,
                              digest=fmt.tensors_digest(tensors), training={"lora_blocks": "decoder", "lora_rank": 4})
    assert meta["imagic.lora_blocks"] == "decoder" and meta["imagic.lora_rank"] == "4"
    info = fmt.read_metadata(meta)
    assert info.lora_blocks == "decoder" and info.training == {"lora_blocks": "decoder", "lora_rank": 4}
    old = {k: v for k, v in meta.items() if k != "imagic.lora_blocks"}  # saved before the choice existed
    assert fmt.read_metadata(old).lora_blocks == "all"
    assert fmt.read_metadata(dict(meta, **{"imagic.lora_blocks": "later"})).lora_blocks == "later"  # as it says


def test_digest_detects_any_change():
    tensors = {"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(2, dtype=torch.bfloat16)}
    d = fmt.tensors_digest(tensors)
    assert fmt.tensors_digest(dict(tensors)) == d
    changed = dict(tensors, a=tensors["a"].clone())
    changed["a"][3] += 1e-6
    assert fmt.tensors_digest(changed) != d
    assert fmt.tensors_digest(dict(tensors, b=tensors["b"].float())) != d  # dtype is part of it


def test_split_tensors_rejects_unknown_keys():
    unet, e_opt = fmt.split_tensors({"diffusion_model.a.diff": torch.zeros(1),
                                     "imagic.e_opt.0.cross_attn": torch.zeros(1)})
    assert list(unet) == ["diffusion_model.a.diff"] and list(e_opt) == ["imagic.e_opt.0.cross_attn"]
    with pytest.raises(fmt.FormatError, match="unexpected"):
        fmt.split_tensors({"lora_te_text_model.x": torch.zeros(1)})
