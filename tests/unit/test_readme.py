"""README.md stays true: its configuration table is the settings table, row for row."""

from __future__ import annotations

import re
from pathlib import Path

from wal_bridge.config import SPECS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_configuration_table_matches_the_settings() -> None:
    """Every setting appears once with its flag and default, and nothing else is listed."""
    rows = re.findall(r"^\| `([A-Z_]+)` \| `(--[a-z-]+)` \| ([^|]+) \|", README.read_text(),
                      flags=re.MULTILINE)
    documented = {env: (flag, default.strip()) for env, flag, default in rows}
    expected = {
        spec.env: (spec.flag, f"`{spec.default}`" if spec.default else "—") for spec in SPECS
    }
    assert documented == expected


def test_readme_opens_with_the_two_setup_commands() -> None:
    """The quick start's first two commands are the demo and the tests, as CI runs them."""
    commands = re.findall(r"^(\./scripts/\w+)", README.read_text(), flags=re.MULTILINE)
    assert commands[:2] == ["./scripts/demo", "./scripts/test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./scripts/demo" in ci
    assert "./scripts/test" in ci
