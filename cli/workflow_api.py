"""Workflow (UI format, as the ComfyUI frontend saves it) -> API format (what /prompt and the executor take).

The UI format keeps widget values as a bare list (``widgets_values``) and connections as ``links``; the API
format names every input: ``{"<id>": {"class_type": ..., "inputs": {name: value | [source_id, slot]}}}``.
This does what the frontend's graphToPrompt does, from node definitions shaped like ``/object_info`` (the
live server's, or :func:`object_info_in_process` from the loaded nodes):

* a widget input takes one value from ``widgets_values``, in the definition's input order; INT inputs with
  ``control_after_generate`` (or named seed/noise_seed, the frontend's legacy rule) and COMBOs with it are
  followed by the control value ("fixed", "randomize", ...); a media-upload combo adds the upload button's
  value at the end of the required inputs. Those extra values are not inputs;
* a linked input (a socket, or a widget whose socket is connected) becomes ``[source_id, slot]``;
* Note / MarkdownNote are dropped, Reroute and PrimitiveNode are followed to their source / value, muted
  nodes (mode 2) are dropped and bypassed nodes (mode 4) pass their matching input through.
"""
from __future__ import annotations

import copy

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
SEED_NAMES = ("seed", "noise_seed")
MODE_MUTED, MODE_BYPASSED = 2, 4


class WorkflowError(ValueError):
    """The workflow cannot be converted (unknown node type, widget values that do not fit, ...)."""


# ---------------------------------------------------------------------------------------------------
# Node definitions.


def object_info_in_process(class_types=None) -> dict:
    """``/object_info`` entries for the loaded nodes (the server's node_info, without the server)."""
    import nodes
    from comfy_api.internal import _ComfyNodeInternal

    out = {}
    for name in class_types if class_types is not None else nodes.NODE_CLASS_MAPPINGS:
        cls = nodes.NODE_CLASS_MAPPINGS.get(name)
        if cls is None:
            continue
        if issubclass(cls, _ComfyNodeInternal):
            out[name] = cls.GET_NODE_INFO_V1()
        else:
            types = cls.INPUT_TYPES()
            out[name] = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                         "output": list(cls.RETURN_TYPES),
                         "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
                         "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name)}
    return out


def _options(spec) -> dict:
    return (spec[1] if len(spec) > 1 else None) or {}


def _is_widget(spec) -> bool:
    kind, options = spec[0], _options(spec)
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def _has_control(name: str, spec) -> bool:
    kind, options = spec[0], _options(spec)
    if kind == "INT":
        flag = options.get("control_after_generate")
        return flag if flag is not None else name in SEED_NAMES
    return (isinstance(kind, list) or kind == "COMBO") and bool(options.get("control_after_generate"))


def widget_slots(info: dict) -> list[str | None]:
    """The input name of each entry of ``widgets_values``, in order (None: a value that is not an input)."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {section: list(specs) for section, specs in inputs.items()}
    slots: list[str | None] = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section, []):
            spec = specs.get(name)
            if spec is None or not _is_widget(spec):
                continue
            slots.append(name)
            if _has_control(name, spec):
                slots.append(None)
        if section == "required" and any(
                _options(spec).get(flag) for spec in specs.values() for flag in UPLOAD_OPTIONS):
            slots.append(None)  # the upload button
    return slots


# ---------------------------------------------------------------------------------------------------
# Conversion.


def _link_table(workflow: dict) -> dict:
    """link id -> (origin_id, origin_slot, type); links are lists in version 0.4, objects in the 1.0 schema."""
    table = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type"))
        else:
            table[link[0]] = (link[1], link[2], link[5] if len(link) > 5 else None)
    return table


class _Graph:
    def __init__(self, workflow: dict):
        if (workflow.get("definitions") or {}).get("subgraphs"):
            raise WorkflowError("workflows with subgraphs are not supported; unpack the subgraph in ComfyUI first")
        self.nodes = {node["id"]: node for node in workflow.get("nodes") or []}
        self.links = _link_table(workflow)

    def source(self, link_id, seen=()):
        """What feeds ``link_id``: ('link', [id, slot]), ('value', v) or None (nothing: muted or unconnected)."""
        if link_id is None or link_id not in self.links or link_id in seen:
            return None
        origin, slot, kind = self.links[link_id]
        node = self.nodes.get(origin)
        if node is None:
            raise WorkflowError(f"link {link_id} comes from node {origin}, which is not in the workflow")
        seen = (*seen, link_id)
        node_type, mode = node.get("type"), node.get("mode", 0)
        if node_type == "Reroute":
            return self.source(_first_link(node), seen)
        if node_type == "PrimitiveNode":
            values = node.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASSED:
            return self.source(_bypass_input(node, slot, kind), seen)
        return "link", [str(origin), slot]


def _first_link(node: dict):
    inputs = node.get("inputs") or []
    return inputs[0].get("link") if inputs else None


def _bypass_input(node: dict, slot: int, kind) -> int | None:
    """The input a bypassed node passes to output ``slot``: same index if the type matches, else the first match."""
    inputs = node.get("inputs") or []
    if slot < len(inputs) and inputs[slot].get("type") == kind and inputs[slot].get("link") is not None:
        return inputs[slot]["link"]
    for item in inputs:
        if item.get("type") == kind and item.get("link") is not None:
            return item["link"]
    return None


def _widget_inputs(node: dict, info: dict) -> dict:
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some extensions save {name: value}
        return dict(values)
    values = values or []
    slots = widget_slots(info)
    optional = set(info.get("input", {}).get("optional") or {})
    if len(values) < len(slots) and all(s in optional for s in slots[len(values):] if s is not None):
        # saved before the node grew optional widgets at its end (e.g. early_stop): they take their defaults, as
        # when the graph editor loads the workflow
        slots = slots[:len(values)]
    if len(values) != len(slots):
        expected = [s or "(control)" for s in slots]
        raise WorkflowError(f"node {node['id']} ({node['type']}) has {len(values)} widget values but its definition "
                            f"has {len(slots)}: {expected}; was the workflow saved with another version of the node?")
    return {name: value for name, value in zip(slots, values, strict=True) if name is not None}


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of ``workflow`` (UI format); ``object_info`` maps class_type -> node definition."""
    graph = _Graph(workflow)
    prompt = {}
    for node_id, node in sorted(graph.nodes.items(), key=lambda item: item[0]):
        node_type = node.get("type")
        if node_type in NOTE_TYPES or node_type in ("Reroute", "PrimitiveNode"):
            continue
        if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED):
            continue
        info = object_info.get(node_type)
        if info is None:
            raise WorkflowError(f"node {node_id}: unknown node type '{node_type}' (is the custom node pack that "
                                "provides it installed?)")
        inputs = _widget_inputs(node, info)
        for item in node.get("inputs") or []:
            if item.get("link") is None:
                continue
            name = (item.get("widget") or {}).get("name", item["name"])
            found = graph.source(item["link"])
            if found is not None:  # else: fed by a muted node; a widget keeps its own value
                inputs[name] = found[1]
        title = node.get("title") or info.get("display_name") or node_type
        prompt[str(node_id)] = {"class_type": node_type, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def set_mode(workflow: dict, node_type: str, mode: int = 0) -> dict:
    """A copy of ``workflow`` with every ``node_type`` node set to ``mode`` (0 = always, 2 = never, 4 = bypass)."""
    out = copy.deepcopy(workflow)
    for node in out.get("nodes") or []:
        if node.get("type") == node_type:
            node["mode"] = mode
    return out
