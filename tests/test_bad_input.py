"""Bad input to the Imagic nodes: a clear error naming the node and the fix, never a silent result."""
from __future__ import annotations

import pytest
import torch

from asserts import assert_clear
from graphs import imagic_graph, write_input_image
from pack import sub


@pytest.fixture(scope="module")
def image(comfy):
    return write_input_image(comfy.base / "input", name="bad_input.png")


@pytest.fixture(scope="module")
def parts(comfy):
    """A tiny SD1.5 model, its e_tgt and a latent, built under inference mode as the executor would."""
    tiny = sub("demo.tiny_checkpoint")
    with torch.inference_mode():
        model, clip, vae = tiny.build_tiny_checkpoint("sd15", 0)
        cond = clip.encode_from_tokens_scheduled(clip.tokenize("a dog"))
        latent = {"samples": vae.encode(torch.rand(1, 64, 64, 3))}
    return model, cond, latent


def node(name):
    return sub(f"nodes.{name}")


def run_node(cls, **kwargs):
    with torch.inference_mode():
        return cls.execute(**kwargs)


def test_latent_of_another_family_fails_in_the_executor(comfy, image):
    graph = imagic_graph(image, embed_steps=3, tune_steps=3)
    graph["30"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    graph["5"]["inputs"]["latent"] = ["30", 0]
    comfy.run(graph, expect_success=False)
    error = comfy.events("execution_error")[0]
    assert error["node_type"] == "ImagicOptimizeEmbedding"
    assert_clear(Exception(error["exception_message"]), "ImagicOptimizeEmbedding", "16 channels", "VAE")


def test_conditioning_of_another_width_fails_in_the_executor(comfy, image):
    graph = imagic_graph(image, embed_steps=3, tune_steps=3)
    graph["31"] = {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "sd2", "seed": 0}}
    graph["32"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["31", 1], "text": "a dog"}}
    graph["5"]["inputs"]["conditioning"] = ["32", 0]
    comfy.run(graph, expect_success=False)
    error = comfy.events("execution_error")[0]
    assert error["node_type"] == "ImagicOptimizeEmbedding"
    assert_clear(Exception(error["exception_message"]), "ImagicOptimizeEmbedding", "1024", "768", "CLIP")


@pytest.mark.parametrize("node_id", ["5", "6"])
def test_zero_steps_are_rejected_by_validation(comfy, image, node_id):
    graph = imagic_graph(image)
    graph[node_id]["inputs"]["steps"] = 0
    ok, error, outputs, node_errors = comfy.validate(graph)
    assert not ok
    messages = [e for e in node_errors[node_id]["errors"]]
    assert any("steps" in str(e) and "min" in str(e) for e in messages), messages


def test_empty_conditioning_list(parts):
    model, _, latent = parts
    for name, cls_name, cond_key in [("optimize_embedding", "ImagicOptimizeEmbedding", "conditioning"),
                                     ("finetune_unet", "ImagicFinetuneUNet", "conditioning")]:
        cls = getattr(node(name), cls_name)
        kwargs = dict(model=model, latent=latent, steps=2, learning_rate=1e-3, seed=0)
        if cls_name == "ImagicFinetuneUNet":
            kwargs.update(method="lora", lora_rank=2)
        with pytest.raises(ValueError) as e:
            run_node(cls, **{cond_key: []}, **kwargs)
        assert_clear(e.value, cls_name, "empty")
    with pytest.raises(ValueError) as e:
        run_node(node("interpolate_conditioning").ImagicInterpolateConditioning, optimized=[], target=parts[1], eta=0.7)
    assert_clear(e.value, "ImagicInterpolateConditioning", "empty")


def test_diverging_loss_is_detected_not_returned(parts):
    model, cond, latent = parts
    huge = {"samples": torch.full_like(latent["samples"], 3e38)}
    with pytest.raises(ValueError) as e:
        run_node(node("optimize_embedding").ImagicOptimizeEmbedding, model=model, conditioning=cond, latent=huge,
                 steps=3, learning_rate=1e-3, seed=0)
    assert_clear(e.value, "ImagicOptimizeEmbedding", "diverged", "learning_rate")


def test_nan_latent_is_rejected(parts):
    model, cond, latent = parts
    nan = {"samples": latent["samples"].clone().fill_(float("nan"))}
    with pytest.raises(ValueError) as e:
        run_node(node("finetune_unet").ImagicFinetuneUNet, model=model, conditioning=cond, latent=nan, steps=2,
                 learning_rate=0.0, method="lora", lora_rank=2, seed=0)
    assert_clear(e.value, "ImagicFinetuneUNet", "NaN")


def test_a_batch_of_images_is_rejected(parts):
    model, cond, latent = parts
    two = {"samples": latent["samples"].repeat(2, 1, 1, 1)}
    with pytest.raises(ValueError) as e:
        run_node(node("optimize_embedding").ImagicOptimizeEmbedding, model=model, conditioning=cond, latent=two,
                 steps=2, learning_rate=1e-3, seed=0)
    assert_clear(e.value, "ImagicOptimizeEmbedding", "2 images")


def test_interpolation_of_tokens_and_pooled_output(parts):
    _, cond, _ = parts
    (tensor, extras), = cond
    optimized = [[tensor + 1.0, {**extras, "pooled_output": extras["pooled_output"] + 2.0}]]
    target = [[tensor, {**extras, "extra_key": "from target"}]]
    interp = node("interpolate_conditioning").ImagicInterpolateConditioning
    for eta in (0.0, 0.7, 1.0, 1.5, -0.5):
        (out, out_extras), = run_node(interp, optimized=optimized, target=target, eta=eta).args[0]
        assert torch.allclose(out, tensor + (1 - eta), atol=1e-5)
        assert torch.allclose(out_extras["pooled_output"], extras["pooled_output"] + 2 * (1 - eta), atol=1e-5)
        assert out_extras["extra_key"] == "from target"


def test_interpolation_of_different_token_lengths_is_rejected(parts):
    _, cond, _ = parts
    (tensor, extras), = cond
    longer = [[torch.cat([tensor, tensor], dim=1), extras]]
    with pytest.raises(ValueError) as e:
        run_node(node("interpolate_conditioning").ImagicInterpolateConditioning, optimized=cond, target=longer, eta=0.7)
    assert_clear(e.value, "ImagicInterpolateConditioning", "token", "75 tokens")
