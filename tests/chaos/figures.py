"""Render a chaos figures report (JSON) as the Markdown table of docs/reliability.md.

    python -m tests.chaos.figures chaos-report.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("cycles", "records", "lost", "duplicated", "unexpected", "corrupted")


def rows(report: dict[str, Any]) -> list[str]:
    out = []
    for name, figures in sorted(report["scenarios"].items()):
        cells = [str(figures.get(column, "")) for column in COLUMNS]
        out.append(f"| `{name}` | {' | '.join(cells)} | {figures.get('duration_s', '')} |")
    return out


def render(paths: list[Path]) -> str:
    lines = [f"| Scenario | {' | '.join(COLUMNS)} | seconds |",
             f"| --- | {' | '.join('---:' for _ in COLUMNS)} | ---: |"]
    totals = dict.fromkeys(COLUMNS, 0)
    for path in paths:
        report = json.loads(path.read_text())
        lines += rows(report)
        for column in COLUMNS:
            totals[column] += int(report["totals"].get(column, 0))
    cells = " | ".join(f"**{totals[c]}**" for c in COLUMNS)
    lines.append(f"| **total** | {cells} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render([Path(p) for p in sys.argv[1:]]) + "\n")
