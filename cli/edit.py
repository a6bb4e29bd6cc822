"""Headless Imagic edit: run the pack's edit workflow through ComfyUI's executor in this process.

    python cli/edit.py --image dog.png --text "a photo of a sitting dog" --eta 0.6 0.7 0.8 --out edits/
    python cli/edit.py --image dog.png --text "a photo of a sitting dog" --eta auto   # picked by Imagic Auto Eta
    python cli/edit.py --image dog.png --text "a photo of a sitting dog" --mask dog_mask.png   # only inside the mask
    python cli/edit.py --image dog.png --text "..." --ckpt sd_xl_base_1.0.safetensors      # SDXL: imagic_edit_sdxl
    python cli/edit.py --image dog.png --text "..." --unet flux1-dev.safetensors \
        --clip clip_l.safetensors t5xxl_fp16.safetensors --vae ae.safetensors           # Flux: imagic_edit_flux
    python cli/edit.py --batch input_list.json --image-dir images/ --out edits/     # TEdBench format
    python cli/edit.py --demo                                         # the built-in shapes model, 1-2 min on a CPU

The workflow follows the model: imagic_edit for SD 1.x/2.x, imagic_edit_sdxl, imagic_edit_sd3 or
imagic_edit_flux, the family told from the checkpoint's tensor names and shapes by ComfyUI's own detection (no
weight is read); imagic_edit_masked with --mask. ComfyUI is found like the tests find it (--comfyui,
$COMFYUI_PATH, the custom_nodes layout, ~/comfy/ComfyUI). The training runs once per photo and text; every
further eta only samples (ComfyUI's cache). Bad input (a missing or unreadable image or mask, a missing
checkpoint, no ComfyUI) stops with one line on stderr before anything is written.
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

if __name__ == "__main__":  # python cli/edit.py: run the pack's own copy of this module
    import comfy_host  # cli/comfy_host.py (this script's folder is on the path): the pack as ComfyUI names it

    sys.exit(comfy_host.pack_module("cli.edit").main())

from ..core import defaults
from ..demo.shapes_demo import (
    DEMO_ETAS,
    DEMO_TEXT,
    SETTINGS,
    edit_of,
    use_shapes_model,
    write_demo_scene,
    write_side_by_side,
)
from . import comfy_host, start_graph
from .auto_eta_prompt import score_table, use_auto_eta
from .edit_inputs import (
    InputError,
    Job,
    batch_jobs,
    check_mask,
    check_text,
    comfy_ready,
    mask_ready,
    picture_size,
    single_job,
)
from .edit_prompt import (
    MASK_LOADER,
    EditSettings,
    PromptError,
    apply_settings,
    for_edit,
    nodes_of,
    one,
    save_finetune,
    without,
)
from .family_templates import MASKED, template_for_family
from .headless import Headless, RunError
from .model_family import detect
from .workflow_api import WorkflowError, object_info_in_process, set_mode, to_api

PROG = "imagic-edit"
WORKFLOWS = comfy_host.PACK_DIR / "workflows"
# The loaders of model files in the templates: their folder, the inputs naming the files, the option that sets them.
LOADERS = {
    "CheckpointLoaderSimple": ("checkpoints", ("ckpt_name",), "--ckpt"),
    "UNETLoader": ("diffusion_models", ("unet_name",), "--unet"),
    "DualCLIPLoader": ("text_encoders", ("clip_name1", "clip_name2"), "--clip"),
    "TripleCLIPLoader": ("text_encoders", ("clip_name1", "clip_name2", "clip_name3"), "--clip"),
    "VAELoader": ("vae", ("vae_name",), "--vae"),
}
MASKABLE = ("sd15", "sd2")  # the families imagic_edit_masked (built from the SD 1.5 imagic_edit) is for
DEMO = SETTINGS  # the shapes model's measured recipe (demo/shapes_demo.py)
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
                                epilog=f"Defaults not given here are the workflow's, the nodes' defaults: "
                                       f"{defaults.EMBED_STEPS} + {defaults.TUNE_STEPS} steps (a tenth of the "
                                       f"paper's, measured: bench/RESULTS.md), eta {defaults.ETA}.")
    what = p.add_argument_group("what to edit")
    what.add_argument("--image", type=Path, help="the photo")
    what.add_argument("--text", help='the target text, e.g. "a photo of a sitting dog"')
    what.add_argument("--batch", type=Path, metavar="FILE.json",
                      help='a JSON list of {"img_name": ..., "target_text": ...} (TEdBench format)')
    what.add_argument("--image-dir", type=Path, help="where the batch file's images are (default: next to it)")
    what.add_argument("--demo", action="store_true",
                      help="the built-in shapes model (no checkpoint, no download) on a picture it never saw: writes "
                           "the input, the edits and input | eta ... side by side; a minute or two on a CPU")
    what.add_argument("--mask", type=Path, metavar="FILE",
                      help="edit only inside this mask (workflows/imagic_edit_masked.json; SD 1.x/2.x checkpoints and "
                           "--demo): a greyscale PNG of the photo's size, white = edit, black = keep (with "
                           "transparency: opaque = edit). Training still sees the whole photo; outside the mask the "
                           "result is the photo, pixel for pixel. A mask of another size is refused, not resized")
    model = p.add_argument_group("model (the workflow follows its family)")
    model.add_argument("--ckpt", help="checkpoint name in ComfyUI's models/checkpoints, or a file path (default: "
                                      "v1-5-pruned-emaonly.safetensors). Its family, told from the .safetensors "
                                      "header by ComfyUI's own detection, picks the workflow: SD 1.x/2.x imagic_edit, "
                                      "SDXL imagic_edit_sdxl, SD3 imagic_edit_sd3 (text encoders: --clip); a pickled "
                                      ".ckpt is not opened to look and runs imagic_edit. Flux comes as separate "
                                      "files: --unet, --clip, --vae")
    model.add_argument("--unet", metavar="FILE",
                       help="Flux: the diffusion model (name in models/diffusion_models or a path; default "
                            "flux1-dev.safetensors); runs imagic_edit_flux")
    model.add_argument("--clip", nargs="+", metavar="FILE",
                       help="text encoders (names in models/text_encoders or paths): Flux: clip_l and t5xxl "
                            "(default clip_l.safetensors t5xxl_fp16.safetensors); SD3: clip_l, clip_g and t5xxl "
                            "(default clip_l.safetensors clip_g.safetensors t5xxl_fp16.safetensors)")
    model.add_argument("--vae", metavar="FILE",
                       help="Flux: the VAE (name in models/vae or a path; default ae.safetensors)")
    how = p.add_argument_group("settings")
    how.add_argument("--eta", type=eta_value, nargs="+",
                     help=f"one or several etas (default {defaults.ETA}, the workflow's); training runs once. "
                          f"'auto': Imagic Auto Eta samples {defaults.AUTO_ETA['eta_min']}-"
                          f"{defaults.AUTO_ETA['eta_max']}, picks one by the frozen model's own score, and also "
                          "writes the grid of all")
    how.add_argument("--embed-steps", type=int,
                     help=f"Imagic Optimize Embedding steps (default {defaults.EMBED_STEPS}; paper: "
                          f"{defaults.PAPER['embed_steps']})")
    how.add_argument("--tune-steps", type=int, help=f"Imagic Finetune UNet steps (default {defaults.TUNE_STEPS}; "
                                                     f"paper: {defaults.PAPER['tune_steps']})")
    how.add_argument("--method", choices=list(defaults.LEARNING_RATE),
                     help=f"fine-tune method (default {defaults.TUNE_METHOD})")
    how.add_argument("--sample-steps", type=int, help="KSampler steps (default: the workflow's: 50 SD 1.x/2.x, 25 "
                                                      "SDXL, 28 SD3, 20 Flux)")
    how.add_argument("--start", choices=list(defaults.STARTS),
                     help=f"where the edit's sampling starts (default {defaults.START}, the workflow's): noise (the "
                          "paper's: an empty latent), photo (the photo's latent noised to --strength) or inversion "
                          "(the photo run backwards to --strength's noise level by the fine-tuned model)")
    how.add_argument("--strength", type=float,
                     help=f"how far the photo start is noised or the inversion runs back, in (0, 1] (default "
                          f"{defaults.STRENGTH:g}, the workflow's; 1 = pure noise)")
    how.add_argument("--seed", type=int, help="seed of the training and the sampler (default 0)")
    how.add_argument("--size", type=int, help="square working size in pixels (default: the workflow's: 512 SD "
                                              "1.x/2.x, 1024 SDXL, SD3 and Flux; 128 with --demo)")
    how.add_argument("--save-finetune", action="store_true",
                     help="also save each fine-tune (.safetensors, for Imagic Load Finetune) in --out")
    run = p.add_argument_group("where")
    run.add_argument("--out", type=Path, default=Path("imagic-edits"), help="output folder (default ./imagic-edits)")
    run.add_argument("--comfyui", type=Path, help="the ComfyUI folder (default: found like the tests find it)")
    run.add_argument("--workflow", type=Path,
                     help="an edited copy of one of the edit workflows, run instead of the one the model picks")
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


def check_start(args) -> None:
    """--strength in (0, 1] and not with --start noise (refused before ComfyUI starts)."""
    if args.strength is None:
        return
    if not (math.isfinite(args.strength) and 0.0 < args.strength <= 1.0):
        raise InputError(f"--strength {args.strength:g} is outside (0, 1]: 1 starts from pure noise, 0.5 halfway "
                         "between the photo and noise")
    if args.start == "noise":
        raise InputError("--strength has no effect on --start noise: leave it out, or pass --start photo or "
                         "--start inversion")


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


MODEL_WORDS = {"checkpoints": "checkpoint", "diffusion_models": "diffusion model", "text_encoders": "text encoder",
               "vae": "VAE"}


def resolve_model(session: Headless, folder: str, wanted: str | None, default: str, flag: str) -> str:
    """The file name ComfyUI's loader will take from the model ``folder``; a file path is added to that folder."""
    if wanted and Path(wanted).expanduser().is_file():
        path = Path(wanted).expanduser().resolve()
        session.add_model_dir(folder, path.parent)
        return path.name
    name = wanted or default
    if session.find_model(folder, name) is None:
        hint = "" if wanted else f" (the workflow's default; pass {flag})"
        looked = ", ".join(session.model_dirs(folder)) or f"no models/{folder} folder"
        raise InputError(f"{MODEL_WORDS[folder]} not found: {name}{hint}; looked in: {looked}")
    return name


def model_family(session: Headless, args) -> str:
    """The family of the model the command line names (nodes/families.py's names: sd15, sd2, sdxl, sd3, flux),
    told from the file's .safetensors header by ComfyUI's own model detection; sd15 when it names none (the
    default checkpoint) or names a pickled .ckpt/.pt, which is not opened to look."""
    if args.demo or not (args.ckpt or args.unet):
        return "sd15"
    flag, folder, wanted = ("--unet", "diffusion_models", args.unet) if args.unet else ("--ckpt", "checkpoints",
                                                                                         args.ckpt)
    path = Path(session.find_model(folder, resolve_model(session, folder, wanted, "", flag)))
    if path.suffix.lower() not in (".safetensors", ".sft"):
        return "flux" if args.unet else "sd15"
    found = detect(path)
    if found is None:
        raise InputError(f"{flag} {wanted}: ComfyUI's model detection finds no diffusion model it knows in this file "
                         "(a LoRA, a VAE or a text encoder?): give a checkpoint of SD 1.x/2.x, SDXL or SD3, or Flux's "
                         "diffusion model with --unet")
    flux_files = ("--unet <flux1-dev.safetensors> --clip clip_l.safetensors t5xxl_fp16.safetensors --vae "
                  "ae.safetensors")
    if args.unet and found.family != "flux":
        raise InputError(f"--unet {wanted} is a {found.config} model, not Flux: --unet, --clip and --vae are for "
                         "Flux's separate files; give an SD 1.x/2.x, SDXL or SD3 checkpoint with --ckpt")
    if args.ckpt and found.family == "flux":
        what = "a Flux checkpoint" if found.checkpoint else "Flux's diffusion model alone"
        raise InputError(f"--ckpt {wanted} is {what}; the Flux workflow (imagic_edit_flux) loads Flux's separate "
                         f"files: pass {flux_files} (the diffusion model, both text encoders, the VAE)")
    if args.ckpt and not found.checkpoint:
        raise InputError(f"--ckpt {wanted} holds a {found.config} diffusion model alone, without its text encoder and "
                         "VAE: give the whole checkpoint")
    try:
        template_for_family(found.family)
    except ValueError:
        families = "SD 1.x/2.x, SDXL, SD3 (--ckpt) and Flux (--unet, --clip, --vae)"
        raise InputError(f"{flag} {wanted} is a {found.config} model: Imagic has no workflow for it; it edits with "
                         f"{families} models") from None
    return found.family


def edit_workflow(args, family: str) -> Path:
    """The workflow to run: --workflow, else the masked edit (--mask) or the family's own template."""
    if args.workflow is not None:
        return args.workflow
    if args.mask is not None:
        if family not in MASKABLE:
            raise InputError(f"--mask runs workflows/{MASKED}.json, built for SD 1.x/2.x checkpoints, and this model "
                             f"is {family}: edit without --mask, or open {MASKED} in ComfyUI and give it this "
                             "model's loaders")
        return WORKFLOWS / f"{MASKED}.json"
    return WORKFLOWS / f"{template_for_family(family)}.json"


def set_model_files(session: Headless, prompt: dict, args) -> dict:
    """A copy of ``prompt`` whose loaders load the files --ckpt, --unet, --clip and --vae name (else the workflow's
    own, which must exist); an option no loader of the workflow takes is refused."""
    out = {k: {**v, "inputs": dict(v["inputs"])} for k, v in prompt.items()}
    given = {"--ckpt": args.ckpt and [args.ckpt], "--unet": args.unet and [args.unet], "--clip": args.clip,
             "--vae": args.vae and [args.vae]}
    used = set()
    for node in out.values():
        if node["class_type"] not in LOADERS:
            continue
        folder, names, flag = LOADERS[node["class_type"]]
        wanted = given[flag]
        if wanted and len(wanted) != len(names):
            raise InputError(f"{flag} takes {len(names)} file(s) for this workflow's {node['class_type']} "
                             f"({', '.join(str(node['inputs'][n]) for n in names)}), not {len(wanted)}")
        for k, name in enumerate(names):
            node["inputs"][name] = resolve_model(session, folder, wanted[k] if wanted else None, node["inputs"][name],
                                                 flag)
        used.add(flag)
    for flag, wanted in given.items():
        if wanted and flag not in used:
            raise InputError(f"{flag} has no use in this workflow (no loader takes it): leave it out (Flux: --unet, "
                             "--clip, --vae; SD3: --ckpt and --clip; other checkpoints: --ckpt alone)")
    return out


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


def build_prompt(session: Headless, args, workflow: dict | None = None) -> dict:
    """The API prompt of ``workflow`` (default: the one the model's family and --mask pick) with the model files
    and settings of the command line."""
    if workflow is None:
        workflow = load_workflow(edit_workflow(args, model_family(session, args)))
    if args.save_finetune:
        workflow = set_mode(workflow, SAVER, 0)  # muted in the shipped workflow
    prompt = to_api(workflow, object_info_in_process())
    prompt = use_shapes_model(prompt) if args.demo else set_model_files(session, prompt, args)
    if args.save_finetune:
        one(prompt, SAVER)
    masks = nodes_of(prompt, MASK_LOADER)
    if args.mask is not None and len(masks) != 1:
        raise InputError(f"--mask needs a workflow with one Load Image (as Mask) ({MASK_LOADER}), this one has "
                         f"{len(masks)}: leave out --workflow (--mask runs {MASKED}) or give a copy of {MASKED}")
    if args.mask is None and masks:
        raise InputError(f"this workflow edits inside a mask (it has a {MASK_LOADER}): give the mask with --mask FILE")
    return with_start(apply_settings(prompt, settings_from(args)), args)


def with_start(prompt: dict, args) -> dict:
    """``prompt`` sampling from --start at --strength (each defaults to the workflow's; checked by check_start)."""
    if args.start is None and args.strength is None:
        return prompt
    try:
        found = start_graph.find(prompt)
        kind = args.start or found.start.kind
        if kind == "noise":
            strength = 1.0
        elif args.strength is not None:
            strength = args.strength
        else:  # the workflow's, unless it started from noise
            strength = found.start.strength if found.start.kind != "noise" else defaults.STRENGTH
        if args.strength is not None and kind == "noise":
            raise InputError("--strength has no effect on the workflow's noise start: pass --start photo or "
                             "--start inversion too")
        scale = nodes_of(prompt, "ImageScale")
        size = (prompt[scale[0]]["inputs"]["width"], prompt[scale[0]]["inputs"]["height"]) if scale else None
        return start_graph.set_start(prompt, start_graph.Start(kind, strength), size)
    except InputError:
        raise
    except ValueError as e:
        raise PromptError(f"--start/--strength: {e}") from e


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
    mask = None if args.mask is None else mask_ready(args.mask, session.input_dir(), f"{number:03d}_mask")
    names = eta_names(etas)
    files = []
    for k, eta in enumerate(etas):
        prefix = f"{job.stem}_{names[eta]}"
        edit = for_edit(prompt, image, job.text, 0.0 if eta == AUTO else eta, prefix, mask)
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


def check_mask_use(args, jobs: list[Job]) -> None:
    """--mask: one photo, numeric etas, and a readable mask of the photo's size with some white in it."""
    if args.mask is None:
        return
    if args.batch:
        raise InputError("--mask goes with one photo (--image or --demo), not --batch: each photo needs its own mask")
    if AUTO in (args.eta or []):
        raise InputError("--eta auto samples whole pictures, not inside a mask: with --mask give etas as numbers")
    from ..demo.shapes_world import SIZE  # the demo's picture

    check_mask(args.mask, picture_size(jobs[0].image) if jobs else (SIZE, SIZE))


def run(args) -> int:
    args.eta = check_etas(args.eta)
    check_start(args)
    host = find_host(args.comfyui)
    jobs = plan_jobs(args)
    workflow = load_workflow(args.workflow) if args.workflow is not None else None
    if args.demo and (args.ckpt or args.unet or args.clip or args.vae):
        raise InputError("--demo runs the built-in shapes model; leave out --ckpt, --unet, --clip and --vae")
    if args.ckpt and args.unet:
        raise InputError("give --ckpt (a checkpoint) or --unet (Flux's diffusion model), not both")
    check_mask_use(args, jobs)
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
