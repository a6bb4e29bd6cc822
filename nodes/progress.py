"""Progress for the training loops: ComfyUI's progress bar, the console bar with the current loss,
a server message for the loss chart in the graph editor, and Cancel (checked after every step)."""
from __future__ import annotations

import time

from tqdm import tqdm

import comfy.model_management
import comfy.utils
from comfy_execution.utils import get_executing_context

LOSS_EVENT = "imagic.loss"
LOSS_UI = "imagic_loss"  # the ui output key: the frontend redraws the chart from it when the node is cached


def loss_ui(title: str, losses: list[float], elapsed_s: float, steps: int, stopped_at: int | None = None) -> dict:
    """The node's ui output: the whole loss curve of the run (``steps``: the node's upper bound; ``stopped_at``:
    the step after which early stopping ended it, else None). ComfyUI keeps it with the cached result and sends
    it again whenever the node is cached (e.g. a new tab, Run again): the chart shows what trained, and that it
    comes from the cache."""
    return {LOSS_UI: [{"title": title, "steps": steps, "losses": [float(f"{x:.6g}") for x in losses],
                       "elapsed_s": round(elapsed_s, 3), "stopped_at": stopped_at}]}


def _send(event: str, data: dict) -> None:
    try:
        from server import PromptServer
    except ImportError:  # headless use without the server module
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and getattr(server, "client_id", None) is not None:
        server.send_sync(event, data, server.client_id)


class TrainingProgress:
    """Callable ``(step, loss)`` for ``core.training.adam_loop``; raises ComfyUI's interruption on Cancel."""

    def __init__(self, title: str, steps: int, every: int = 1):
        context = get_executing_context()
        self.node_id = context.node_id if context is not None else None
        self.title = title
        self.steps = steps
        self.every = max(1, every)
        self.bar = comfy.utils.ProgressBar(steps, node_id=self.node_id)
        self.console = tqdm(total=steps, desc=title, disable=not comfy.utils.PROGRESS_BAR_ENABLED)
        self.start = time.perf_counter()
        comfy.model_management.throw_exception_if_processing_interrupted()

    def __call__(self, step: int, loss: float) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        done = step + 1
        self.console.set_postfix(loss=f"{loss:.5f}", refresh=False)
        self.console.update(1)
        self.bar.update_absolute(done, self.steps)
        if done % self.every == 0 or done == self.steps:
            elapsed = time.perf_counter() - self.start
            _send(LOSS_EVENT, {"node": self.node_id, "title": self.title, "step": done, "steps": self.steps,
                               "loss": loss, "eta_s": elapsed / done * (self.steps - done)})

    def finish(self, done: int) -> None:
        """Training ended after ``done`` steps (fewer than ``steps`` when it stopped early): the bar is full."""
        self.bar.update_absolute(self.steps, self.steps)
        if done < self.steps:
            self.console.set_postfix_str(f"converged: stopped early at step {done}/{self.steps}", refresh=False)

    def close(self) -> None:
        self.console.close()
