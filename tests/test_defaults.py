"""The node defaults live in core/defaults.py only (issue 20): the nodes, the graph editor's script, the CLI and the
benchmarks read them there. Host-free."""
from __future__ import annotations

import ast
import io
import re
import tokenize

import pytest

from pack import ROOT, sub

defaults = sub("core.defaults")

# Values that are defaults today, and where a copy of one would be a second place to change
NODE_DEFAULTS = {defaults.EMBED_STEPS, defaults.TUNE_STEPS, defaults.EMBED_LEARNING_RATE,
                 *defaults.LEARNING_RATE.values(), defaults.ETA}
# Also the paper's steps; but not in bench/, whose rows are other recipes on purpose (1e-4 full, 0.8 SDEdit...)
BENCH_LITERALS = {defaults.EMBED_STEPS, defaults.TUNE_STEPS, defaults.EMBED_LEARNING_RATE,
                  defaults.PAPER["tune_learning_rate"]}
# Numbers that equal a default by coincidence, not copies of one: 100 and 150 are also a maximum, a chart's height,
# the benchmark's scene seeds and a warm-up; the benchmark's issue-13 rows (A 100 @5e-3, B 150) are their own recipe
COINCIDENCES = {"nodes/auto_eta.py": {100}, "js/loss_chart_canvas.js": {150},
                "bench/edit_quality.py": {100, 150, 5e-3}, "bench/train_shapes_model.py": {100}}


def numbers_in(path) -> list[tuple[int, float]]:
    text = path.read_text("utf-8")
    if path.suffix == ".py":
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        return [(t.start[0], float(ast.literal_eval(t.string))) for t in tokens
                if t.type == tokenize.NUMBER and "j" not in t.string.lower()]
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        code = line.split("//")[0]
        found += [(i, float(m)) for m in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])", code)]
    return found


@pytest.mark.parametrize("folder, literals", [("nodes", NODE_DEFAULTS), ("cli", NODE_DEFAULTS), ("js", NODE_DEFAULTS),
                                              ("bench", BENCH_LITERALS)])
def test_no_default_is_written_outside_core_defaults(folder, literals):
    copies = []
    for path in sorted((ROOT / folder).rglob("*")):
        if path.suffix in (".py", ".js"):
            allowed = COINCIDENCES.get(path.relative_to(ROOT).as_posix(), set())
            copies += [f"{path.relative_to(ROOT)}:{line}: {value:g}" for line, value in numbers_in(path)
                       if value in literals and value not in allowed]
    assert not copies, "defaults written again (use core/defaults.py): " + ", ".join(copies)


def test_the_scan_sees_a_copy():
    """The scan itself: a default written in a .py or .js file is found (else the test above is vacuous)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        py, js = Path(d) / "a.py", Path(d) / "a.js"
        py.write_text("x = dict(steps=375, lr=2e-3)\n")
        js.write_text("const rate = 5e-7; // 1e-4 in a comment\n")
        assert {v for _, v in numbers_in(py)} >= {375.0, 2e-3}
        assert [v for _, v in numbers_in(js)] == [5e-7]


@pytest.mark.parametrize("rate, default", [(0, True), (0.0, True), (5e-4, True), (5e-7, True),
                                           (5e-4 * (1 + 1e-7), True), (2.5e-4, False), (3e-6, False), (None, False),
                                           (True, False), ("0", False)])
def test_a_rate_stands_for_the_methods_default_when_zero_or_one_of_the_defaults(rate, default):
    assert defaults.is_method_default(rate) is default


def test_zero_means_the_methods_own_default():
    assert defaults.learning_rate("full", 0.0) == defaults.LEARNING_RATE["full"]
    assert defaults.learning_rate("lora", 0) == defaults.LEARNING_RATE["lora"]
    assert defaults.learning_rate("full", 3e-6) == 3e-6
    assert defaults.as_data() == {"learning_rate": defaults.LEARNING_RATE, "method_default": 0.0}
