"""The commands, one module each: run, inspect, replay, audit, produce, query, schema, demo.

``wal_bridge.cli`` names them in :data:`COMMANDS` and imports a command's module only when that
command runs (or ``--help`` lists them): ``wal_bridge run`` never loads what ``audit`` or
``query`` need, which keeps its start-up short. Each module also imports its heavy
dependencies (DuckDB, the Kafka client) inside the command.
"""

from __future__ import annotations

# Command name -> "module:attribute" of its click command, in the order --help lists them.
COMMANDS: dict[str, str] = {
    "run": "wal_bridge.commands.run:run",
    "inspect": "wal_bridge.commands.inspect:inspect",
    "replay": "wal_bridge.commands.replay:replay",
    "audit": "wal_bridge.commands.audit:audit_command",
    "produce": "wal_bridge.commands.produce:produce",
    "query": "wal_bridge.commands.query:query",
    "schema": "wal_bridge.commands.schema:schema",
    "demo": "wal_bridge.commands.demo:demo",
}
