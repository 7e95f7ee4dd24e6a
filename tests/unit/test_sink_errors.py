"""Destination problems at start are one clear line and a non-zero exit, before consuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from wal_bridge.cli import main

GOOGLE_VAR = "GOOGLE_APPLICATION_CREDENTIALS (--google-credentials)"
WHAT_TO_DO = "unset it to use the ambient credentials"


def _not_json(path: Path) -> Path:
    path.write_text("{not json")
    return path


def _unknown_type(path: Path) -> Path:
    path.write_text(json.dumps({"type": "api_key", "key": "abc"}))
    return path


def _no_source(path: Path) -> Path:
    # google-auth meets this shape with an AttributeError, not its own error type.
    path.write_text(json.dumps({"type": "impersonated_service_account",
                                "service_account_impersonation_url": "x"}))
    return path


def _missing(path: Path) -> Path:
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


UNUSABLE = {
    "not JSON": (_not_json, "google-auth cannot load it (File {path} is not a valid json file."),
    "unknown type": (_unknown_type, "does not have a valid type. Type is api_key, expected one "
                                    "of ('authorized_user', 'service_account', 'external_account'"),
    "impersonation without a source": (_no_source, "google-auth cannot load it ("),
    "missing": (_missing, "is not a readable file (no such file)"),
    "a directory": (_directory, "is not a readable file (it is a directory)"),
}


def _run_with_credentials(tmp_path: Path, credentials: Path, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={
        "DESTINATION": "gs://some-bucket/raw", "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
        "WAL_DIR": str(tmp_path / "wal"), "STORAGE_EMULATOR_HOST": None, "METRICS_PORT": "0",
        "LOG_FORMAT": "json",
    })


def _one_error_line(result: Result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("wal_bridge:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_an_unusable_credentials_file_stops_run_with_exit_2(tmp_path: Path, case: str) -> None:
    """A file google-auth cannot load is one line: the variable, what is wrong, what to do."""
    make, said = UNUSABLE[case]
    path = make(tmp_path / "credentials.json")
    result = _run_with_credentials(tmp_path, path, "run")
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert line.startswith(f"wal_bridge: error: {GOOGLE_VAR}={str(path)!r}: ")
    assert said.format(path=path) in line
    assert line.endswith(WHAT_TO_DO)


@pytest.mark.parametrize("command", [["audit", "--no-kafka"], ["replay", "--all"],
                                     ["query", "SELECT count(*) FROM events"]])
def test_every_command_that_reads_the_bucket_loads_credentials_the_same_way(
        tmp_path: Path, command: list[str]) -> None:
    """audit, replay and query build their client through the sink: same line, same exit 2."""
    path = _unknown_type(tmp_path / "credentials.json")
    result = _run_with_credentials(tmp_path, path, *command)
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert line.startswith(f"wal_bridge: error: {GOOGLE_VAR}={str(path)!r}: google-auth cannot "
                           "load it (The file")
    assert line.endswith(WHAT_TO_DO)


def test_an_unwritable_local_destination_is_reported_at_start(tmp_path: Path) -> None:
    """A file:// destination that cannot be created stops `run` before it consumes anything."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    result = CliRunner().invoke(main, ["run"], env={
        "DESTINATION": f"file://{blocker}/landed", "WAL_DIR": str(tmp_path / "wal"),
        "METRICS_PORT": "0", "LOG_FORMAT": "json",
    })
    assert result.exit_code == 1
    assert f"cannot create destination {blocker}/landed" in result.output
