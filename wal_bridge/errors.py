"""The exceptions wal-bridge raises: one root, a few kinds that mean something to an operator.

Third-party exceptions are wrapped at the boundary (``raise SinkError(...) from exc``); the CLI
turns any :class:`WalBridgeError` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

from pathlib import Path


class WalBridgeError(Exception):
    """Root of every error wal-bridge raises on purpose."""

    exit_code = 1


class ConfigError(WalBridgeError):
    """A setting is missing or has a bad value; the message names the variable."""

    exit_code = 2


class SchemaConflictError(ConfigError):
    """The schema this instance would write differs from the one its destination holds."""


class WalLockedError(WalBridgeError):
    """Another process holds the WAL directory."""

    exit_code = 3


class CorruptionError(WalBridgeError):
    """A WAL segment holds bytes that do not decode: never retried, never silently dropped."""

    def __init__(self, segment: Path | str, offset: int, reason: str) -> None:
        self.segment = Path(segment)
        self.offset = offset
        self.reason = reason
        super().__init__(f"{self.segment.name}: corrupt at byte {offset}: {reason}")


class WalFatalError(WalBridgeError):
    """The WAL can no longer promise durability (an fsync failed, a failed write could not be
    rolled back): the process must stop, and the next start recovers what is on disk."""


class DiskFullError(WalBridgeError):
    """The disk under the WAL is full: the write was rolled back and can be retried once there
    is room (the consumer pauses meanwhile)."""


class SinkError(WalBridgeError):
    """The destination refused or failed an operation.

    ``transient`` says whether trying again later can succeed (a timeout, a 503) or not without
    an operator (a 403, a missing bucket).
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        self.transient = transient
        super().__init__(message)


class ObjectConflictError(SinkError):
    """An object with the segment's key exists with other content: an anomaly, never overwritten."""

    def __init__(self, key: str, local_crc32c: str, remote_crc32c: str | None) -> None:
        self.key = key
        self.local_crc32c = local_crc32c
        self.remote_crc32c = remote_crc32c
        super().__init__(
            f"object {key} already exists with crc32c {remote_crc32c}, local file has "
            f"{local_crc32c}: left untouched; inspect both and replay or remove one",
            transient=False,
        )



class ObjectNotFoundError(SinkError):
    """The destination exists but holds no object with this key (permanent: reading again will
    not make it appear)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message, transient=False)


class DestinationNotFoundError(SinkError):
    """The destination itself is missing: no such bucket, or no such directory for a ``file://``
    destination. Needs an operator (create it, or fix DESTINATION)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class BrokerError(WalBridgeError):
    """Kafka did not answer, or its client gave up; the message names the broker or partition."""


class KafkaUnavailable(BrokerError):
    """The broker did not answer a metadata or offset request in time (an operator command can
    go on without it, or try again)."""


class ConsumerError(BrokerError):
    """The Kafka client reported a fatal error (for example a fenced ``group.instance.id``):
    this consumer cannot go on; the bridge stops and keeps its WAL for the next start."""


class RegistryError(WalBridgeError):
    """The schema registry could not answer (unreachable, a 5xx, a timeout, refused
    credentials). Records wait in the WAL: never a dead letter because the registry was away.

    ``transient`` says whether trying again later can succeed by itself (a timeout, a 503) or
    needs an operator (a 401 or 403: the credentials); conversion retries both, with a capped
    doubling delay, and only the second makes the bridge unready.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        self.transient = transient
        super().__init__(message)


class SchemaEvolutionError(WalBridgeError):
    """A writer's schema changed a column's type (an incompatible change): its records wait in
    the WAL, unconverted, until the operator decides (docs/operations.md, "Schema registry:
    an incompatible change"). The message names the subject, the version and the field."""

    def __init__(self, message: str, *, schema_id: int) -> None:
        self.schema_id = schema_id
        super().__init__(message)
