"""Settings: read once at the edge (environment variables and CLI flags), validated, frozen.

Every setting is declared once in :data:`SPECS`: its environment variable, its flag on
``wal_bridge run``, its default, its parser and its help. The CLI builds its options from that
table, so a variable and its flag can never drift apart. Library code receives a
:class:`Settings` object and never reads ``os.environ``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from wal_bridge.errors import ConfigError

CommitPolicy = Literal["wal", "upload"]
LogFormat = Literal["auto", "json", "console"]
# VALUE_FORMAT and KEY_FORMAT: how record values (and keys) are read. Every format but json and
# raw is the Confluent wire format (magic byte 0, a 4-byte schema id) read through
# SCHEMA_REGISTRY_URL; auto asks the registry which type each id has.
REGISTRY_FORMATS = ("avro", "protobuf", "json_schema", "auto")
VALUE_FORMATS = ("json", *REGISTRY_FORMATS)
KEY_FORMATS = ("raw", *REGISTRY_FORMATS)


class Secret:
    """A value that must never reach a log line, an error message or a ``repr``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Destination:
    """Where Parquet files go: ``gs://bucket/prefix`` or ``file:///path`` (prefix ``raw``)."""

    scheme: Literal["gs", "file"]
    bucket: str  # the bucket for gs, the root directory for file
    prefix: str  # key prefix for data files, without slashes at either end

    @property
    def dead_letter_prefix(self) -> str:
        """Dead letters live beside the data prefix, outside the table's source URIs."""
        parent = self.prefix.rpartition("/")[0]
        return f"{parent}/dead-letter" if parent else "dead-letter"

    @property
    def schema_key(self) -> str:
        """Where the table's schema is stored, shared by every instance writing this prefix:
        outside the data prefix, so neither the external table nor a lifecycle rule on the
        data reaches it."""
        return f"_wal_bridge/{self.prefix}/schema.json"

    def object_keys(self, sealed_at_ms: int, instance: str, seq: int) -> tuple[str, str]:
        """The keys of segment ``seq``'s data and dead-letter files, fixed when it is sealed:
        ``{prefix}/dt={YYYY-MM-DD}/{timestamp}-{instance}-{segment}.parquet`` (UTC, ms).

        The date folder is named ``dt=YYYY-MM-DD``: BigQuery's hive partitioning (``{dt:DATE}``)
        recognises a partition only in a ``key=value`` folder, and so do DuckDB and pyarrow.
        """
        when = datetime.fromtimestamp(sealed_at_ms / 1000, tz=UTC)
        name = f"{when:%Y%m%dT%H%M%S}{sealed_at_ms % 1000:03d}Z-{instance}-{seq:010d}.parquet"
        day = f"dt={when:%Y-%m-%d}"
        return f"{self.prefix}/{day}/{name}", f"{self.dead_letter_prefix}/{day}/{name}"

    def url(self, key: str = "") -> str:
        if self.scheme == "gs":
            return f"gs://{self.bucket}/{key}"
        return f"file://{self.bucket}/{key}"

    def __str__(self) -> str:
        return self.url(self.prefix)


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """``"512MiB"`` -> 536870912; plain numbers are bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size such as 1073741824, 512MiB or 2GB")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a port number (0 turns it off)") from None
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a finite number of seconds greater than zero")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _topics(text: str) -> tuple[str, ...]:
    topics = tuple(t.strip() for t in text.split(",") if t.strip())
    if not topics:
        raise ValueError("expected one or more topic names, separated by commas")
    for topic in topics:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
            raise ValueError(f"{topic!r} is not a valid Kafka topic name")
    return topics


def _bootstrap(text: str) -> str:
    servers = [s.strip() for s in text.split(",") if s.strip()]
    if not servers:
        raise ValueError("expected host:port[,host:port...]")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{server!r} is not host:port")
    return ",".join(servers)


def _group_id(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _instance_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", text):
        raise ValueError("expected 1-63 letters, digits, '.', '_' or '-', starting alphanumeric")
    return text


def parse_destination(text: str) -> Destination:
    """Parse ``gs://bucket[/prefix]`` or ``file:///abs/path[/prefix]`` into a Destination."""
    url = urlparse(text.strip())
    if url.scheme == "gs":
        bucket = url.netloc
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]", bucket):
            raise ValueError(f"{bucket!r} is not a valid bucket name")
        prefix = url.path.strip("/") or "raw"
        return Destination("gs", bucket, prefix)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise ValueError("a local destination is file:///absolute/path")
        return Destination("file", url.path.rstrip("/") or "/", "raw")
    raise ValueError("expected gs://bucket/prefix or file:///absolute/path")


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("must not be empty")
    return Path(text).expanduser()


def _existing_file(text: str) -> Path:
    path = _path(text)
    if not path.is_file():
        raise ValueError(f"{path} is not a readable file")
    return path


def _credentials_file(text: str) -> Path:
    """GOOGLE_APPLICATION_CREDENTIALS: a file that exists. Its content is google-auth's to judge:
    wal_bridge.sink.gcs.load_credentials reads it when a GCS client is first needed."""
    path = _path(text)
    if not path.is_file():
        why = "it is a directory" if path.is_dir() else "no such file"
        raise ValueError(f"{path} is not a readable file ({why}); point it at a credentials "
                         "file, or unset it to use the ambient credentials")
    return path


def _emulator(text: str) -> str:
    url = text.strip()
    if "://" not in url:
        url = f"http://{url}"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("expected http://host:port")
    return url.rstrip("/")


def _registry_url(text: str) -> str:
    """SCHEMA_REGISTRY_URL: one or more http(s) base URLs, comma-separated (as the registry
    client takes them). Credentials belong in SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO, never in
    the URL, which is logged."""
    urls = [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
    if not urls:
        raise ValueError("expected http(s)://host:port[/path][,...]")
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{url!r} is not an http(s)://host:port URL")
        if parsed.username or parsed.password:
            raise ValueError("put credentials in SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO, not in "
                             "the URL (it is logged)")
    return ",".join(urls)


def _user_info(text: str) -> Secret:
    if ":" not in text or not text.partition(":")[0]:
        raise ValueError("expected username:password")
    return Secret(text)


def _failpoint(text: str) -> str:
    from wal_bridge.failpoints import FAILPOINTS  # local: failpoints imports nothing of ours

    name = text.strip()
    if name and name not in FAILPOINTS:
        raise ValueError(f"unknown failpoint; known: {', '.join(sorted(FAILPOINTS))}")
    return name


@dataclass(frozen=True)
class Spec:
    """One setting: where it comes from, how it is parsed and how it is documented."""

    name: str  # field name on Settings
    env: str
    help: str
    parse: Callable[[str], Any]
    default: str | None = None
    secret: bool = False
    flag_name: str | None = None

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.name).replace("_", "-")


SPECS: tuple[Spec, ...] = (
    Spec("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS",
         "Kafka bootstrap servers, host:port[,...].", _bootstrap, "localhost:9092"),
    Spec("topics", "KAFKA_TOPIC", "Topic(s) to consume, comma-separated.", _topics,
         "events-stream", flag_name="topic"),
    Spec("group_id", "KAFKA_GROUP_ID", "Kafka consumer group id.", _group_id, "wal-bridge"),
    Spec("security_protocol", "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT or "
         "SASL_SSL.", _choice("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"), "plaintext"),
    Spec("sasl_mechanism", "KAFKA_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
         _choice("plain", "scram-sha-256", "scram-sha-512")),
    Spec("sasl_username", "KAFKA_SASL_USERNAME", "SASL user name.", str),
    Spec("sasl_password", "KAFKA_SASL_PASSWORD", "SASL password (never logged).", Secret,
         secret=True),
    Spec("ssl_ca_location", "KAFKA_SSL_CA_LOCATION", "CA certificate file for TLS.",
         _existing_file),
    Spec("ssl_certificate_location", "KAFKA_SSL_CERTIFICATE_LOCATION",
         "Client certificate file for mutual TLS.", _existing_file),
    Spec("ssl_key_location", "KAFKA_SSL_KEY_LOCATION", "Client private key file for mutual TLS.",
         _existing_file),
    Spec("ssl_key_password", "KAFKA_SSL_KEY_PASSWORD", "Password of the client key (never "
         "logged).", Secret, secret=True),
    Spec("batch_size", "BATCH_SIZE", "Seal a segment at this many records.", _positive_int,
         "5000"),
    Spec("batch_timeout", "BATCH_TIMEOUT", "Seal a segment this many seconds after its first "
         "record, even when no more arrive.", _seconds, "60"),
    Spec("wal_dir", "WAL_DIR", "Directory of the write-ahead log (one per instance).", _path,
         "./wal"),
    Spec("wal_max_bytes", "WAL_MAX_BYTES", "Pause consuming while the WAL holds more than this "
         "(e.g. 1GiB).", parse_size, "1GiB"),
    Spec("destination", "DESTINATION", "gs://bucket/prefix or file:///path.", parse_destination),
    Spec("commit_policy", "COMMIT_POLICY", "wal: commit offsets once records are fsynced in the "
         "WAL; upload: once their object is confirmed in the destination.",
         _choice("wal", "upload"), "wal"),
    Spec("shutdown_grace", "SHUTDOWN_GRACE", "Seconds to seal, convert and ship on SIGTERM.",
         _seconds, "30"),
    Spec("instance_id", "INSTANCE_ID", "This instance's identity (kept in WAL_DIR; defaults to "
         "the host name plus a random suffix at first start).", _instance_id),
    Spec("metrics_port", "METRICS_PORT", "Port of /metrics, /healthz and /readyz (0: off).",
         _port, "9464"),
    Spec("log_level", "LOG_LEVEL", "debug, info, warning or error.",
         _choice("debug", "info", "warning", "error"), "info"),
    Spec("log_format", "LOG_FORMAT", "auto (console on a terminal, JSON lines otherwise), json "
         "or console.", _choice("auto", "json", "console"), "auto"),
    Spec("google_credentials", "GOOGLE_APPLICATION_CREDENTIALS", "Google credentials file of "
         "any type google-auth loads (service account key, impersonated service account, "
         "workload identity federation, authorized user); without it, the ambient credentials "
         "(workload identity, metadata server, gcloud).", _credentials_file),
    Spec("storage_emulator_host", "STORAGE_EMULATOR_HOST", "GCS emulator URL "
         "(e.g. http://localhost:4443); uses anonymous credentials.", _emulator),
    Spec("schema_file", "SCHEMA_FILE", "JSON file fixing the payload columns and their types; "
         "without it the first data's schema is pinned in WAL_DIR.", _existing_file),
    Spec("max_record_bytes", "MAX_RECORD_BYTES", "Records larger than this go to the dead-letter "
         "location.", parse_size, "1MiB"),
    Spec("value_format", "VALUE_FORMAT", "How record values are read: json; or avro, protobuf, "
         "json_schema (Confluent wire format, schemas from SCHEMA_REGISTRY_URL); or auto (each "
         "record's schema id says which).", _choice(*VALUE_FORMATS), "json"),
    Spec("key_format", "KEY_FORMAT", "How record keys are read: raw (only _kafka_key, the "
         "bytes), or avro, protobuf, json_schema, auto (also _kafka_key_decoded, JSON text).",
         _choice(*KEY_FORMATS), "raw"),
    Spec("incompatible_schema", "INCOMPATIBLE_SCHEMA", "A writer's schema that changed a "
         "column's type: wait (its records stay in the WAL until the operator decides) or "
         "extra (those fields' values go to _extra, the column NULL).",
         _choice("wait", "extra"), "wait"),
    Spec("schema_registry_url", "SCHEMA_REGISTRY_URL", "Schema registry base URL(s) "
         "(Confluent-compatible API), comma-separated.", _registry_url),
    Spec("schema_registry_user_info", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "username:password "
         "for the registry's basic auth (never logged).", _user_info, secret=True,
         flag_name="schema_registry_basic_auth_user_info"),
    Spec("schema_registry_ca_location", "SCHEMA_REGISTRY_SSL_CA_LOCATION", "CA certificate file "
         "to verify the registry's TLS certificate.", _existing_file),
    Spec("schema_registry_certificate_location", "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION",
         "Client certificate file (PEM) for mutual TLS with the registry.", _existing_file),
    Spec("schema_registry_key_location", "SCHEMA_REGISTRY_SSL_KEY_LOCATION", "Client private key "
         "file (PEM) for mutual TLS with the registry.", _existing_file),
    Spec("schema_registry_key_password", "SCHEMA_REGISTRY_SSL_KEY_PASSWORD", "Password of the "
         "registry client key (never logged).", Secret, secret=True),
    Spec("failpoint", "WAL_BRIDGE_FAILPOINT", "Testing only: exit abruptly at this step.",
         _failpoint, ""),
)

SPECS_BY_NAME = {spec.name: spec for spec in SPECS}


def default(name: str) -> Any:
    """The default of setting ``name``, parsed: :data:`SPECS` is the one place defaults are
    written; :class:`Settings` and the library's own defaults (e.g. ``Wal.open``) take theirs
    from here."""
    spec = SPECS_BY_NAME[name]
    return None if spec.default is None else spec.parse(spec.default)


@dataclass(frozen=True)
class Settings:
    """Everything the bridge needs to know, validated. Built by :func:`load_settings`."""

    bootstrap_servers: str = default("bootstrap_servers")
    topics: tuple[str, ...] = default("topics")
    group_id: str = default("group_id")
    security_protocol: str = default("security_protocol")
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: Secret | None = None
    batch_size: int = default("batch_size")
    batch_timeout: float = default("batch_timeout")
    wal_dir: Path = default("wal_dir")  # noqa: RUF009 - parsed from SPECS once; immutable
    wal_max_bytes: int = default("wal_max_bytes")
    destination: Destination | None = None
    commit_policy: CommitPolicy = default("commit_policy")  # noqa: RUF009 - parsed from SPECS once; immutable
    shutdown_grace: float = default("shutdown_grace")
    instance_id: str | None = None
    metrics_port: int = default("metrics_port")
    log_level: str = default("log_level")
    log_format: LogFormat = default("log_format")  # noqa: RUF009 - parsed from SPECS once; immutable
    google_credentials: Path | None = None
    storage_emulator_host: str | None = None
    schema_file: Path | None = None
    max_record_bytes: int = default("max_record_bytes")
    value_format: str = default("value_format")
    key_format: str = default("key_format")
    incompatible_schema: str = default("incompatible_schema")
    schema_registry_url: str | None = None
    schema_registry_user_info: Secret | None = None
    schema_registry_ca_location: Path | None = None
    schema_registry_certificate_location: Path | None = None
    schema_registry_key_location: Path | None = None
    schema_registry_key_password: Secret | None = None
    failpoint: str = default("failpoint")

    def require_destination(self) -> Destination:
        if self.destination is None:
            raise ConfigError(
                "DESTINATION is not set: give gs://bucket/prefix or file:///absolute/path"
            )
        return self.destination

    def kafka_config(self) -> dict[str, str]:
        """The librdkafka client settings shared by every Kafka client the bridge makes."""
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": f"wal-bridge-{self.instance_id}" if self.instance_id else "wal-bridge",
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism.upper() if self.sasl_mechanism else None,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.reveal() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.reveal() if self.ssl_key_password else None,
        }
        conf.update({key: str(value) for key, value in optional.items() if value is not None})
        return conf

    @property
    def uses_registry(self) -> bool:
        """Whether values or keys are read through the schema registry."""
        return self.value_format != "json" or self.key_format != "raw"

    def registry_config(self) -> dict[str, str]:
        """The ``confluent_kafka.schema_registry.SchemaRegistryClient`` configuration (its key
        names: ``url``, ``basic.auth.user.info``, ``ssl.*``). Holds the secrets revealed: pass
        it to the client, never to a log."""
        if self.schema_registry_url is None:
            raise ConfigError("SCHEMA_REGISTRY_URL is not set")
        conf = {"url": self.schema_registry_url}
        optional = {
            "basic.auth.user.info": self.schema_registry_user_info,
            "ssl.ca.location": self.schema_registry_ca_location,
            "ssl.certificate.location": self.schema_registry_certificate_location,
            "ssl.key.location": self.schema_registry_key_location,
            "ssl.key.password": self.schema_registry_key_password,
        }
        conf.update({key: value.reveal() if isinstance(value, Secret) else str(value)
                     for key, value in optional.items() if value is not None})
        return conf


def load_settings(values: Mapping[str, str | None], **overrides: Any) -> Settings:
    """Build Settings from raw strings keyed by environment variable name.

    A missing key takes the spec's default. A value that does not parse raises ConfigError with
    one line that names the variable and says what was expected. ``overrides`` are already
    parsed values (used by commands that compute a setting, e.g. the demo).
    """
    parsed: dict[str, Any] = {}
    for spec in SPECS:
        raw = values.get(spec.env)
        if raw is None or (raw == "" and spec.default is None):
            raw = spec.default
        if raw is None:
            continue
        try:
            parsed[spec.name] = spec.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if spec.secret else repr(raw)
            raise ConfigError(f"{spec.env} ({spec.flag})={shown}: {exc}") from None
    parsed.update(overrides)
    settings = Settings(**parsed)
    _check_combinations(settings)
    return settings


def _check_combinations(settings: Settings) -> None:
    protocol = settings.security_protocol
    if protocol.startswith("sasl"):
        missing = [
            spec.env
            for spec in (SPECS_BY_NAME["sasl_mechanism"], SPECS_BY_NAME["sasl_username"],
                         SPECS_BY_NAME["sasl_password"])
            if getattr(settings, spec.name) is None
        ]
        if missing:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL={protocol.upper()} needs {', '.join(missing)}"
            )
    elif settings.sasl_mechanism is not None:
        raise ConfigError(
            "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL is "
            f"{protocol.upper()}: use SASL_SSL or SASL_PLAINTEXT"
        )
    if (settings.ssl_certificate_location is None) != (settings.ssl_key_location is None):
        raise ConfigError(
            "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together: set both"
        )
    _check_registry(settings)


def _check_registry(settings: Settings) -> None:
    if settings.uses_registry and settings.schema_registry_url is None:
        which = (f"VALUE_FORMAT={settings.value_format}" if settings.value_format != "json"
                 else f"KEY_FORMAT={settings.key_format}")
        raise ConfigError(f"{which} reads schemas from a registry: set SCHEMA_REGISTRY_URL "
                          "(e.g. http://localhost:8081)")
    if (settings.schema_registry_key_location is not None
            and settings.schema_registry_certificate_location is None):
        raise ConfigError("SCHEMA_REGISTRY_SSL_KEY_LOCATION needs "
                          "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION: set both")
    if (settings.schema_registry_key_password is not None
            and settings.schema_registry_certificate_location is None):
        raise ConfigError("SCHEMA_REGISTRY_SSL_KEY_PASSWORD needs "
                          "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION (and the key): set them")


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as plain values for the start-up log line, secrets masked."""
    shown: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        shown[f.name] = str(value) if isinstance(value, Path | Destination | Secret) else value
    return shown
