"""The ``wal_bridge`` command line: one click group, one function per command.

Options of ``run`` are generated from :data:`wal_bridge.config.SPECS`, so each environment
variable has exactly one matching flag. Any :class:`WalBridgeError` becomes one line on stderr
and the error's exit code (2 for configuration).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from wal_bridge import __version__
from wal_bridge.config import SPECS, Settings, Spec, load_settings
from wal_bridge.errors import WalBridgeError
from wal_bridge.logs import configure


def settings_options(specs: tuple[Spec, ...] = SPECS) -> Callable[[Any], Any]:
    """Decorate a command with one option per setting, each also read from its variable."""

    def decorate(func: Any) -> Any:
        for spec in reversed(specs):
            default = "" if spec.secret or spec.default is None else f" [default: {spec.default}]"
            func = click.option(
                spec.flag, spec.name, envvar=spec.env, default=None, show_envvar=True,
                metavar="TEXT", help=f"{spec.help}{default}",
            )(func)
        return func

    return decorate


def build_settings(values: dict[str, Any], **overrides: Any) -> Settings:
    """Settings from click's values (flag or variable), validated; configure logging."""
    raw = {spec.env: values.get(spec.name) for spec in SPECS}
    settings = load_settings(raw, **overrides)
    configure(settings.log_level, settings.log_format)
    return settings


class Group(click.Group):
    """Turn WalBridgeError into one line and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WalBridgeError as exc:
            click.echo(f"wal_bridge: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="wal_bridge")
def main() -> None:
    """Durable bridge from Kafka to Parquet on Google Cloud Storage, through a write-ahead log."""


@main.command()
@settings_options()
def run(**values: Any) -> None:
    """Consume, append to the WAL, seal into Parquet and ship to DESTINATION until stopped."""
    from wal_bridge.runtime import Bridge

    settings = build_settings(values)
    bridge = Bridge(settings)
    bridge.install_signal_handlers()
    sys.exit(bridge.run())


if __name__ == "__main__":  # pragma: no cover
    main()
