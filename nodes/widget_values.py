"""The widget values every Imagic node gets are checked before it runs, in one place.

ComfyUI 0.3.64 checks numbers against their min/max, but not a V3 combo's value against its options, and a
JSON ``NaN`` passes every range check. A prompt queued through ``/prompt`` (not the frontend) can therefore
hand a node ``method: "bogus"``, ``lora_name: null`` or ``eta: NaN``. ``guarded`` wraps a node's ``execute`` so
that such a value stops with an error naming the node, the input and the fix, before any work.
"""
from __future__ import annotations

import functools
import inspect
import math

from comfy_api.latest import io

from .errors import fail

_LISTED = 12  # options named in the message; longer lists (file names) are summarised


def _options_text(options: list) -> str:
    shown = ", ".join(repr(o) for o in options[:_LISTED])
    return shown + (f" and {len(options) - _LISTED} more" if len(options) > _LISTED else "")


def check_widget_values(node_id: str, schema: io.Schema, values: dict) -> None:
    """Every combo value given is one of its options; every float given is a finite number."""
    for spec in schema.inputs:
        if spec.id not in values:
            continue  # an optional input left out: the node's default applies
        value = values[spec.id]
        if isinstance(spec, io.Combo.Input):
            options = list(spec.options or [])
            if value not in options or isinstance(value, bool):
                where = "the list is empty" if not options else f"the choices are {_options_text(options)}"
                raise fail(node_id, f"{spec.id} is {value!r}, which is not one of its choices ({where})",
                           f"pick one of the listed values for {spec.id} (refresh the page if the list changed)")
        elif isinstance(spec, io.Float.Input):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise fail(node_id, f"{spec.id} is {value!r}, not a finite number",
                           f"set {spec.id} to a number (the default is {spec.default})")


def guarded(node: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """``node`` with its ``execute`` running ``check_widget_values`` first (against a fresh schema, so
    file lists are current); idempotent."""
    run = node.execute
    if getattr(run, "_imagic_guarded", False):
        return node
    func = run.__func__

    def check(cls, args, kwargs):
        schema = cls.define_schema()
        values = inspect.signature(func).bind_partial(cls, *args, **kwargs).arguments
        check_widget_values(schema.node_id, schema, values)

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def execute(cls, *args, **kwargs):
            check(cls, args, kwargs)
            return await func(cls, *args, **kwargs)
    else:
        @functools.wraps(func)
        def execute(cls, *args, **kwargs):
            check(cls, args, kwargs)
            return func(cls, *args, **kwargs)
    execute._imagic_guarded = True
    node.execute = classmethod(execute)
    return node
