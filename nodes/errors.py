"""One way to report bad input: an error that names the node, the problem and the fix."""


class ImagicInputError(ValueError):
    """Raised by an Imagic node for input it cannot use; ComfyUI shows the message on the node."""


def fail(node_id: str, problem: str, fix: str) -> ImagicInputError:
    return ImagicInputError(f"{node_id}: {problem}. Fix: {fix}")
