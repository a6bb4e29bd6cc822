"""Torch-only Imagic maths: noising, the denoising loss, the optimisation loops, LoRA, interpolation, Auto Eta's
scores, the fine-tune file format, the grid, and the nodes' defaults.

Nothing here imports ComfyUI; the node glue in ``nodes/`` adapts ComfyUI models to ``core.diffusion.Denoiser``.
"""
