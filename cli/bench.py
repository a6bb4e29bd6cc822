"""Run a benchmark: ``python cli/bench.py NAME [options]`` runs ``bench/NAME.py`` as the pack's own module.

    python cli/bench.py edit_quality --quick
    python cli/bench.py imagic_bench --help

cli/comfy_host.py imports the pack the way ComfyUI names it (Python puts this script's folder, cli/, on the path);
each benchmark boots ComfyUI through bench/host.py. No benchmark changes the import path or loads files by hand.
"""
from __future__ import annotations

import sys

import comfy_host  # this script's own folder: becomes the pack's copy, <pack>.cli.comfy_host

BENCHMARKS = ("imagic_bench", "edit_quality", "batch_curve", "finetune_sizes", "shapes_text_to_image",
              "train_shapes_model", "threads_under_load")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    available = [name for name in BENCHMARKS if (comfy_host.PACK_DIR / "bench" / f"{name}.py").is_file()]
    if not argv or argv[0] not in available:
        print(f"usage: python cli/bench.py NAME [options]; NAME is one of: {', '.join(available)}", file=sys.stderr)
        return 2
    return comfy_host.pack_module(f"bench.{argv[0]}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
