"""Destination problems at start are one clear line and a non-zero exit, before consuming."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from wal_bridge.cli import main


def test_a_malformed_credentials_file_is_reported_at_start(tmp_path: Path) -> None:
    """A key file that is not a service account key stops `run` with a line naming it."""
    key = tmp_path / "key.json"
    key.write_text("{not json")
    result = CliRunner().invoke(main, ["run"], env={
        "DESTINATION": "gs://some-bucket/raw", "GOOGLE_APPLICATION_CREDENTIALS": str(key),
        "WAL_DIR": str(tmp_path / "wal"), "STORAGE_EMULATOR_HOST": None, "METRICS_PORT": "0",
        "LOG_FORMAT": "json",
    })
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"wal_bridge: error: GOOGLE_APPLICATION_CREDENTIALS={key}: not a "
                           "usable service account key")


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
