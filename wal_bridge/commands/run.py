"""``wal_bridge run``: the service."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

import click

from wal_bridge.commands.common import build_settings, settings_options

GIL_SWITCH_INTERVAL_S = 0.001


def _stop_during_start(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM before the bridge runs: nothing is consumed yet, so stopping is simply exiting.

    Recovery's state changes are atomic; one interrupted here is finished at the next start.
    """
    click.echo(f"wal_bridge: {signal.Signals(signum).name} during start-up: stopped", err=True)
    raise SystemExit(0)


@click.command()
@settings_options()
def run(**values: Any) -> None:
    """Consume, append to the WAL, seal into Parquet and ship to DESTINATION until stopped."""
    signal.signal(signal.SIGTERM, _stop_during_start)
    signal.signal(signal.SIGINT, _stop_during_start)
    import pyarrow

    from wal_bridge.runtime import Bridge

    # The system allocator hands freed segment buffers back to the OS; Arrow's default pool
    # keeps them, which cost about 55 MiB of peak RSS in the benchmark for no speed.
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    # A conversion thread gives up the GIL at every Arrow call and must take it back each time;
    # with CPython's default switch interval (5 ms) it waits up to that long behind the
    # consumer thread for each. At 1 ms a segment's conversion took 76 ms instead of 115 in
    # the pipeline, and the 1,000,000-event lz4 drain ran at 109,000 records/s instead of
    # 73,000-99,000 (scripts/bench; sys.setswitchinterval in Python's docs).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    settings = build_settings(values)
    bridge = Bridge(settings)
    bridge.install_signal_handlers()
    sys.exit(bridge.run())
