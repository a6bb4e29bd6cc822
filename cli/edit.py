"""Headless Imagic edit: run workflows/imagic_edit.json through ComfyUI's executor in this process.

    python cli/edit.py --image dog.png --text "a photo of a sitting dog" --eta 0.6 0.7 0.8 --out edits/
    python cli/edit.py --image dog.png --text "a photo of a sitting dog" --eta auto   # picked by Imagic Auto Eta
    python cli/edit.py --batch input_list.json --image-dir images/ --out edits/     # TEdBench format
    python cli/edit.py --demo                                         # the built-in shapes model, 1-2 min on a CPU

ComfyUI is found like the tests find it (--comfyui, $COMFYUI_PATH, the custom_nodes layout, ~/comfy/ComfyUI).
The training runs once per photo and text; every further eta only samples (ComfyUI's cache). Bad input (a
missing or unreadable image, a missing checkpoint, no ComfyUI) stops with one line on stderr before anything
is written.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

if __name__ == "__main__":  # python cli/edit.py (or -m cli.edit): run the pack's own copy of this module
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import comfy_host  # cli/comfy_host.py: imports the pack the way ComfyUI names it

    sys.exit(comfy_host.pack_module("cli.edit").main())

from . import comfy_host
from .auto_eta_prompt import score_table, use_auto_eta
from .edit_inputs import InputError, Job, batch_jobs, check_text, comfy_ready, single_job
from .edit_prompt import (
    EditSettings,
    PromptError,
    apply_settings,
    for_edit,
    one,
    save_finetune,
    without,
)
from .headless import Headless, RunError
from .shapes_demo import (
    DEMO_ETAS,
    DEMO_TEXT,
    SETTINGS,
    edit_of,
    use_shapes_model,
    write_demo_scene,
    write_side_by_side,
)
from .workflow_api import WorkflowError, object_info_in_process, set_mode, to_api

PROG = "imagic-edit"
DEFAULT_WORKFLOW = comfy_host.PACK_DIR / "workflows" / "imagic_edit.json"
DEMO = SETTINGS  # the shapes model's measured recipe (cli/shapes_demo.py)
SAVER = "ImagicSaveFinetune"
AUTO = "auto"
ETA_RANGE = (-10.0, 10.0)  # Imagic Interpolate Conditioning's eta range


def eta_value(text: str) -> float | str:
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python cli/edit.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Defaults not given here are the workflow's: 250 + 375 steps (a quarter of the "
                                       "paper's, measured: bench/RESULTS.md), eta 0.8.")
    what = p.add_argument_group("what to edit")
    what.add_argument("--image", type=Path, help="the photo")
    what.add_argument("--text", help='the target text, e.g. "a photo of a sitting dog"')
    what.add_argument("--batch", type=Path, metavar="FILE.json",
                      help='a JSON list of {"img_name": ..., "target_text": ...} (TEdBench format)')
    what.add_argument("--image-dir", type=Path, help="where the batch file's images are (default: next to it)")
    what.add_argument("--demo", action="store_true",
                      help="the built-in shapes model (no checkpoint, no download) on a picture it never saw: writes "
                           "the input, the edits and input | eta ... side by side; a minute or two on a CPU")
    how = p.add_argument_group("settings")
    how.add_argument("--ckpt", help="checkpoint name in ComfyUI's models/checkpoints, or a file path "
                                    "(default: the workflow's v1-5-pruned-emaonly.safetensors)")
    how.add_argument("--eta", type=eta_value, nargs="+",
                     help="one or several etas (default 0.8, the workflow's); training runs once. 'auto': Imagic "
                          "Auto Eta samples 0.4-1.0, picks one by the frozen model's own score, and also writes the "
                          "grid of all")
    how.add_argument("--embed-steps", type=int, help="Imagic Optimize Embedding steps (default 250; paper: 1000)")
    how.add_argument("--tune-steps", type=int, help="Imagic Finetune UNet steps (default 375; paper: 1500)")
    how.add_argument("--method", choices=["lora", "full"], help="fine-tune method (default lora)")
    how.add_argument("--sample-steps", type=int, help="KSampler steps (default 50)")
    how.add_argument("--seed", type=int, help="seed of the training and the sampler (default 0)")
    how.add_argument("--size", type=int, help="square working size in pixels (default 512)")
    how.add_argument("--save-finetune", action="store_true",
                     help="also save each fine-tune (.safetensors, for Imagic Load Finetune) in --out")
    run = p.add_argument_group("where")
    run.add_argument("--out", type=Path, default=Path("imagic-edits"), help="output folder (default ./imagic-edits)")
    run.add_argument("--comfyui", type=Path, help="the ComfyUI folder (default: found like the tests find it)")
    run.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="an edited copy of imagic_edit.json")
    run.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: one per CPU that other work leaves "
                                                 "free, as the training nodes choose; OMP_NUM_THREADS if set)")
    run.add_argument("--verbose", action="store_true", help="show ComfyUI's start-up log")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# Checks before anything runs.


def find_host(path: Path | None) -> Path:
    if path is not None:
        if not comfy_host.is_comfyui(path.expanduser()):
            raise InputError(f"not a ComfyUI folder: {path} (no comfy/model_patcher.py and nodes.py in it)")
        return path.expanduser().resolve()
    host = comfy_host.find_comfyui()
    if host is None:
        env = os.environ.get("COMFYUI_PATH")
        if env:
            raise InputError(f"COMFYUI_PATH={env} is not a ComfyUI folder (no comfy/model_patcher.py and nodes.py)")
        raise InputError("ComfyUI not found: pass --comfyui PATH, set COMFYUI_PATH, or install this pack in "
                         "ComfyUI/custom_nodes")
    return host


def check_etas(etas: list | None) -> list | None:
    """The etas in the order given, each once; refused (before ComfyUI starts) when not finite, out of Imagic
    Interpolate Conditioning's range, or 'auto' with numbers."""
    if not etas:
        return etas
    if AUTO in etas and len(etas) > 1:
        raise InputError("--eta auto picks the eta itself: give it alone, without numbers")
    low, high = ETA_RANGE
    for eta in etas:
        if eta != AUTO and not math.isfinite(eta):
            raise InputError(f"--eta {eta} is not a finite number: give numbers such as 0.7 0.8")
        if eta != AUTO and not low <= eta <= high:
            raise InputError(f"--eta {eta:g} is outside {low:g} ... {high:g} (Imagic Interpolate Conditioning's range; "
                             "0.6 - 1.0 is where edits are): give an eta in that range")
    return list(dict.fromkeys(etas))  # --eta 0.8 0.8: one edit, not the same file name twice


def check_out(out: Path) -> Path:
    """``out`` resolved, if it is (or can be made) a folder this process can write to; nothing is left behind."""
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder: give a folder (it is made if missing)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"--out {out} cannot be made: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".imagic-edit-probe-").cleanup()
    except OSError as e:
        where = "" if existing == out else f" ({existing}, where it would be made)"
        raise InputError(f"--out {out} is not writable{where}: {e.strerror or e}; give a folder you can write "
                         "to") from None
    return out.resolve() if out.exists() else out


def plan_jobs(args) -> list[Job]:
    if args.batch and args.image:
        raise InputError("give either --image or --batch, not both")
    if args.batch:
        return batch_jobs(args.batch, args.image_dir or args.batch.parent)
    if args.image:
        return single_job(args.image, args.text if args.text is not None else (DEMO_TEXT if args.demo else ""))
    if args.demo:
        return []  # the demo picture is drawn once ComfyUI's input folder exists
    raise InputError("nothing to edit: give --image and --text, --batch FILE.json, or --demo")


def load_workflow(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"workflow not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read workflow {path}: {e}") from e


def resolve_checkpoint(session: Headless, wanted: str | None, default: str) -> str:
    """The checkpoint name ComfyUI will load; a file path is added to the checkpoint folders."""
    if wanted and Path(wanted).expanduser().is_file():
        path = Path(wanted).expanduser().resolve()
        session.add_model_dir("checkpoints", path.parent)
        return path.name
    name = wanted or default
    if session.find_model("checkpoints", name) is None:
        hint = "" if wanted else " (the workflow's default; pass --ckpt)"
        looked = ", ".join(session.model_dirs("checkpoints"))
        raise InputError(f"checkpoint not found: {name}{hint}; looked in: {looked}")
    return name


def accelerator_available() -> bool:
    import torch

    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


# ---------------------------------------------------------------------------------------------------------------
# The run.


def settings_from(args) -> EditSettings:
    demo = DEMO if args.demo else {}

    def pick(name):
        value = getattr(args, name)
        return value if value is not None else demo.get(name)

    return EditSettings(ckpt=None, embed_steps=pick("embed_steps"), tune_steps=pick("tune_steps"), method=args.method,
                        sample_steps=pick("sample_steps"), seed=args.seed, size=pick("size"))


def build_prompt(session: Headless, args, workflow: dict) -> dict:
    if args.save_finetune:
        workflow = set_mode(workflow, SAVER, 0)  # muted in the shipped workflow
    prompt = to_api(workflow, object_info_in_process())
    if args.demo:
        prompt = use_shapes_model(prompt)
    else:
        loaders = [n for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple"]
        default = loaders[0]["inputs"]["ckpt_name"] if loaders else ""
        ckpt = resolve_checkpoint(session, args.ckpt, default) if loaders else None
        prompt = apply_settings(prompt, EditSettings(ckpt=ckpt))
    if args.save_finetune:
        one(prompt, SAVER)
    return apply_settings(prompt, settings_from(args))


def stage_image(session: Headless, job: Job, number: int) -> str:
    """Copy the photo into ComfyUI's (temporary) input folder; returns the name Load Image takes."""
    return comfy_ready(job.image, session.input_dir(), f"{number:03d}_{job.image.name}")


def written(outputs: dict, out: Path) -> list[Path]:
    files = []
    for node_output in outputs.values():
        for image in node_output.get("images", []):
            if image.get("type") == "output":
                files.append(out / image.get("subfolder", "") / image["filename"])
    return files


def eta_names(etas: list) -> dict:
    """Each eta's name in file names: two decimals (eta0.80), or as many more as tell the etas apart (0.5 and
    0.504: eta0.500, eta0.504)."""
    numbers = [e for e in etas if e != AUTO]
    places = next((d for d in range(2, 17) if len({f"{e:.{d}f}" for e in numbers}) == len(set(numbers))), 17)
    return {e: AUTO if e == AUTO else f"eta{e:.{places}f}" for e in etas}


def run_job(session: Headless, prompt: dict, job: Job, number: int, etas: list, args, out: Path,
            edits: dict | None = None) -> list[Path]:
    """Run one photo at every eta; ``edits`` gets each eta's edit file (for the demo's side by side)."""
    image = stage_image(session, job, number)
    names = eta_names(etas)
    files = []
    for k, eta in enumerate(etas):
        prefix = f"{job.stem}_{names[eta]}"
        edit = for_edit(prompt, image, job.text, 0.0 if eta == AUTO else eta, prefix)
        if args.save_finetune and k == 0:
            edit = save_finetune(edit, f"{job.stem}_finetune", 0.0 if eta == AUTO else eta)
        elif any(n["class_type"] == SAVER for n in edit.values()):
            edit = without(edit, SAVER)
        if eta == AUTO:
            edit = use_auto_eta(edit, prefix)  # a saved fine-tune gets the chosen eta as its suggested eta
        before = set(out.glob("*.safetensors"))
        with ctrl_c_cancels():
            outputs = session.run(edit)
        if eta == AUTO:
            print(score_table(outputs) or "", flush=True)
        new = written(outputs, out)
        if edits is not None:
            edits[eta] = edit_of(new, prefix)
        files += new + sorted(set(out.glob("*.safetensors")) - before)
    return files


@contextlib.contextmanager
def ctrl_c_cancels():
    """While ComfyUI runs a prompt, one Ctrl+C is its Cancel: training and sampling stop at their next step (the
    training loop's progress callback raises on ComfyUI's interrupt) and nothing more is written; the run then
    ends with KeyboardInterrupt. A second Ctrl+C stops at once.

    Python's own handler would not do: the executor runs the prompt in ``asyncio.run``, which turns the first
    Ctrl+C into a cancel of its task, seen only when the node that is running (the whole training) returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    import comfy.model_management

    pressed = []

    def on_sigint(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)
        comfy.model_management.interrupt_current_processing(True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            yield
        except RunError:
            if pressed:
                raise KeyboardInterrupt from None
            raise
        if pressed:
            raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous)


def demo_pictures(job: Job, edits: dict, out: Path) -> list[Path]:
    """The demo's input and input | eta ... side by side, next to the edits (``edits``: eta -> its edit file)."""
    picture = out / f"{job.stem}_input.png"
    shutil.copyfile(job.image, picture)
    edits = list(edits.items())
    if any(path is None for _, path in edits):
        return [picture]
    return [picture, write_side_by_side(picture, edits, out / f"{job.stem}_side_by_side.png")]


def set_threads(args) -> int:
    """torch's CPU thread count for this run: --threads, else OMP_NUM_THREADS if set, else one per CPU that
    other work leaves free (``core.threads``: what the training nodes choose in the server too; on a busy
    machine torch's one thread per core collapses). Returns the count in use."""
    import torch

    from ..core.threads import training_threads

    threads = args.threads
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = training_threads()
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be 1 or more, not {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def run(args) -> int:
    args.eta = check_etas(args.eta)
    host = find_host(args.comfyui)
    jobs = plan_jobs(args)
    workflow = load_workflow(args.workflow)
    if args.demo and args.ckpt:
        raise InputError("--demo runs the built-in shapes model; leave out --ckpt")
    out = check_out(args.out)
    set_threads(args)
    with tempfile.TemporaryDirectory(prefix="imagic-edit-") as tmp:
        session = Headless(host, Path(tmp), cpu=args.cpu or not accelerator_available(), verbose=args.verbose)
        prompt = build_prompt(session, args, workflow)
        builtin = not jobs  # --demo without a photo: the built-in picture, shown next to its edits
        if builtin:
            picture = write_demo_scene(Path(tmp) / "demo.png")
            jobs = [Job(picture, check_text(args.text or DEMO_TEXT, "--text"), "demo")]
        etas = args.eta or (DEMO_ETAS if args.demo else [prompt[one(prompt, "ImagicInterpolateConditioning")]
                                                         ["inputs"]["eta"]])
        out.mkdir(parents=True, exist_ok=True)
        out = out.resolve()
        session.set_output_dir(out)
        session.add_model_dir("loras", out)  # where --save-finetune writes
        total = []
        for number, job in enumerate(jobs, 1):
            shown = ", ".join(str(e) if e == AUTO else f"{e:g}" for e in etas)
            print(f"[{number}/{len(jobs)}] {job.image.name}: \"{job.text}\", eta {shown}", flush=True)
            edits = {}
            files = run_job(session, prompt, job, number, etas, args, out, edits)
            if builtin and AUTO not in etas:
                files += demo_pictures(job, edits, out)
            for path in files:
                print(f"wrote {path}", flush=True)
                total.append(path)
        print(f"{len(total)} file(s) in {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (InputError, PromptError, WorkflowError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
