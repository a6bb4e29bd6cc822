"""The help pages (js/docs/<NodeId>/en.md: one copy, where the frontend looks first) read in the node library's
side panel at its default width: no tables (the panel clips their right columns) and no wide preformatted lines
(they scroll out of sight)."""
from __future__ import annotations

import re

import pytest

from pack import ROOT

PAGES = sorted((ROOT / "js" / "docs").glob("*/en.md"))
PANEL_CHARS = 48  # a code line the default-width panel shows whole


@pytest.mark.parametrize("page", PAGES, ids=[p.parent.name for p in PAGES])
def test_help_page_fits_the_node_library_panel(page):
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ")
    tables = [line for line in lines if re.match(r"^\s*\|.*\|\s*$", line)]
    assert not tables, f"a table (clipped in the panel; write a list): {tables[0]}"
    fenced, wide = False, []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif (fenced or line.startswith("    ")) and len(line.rstrip()) > PANEL_CHARS:
            wide.append(line)
    assert not wide, f"a preformatted line wider than the panel: {wide[0]}"


def test_one_copy_of_each_help_page_where_the_frontend_looks_first():
    """ComfyUI's frontend (1.27) asks for /extensions/<pack>/docs/<NodeId>/<locale>.md first: the pages live
    there, once (the locale-less fallback is served from the same file, nodes/routes.py)."""
    docs = ROOT / "js" / "docs"
    assert len(PAGES) >= 10
    assert not list(docs.glob("*.md")), "a second copy beside <NodeId>/en.md"
    assert all(sorted(p.name for p in folder.iterdir()) == ["en.md"] for folder in docs.iterdir())
