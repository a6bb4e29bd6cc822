"""What the queued prompt (a node's hidden PROMPT) says about the Imagic training feeding a node: the settings
Imagic Save Finetune records, and its target text, checked by the training nodes before they train."""
from __future__ import annotations

from dataclasses import dataclass

from ..core import defaults
from ..core import finetune_format as fmt
from .errors import fail

SAVE_NODE_ID = "ImagicSaveFinetune"  # its target_text is checked before training (check_texts_to_save)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _literal(prompt: dict, value):
    """A widget value, also through one primitive node (PrimitiveInt/Float/String: input 'value')."""
    if not _is_link(value):
        return value
    source = prompt.get(value[0]) or {}
    inner = (source.get("inputs") or {}).get("value")
    return None if inner is None or _is_link(inner) else inner


def _source(prompt: dict, node: dict, name: str, class_type: str) -> dict | None:
    link = (node.get("inputs") or {}).get(name)
    if not _is_link(link):
        return None
    source = prompt.get(link[0])
    return source if source and source.get("class_type") == class_type else None


def _node_name(prompt: dict, link) -> str:
    if not _is_link(link):
        return "?"
    return f"#{link[0]} {(prompt.get(link[0]) or {}).get('class_type', '?')}"


def check_texts_to_save(prompt: dict | None) -> None:
    """The target_text typed on every Imagic Save Finetune of the queued prompt, checked by the training nodes
    before they train: a text no fine-tune file can store fails now, not after the training. (Not in the Save
    node's validate_inputs: ComfyUI reports a failure there against each of its arguments, so a bad prefix would
    be reported against target_text too.)"""
    for node_id, node in (prompt or {}).items():
        if not isinstance(node, dict) or node.get("class_type") != SAVE_NODE_ID:
            continue
        text = _literal(prompt, (node.get("inputs") or {}).get("target_text"))
        if isinstance(text, str):
            try:
                fmt.check_text(text)
            except fmt.FormatError as e:
                raise fail(SAVE_NODE_ID, f"(node #{node_id}, checked before training) {e.problem}", e.fix) from e


@dataclass
class GraphSettings:
    training: dict  # core.finetune_format.TRAINING_FIELDS that the graph gives
    target_text: str | None  # the text of the CLIP Text Encode feeding Imagic Optimize Embedding
    wrong_e_opt: str | None  # why the 'optimized' input is not the e_opt the fine-tune was trained on


def graph_settings(prompt: dict | None, unique_id) -> GraphSettings:
    """Steps, learning rates and seeds of the Imagic nodes feeding the Save node's ``lora`` and
    ``optimized`` inputs, read from the queued prompt (what the user set on those nodes)."""
    out = GraphSettings({}, None, None)
    me = (prompt or {}).get(str(unique_id))
    if not me:
        return out
    tune = _source(prompt, me, "lora", "ImagicFinetuneUNet")
    if tune:
        inputs = tune["inputs"]
        method = _literal(prompt, inputs.get("method"))
        lr = _literal(prompt, inputs.get("learning_rate"))
        if method in defaults.LEARNING_RATE and isinstance(lr, (int, float)):
            lr = defaults.learning_rate(method, lr)
        out.training.update(finetune_steps=_literal(prompt, inputs.get("steps")), finetune_learning_rate=lr,
                            finetune_seed=_literal(prompt, inputs.get("seed")))
        trained_on, given = inputs.get("conditioning"), me["inputs"].get("optimized")
        if trained_on != given:
            out.wrong_e_opt = (f"the 'optimized' input (from node {_node_name(prompt, given)}) is not the e_opt the "
                               f"fine-tune was trained on (Imagic Finetune UNet's conditioning, from node "
                               f"{_node_name(prompt, trained_on)})")
    embed = _source(prompt, me, "optimized", "ImagicOptimizeEmbedding")
    if embed:
        inputs = embed["inputs"]
        out.training.update(embedding_steps=_literal(prompt, inputs.get("steps")),
                            embedding_learning_rate=_literal(prompt, inputs.get("learning_rate")),
                            embedding_seed=_literal(prompt, inputs.get("seed")))
        encode = _source(prompt, embed, "conditioning", "CLIPTextEncode")
        text = _literal(prompt, encode["inputs"].get("text")) if encode else None
        if isinstance(text, str):
            out.target_text = text
    out.training = {k: v for k, v in out.training.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out
