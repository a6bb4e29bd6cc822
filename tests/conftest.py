"""Test set-up: the ComfyUI host found and booted by cli/comfy_host.py (once), graphs run through its executor.

Host tests take the ``comfy`` fixture; without a host they are skipped and the run ends with one loud
line saying how many were skipped and why. Under ``CI=true`` every skip (no host, no Chromium, ...) is a
failure instead: a CI run that tested only part of the suite must not pass.
"""
from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest
import torch

# On a 2-core machine every op that uses a second thread pays ~8 ms even on tiny tensors: a tiny UNet
# forward takes ~2 s with 2 threads and ~9 ms with 1 (the suite ran 6x faster with one thread).
torch.set_num_threads(1)

# The tests' helpers (pack, graphs, ...) by their names; cli/ only while comfy_host imports, which then becomes the
# pack's own copy (the one way in: cli/comfy_host.py).
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
try:
    import comfy_host  # noqa: E402
finally:
    sys.path.remove(str(Path(__file__).resolve().parents[1] / "cli"))

HOST = comfy_host.find_comfyui()
NO_HOST = comfy_host.NO_HOST
CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


class Comfy:
    """The booted host: ComfyUI's executor with a real (not started) PromptServer, and its modules."""

    def __init__(self, base: Path):
        comfy_host.boot(HOST, base, stand_ins=True)
        import execution
        import nodes
        import server

        self.base = base
        self.nodes = nodes
        self.execution = execution
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.server = server.PromptServer(self.loop)
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC)

    def validate(self, prompt: dict):
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt: dict, *, expect_success: bool = True):
        """Validate and execute ``prompt`` (API format) like the server's queue does; returns the executor."""
        ok, error, outputs, node_errors = self.validate(prompt)
        assert ok, f"validation failed: {error} {node_errors}"
        self.executor.execute(prompt, str(uuid.uuid4()), {}, outputs)
        if expect_success:
            assert self.executor.success, self.error_message()
        return self.executor

    def output(self, node_id: str, index: int = 0):
        return self.executor.caches.outputs.get(str(node_id))[index][0]

    def error_message(self) -> str:
        for event, data in self.executor.status_messages:
            if event == "execution_error":
                return f"{data['node_type']}: {data['exception_message']}"
        return ""

    def events(self, name: str) -> list[dict]:
        return [data for event, data in self.executor.status_messages if event == name]


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> Comfy:
    if HOST is None:
        pytest.skip(NO_HOST)
    return Comfy(tmp_path_factory.mktemp("comfy_base"))


@pytest.fixture(scope="session")
def workflow_server(tmp_path_factory):
    """The real ComfyUI server set up for the shipped workflows (tests/workflow_env.py); one per session."""
    if HOST is None:
        pytest.skip(NO_HOST)
    from live_server import ComfyServer
    from workflow_env import prepare_base

    base = prepare_base(tmp_path_factory.mktemp("workflow_server"))
    server = ComfyServer(base, base / "server.log", env={"OMP_NUM_THREADS": "1"})  # see torch.set_num_threads above
    yield server
    server.stop()


@pytest.fixture(scope="module")
def frontend(workflow_server, tmp_path_factory):
    """The real frontend in headless Chromium on ``workflow_server``, one page per test module (tests/browser.py)."""
    from playwright.sync_api import sync_playwright

    from browser import Frontend

    with sync_playwright() as playwright:
        page = Frontend(playwright, workflow_server, tmp_path_factory.mktemp("chromium-profile"))
        try:
            page.open()
            yield page
        finally:
            page.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test fails: every skip here means something is missing (the host, Chromium,
    Playwright, diffusers), and a CI run that left part of the suite out must not pass."""
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skipped test fails. Skipped because: {reason}"


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if NO_HOST in str(r.longrepr)]
    if HOST is None and CI:
        terminalreporter.write_line(f"!!! CI=true: every host test FAILED: {NO_HOST} !!!", red=True, bold=True)
    elif HOST is None:
        terminalreporter.write_line(
            f"!!! {len(skipped)} HOST TESTS SKIPPED: {NO_HOST}. Only the host-free tests ran. !!!",
            red=True, bold=True)
    else:
        terminalreporter.write_line(f"ComfyUI host: {HOST}")
    mark = "BROWSER TESTS SKIPPED: "
    reasons = [r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr)
               for r in terminalreporter.stats.get("skipped", [])]
    browser = [reason.split(mark, 1)[1] for reason in reasons if mark in reason]
    if browser:
        terminalreporter.write_line(f"!!! {len(browser)} BROWSER TESTS SKIPPED: {browser[0]} !!!", red=True, bold=True)
