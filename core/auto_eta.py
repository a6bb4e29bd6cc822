"""Automatic eta: score Imagic edits sampled at several eta, with no model but the frozen diffusion model.

An edit at a given eta is an output latent ``x``. Two numbers judge it:

* **text gain**: how much better the target text explains ``x`` than e_opt does, under the frozen model's own
  denoising loss on fixed noise draws: ``L(x | e_opt) - L(x | e_tgt)``, relative to ``L(x | e_opt)``. e_opt was
  optimised to explain the *input*, so on the input (and on an edit that changed nothing) the gain is negative;
  an output that shows what the target text says gets a positive gain.
* **distance** to the input: the MSE between ``x`` and the input latent, relative to the input's variance.

A *rule* turns the scores of all candidates into one choice; every rule prefers the smallest change that the
target text explains (the paper's advice: the lowest eta that makes the edit). The rules are measured on the
shapes benchmark (``bench/edit_quality.py``), which picked the default.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .diffusion import Denoiser, NoiseDraws, mean_loss


@dataclass(frozen=True)
class EtaScore:
    eta: float
    loss_target: float  # L(x | e_tgt): the frozen model's denoising loss of the output under the target text
    loss_optimized: float  # L(x | e_opt)
    distance: float  # MSE(x, input) / Var(input)

    @property
    def text_gain(self) -> float:
        """(L(x | e_opt) - L(x | e_tgt)) / L(x | e_opt): > 0 when the target text explains the output better."""
        return (self.loss_optimized - self.loss_target) / max(self.loss_optimized, 1e-12)

    def as_dict(self) -> dict:
        return {**asdict(self), "text_gain": self.text_gain}


def score_edits(denoiser: Denoiser, x_input: torch.Tensor, outputs: list[torch.Tensor], etas: list[float],
                target: list, optimized: list, seed: int = 0, draws: int = 32) -> list[EtaScore]:
    """Score each output latent (model space, batch 1, same shape as ``x_input``) sampled at ``etas[i]``.

    ``target`` and ``optimized`` are the conditioning entries the denoiser takes (e_tgt, e_opt). Every output
    sees the same ``draws`` noise draws and noise levels (seeded), so the scores compare outputs, not draws.
    """
    if len(outputs) != len(etas):
        raise ValueError(f"{len(outputs)} outputs for {len(etas)} etas")
    noise, sigma = NoiseDraws(denoiser, x_input, seed, batch=draws).draw()
    scale = x_input.float().var().clamp_min(1e-12)
    scores = []
    with torch.no_grad():
        for eta, x in zip(etas, outputs, strict=True):
            x = x.to(x_input.device, x_input.dtype)
            scores.append(EtaScore(
                eta=float(eta),
                loss_target=float(mean_loss(denoiser, x, target, noise, sigma)),
                loss_optimized=float(mean_loss(denoiser, x, optimized, noise, sigma)),
                distance=float(((x.float() - x_input.float()) ** 2).mean() / scale)))
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Rules: scores (in eta order) -> the index of the chosen edit.


def _by_eta(scores: list[EtaScore]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: scores[i].eta)


def max_gain(scores: list[EtaScore]) -> int:
    """The output the target text explains best (relative to e_opt)."""
    return max(range(len(scores)), key=lambda i: scores[i].text_gain)


def first_positive(scores: list[EtaScore]) -> int:
    """The smallest eta whose output the target text explains better than e_opt does; else the best gain."""
    return next((i for i in _by_eta(scores) if scores[i].text_gain > 0), max_gain(scores))


def half_gain(scores: list[EtaScore]) -> int:
    """The smallest eta that reaches half of the largest gain over the smallest eta's (scale-free)."""
    order = _by_eta(scores)
    low, best = scores[order[0]].text_gain, scores[max_gain(scores)].text_gain
    if best <= low:
        return max_gain(scores)
    return next(i for i in order if scores[i].text_gain >= low + 0.5 * (best - low))


def gain_minus_distance(scores: list[EtaScore]) -> int:
    """The largest positive gain minus the distance to the input; else the best gain."""
    positive = [i for i in range(len(scores)) if scores[i].text_gain > 0]
    if not positive:
        return max_gain(scores)
    return max(positive, key=lambda i: scores[i].text_gain - scores[i].distance)


RULES: dict[str, Callable[[list[EtaScore]], int]] = {
    "first_positive": first_positive,
    "half_gain": half_gain,
    "max_gain": max_gain,
    "gain_minus_distance": gain_minus_distance,
}
DEFAULT_RULE = "gain_minus_distance"


def rule_help(name: str) -> str:
    """A rule's one-line help: the first line of its docstring (the registry above is the one list of rules)."""
    return inspect.getdoc(RULES[name]).splitlines()[0].rstrip(".")


def choose(scores: list[EtaScore], rule: str = DEFAULT_RULE) -> int:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    if not scores:
        raise ValueError("no scores to choose from")
    return RULES[rule](scores)


def eta_candidates(eta_min: float, eta_max: float, count: int) -> list[float]:
    """``count`` evenly spaced etas from ``eta_min`` to ``eta_max`` (rounded to 1e-4, duplicates dropped)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if count == 1:
        return [round(float(eta_max), 4)]
    step = (eta_max - eta_min) / (count - 1)
    return sorted({round(float(eta_min + k * step), 4) for k in range(count)})


def score_table(scores: list[EtaScore], chosen: int) -> str:
    """A small fixed-width table with a bar per text gain, the chosen row marked (the node's UI text)."""
    top = max((abs(s.text_gain) for s in scores), default=0.0) or 1.0
    lines = ["   eta   text gain   distance"]
    for i, s in enumerate(scores):
        bar = ("+" if s.text_gain > 0 else "-") * round(10 * abs(s.text_gain) / top)
        mark = "  <- chosen" if i == chosen else ""
        lines.append(f"{s.eta:6.2f}  {s.text_gain:+9.4f}  {s.distance:9.4f}  {bar:<10}{mark}")
    return "\n".join(lines)


def scores_json(scores: list[EtaScore], chosen: int, rule: str) -> dict[str, Any]:
    return {"rule": rule, "chosen": chosen, "eta": scores[chosen].eta, "scores": [s.as_dict() for s in scores]}
