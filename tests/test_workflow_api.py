"""The UI -> API converter (cli/workflow_api.py) on small hand-written graphs; no host needed."""
from __future__ import annotations

import pytest

from pack import sub

wa = sub("cli.workflow_api")

INFO = {
    "Loader": {"input": {"required": {"name": [["a.safetensors", "b.safetensors"], {}]}},
               "input_order": {"required": ["name"]}, "output": ["MODEL"]},
    "Sampler": {"input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"control_after_generate": True}],
                                       "steps": ["INT", {}], "sampler": ["COMBO", {"options": ["x", "y"]}],
                                       "noise_seed": ["INT", {}], "n": ["INT", {"control_after_generate": False}]},
                          "optional": {"cfg": ["FLOAT", {}], "extra": ["MODEL", {}],
                                       "forced": ["INT", {"forceInput": True}]}},
                "input_order": {"required": ["model", "seed", "steps", "sampler", "noise_seed", "n"],
                                "optional": ["cfg", "extra", "forced"]},
                "output": ["LATENT"]},
    "LoadPicture": {"input": {"required": {"image": [["p.png"], {"image_upload": True}]}},
                    "input_order": {"required": ["image"]}, "output": ["IMAGE"]},
    "Pass": {"input": {"required": {"model": ["MODEL", {}]}}, "input_order": {"required": ["model"]},
             "output": ["MODEL"]},
}


def node(node_id, node_type, widgets=(), inputs=(), mode=0, title=None):
    out = {"id": node_id, "type": node_type, "mode": mode, "widgets_values": list(widgets),
           "inputs": [{"name": name, "type": kind, "link": link} for name, kind, link in inputs]}
    if title:
        out["title"] = title
    return out


def sampler(node_id=3, model_link=1, **kw):
    return node(node_id, "Sampler", [7, "fixed", 20, "x", 9, "randomize", 4, 1.5],
                [("model", "MODEL", model_link)], **kw)


def graph(*nodes, links=()):
    return {"nodes": list(nodes), "links": [list(link) for link in links], "version": 0.4}


def test_widget_slots_follow_the_frontends_rules():
    assert wa.widget_slots(INFO["Sampler"]) == ["seed", None, "steps", "sampler", "noise_seed", None, "n", "cfg"]
    assert wa.widget_slots(INFO["LoadPicture"]) == ["image", None]  # the upload button's value


def test_widgets_and_links_become_named_inputs():
    prompt = wa.to_api(graph(node(1, "Loader", ["b.safetensors"]), sampler(title="My sampler"),
                             node(9, "Note", ["a note"]), links=[(1, 1, 0, 3, 0, "MODEL")]), INFO)
    assert prompt == {
        "1": {"class_type": "Loader", "inputs": {"name": "b.safetensors"}, "_meta": {"title": "Loader"}},
        "3": {"class_type": "Sampler", "_meta": {"title": "My sampler"},
              "inputs": {"model": ["1", 0], "seed": 7, "steps": 20, "sampler": "x", "noise_seed": 9, "n": 4,
                         "cfg": 1.5}},
    }


def test_a_linked_widget_takes_the_link_and_a_primitive_gives_its_value():
    s = sampler()
    s["inputs"].append({"name": "steps", "type": "INT", "link": 2, "widget": {"name": "steps"}})
    prompt = wa.to_api(graph(node(1, "Loader", ["a.safetensors"]), node(5, "PrimitiveNode", [33, "fixed"]), s,
                             links=[(1, 1, 0, 3, 0, "MODEL"), (2, 5, 0, 3, 1, "INT")]), INFO)
    assert prompt["3"]["inputs"]["steps"] == 33 and "5" not in prompt


def test_reroutes_are_followed_and_muted_nodes_dropped_bypassed_passed_through():
    reroute = node(4, "Reroute", inputs=[("", "*", 1)])
    bypassed = node(6, "Pass", inputs=[("model", "MODEL", 2)], mode=4)
    muted = node(7, "Pass", inputs=[("model", "MODEL", 1)], mode=2)
    prompt = wa.to_api(graph(node(1, "Loader", ["a.safetensors"]), reroute, bypassed, muted, sampler(model_link=3),
                             links=[(1, 1, 0, 4, 0, "MODEL"), (2, 4, 0, 6, 0, "MODEL"), (3, 6, 0, 3, 0, "MODEL")]),
                       INFO)
    assert set(prompt) == {"1", "3"} and prompt["3"]["inputs"]["model"] == ["1", 0]


def test_links_in_the_1_0_object_form_are_read():
    workflow = graph(node(1, "Loader", ["a.safetensors"]), sampler())
    workflow["links"] = [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 3, "target_slot": 0,
                          "type": "MODEL"}]
    assert wa.to_api(workflow, INFO)["3"]["inputs"]["model"] == ["1", 0]


def test_unknown_types_and_misfitting_widget_values_are_clear_errors():
    with pytest.raises(wa.WorkflowError, match="unknown node type 'Nope'"):
        wa.to_api(graph(node(1, "Nope")), INFO)
    with pytest.raises(wa.WorkflowError, match=r"node 1 \(Loader\) has 2 widget values but its definition has 1"):
        wa.to_api(graph(node(1, "Loader", ["a.safetensors", "extra"])), INFO)
    with pytest.raises(wa.WorkflowError, match=r"node 3 \(Sampler\) has 3 widget values but its definition has 8"):
        wa.to_api(graph(node(3, "Sampler", [7, "fixed", 20])), INFO)  # required widgets missing


def test_a_workflow_saved_before_optional_widgets_were_added_gets_their_defaults():
    """The graph editor loads such a workflow with the new widgets at their defaults; so does the converter."""
    short = node(3, "Sampler", [7, "fixed", 20, "x", 9, "randomize", 4])  # no value for the optional cfg
    inputs = wa.to_api(graph(short), INFO)["3"]["inputs"]
    assert inputs == {"seed": 7, "steps": 20, "sampler": "x", "noise_seed": 9, "n": 4}


def test_subgraphs_are_refused():
    with pytest.raises(wa.WorkflowError, match="subgraphs"):
        wa.to_api({**graph(), "definitions": {"subgraphs": [{"id": "x"}]}}, INFO)


def test_set_mode_unmutes_a_copy():
    workflow = graph(node(7, "Pass", mode=2))
    assert wa.set_mode(workflow, "Pass")["nodes"][0]["mode"] == 0 and workflow["nodes"][0]["mode"] == 2
