"""ComfyUI's executor in this process, without a server: boot quietly, validate and run API-format prompts."""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import uuid
from pathlib import Path

from . import comfy_host


class RunError(RuntimeError):
    """ComfyUI refused or failed a prompt; the message is one line."""


class _NoServer:
    """What PromptExecutor uses of the PromptServer when nothing is listening (messages go nowhere)."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}

    def send_sync(self, *args, **kwargs) -> None:
        pass

    def queue_updated(self) -> None:
        pass


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Keep ComfyUI's start-up chatter (optional nodes that did not import, device info) off the terminal."""
    if not enabled:
        yield None
        return
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        root.setLevel(level)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


class Headless:
    """A booted ComfyUI (``host``) whose input/temp/user folders live in ``base_dir``."""

    def __init__(self, host: Path, base_dir: Path, *, cpu: bool, verbose: bool = False):
        with _quiet(not verbose) as log:
            try:
                comfy_host.boot(host, base_dir, cpu=cpu)  # never the tests' stand-ins
                self._load_extra_model_paths(host)
                import execution
                import folder_paths
            except Exception as e:
                detail = f" ({_one_line(log.getvalue())})" if log is not None and log.getvalue().strip() else ""
                raise RunError(f"ComfyUI at {host} could not start: {e}{detail}") from e
        self.base_dir = Path(base_dir).resolve()
        self.execution = execution
        self.folder_paths = folder_paths
        self.executor = execution.PromptExecutor(_NoServer(), cache_type=execution.CacheType.CLASSIC)

    @staticmethod
    def _load_extra_model_paths(host: Path) -> None:
        """Model folders from ComfyUI's extra_model_paths.yaml, as its main.py reads them."""
        config = host / "extra_model_paths.yaml"
        if config.is_file():
            from utils.extra_config import load_extra_path_config

            load_extra_path_config(str(config))

    def set_output_dir(self, path: Path) -> None:
        self.folder_paths.set_output_directory(str(path))

    def add_model_dir(self, kind: str, path: Path, first: bool = True) -> None:
        self.folder_paths.add_model_folder_path(kind, str(path), is_default=first)

    def find_model(self, kind: str, name: str) -> str | None:
        return self.folder_paths.get_full_path(kind, name)

    def model_dirs(self, kind: str) -> list[str]:
        """The user's folders for ``kind`` (not the temporary one of this run)."""
        return [p for p in self.folder_paths.get_folder_paths(kind)
                if os.path.isdir(p) and not Path(p).resolve().is_relative_to(self.base_dir)]

    def input_dir(self) -> Path:
        return Path(self.folder_paths.get_input_directory())

    def run(self, prompt: dict) -> dict:
        """Validate and execute ``prompt``; returns the UI outputs per node ({node_id: {"images": [...]}})."""
        prompt_id = str(uuid.uuid4())
        ok, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not ok:
            raise RunError(f"the workflow is not valid: {_validation_message(error, node_errors)}")
        self.executor.execute(prompt, prompt_id, {}, outputs)
        if not self.executor.success:
            raise RunError(_execution_message(self.executor.status_messages))
        return self.executor.history_result["outputs"]


def _validation_message(error: dict, node_errors: dict) -> str:
    for node_id, info in (node_errors or {}).items():
        for item in info.get("errors", []):
            return f"node {node_id} ({info.get('class_type')}): {item.get('message')}: {item.get('details')}"
    return f"{error.get('message')}: {error.get('details')}" if isinstance(error, dict) else str(error)


def _execution_message(messages: list) -> str:
    for event, data in messages:
        if event == "execution_error":
            return f"{data['node_type']} (node {data['node_id']}) failed: {_one_line(data['exception_message'])}"
        if event == "execution_interrupted":
            return "interrupted"
    return "the prompt did not finish"
