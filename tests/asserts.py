"""Assertions shared by the bad-input tests."""
from __future__ import annotations

from pack import sub


def assert_clear(error, node_id: str, *words: str) -> None:
    """``error`` (an exception or its message) starts with the node's title as the canvas shows it, says the
    fix, and contains every one of ``words``."""
    message = str(error)
    title = sub("nodes.errors").title(node_id)
    assert title != node_id, f"{node_id} has no display name registered (is the host booted?)"
    assert message.startswith(title + ":") and "Fix:" in message, message
    for w in words:
        assert w in message, message


def validation_message(node_errors: dict, node: str) -> str:
    """The message a node's ``validate_inputs`` gave ComfyUI's prompt validation (``/prompt``'s node_errors),
    without the "<input> - " ComfyUI puts before it."""
    details = node_errors[node]["errors"][0]["details"]
    return details.split(" - ", 1)[1]
