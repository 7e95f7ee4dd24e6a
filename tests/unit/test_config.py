"""Settings validation: every variable's good and bad values, and the CLI's one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.config import SPECS, Destination, Secret, load_settings, parse_size
from wal_bridge.errors import ConfigError


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "key.pem"
    path.write_text("not really a key")
    return str(path)


def test_defaults_match_the_documented_values() -> None:
    """With nothing set, the bridge reads events-stream, seals at 5000 records or 60 s."""
    settings = load_settings({})
    assert settings.topics == ("events-stream",)
    assert settings.batch_size == 5000
    assert settings.batch_timeout == 60.0
    assert settings.wal_max_bytes == 1024**3
    assert settings.commit_policy == "wal"
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.destination is None


GOOD = [
    ("KAFKA_BOOTSTRAP_SERVERS", "a:9092, b:9093", "bootstrap_servers", "a:9092,b:9093"),
    ("KAFKA_TOPIC", "events-stream,audit.v1", "topics", ("events-stream", "audit.v1")),
    ("KAFKA_GROUP_ID", "lakehouse", "group_id", "lakehouse"),
    ("KAFKA_SECURITY_PROTOCOL", "SSL", "security_protocol", "ssl"),
    ("BATCH_SIZE", "1000", "batch_size", 1000),
    ("BATCH_TIMEOUT", "2.5", "batch_timeout", 2.5),
    ("WAL_DIR", "/var/lib/wal-bridge", "wal_dir", Path("/var/lib/wal-bridge")),
    ("WAL_MAX_BYTES", "512MiB", "wal_max_bytes", 512 * 1024**2),
    ("DESTINATION", "gs://my-bucket/raw", "destination", Destination("gs", "my-bucket", "raw")),
    ("DESTINATION", "gs://my-bucket", "destination", Destination("gs", "my-bucket", "raw")),
    ("DESTINATION", "file:///tmp/landed", "destination", Destination("file", "/tmp/landed", "raw")),
    ("COMMIT_POLICY", "upload", "commit_policy", "upload"),
    ("SHUTDOWN_GRACE", "10", "shutdown_grace", 10.0),
    ("INSTANCE_ID", "wal-bridge-0", "instance_id", "wal-bridge-0"),
    ("METRICS_PORT", "0", "metrics_port", 0),
    ("LOG_LEVEL", "DEBUG", "log_level", "debug"),
    ("LOG_FORMAT", "json", "log_format", "json"),
    ("STORAGE_EMULATOR_HOST", "localhost:4443", "storage_emulator_host", "http://localhost:4443"),
    ("MAX_RECORD_BYTES", "64KiB", "max_record_bytes", 65536),
]


@pytest.mark.parametrize(("env", "raw", "name", "expected"), GOOD,
                         ids=[f"{g[0]}={g[1]}" for g in GOOD])
def test_good_values_parse(env: str, raw: str, name: str, expected: object) -> None:
    """Each variable accepts its documented forms and normalises them."""
    assert getattr(load_settings({env: raw}), name) == expected


BAD = [
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "is not host:port"),
    ("KAFKA_TOPIC", " , ", "one or more topic names"),
    ("KAFKA_TOPIC", "bad topic!", "not a valid Kafka topic name"),
    ("KAFKA_GROUP_ID", "  ", "must not be empty"),
    ("KAFKA_SECURITY_PROTOCOL", "tls", "expected one of"),
    ("KAFKA_SASL_MECHANISM", "gssapi", "expected one of"),
    ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem", "not a readable file"),
    ("BATCH_SIZE", "abc", "expected a whole number"),
    ("BATCH_SIZE", "0", "greater than zero"),
    ("BATCH_TIMEOUT", "-1", "greater than zero"),
    ("BATCH_TIMEOUT", "nan", "finite number"),
    ("WAL_MAX_BYTES", "lots", "expected a size"),
    ("WAL_MAX_BYTES", "12XB", "expected a size"),
    ("DESTINATION", "s3://bucket/raw", "expected gs://bucket/prefix"),
    ("DESTINATION", "gs://Bad_Bucket!/x", "not a valid bucket name"),
    ("DESTINATION", "file://relative/path", "file:///absolute/path"),
    ("COMMIT_POLICY", "never", "expected one of wal, upload"),
    ("SHUTDOWN_GRACE", "soon", "number of seconds"),
    ("INSTANCE_ID", "-leading-dash", "starting alphanumeric"),
    ("METRICS_PORT", "70000", "from 0 to 65535"),
    ("LOG_LEVEL", "loud", "expected one of"),
    ("LOG_FORMAT", "xml", "expected one of"),
    ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json", "not a readable file"),
    ("STORAGE_EMULATOR_HOST", "ftp://x", "expected http://host:port"),
    ("SCHEMA_FILE", "/nonexistent/schema.json", "not a readable file"),
    ("MAX_RECORD_BYTES", "0", "greater than zero"),
    ("WAL_BRIDGE_FAILPOINT", "somewhere", "unknown failpoint"),
]


@pytest.mark.parametrize(("env", "raw", "message"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_values_name_the_variable(env: str, raw: str, message: str) -> None:
    """A bad value is one line that names the variable, its flag and what was expected."""
    with pytest.raises(ConfigError) as caught:
        load_settings({env: raw})
    text = str(caught.value)
    assert text.startswith(f"{env} (--")
    assert message in text
    assert "\n" not in text


def test_every_variable_is_covered_by_these_tests() -> None:
    """No setting escapes validation tests: each spec has a good or a bad case here."""
    tested = {g[0] for g in GOOD} | {b[0] for b in BAD} | {
        "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CERTIFICATE_LOCATION",
        "KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_KEY_PASSWORD",  # combinations, below
        # the registry's, in the two registry tests below
        "VALUE_FORMAT", "KEY_FORMAT", "INCOMPATIBLE_SCHEMA", "SCHEMA_REGISTRY_URL",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        "SCHEMA_REGISTRY_SSL_CA_LOCATION", "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION",
        "SCHEMA_REGISTRY_SSL_KEY_LOCATION", "SCHEMA_REGISTRY_SSL_KEY_PASSWORD",
    }
    assert {spec.env for spec in SPECS} <= tested


def test_sasl_needs_mechanism_user_and_password() -> None:
    """SASL without its credentials is refused, naming what is missing."""
    with pytest.raises(ConfigError, match="needs KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD"):
        load_settings({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"})


def test_sasl_settings_reach_librdkafka_and_secrets_stay_hidden() -> None:
    """The password goes to the client config but never into repr or error messages."""
    settings = load_settings({
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "bridge", "KAFKA_SASL_PASSWORD": "hunter2",
    })
    conf = settings.kafka_config()
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(settings)
    assert settings.sasl_password == Secret("hunter2")


def test_mutual_tls_needs_both_certificate_and_key(key_file: str) -> None:
    """A client certificate without its key (or the reverse) is refused."""
    with pytest.raises(ConfigError, match="go together"):
        load_settings({"KAFKA_SSL_CERTIFICATE_LOCATION": key_file})
    settings = load_settings({"KAFKA_SSL_CERTIFICATE_LOCATION": key_file,
                              "KAFKA_SSL_KEY_LOCATION": key_file,
                              "KAFKA_SSL_KEY_PASSWORD": "s3cret"})
    assert settings.kafka_config()["ssl.key.location"] == key_file


def test_mechanism_without_sasl_protocol_is_refused() -> None:
    """Setting a SASL mechanism over PLAINTEXT is a mistake worth a clear message."""
    with pytest.raises(ConfigError, match="use SASL_SSL or SASL_PLAINTEXT"):
        load_settings({"KAFKA_SASL_MECHANISM": "PLAIN"})


def test_sizes_accept_decimal_and_binary_units() -> None:
    """WAL_MAX_BYTES-style sizes read like people write them."""
    assert parse_size("1GiB") == 1024**3
    assert parse_size("2GB") == 2 * 1000**3
    assert parse_size("4096") == 4096


def test_dead_letters_sit_beside_the_data_prefix() -> None:
    """Dead letters stay outside the external table's raw/ source URIs."""
    assert Destination("gs", "b", "raw").dead_letter_prefix == "dead-letter"
    assert Destination("gs", "b", "lake/raw").dead_letter_prefix == "lake/dead-letter"


def test_cli_reports_a_bad_variable_in_one_line_with_exit_code_2() -> None:
    """`wal_bridge run` with a bad variable prints one line and exits 2, no traceback."""
    result = CliRunner().invoke(main, ["run"], env={"BATCH_SIZE": "many"})
    assert result.exit_code == 2
    assert result.output.strip() == (
        "wal_bridge: error: BATCH_SIZE (--batch-size)='many': expected a whole number"
    )


def test_cli_flag_wins_and_is_validated_like_its_variable() -> None:
    """A flag goes through the same validation and names the same variable."""
    result = CliRunner().invoke(main, ["run", "--commit-policy", "sometimes"])
    assert result.exit_code == 2
    assert "COMMIT_POLICY (--commit-policy)='sometimes'" in result.output


def test_cli_without_destination_says_what_to_set() -> None:
    """Running without DESTINATION says which forms it takes."""
    result = CliRunner().invoke(main, ["run"], env={"DESTINATION": None})
    assert result.exit_code == 2
    assert "DESTINATION is not set" in result.output


def test_help_shows_variables_but_never_secret_values() -> None:
    """--help lists each flag with its variable, and no secret from the environment."""
    result = CliRunner().invoke(main, ["run", "--help"],
                                env={"KAFKA_SASL_PASSWORD": "hunter2"})
    assert result.exit_code == 0
    assert "KAFKA_SASL_PASSWORD" in result.output
    assert "hunter2" not in result.output
    assert "--batch-size" in result.output


def test_version_prints_the_package_version() -> None:
    """--version answers without touching any service."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("wal_bridge, version ")


def test_registry_formats_parse_and_build_the_client_config(key_file: str) -> None:
    """VALUE_FORMAT/KEY_FORMAT and the registry settings become the registry client's keys."""
    settings = load_settings({
        "VALUE_FORMAT": "Avro", "KEY_FORMAT": "auto",
        "SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081/apis/ccompat/v7/",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "user:pa:ss",
        "SCHEMA_REGISTRY_SSL_CA_LOCATION": key_file,
        "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": key_file,
        "SCHEMA_REGISTRY_SSL_KEY_LOCATION": key_file,
    })
    assert (settings.value_format, settings.key_format) == ("avro", "auto")
    assert settings.uses_registry
    assert settings.registry_config() == {
        "url": "http://127.0.0.1:8081/apis/ccompat/v7",
        "basic.auth.user.info": "user:pa:ss",
        "ssl.ca.location": key_file,
        "ssl.certificate.location": key_file,
        "ssl.key.location": key_file,
    }
    assert "pa:ss" not in repr(settings)


@pytest.mark.parametrize(("env", "message"), [
    ({"VALUE_FORMAT": "avro"}, "VALUE_FORMAT=avro reads schemas from a registry: set "
                               "SCHEMA_REGISTRY_URL"),
    ({"KEY_FORMAT": "protobuf"}, "KEY_FORMAT=protobuf reads schemas from a registry"),
    ({"VALUE_FORMAT": "xml"}, "VALUE_FORMAT (--value-format)='xml': expected one of json, avro"),
    ({"INCOMPATIBLE_SCHEMA": "drop"}, "INCOMPATIBLE_SCHEMA (--incompatible-schema)='drop': "
                                      "expected one of wait, extra"),
    ({"SCHEMA_REGISTRY_URL": "localhost:8081"}, "SCHEMA_REGISTRY_URL (--schema-registry-url)="),
    ({"SCHEMA_REGISTRY_URL": "http://u:p@h:1"}, "not in the URL"),
    ({"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "secretonly"},
     "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO (--schema-registry-basic-auth-user-info)=(hidden): "
     "expected username:password"),
])
def test_bad_registry_settings_are_one_line(env: dict[str, str], message: str) -> None:
    """A bad or missing registry setting is one ConfigError line naming the variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "secretonly" not in str(caught.value)
