"""One way to report bad input: an error that names the node (by the title the user sees on the canvas),
the problem and the fix."""
import sys


class ImagicInputError(ValueError):
    """Raised by an Imagic node for input it cannot use; ComfyUI shows the message on the node."""


def title(node_id: str) -> str:
    """The node's display name as ComfyUI registered it ("Imagic Optimize Embedding"), else the id."""
    registry = getattr(sys.modules.get("nodes"), "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    return registry.get(node_id, node_id)


def fail(node_id: str, problem: str, fix: str) -> ImagicInputError:
    return ImagicInputError(f"{title(node_id)}: {problem}. Fix: {fix}")
