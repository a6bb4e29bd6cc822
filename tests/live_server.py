"""Start the real ComfyUI server (main.py) in a subprocess with this pack installed as a custom node.

The pack is linked into ``<base>/custom_nodes/comfyui-imagic`` and the server runs with
``--base-directory <base>``, so the ComfyUI checkout itself is never written to.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import HOST
from pack import ROOT, comfy_host


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path, log: Path, pythonpath: tuple[str, ...] = (), env: dict | None = None):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        (base / "input").mkdir(exist_ok=True)
        link = base / "custom_nodes" / "comfyui-imagic"
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        env = comfy_host.child_env({**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [*pythonpath, env.get("PYTHONPATH")]))
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"],
            cwd=HOST, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI server exited: {self.log.read_text()[-3000:]}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI server did not start: {self.log.read_text()[-3000:]}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def post_status(self, path: str, data: dict) -> tuple[int, dict]:
        """POST returning (HTTP status, JSON body), 4xx answers included (e.g. /prompt's node_errors)."""
        try:
            return 200, self.post(path, data)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run_prompt(self, prompt: dict, timeout: float = 600) -> dict:
        """POST /prompt and wait for its /history entry (the way the frontend queues a graph)."""
        prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": "imagic-tests"})["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
