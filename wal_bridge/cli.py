"""The ``wal_bridge`` command line: one click group; each command lives in wal_bridge/commands/.

Options are generated from :data:`wal_bridge.config.SPECS`, so each environment variable has
exactly one matching flag. Any :class:`WalBridgeError` becomes one line on stderr and the
error's exit code (2 for configuration).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from wal_bridge.commands import COMMANDS
from wal_bridge.errors import WalBridgeError


class Group(click.Group):
    """Turn WalBridgeError into one line and its exit code, never a traceback; import a
    command's module only when it is asked for (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WalBridgeError as exc:
            click.echo(f"wal_bridge: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.version_option(None, "--version", package_name="wal-bridge", prog_name="wal_bridge")
def main() -> None:
    """Durable bridge from Kafka to Parquet on Google Cloud Storage, through a write-ahead log."""


if __name__ == "__main__":  # pragma: no cover
    main()
