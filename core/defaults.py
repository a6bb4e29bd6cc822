"""Every default of the Imagic nodes, in one place: the nodes' inputs, the graph editor's learning-rate switch
(served to js/imagic_learning_rate.js as data, ``/imagic/defaults``), the CLI and the benchmarks read them here.

The training defaults were measured on the shapes benchmark (bench/RESULTS.md, Edit quality and Time to quality):
A 100 steps at 5e-3 and B 150 LoRA steps at 2.5e-4 edit there at least as well as A 250 at 2e-3 + B 375 at 1e-4
(the former defaults, themselves as good as the paper's 1000 + 1500) in 0.41x their time per edit; since 8 December
B's rate runs down from 5e-4 (linear_decay: about the same total change, flat backgrounds); full-size models may
differ. ComfyUI-free (plain values), like the rest of ``core``.
"""
from __future__ import annotations

# Step A, Imagic Optimize Embedding
EMBED_STEPS = 100
EMBED_LEARNING_RATE = 5e-3  # 2.5x the paper's 2e-3, for 0.4x the former defaults' steps

# Step B, Imagic Finetune UNet
TUNE_STEPS = 150
TUNE_METHOD = "lora"
LEARNING_RATE = {"lora": 5e-4, "full": 5e-7}  # per method, the first step's (TUNE_SCHEDULE); full: the paper's
LORA_RANK = 8
LORA_BLOCKS = "all"  # which layers the fine-tune trains (core.blocks.CHOICES): all = every linear/conv weight
# How B's learning rate moves over the steps (core.training.rate_at). linear_decay: the learning rate at the first
# step, down to nearly 0 at the last. On the shapes benchmark it left the backgrounds flat (the last draws no longer
# imprint their noise on the fine-tune) and edited at least as often (bench/RESULTS.md, "B's learning rate running
# down to zero").
TUNE_SCHEDULE = "linear_decay"
METHOD_DEFAULT = 0.0  # a learning rate of 0 means the method's default (LEARNING_RATE)

# Both training nodes: stop when converged (core.training.EarlyStop). Every EARLY_STOP_EVERY steps the loss on
# EARLY_STOP_DRAWS fixed held-out noise/timestep draws (seed HELDOUT_SEED, never the training draws) is computed;
# training stops once the best of the last EARLY_STOP_PATIENCE checks is not EARLY_STOP_MARGIN (relative) below the
# best before them, never before EARLY_STOP_MIN_CHECKS checks; ``steps`` stays the upper bound.
EARLY_STOP = False
EARLY_STOP_EVERY = 25
EARLY_STOP_PATIENCE = 2
EARLY_STOP_MARGIN = 0.1
EARLY_STOP_MIN_CHECKS = 3
EARLY_STOP_DRAWS = 8
HELDOUT_SEED = 1234  # the held-out draws of early stopping and of the tests' and benchmarks' reconstruction loss

EMBED_SCHEDULE = "constant"  # step A's (not exposed: measured only for B)

# Step C, Imagic Interpolate Conditioning (and the eta a saved fine-tune suggests)
ETA = 1.5

# Where step C's sampling starts (issue 19; nodes/starts.py, the templates' stock nodes, cli/edit.py --start):
# "noise" (the paper's: an empty latent), "photo" (the input's latent noised to STRENGTH, KSampler's denoise) or
# "inversion" (the input's latent run backwards to STRENGTH's noise level by the fine-tuned model with e_opt)
STARTS = ("noise", "photo", "inversion")
START = "photo"
STRENGTH = 0.8

# Imagic Auto Eta: the etas it tries (its rule's default is core/auto_eta.DEFAULT_RULE, beside the rules)
AUTO_ETA = {"eta_min": 1.0, "eta_max": 2.0, "count": 5}

# The paper's settings for Stable Diffusion (Kawar et al. 2022), quoted in tooltips and compared in the benchmarks
PAPER = {"embed_steps": 1000, "embed_learning_rate": 2e-3, "tune_steps": 1500, "tune_learning_rate": 5e-7,
         "eta": (0.6, 0.8)}


def learning_rate(method: str, given: float) -> float:
    """The learning rate a fine-tune with ``method`` uses: the given one, or the method's default for 0."""
    return given or LEARNING_RATE[method]


def is_method_default(rate) -> bool:
    """Whether ``rate`` stands for "the method's default": 0 or one of the methods' defaults (a graph saved with
    one method's default keeps following the method, as in the graph editor)."""
    return isinstance(rate, (int, float)) and not isinstance(rate, bool) and (
        rate == METHOD_DEFAULT or any(abs(rate - d) <= d * 1e-6 for d in LEARNING_RATE.values()))


def as_data() -> dict:
    """What the graph editor reads (JSON)."""
    return {"learning_rate": dict(LEARNING_RATE), "method_default": METHOD_DEFAULT}
