"""Google Cloud Storage through google-cloud-storage: create-only uploads, errors classified.

The library's own retries are off (``retry=None``): :mod:`wal_bridge.uploader` owns the policy,
so that every failure is seen, logged and counted once. ``STORAGE_EMULATOR_HOST`` points the
client at an emulator with anonymous credentials; otherwise :func:`load_credentials` finds them
the way Application Default Credentials do. This is the one place a storage client is built:
``run``, ``replay``, ``audit``, ``query`` and the demo all reach it through
:func:`wal_bridge.sink.open_sink`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage

from wal_bridge.config import SPECS_BY_NAME, Destination
from wal_bridge.errors import ConfigError, ObjectConflictError, SinkError
from wal_bridge.sink import ObjectInfo, PutResult, file_crc32c

TIMEOUT = (10.0, 120.0)  # (connect, read) seconds per request
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
PARQUET_TYPE = "application/vnd.apache.parquet"


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def classify(exc: BaseException, what: str) -> SinkError:
    """Wrap a client-library exception in a SinkError that says whether to try again."""
    status = _status(exc)
    if isinstance(exc, auth_exc.RefreshError) and not getattr(exc, "retryable", False):
        return SinkError(f"{what}: credentials were refused ({exc}); check "
                         "GOOGLE_APPLICATION_CREDENTIALS or the workload identity", transient=False)
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return SinkError(f"{what}: no Google credentials found; set "
                         "GOOGLE_APPLICATION_CREDENTIALS or use workload identity", transient=False)
    if status is not None:
        if status in TRANSIENT_STATUS:
            return SinkError(f"{what}: HTTP {status} ({_short(exc)})", transient=True)
        hint = {
            401: "the credentials are not valid",
            403: "the service account lacks permission on the bucket "
                 "(roles/storage.objectAdmin)",
            404: "the bucket does not exist: create it (terraform apply) or fix DESTINATION",
        }.get(status, "the request was refused")
        return SinkError(f"{what}: HTTP {status}: {hint} ({_short(exc)})", transient=False)
    # Connection refused or reset, timeouts, TLS errors, torn responses, checksum mismatches of
    # a transfer: all of these can succeed on a later attempt.
    return SinkError(f"{what}: {type(exc).__name__}: {_short(exc)}", transient=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def load_credentials(path: Path | None) -> tuple[Credentials, str | None]:
    """Google credentials found the way Application Default Credentials find them.

    ``path`` (``GOOGLE_APPLICATION_CREDENTIALS``) is read by
    ``google.auth.load_credentials_from_file``, so every type google-auth knows is accepted:
    ``service_account`` keys, ``impersonated_service_account`` (what ``gcloud auth
    application-default login --impersonate-service-account`` writes), ``external_account``
    (workload identity federation: file, URL, executable or AWS sourced),
    ``external_account_authorized_user`` and ``authorized_user``. Without a path,
    ``google.auth.default()`` finds the ambient credentials (gcloud's login, the metadata
    server of GKE workload identity, Compute Engine or Cloud Run).

    Nothing here asks for scopes, as ``google.auth.default()`` loads the variable's file: the
    storage client scopes the credentials itself (``with_scopes_if_required`` with
    ``storage.Client.SCOPE``, the devstorage scopes). Scoped at load, an ``external_account``
    would fetch a token and ask Cloud Resource Manager for its project right away; unscoped,
    loading stays offline and the first token is fetched by the first request.

    Returns the credentials and the project the file names (None when it names none; the
    bridge only touches objects of an existing bucket, which needs no project). Raises
    :class:`~wal_bridge.errors.ConfigError` (exit code 2) naming the variable when google-auth
    cannot load the file; ``google.auth.exceptions.DefaultCredentialsError`` when ``path`` is
    None and no ambient credentials exist.
    """
    if path is None:
        credentials, project = google.auth.default()
        return credentials, project
    try:
        with warnings.catch_warnings():
            # The generic loader warns that it trusts the file's type; so does
            # google.auth.default(), which silences the same warning. The operator chose the file.
            warnings.simplefilter("ignore", DeprecationWarning)
            credentials, project = google.auth.load_credentials_from_file(str(path))
    except Exception as exc:
        # Loading is local parsing, and google-auth lets AttributeError or TypeError through for
        # some shapes (a JSON list, an impersonation file without source_credentials): whatever
        # fails here is the file's fault, and no retry mends it.
        raise credentials_error(path, exc) from exc
    return credentials, project


def credentials_error(path: Path, exc: BaseException) -> ConfigError:
    """One line naming the variable, what google-auth said about the file, and what to do."""
    spec = SPECS_BY_NAME["google_credentials"]
    # google-auth's errors carry (message, cause); str() of such an exception is a tuple.
    parts = [str(arg) for arg in exc.args if str(arg)] or [type(exc).__name__]
    said = " ".join(" ".join(parts).split())
    return ConfigError(
        f"{spec.env} ({spec.flag})={str(path)!r}: google-auth cannot load it ({said}); point it "
        "at a service account key or a credential configuration (impersonated service account, "
        "workload identity federation, authorized user), or unset it to use the ambient "
        "credentials"
    )


class GcsSink:
    """A bucket and prefix of Google Cloud Storage behind the Sink interface (create-only puts)."""

    def __init__(
        self,
        destination: Destination,
        credentials_file: Path | None = None,
        emulator: str | None = None,
    ) -> None:
        self.destination = destination
        self._emulator = emulator
        self._credentials_file = credentials_file
        self._client: storage.Client | None = None

    @property
    def client(self) -> storage.Client:
        """The storage client, built on first use; building it fetches no token.

        Raises ConfigError (exit code 2) for a credentials file google-auth cannot load, and a
        permanent SinkError when there is no file and no ambient credentials.
        """
        if self._client is None:
            try:
                self._client = self._make_client()
            except ConfigError:
                raise
            except Exception as exc:
                raise classify(exc, "connecting to GCS") from exc
        return self._client

    def _make_client(self) -> storage.Client:
        if self._emulator:
            return storage.Client(
                project="wal-bridge",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self._emulator},
            )
        credentials, project = load_credentials(self._credentials_file)
        try:
            # An explicit project (None included) keeps the client from looking one up.
            return storage.Client(project=project, credentials=credentials)
        except ValueError as exc:  # e.g. a universe_domain in the file other than googleapis.com
            if self._credentials_file is None:
                raise
            raise credentials_error(self._credentials_file, exc) from exc

    def _bucket(self) -> Any:
        return self.client.bucket(self.destination.bucket)

    def check(self) -> None:
        """List one object: needs only storage.objects.list, which objectAdmin grants."""
        what = f"checking gs://{self.destination.bucket}"
        client = self.client  # outside the try: a credentials ConfigError is not a GCS failure
        try:
            blobs = client.list_blobs(self.destination.bucket, max_results=1,
                                      prefix=self.destination.prefix, timeout=TIMEOUT,
                                      retry=None)
            list(blobs)
        except SinkError:
            raise
        except Exception as exc:
            raise classify(exc, what) from exc

    def put(self, key: str, path: Path) -> PutResult:
        blob = self._bucket().blob(key)
        what = f"uploading gs://{self.destination.bucket}/{key}"
        try:
            blob.upload_from_filename(
                str(path), content_type=PARQUET_TYPE, if_generation_match=0,
                checksum="crc32c", retry=None, timeout=TIMEOUT,
            )
        except gexc.PreconditionFailed:
            return self._compare_existing(blob, key, path)
        except SinkError:
            raise
        except Exception as exc:
            if _status(exc) == 412:
                return self._compare_existing(blob, key, path)
            raise classify(exc, what) from exc
        return PutResult.CREATED

    def _compare_existing(self, blob: Any, key: str, path: Path) -> PutResult:
        try:
            blob.reload(timeout=TIMEOUT, retry=None)
        except Exception as exc:
            raise classify(exc, f"reading gs://{self.destination.bucket}/{key}") from exc
        local = file_crc32c(path)
        if blob.crc32c != local:
            raise ObjectConflictError(key, local, blob.crc32c)
        return PutResult.ALREADY_PRESENT

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        client = self.client
        try:
            for blob in client.list_blobs(self.destination.bucket, prefix=prefix,
                                          timeout=TIMEOUT):
                yield ObjectInfo(blob.name, int(blob.size or 0))
        except Exception as exc:
            raise classify(exc, f"listing gs://{self.destination.bucket}/{prefix}") from exc

    def read(self, key: str) -> bytes:
        blob = self._bucket().blob(key)
        try:
            return bytes(blob.download_as_bytes(timeout=TIMEOUT))
        except Exception as exc:
            raise classify(exc, f"reading gs://{self.destination.bucket}/{key}") from exc
