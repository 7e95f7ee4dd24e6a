"""Logging set-up: structlog with JSON lines in containers and a console renderer on a terminal.

Event names are snake_case (``segment_sealed``) and keys are fixed (``segment``, ``records``,
``partition``, ``first_offset``, ``last_offset``, ``bytes``, ``duration_ms``): one line per state
change of a segment, never one per record.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog (and the stdlib loggers of our dependencies) once, at start-up."""
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Library loggers (google-auth, urllib3) speak only when something is wrong.
    logging.basicConfig(level=logging.WARNING, stream=stream, format="%(name)s: %(message)s")


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimited:
    """Let a repeated log line through at most once per ``interval`` seconds, counting the rest."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """Return how many were suppressed since the last one let through, or None to suppress."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)
