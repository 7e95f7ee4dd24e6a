"""``wal_bridge run``: the service."""

from __future__ import annotations

import sys
from typing import Any

import click

from wal_bridge.commands.common import build_settings, settings_options


@click.command()
@settings_options()
def run(**values: Any) -> None:
    """Consume, append to the WAL, seal into Parquet and ship to DESTINATION until stopped."""
    from wal_bridge.runtime import Bridge

    settings = build_settings(values)
    bridge = Bridge(settings)
    bridge.install_signal_handlers()
    sys.exit(bridge.run())
