"""The commands, one module each: run, inspect, replay, audit, produce, query, schema, demo.

``wal_bridge.cli`` adds :data:`COMMANDS` to its group. Each module imports its heavy
dependencies (DuckDB, the Kafka client) inside the command, so ``wal_bridge run`` starts fast.
"""

from __future__ import annotations

import click

from wal_bridge.commands.audit import audit_command
from wal_bridge.commands.demo import demo
from wal_bridge.commands.inspect import inspect
from wal_bridge.commands.produce import produce
from wal_bridge.commands.query import query
from wal_bridge.commands.replay import replay
from wal_bridge.commands.run import run
from wal_bridge.commands.schema import schema

COMMANDS: tuple[click.Command, ...] = (run, inspect, replay, audit_command, produce, query,
                                        schema, demo)
