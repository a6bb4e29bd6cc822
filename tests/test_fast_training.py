"""Fast, low-memory training: LoRA adapters on the activations, gradient checkpointing, mixed precision,
fused Adam (host-free), and on the real host: the trained LoRA is what ComfyUI's loader applies, and the
low-memory mode reconstructs the input as well as the full-precision mode."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pack import sub

lora = sub("core.lora")
checkpointing = sub("core.checkpointing")
precision = sub("core.precision")
training = sub("core.training")


def merged(layer: torch.nn.Module, adapter) -> torch.Tensor:
    """The weight ComfyUI's loader computes from a lora_up / lora_down pair (alpha = rank: scale 1)."""
    up, down = adapter.up.detach(), adapter.down.detach()
    return layer.weight + (up.flatten(1) @ down.flatten(1)).reshape(layer.weight.shape)


@pytest.mark.parametrize("layer, x", [
    (torch.nn.Linear(12, 10), torch.randn(2, 5, 12)),
    (torch.nn.Conv2d(6, 10, 3, stride=2, padding=1), torch.randn(2, 6, 9, 9)),
    (torch.nn.Conv2d(6, 10, 3, padding=1, padding_mode="reflect"), torch.randn(1, 6, 7, 7)),
    (torch.nn.Conv1d(6, 4, 5, dilation=2), torch.randn(2, 6, 20)),
])
def test_adapter_on_the_activations_equals_the_merged_weight_patch(layer, x):
    root = torch.nn.Sequential(layer)
    adapters = lora.attach(root, rank=3, seed=0)
    adapter = adapters["0"]
    assert adapter.up.shape[:2] == (layer.weight.shape[0], 3) and adapter.up[0, 0].numel() == 1
    assert adapter.down.shape == (3,) + tuple(layer.weight.shape[1:])  # conventional (kohya/ComfyUI) shapes
    with torch.no_grad():
        adapter.down.normal_()
        w = merged(layer, adapter)
        if isinstance(layer, torch.nn.Linear):
            expected = F.linear(x, w, layer.bias)
        else:
            expected = layer._conv_forward(x, w, layer.bias)
        assert torch.allclose(root(x), expected, atol=1e-5)


def test_a_new_adapter_leaves_the_layer_unchanged_and_is_seeded():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(3, 8)
    with torch.no_grad():
        plain = layer(x)
        a = lora.attach(torch.nn.Sequential(layer), rank=4, seed=5)["0"]
        assert torch.equal(layer(x), plain)  # down starts at zero
    b = lora.attach(torch.nn.Sequential(torch.nn.Linear(8, 8)), rank=4, seed=5)["0"]
    assert torch.equal(a.up, b.up) and not torch.equal(a.up, torch.zeros_like(a.up))


def test_only_linear_and_plain_convolutions_are_adapted():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Conv2d(4, 4, 3, groups=2),
                              torch.nn.ConvTranspose2d(4, 4, 2),
                              torch.nn.GroupNorm(2, 4), torch.nn.Embedding(5, 4), torch.nn.Conv2d(4, 4, 1))
    assert sorted(lora.attach(net, rank=2, seed=0)) == ["0", "5"]


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)

    def forward(self, x, scale=1.0):
        return x + self.b(torch.tanh(self.a(x))) * scale


def test_checkpointed_blocks_give_the_same_gradients_lora_included():
    torch.manual_seed(0)
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        net = torch.nn.Module()
        net.blocks = torch.nn.ModuleList([Block(), Block()])
        net.head = torch.nn.Linear(6, 1)
        adapters = lora.attach(net, rank=2, seed=1)
        with torch.no_grad():
            for ad in adapters.values():
                ad.down.normal_()
        nets.append((net, adapters))
    assert checkpointing.checkpoint_blocks(nets[1][0]) == 3  # the two blocks (looked into the list) and the head
    x = torch.randn(4, 6)
    grads = []
    for net, adapters in nets:
        h = x
        for block in net.blocks:
            h = block(h, scale=0.5)  # keyword arguments pass through the checkpoint
        net.head(h).sum().backward()
        grads.append([p.grad for ad in adapters.values() for p in ad.parameters()])
    assert all(torch.allclose(a, b) for a, b in zip(*grads, strict=True))


class InPlaceBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(6, 6)

    def forward(self, x):
        x += self.a(torch.tanh(x))  # a residual added into the input, as ComfyUI's Flux blocks do
        return x


def test_a_checkpointed_block_may_modify_its_input_in_place():
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 6), InPlaceBlock(), InPlaceBlock())
        if checkpointed:
            checkpointing.checkpoint_blocks(net)
        x = torch.randn(3, 6, requires_grad=True)
        net(x).sum().backward()
        grads.append([x.grad] + [p.grad for p in net.parameters()])
    assert all(torch.allclose(a, b) for a, b in zip(*grads, strict=True))


def test_precision_keeps_frozen_matrices_in_the_half_type_and_vectors_in_fp32():
    full, mixed = precision.Precision(), precision.Precision(torch.bfloat16)
    w, b16 = torch.zeros(4, 4), torch.zeros(4, dtype=torch.float16)
    assert full.frozen_dtype(w) == full.frozen_dtype(b16) == torch.float32
    assert mixed.frozen_dtype(w) == torch.bfloat16 and mixed.frozen_dtype(b16) == torch.float32
    assert precision.Precision.for_device(torch.device("cpu"), mixed=False).half is None
    with mixed.autocast(torch.device("cpu")):
        assert (torch.randn(2, 4) @ w).dtype == torch.bfloat16


def test_adam_is_fused_where_the_device_has_it_and_the_loop_keeps_finite_weights_on_nan():
    p = torch.ones(3, requires_grad=True)
    assert training.adam([p], 0.1).defaults.get("fused") is True
    with pytest.raises(training.NonFiniteLoss):
        training.adam_loop([p], lambda s: (p * (float("nan") if s == 2 else 1.0)).sum(), steps=5, learning_rate=0.1)
    assert torch.isfinite(p).all()  # the NaN step did not update the parameters


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner, self.conv, self.outer = torch.nn.Linear(6, 7), torch.nn.Conv1d(7, 5, 3), torch.nn.Linear(3, 4)

    def forward(self, x):  # (n, 5, 6) -> (n, 5, 4)
        return self.outer(self.conv(F.gelu(self.inner(x)).transpose(1, 2)))


def _adapters(seed: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(seed)
    net = _Net()
    for p in net.parameters():
        p.requires_grad_(False)
    adapters = lora.attach(net, 2, seed)
    with torch.no_grad():  # down non-zero, so every factor gets a gradient from the first step
        for a in adapters.values():
            a.down.normal_(generator=torch.Generator().manual_seed(seed))
    return net, [p for a in adapters.values() for p in a.parameters()]


def test_many_small_parameters_train_as_one_buffer_with_the_same_losses_and_values_as_per_tensor_adam(monkeypatch):
    x = torch.randn(4, 5, 6)

    def train(flat: bool):
        monkeypatch.setattr(training.FlatParameters, "worth_it", staticmethod(lambda ps: flat))
        net, params = _adapters(3)
        losses = training.adam_loop(params, lambda s: ((net(x) - 1) ** 2).mean(),
                                    steps=12, learning_rate=1e-2)
        return losses, params

    per_tensor, flat = train(False), train(True)
    assert len(set(flat[0])) > 1 and flat[0] == pytest.approx(per_tensor[0], rel=1e-6, abs=0)  # it trained, the same
    # the same values to the last bit or so: the fused kernel's scalar tail (numel % 16) may round an FMA differently
    for a, b in zip(flat[1], per_tensor[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    buffer = flat[1][0].untyped_storage()
    assert all(p.untyped_storage().data_ptr() == buffer.data_ptr() for p in flat[1])  # views into one buffer
    assert all(p.data_ptr() % 64 == 0 for p in flat[1])  # each 64-byte aligned, as its own allocation was


def test_the_loop_trains_many_small_tensors_as_one_but_not_a_single_tensor_or_a_mixed_list(monkeypatch):
    _, params = _adapters(0)
    assert training.FlatParameters.worth_it(params)
    assert not training.FlatParameters.worth_it(params[:1])
    assert not training.FlatParameters.worth_it([params[0], params[1].detach().double().requires_grad_()])
    seen = []
    real = training.adam
    monkeypatch.setattr(training, "adam", lambda ps, lr: seen.append(ps) or real(ps, lr))
    net, params = _adapters(0)
    training.adam_loop(params, lambda s: net(torch.ones(2, 5, 6)).sum(), steps=2, learning_rate=0.1)
    assert len(seen[0]) == 1 and seen[0][0].numel() >= sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------------------
# On the real host (tiny SD1.5-family model)


def tiny_model_and_text():
    tiny = sub("demo.tiny_checkpoint")
    with torch.inference_mode():
        model, clip, _ = tiny.build_tiny_checkpoint("sd15", 0)
        return model, clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a sitting dog"))


def test_trained_lora_predicts_what_comfyuis_loader_gives_from_the_lora_dict(comfy):
    cm, ci, weights = sub("nodes.comfy_model"), sub("nodes.conditioning_io"), sub("nodes.finetune_weights")
    finetune = sub("nodes.finetune_unet")
    model, cond = tiny_model_and_text()
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.no_grad():
        base = cm.private_model(model)
        trainer = weights.LoraFinetune(base, 4, seed=0)
        for p in trainer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        delta = trainer.delta()
        x, sigma = torch.randn((2, 4, 8, 8), generator=g), torch.tensor([1.0, 5.0])
        entry = ci.model_entries(cond, x.device)[0]
        trained = cm.ComfyDenoiser(base).predict_x0(x, sigma, entry)
        loaded = cm.ComfyDenoiser(cm.private_model(finetune.finetuned_model(model, delta))).predict_x0(x, sigma, entry)
    assert torch.allclose(trained, loaded, atol=1e-4, rtol=1e-4), float((trained - loaded).abs().max())
    conv = "diffusion_model.input_blocks.0.0"
    assert delta[f"{conv}.lora_up.weight"].shape == (32, 4, 1, 1)
    assert delta[f"{conv}.lora_down.weight"].shape == (4, 4, 3, 3)
    assert float(delta[f"{conv}.alpha"]) == 4.0 and delta[f"{conv}.alpha"].ndim == 0


def test_frozen_private_copy_shares_the_weights_and_is_freed_when_the_node_ends(comfy):
    import gc
    import weakref

    tr, weights = sub("nodes.training_run"), sub("nodes.finetune_weights")
    model, _ = tiny_model_and_text()
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    upstream = dict(model.model.diffusion_model.named_parameters())
    gc.disable()  # freed by reference counting, at once, not by a later garbage collection
    try:
        with torch.inference_mode(False):
            settings = tr.TrainingSettings(steps=1, learning_rate=1e-3, low_memory=False)
            with tr.TrainingSetup(model, latent, settings, train_weights=False) as setup:
                weights.LoraFinetune(setup.base, 4, seed=0)
                copy = setup.base
                shared = [n for n, p in copy.diffusion_model.named_parameters()
                          if p.data_ptr() == upstream[n].data_ptr()]
                assert len(shared) == len(upstream)  # fp32 on a CPU: no second copy of the weights
                alive = weakref.ref(copy)
                del copy
        assert alive() is None
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def photo(comfy):
    from graphs import write_input_image

    return write_input_image(comfy.base / "input", name="imagic_low_memory.png")


def eta0_error(comfy, photo, low_memory: bool):
    from graphs import imagic_graph

    graph = imagic_graph(photo, eta=0.0, method="lora", tune_lr=3e-3, tune_steps=120)
    for node in ("5", "6"):  # Imagic Optimize Embedding, Imagic Finetune UNet
        graph[node]["inputs"]["low_memory"] = low_memory
    comfy.run(graph)
    latent = comfy.output("4")["samples"]
    return graph, float(((comfy.output("8")["samples"] - latent) ** 2).mean())


def test_low_memory_mode_reconstructs_the_input_as_well_as_the_full_precision_mode(comfy, photo):
    """The issue's quality check: eta=0 reconstruction error of both modes against the untuned model."""
    from graphs import sampler_only

    low, (graph, full) = eta0_error(comfy, photo, True)[1], eta0_error(comfy, photo, False)
    comfy.run(sampler_only(graph, ["1", 0], ["7", 0]))  # the untuned model, same e_opt, same noise
    untuned = float(((comfy.output("8")["samples"] - comfy.output("4")["samples"]) ** 2).mean())
    print(f"\neta=0 reconstruction MSE: low_memory {low:.5f}, full precision {full:.5f}, untuned {untuned:.5f}")
    assert low < 0.25 * untuned and full < 0.25 * untuned, (low, full, untuned)
    assert low < 1.5 * full + 0.01 * untuned, (low, full, untuned)
