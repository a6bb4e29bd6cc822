"""The pack loaded by the real ComfyUI server as a custom node, and a graph queued through /prompt."""
from __future__ import annotations

import pytest

from conftest import HOST, NO_HOST
from graphs import imagic_graph, write_input_image
from pack import sub

pytestmark = pytest.mark.skipif(HOST is None, reason=NO_HOST)

NODE_IDS = ("ImagicOptimizeEmbedding", "ImagicFinetuneUNet", "ImagicInterpolateConditioning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from live_server import ComfyServer

    base = tmp_path_factory.mktemp("server_base")
    s = ComfyServer(base, base / "server.log")
    yield s
    s.stop()


def test_object_info_lists_the_nodes_with_tooltips(server):
    info = server.get("/object_info")
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["category"] == "Imagic" and node["description"]
        for section in ("required", "optional"):
            for name, (_, options) in node["input"].get(section, {}).items():
                assert options.get("tooltip"), (node_id, name)
        assert all(node["output_tooltips"]), node_id
    d = sub("core.defaults")
    assert info["ImagicOptimizeEmbedding"]["input"]["required"]["steps"][1]["default"] == d.EMBED_STEPS
    assert info["ImagicFinetuneUNet"]["input"]["required"]["steps"][1]["default"] == d.TUNE_STEPS
    assert info["ImagicInterpolateConditioning"]["input"]["required"]["eta"][1]["default"] == d.ETA


def test_prompt_runs_the_whole_edit(server):
    image = write_input_image(server.base / "input")
    result = server.run_prompt(imagic_graph(image, embed_steps=5, tune_steps=5))
    assert result["status"]["status_str"] == "success", result["status"]
    images = result["outputs"]["10"]["images"]
    assert (server.base / "output" / images[0]["filename"]).is_file()


def test_prompt_with_bad_input_reports_the_node_and_the_fix(server):
    image = write_input_image(server.base / "input")
    graph = imagic_graph(image, embed_steps=5, tune_steps=5)
    graph["30"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    graph["5"]["inputs"]["latent"] = ["30", 0]
    result = server.run_prompt(graph)
    assert result["status"]["status_str"] == "error"
    errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "ImagicOptimizeEmbedding"
    assert "16 channels" in errors[0]["exception_message"] and "Fix:" in errors[0]["exception_message"]
