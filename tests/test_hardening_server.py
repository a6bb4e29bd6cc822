"""Values the frontend would not send, queued through the real server's ``/prompt`` (issue 11): a combo value
outside its list, ``null`` for a file name, a JSON ``NaN`` for a float (which passes ComfyUI's range checks).
Each stops the node with an error that starts with its title and says the problem and the fix, and nothing
is written to ``models/loras``."""
from __future__ import annotations

import pytest

from asserts import assert_clear
from conftest import HOST, NO_HOST
from graphs import imagic_graph, write_input_image
from test_finetune_file import FAST, load_graph, save_node

pytestmark = pytest.mark.skipif(HOST is None, reason=NO_HOST)
NAN = float("nan")  # json.dumps writes the literal NaN, as a hand-made /prompt request can


@pytest.fixture(scope="module")
def server(tmp_path_factory, comfy):  # comfy: the in-process host, whose registry assert_clear reads titles from
    from live_server import ComfyServer

    base = tmp_path_factory.mktemp("hardening_server")
    s = ComfyServer(base, base / "server.log", env={"OMP_NUM_THREADS": "1"})
    yield s
    s.stop()


def loras(server) -> list:
    folder = server.base / "models" / "loras"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def saved(server):
    """One fine-tune trained and saved through /prompt; the later prompts reuse its cached nodes."""
    image = write_input_image(server.base / "input", name="hardening_server.png")
    graph = imagic_graph(image, **FAST)
    graph["20"] = save_node(prefix="hardening/server")
    result = server.run_prompt(graph)
    assert result["status"]["status_str"] == "success", result["status"]
    files = loras(server)
    assert len(files) == 1
    return {"graph": graph, "image": image,
            "name": str(files[0].relative_to(server.base / "models" / "loras"))}


def error_message(server, graph: dict, node_type: str) -> str:
    before = loras(server)
    result = server.run_prompt(graph)
    assert result["status"]["status_str"] == "error", result["status"]
    errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == node_type, errors
    assert loras(server) == before  # no file, no half-file
    return errors[0]["exception_message"]


def edited(saved, node: str, **inputs) -> dict:
    """The saved graph with ``inputs`` changed on ``node``; without the Save node unless it is the one changed
    (a Save whose inputs did not change would rightly save again)."""
    graph = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in saved["graph"].items()
             if k != "20" or node == "20"}
    graph[node]["inputs"].update(inputs)
    return graph


@pytest.mark.parametrize("learning_rate", [1e-3, 0.0])  # 0 = the method's default: was a raw KeyError
def test_an_unknown_method_is_refused(server, saved, learning_rate):
    graph = edited(saved, "6", method="bogus", learning_rate=learning_rate)
    assert_clear(error_message(server, graph, "ImagicFinetuneUNet"), "ImagicFinetuneUNet", "method is 'bogus'",
                 "'lora', 'full'", "pick one")


@pytest.mark.parametrize("node, name", [("7", "eta"), ("20", "suggested_eta")])
def test_nan_floats_are_refused(server, saved, node, name):
    graph = edited(saved, node, **{name: NAN})
    node_type = graph[node]["class_type"]
    assert_clear(error_message(server, graph, node_type), node_type, f"{name} is nan", "not a finite number")


def load_only(saved, **inputs) -> dict:
    graph = load_graph(saved["image"], saved["name"])
    graph = {k: graph[k] for k in ("1", "30", "40")}
    graph["30"]["inputs"].update(inputs)
    return graph


@pytest.mark.parametrize("inputs, words", [
    ({"fingerprint_check": "bogus"}, ["fingerprint_check is 'bogus'", "'warn', 'error', 'off'"]),
    ({"lora_name": None}, ["lora_name is None", "refresh the page"]),
    ({"strength": NAN}, ["strength is nan", "not a finite number"]),
])
def test_bad_values_for_imagic_load_finetune_are_refused(server, saved, inputs, words):
    assert_clear(error_message(server, load_only(saved, **inputs), "ImagicLoadFinetune"), "ImagicLoadFinetune", *words)


def test_the_good_values_still_run(server, saved):
    result = server.run_prompt(load_only(saved))
    assert result["status"]["status_str"] == "success", result["status"]
