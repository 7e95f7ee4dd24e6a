"""What is the GCS sink's own: how a client-library error becomes a SinkError that says whether
trying again can help. The errors are the library's real exception types, built the way it
builds them from a response; no request is made. The sink's behaviour against the emulator is
in the contract suite (tests/contract/test_sink.py), its credentials in test_gcs_credentials.py.
"""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud.storage.exceptions import InvalidResponse

from wal_bridge.errors import DestinationNotFoundError, ObjectNotFoundError, SinkError
from wal_bridge.sink.gcs import TRANSIENT_STATUS, classify

WHAT = "uploading gs://lake/raw/a.parquet"


def _response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response


@pytest.mark.parametrize("status", sorted(TRANSIENT_STATUS))
def test_timeouts_throttling_and_server_errors_are_transient(status: int) -> None:
    """408, 429, 500, 502, 503, 504: the uploader retries them without limit."""
    error = classify(gexc.from_http_status(status, "try later"), WHAT)
    assert type(error) is SinkError
    assert error.transient is True
    assert str(error) == f"{WHAT}: HTTP {status} ({status} try later)"


@pytest.mark.parametrize(("status", "hint"), [
    (401, "the credentials are not valid"),
    (403, "the service account lacks permission on the bucket (roles/storage.objectAdmin)"),
    (400, "the request was refused"),
    (501, "the request was refused"),
])
def test_refusals_are_permanent_and_say_what_to_check(status: int, hint: str) -> None:
    """A status no retry mends marks the segment stuck, with the likely cause in the message."""
    error = classify(gexc.from_http_status(status, "no"), WHAT)
    assert type(error) is SinkError
    assert error.transient is False
    assert str(error) == f"{WHAT}: HTTP {status}: {hint} ({status} no)"


def test_a_404_is_a_missing_bucket() -> None:
    """classify sees 404s of listings and uploads only, which can only mean the bucket."""
    error = classify(gexc.NotFound("Not Found"), WHAT)
    assert isinstance(error, DestinationNotFoundError)
    assert not isinstance(error, ObjectNotFoundError)
    assert error.transient is False
    assert "the bucket does not exist: create it (terraform apply) or fix DESTINATION" in str(error)


@pytest.mark.parametrize(("status", "transient"), [(503, True), (403, False)])
def test_a_transfer_error_is_classified_by_its_response_status(status: int,
                                                               transient: bool) -> None:
    """The media layer's InvalidResponse carries the status on its response, not as .code."""
    error = classify(InvalidResponse(_response(status), "upload failed"), WHAT)
    assert error.transient is transient
    assert f"HTTP {status}" in str(error)


@pytest.mark.parametrize("exc", [
    requests.ConnectionError("connection refused"),
    requests.Timeout("read timed out"),
    ConnectionResetError("reset by peer"),
], ids=["refused", "timeout", "reset"])
def test_errors_without_a_status_are_transient(exc: BaseException) -> None:
    """A dropped connection or a timeout can succeed on a later attempt."""
    error = classify(exc, WHAT)
    assert error.transient is True
    assert str(error) == f"{WHAT}: {type(exc).__name__}: {exc}"


def test_refused_credentials_are_permanent_unless_the_token_endpoint_says_retry() -> None:
    """A refused refresh needs an operator; one google-auth marks retryable does not."""
    refused = classify(auth_exc.RefreshError("invalid_grant"), WHAT)
    assert refused.transient is False
    assert "credentials were refused" in str(refused)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(refused)
    assert classify(auth_exc.RefreshError("503", retryable=True), WHAT).transient is True


def test_no_credentials_at_all_is_permanent() -> None:
    """No file and no ambient credentials: one line saying where credentials come from."""
    error = classify(auth_exc.DefaultCredentialsError("none found"), WHAT)
    assert error.transient is False
    assert str(error) == (f"{WHAT}: no Google credentials found; set "
                          "GOOGLE_APPLICATION_CREDENTIALS or use workload identity")
