"""The GCS sink takes every credentials file google-auth loads, and building its client is offline.

Each sample file points every token endpoint at a loopback recorder, so "no token is fetched
while the client is built" is a fact the recorder saw, not an assumption; later tests show
that the first real request does reach it, with the storage scopes. The last ones run the CLI:
a file google-auth cannot load is one line naming the variable, and exit code 2, in every
command that reaches the bucket.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import aws, external_account_authorized_user, identity_pool, pluggable
from google.auth import impersonated_credentials as impersonated
from google.cloud import storage
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from wal_bridge.cli import main
from wal_bridge.config import Destination
from wal_bridge.sink.gcs import GcsSink

EMAIL = "wal-bridge@lake-proj.iam.gserviceaccount.com"
AUDIENCE = ("//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/"
            "lake-pool/providers/lake-provider")
JWT_SUBJECT = "urn:ietf:params:oauth:token-type:jwt"
DESTINATION = Destination("gs", "lake-bucket", "raw")
REFRESH = "refresh-me"  # the sample files' refresh token


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Recorder:
    """A loopback HTTP endpoint that answers every request with a token and remembers it."""

    url: str
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A Recorder serving on a free loopback port for the test's duration."""
    rec = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {name.lower(): value for name, value in self.headers.items()}
            rec.seen.append(Seen(self.command, self.path, headers, self.rfile.read(length)))
            # Both spellings: OAuth and STS (access_token) and IAM generateAccessToken.
            body = json.dumps({"access_token": "recorded-token", "token_type": "Bearer",
                               "expires_in": 3600, "accessToken": "recorded-token",
                               "expireTime": "2099-01-01T00:00:00Z"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def _private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _write(tmp_path: Path, info: dict[str, Any]) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(info))
    return path


def _client(path: Path | None) -> storage.Client:
    return GcsSink(DESTINATION, path, None).client


def _credentials(client: storage.Client) -> Any:
    # The client keeps what it will authorize requests with here (google-cloud-core's Client).
    return client._credentials


def _built_offline(client: storage.Client, recorder: Recorder) -> Any:
    credentials = _credentials(client)
    assert recorder.seen == [], "building the client fetched a token"
    assert credentials.token is None
    return credentials


def _external_account(rec: Recorder, source: dict[str, Any],
                      token_type: str = JWT_SUBJECT) -> dict[str, Any]:
    return {
        "type": "external_account", "audience": AUDIENCE, "subject_token_type": token_type,
        "token_url": f"{rec.url}/v1/token", "credential_source": source,
        "service_account_impersonation_url":
            f"{rec.url}/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken",
    }


def _service_account_key(tmp_path: Path, recorder: Recorder) -> Path:
    """A service-account key file whose token endpoint is the recorder."""
    return _write(tmp_path, {
        "type": "service_account", "project_id": "lake-proj", "private_key_id": "k1",
        "private_key": _private_key_pem(), "client_email": EMAIL, "client_id": "1",
        "token_uri": f"{recorder.url}/token",
    })


def test_a_service_account_key_gives_service_account_credentials(
        tmp_path: Path, recorder: Recorder) -> None:
    """A key file becomes service-account credentials with its email, project and storage scopes."""
    path = _service_account_key(tmp_path, recorder)
    client = _client(path)
    credentials = _built_offline(client, recorder)
    assert isinstance(credentials, service_account.Credentials)
    assert credentials.service_account_email == EMAIL
    assert client.project == "lake-proj"
    assert tuple(credentials.scopes) == storage.Client.SCOPE


def test_an_impersonation_file_gives_impersonated_credentials(
        tmp_path: Path, recorder: Recorder) -> None:
    """gcloud's impersonation file (an authorized_user source) impersonates its target account."""
    path = _write(tmp_path, {
        "type": "impersonated_service_account", "delegates": [],
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/"
                                             f"-/serviceAccounts/{EMAIL}:generateAccessToken",
        "source_credentials": {"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": REFRESH,
                               "token_uri": f"{recorder.url}/token"},
    })
    client = _client(path)
    credentials = _built_offline(client, recorder)
    assert isinstance(credentials, impersonated.Credentials)
    assert credentials.service_account_email == EMAIL
    assert isinstance(credentials._source_credentials, user_credentials.Credentials)
    assert credentials._source_credentials.refresh_token == REFRESH
    assert tuple(credentials._target_scopes) == storage.Client.SCOPE
    assert client.project is None


EXTERNAL = {
    "file-sourced": (identity_pool.Credentials, JWT_SUBJECT,
                     lambda rec, tmp: {"file": str(tmp / "subject-token")}),
    "url-sourced": (identity_pool.Credentials, JWT_SUBJECT,
                    lambda rec, tmp: {"url": f"{rec.url}/subject-token",
                                      "headers": {"Metadata": "True"}}),
    "executable-sourced": (pluggable.Credentials, JWT_SUBJECT,
                           lambda rec, tmp: {"executable": {"command": "/bin/false",
                                                            "timeout_millis": 5000}}),
    "aws": (aws.Credentials, "urn:ietf:params:aws:token-type:aws4_request",
            lambda rec, tmp: {
                "environment_id": "aws1", "region_url": f"{rec.url}/region",
                "url": f"{rec.url}/role",
                "regional_cred_verification_url":
                    "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            }),
}


@pytest.mark.parametrize("kind", list(EXTERNAL))
def test_workload_identity_federation_gives_external_account_credentials(
        kind: str, tmp_path: Path, recorder: Recorder) -> None:
    """An external_account file keeps its audience, source and impersonated account, offline.

    Its audience names a project number: loaded with scopes, google-auth would exchange a token
    right away to look the project up; the recorder would see it.
    """
    expected_class, token_type, source = EXTERNAL[kind]
    (tmp_path / "subject-token").write_text("a-subject-token")
    info = _external_account(recorder, source(recorder, tmp_path), token_type)
    client = _client(_write(tmp_path, info))
    credentials = _built_offline(client, recorder)
    assert type(credentials) is expected_class
    assert credentials.info["audience"] == AUDIENCE
    assert credentials.info["credential_source"] == info["credential_source"]
    assert credentials.service_account_email == EMAIL
    assert credentials.project_number == "123456"
    assert tuple(credentials.scopes) == storage.Client.SCOPE
    assert client.project is None


def test_an_external_authorized_user_file_gives_its_credentials(
        tmp_path: Path, recorder: Recorder) -> None:
    """A workforce identity login (external_account_authorized_user) keeps its audience."""
    audience = "//iam.googleapis.com/locations/global/workforcePools/lake/providers/idp"
    path = _write(tmp_path, {
        "type": "external_account_authorized_user", "audience": audience,
        "refresh_token": REFRESH, "token_url": f"{recorder.url}/v1/oauthtoken",
        "token_info_url": f"{recorder.url}/v1/introspect", "client_id": "c",
        "client_secret": "s", "revoke_url": f"{recorder.url}/v1/revoke",
    })
    credentials = _built_offline(_client(path), recorder)
    assert isinstance(credentials, external_account_authorized_user.Credentials)
    assert credentials.audience == audience
    assert credentials.refresh_token == REFRESH


def test_an_authorized_user_file_gives_user_credentials(
        tmp_path: Path, recorder: Recorder) -> None:
    """A gcloud application-default login file gives user credentials with its quota project."""
    path = _write(tmp_path, {
        "type": "authorized_user", "client_id": "c", "client_secret": "s",
        "refresh_token": REFRESH, "quota_project_id": "lake-proj",
        "token_uri": f"{recorder.url}/token",
    })
    credentials = _built_offline(_client(path), recorder)
    assert isinstance(credentials, user_credentials.Credentials)
    assert credentials.refresh_token == REFRESH
    assert credentials.quota_project_id == "lake-proj"


def test_without_a_file_the_ambient_credentials_are_used(
        tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """No file: google.auth.default() finds gcloud's application-default login, offline."""
    gcloud = tmp_path / "gcloud"
    gcloud.mkdir()
    (gcloud / "application_default_credentials.json").write_text(json.dumps({
        "type": "impersonated_service_account", "delegates": [],
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/"
                                             f"-/serviceAccounts/{EMAIL}:generateAccessToken",
        "source_credentials": {"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "ambient-" + REFRESH,
                               "token_uri": f"{recorder.url}/token"},
    }))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(gcloud))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "lake-proj")
    client = _client(None)
    credentials = _built_offline(client, recorder)
    assert isinstance(credentials, impersonated.Credentials)
    assert credentials.service_account_email == EMAIL
    assert credentials._source_credentials.refresh_token == "ambient-" + REFRESH
    assert client.project == "lake-proj"


def test_the_first_request_fetches_a_token_with_the_storage_scopes(
        tmp_path: Path, recorder: Recorder) -> None:
    """The recorder does see a token request once the client makes one, scoped for storage."""
    path = _service_account_key(tmp_path, recorder)
    client = _client(path)
    assert recorder.seen == []
    # The client's own authorized session, as every storage call uses it.
    response = client._http.get(f"{recorder.url}/probe", timeout=10)
    assert response.status_code == 200
    token_request, probe = recorder.seen
    assert (token_request.method, token_request.path) == ("POST", "/token")
    form = dict(part.split("=", 1) for part in token_request.body.decode().split("&"))
    payload = form["assertion"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == EMAIL
    assert claims["scope"].split() == list(storage.Client.SCOPE)
    assert probe.path == "/probe"
    assert probe.headers["authorization"] == "Bearer recorded-token"


def test_an_external_account_exchanges_its_subject_token_on_first_use(
        tmp_path: Path, recorder: Recorder) -> None:
    """File-sourced federation reads the subject token file and exchanges it at the STS URL."""
    (tmp_path / "subject-token").write_text("a-subject-token")
    info = _external_account(recorder, {"file": str(tmp_path / "subject-token")})
    client = _client(_write(tmp_path, info))
    assert recorder.seen == []
    client._http.get(f"{recorder.url}/probe", timeout=10)
    paths = [seen.path for seen in recorder.seen]
    assert paths == ["/v1/token", f"/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken",
                     "/probe"]
    assert b"subject_token=a-subject-token" in recorder.seen[0].body


# ------------------------------------------------------------------------------- the CLI

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
