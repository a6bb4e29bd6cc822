"""Torch-only Imagic maths: noising, the denoising loss, the optimisation loops and interpolation.

Nothing here imports ComfyUI; the node glue in ``nodes/`` adapts ComfyUI models to ``core.diffusion.Denoiser``.
"""
