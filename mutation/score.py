"""The mutation campaign's score per module, from mutmut's results in mutants/ (run after ``mutmut run``).

    python mutation/score.py

A survivor named in mutation/EQUIVALENT.md counts as equivalent (no behaviour tells it apart), not as survived;
the score is killed / (killed + survived + no tests), timeouts counted as killed (the mutant never finishes).
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATUS = {1: "killed", 0: "survived", 33: "no tests", -24: "timeout", 24: "timeout", 36: "timeout", None: "not run"}


def main() -> int:
    equivalent = set(re.findall(r"`(core\.[\w.ǁ]+__mutmut_\d+)`", (HERE / "EQUIVALENT.md").read_text("utf-8")))
    metas = sorted((HERE.parent / "mutants" / "core").glob("*.py.meta"))
    if not metas:
        print("no results: run `mutmut run --max-children 1` first", file=sys.stderr)
        return 1
    total = Counter()
    print(f"{'module':<18}{'killed':>8}{'survived':>10}{'equivalent':>12}{'no tests':>10}{'timeout':>9}"
          f"{'not run':>9}{'score':>8}")
    for meta in metas:
        counts = Counter()
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = STATUS.get(code, f"exit {code}")
            counts["equivalent" if status == "survived" and name in equivalent else status] += 1
        if not counts:
            continue
        total += counts
        print(_row(meta.name.removesuffix(".py.meta"), counts))
    print(_row("core/ (all)", total))
    return 0


def _row(name: str, c: Counter) -> str:
    detected = c["killed"] + c["timeout"]
    scored = detected + c["survived"] + c["no tests"]
    score = f"{100 * detected / scored:.1f}%" if scored else "-"
    return (f"{name:<18}{c['killed']:>8}{c['survived']:>10}{c['equivalent']:>12}{c['no tests']:>10}{c['timeout']:>9}"
            f"{c['not run']:>9}{score:>8}")


if __name__ == "__main__":
    sys.exit(main())
