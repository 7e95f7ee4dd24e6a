"""Google Cloud Storage through google-cloud-storage: create-only uploads, errors classified.

Uploads, the start-up check and the probes run with the library's retries off (``retry=None``):
:mod:`wal_bridge.uploader` owns the policy, so that every failure is seen, logged and counted
once. Listings and reads, which only operator commands (``audit``, ``query``, ``schema``) and the
schema store use, keep the library's default retry of idempotent requests.

Not found: the JSON API answers 404 with the reason ``notFound`` both for a missing bucket and
for a missing object (https://cloud.google.com/storage/docs/json_api/v1/status-codes), and
fake-gcs-server says only "Not Found" for both. A 404 of a listing or an upload can only mean the
bucket; a 404 of a read is told apart by listing one object of the bucket (the only permission
the bridge has besides the objects': ``storage.objects.list``). ``STORAGE_EMULATOR_HOST`` points the
client at an emulator with anonymous credentials; otherwise :func:`load_credentials` finds them
the way Application Default Credentials do. This is the one place a storage client is built:
``run``, ``replay``, ``audit``, ``query`` and the demo all reach it through
:func:`wal_bridge.sink.open_sink`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wal_bridge.config import SPECS_BY_NAME, Destination
from wal_bridge.errors import (
    ConfigError,
    DestinationNotFoundError,
    ObjectConflictError,
    ObjectNotFoundError,
    SinkError,
)
from wal_bridge.sink import ObjectInfo, PutResult, check_range, file_crc32c

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud import storage

# google-cloud-storage and google-auth (a third of a second of imports) are imported where they
# are first used, not with this module: ``wal_bridge run`` polls Kafka before the storage client
# exists, and the uploader thread builds it.

TIMEOUT = (10.0, 120.0)  # (connect, read) seconds per request
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
PARQUET_TYPE = "application/vnd.apache.parquet"


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a google-api-core or google-resumable-media error, or None."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def classify(exc: BaseException, what: str) -> SinkError:
    """Wrap a client-library exception in a SinkError that says whether to try again.

    :data:`TRANSIENT_STATUS` (408, 429, 500, 502, 503, 504) and errors without a status
    (connection refused or reset, timeouts, TLS, torn transfers) are transient; other statuses
    and refused or missing credentials are permanent. A 404 becomes
    :class:`~wal_bridge.errors.DestinationNotFoundError`, so call this for a 404 only where it
    can mean nothing but the bucket: a listing or an upload (a read's 404 is told apart first,
    in :meth:`GcsSink._download`). ``what`` starts the message (``"uploading gs://b/k"``).
    """
    from google.auth import exceptions as auth_exc

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
        if status == 404:
            return DestinationNotFoundError(
                f"{what}: HTTP 404: the bucket does not exist: create it (terraform apply) or "
                f"fix DESTINATION ({_short(exc)})")
        hint = {
            401: "the credentials are not valid",
            403: "the service account lacks permission on the bucket "
                 "(roles/storage.objectAdmin)",
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
    import google.auth

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
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

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

    def _url(self, key: str) -> str:
        return f"gs://{self.destination.bucket}/{key}"

    def _list_one(self, what: str, prefix: str | None = None) -> None:
        """List at most one object: the bucket answers, or a SinkError saying why not (a
        DestinationNotFoundError when it does not exist). Needs only storage.objects.list."""
        client = self.client  # outside the try: a credentials ConfigError is not a GCS failure
        try:
            list(client.list_blobs(self.destination.bucket, max_results=1, prefix=prefix,
                                   timeout=TIMEOUT, retry=None))
        except SinkError:
            raise
        except Exception as exc:
            raise classify(exc, what) from exc

    def check(self) -> None:
        """List one object of the prefix: needs only storage.objects.list, which objectAdmin
        grants. Raises SinkError (DestinationNotFoundError for a missing bucket)."""
        self._list_one(f"checking gs://{self.destination.bucket}", self.destination.prefix)

    def put(self, key: str, path: Path) -> PutResult:
        """One create-only upload (``if_generation_match=0``) with a CRC32C check of the
        transfer; on 412, compare with the object there. See :meth:`wal_bridge.sink.Sink.put`."""
        from google.api_core import exceptions as gexc

        blob = self._bucket().blob(key)
        what = f"uploading {self._url(key)}"
        try:
            blob.upload_from_filename(
                str(path), content_type=PARQUET_TYPE, if_generation_match=0,
                checksum="crc32c", retry=None, timeout=TIMEOUT,
            )
        except gexc.PreconditionFailed:  # if_generation_match=0: the key exists
            return self._compare_existing(blob, key, path)
        except SinkError:
            raise
        except Exception as exc:
            if _status(exc) == 412:
                return self._compare_existing(blob, key, path)
            raise classify(exc, what) from exc
        return PutResult.CREATED

    def _compare_existing(self, blob: Any, key: str, path: Path) -> PutResult:
        what = f"reading {self._url(key)}"
        try:
            blob.reload(timeout=TIMEOUT, retry=None)
        except Exception as exc:
            if _status(exc) == 404:  # there at the upload, gone now: the next attempt creates it
                raise SinkError(f"{what}: it was deleted after the upload found it there",
                                transient=True) from exc
            raise classify(exc, what) from exc
        local = file_crc32c(path)
        if blob.crc32c != local:
            raise ObjectConflictError(key, local, blob.crc32c)
        return PutResult.ALREADY_PRESENT

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under ``prefix``, in key order (GCS lists lexicographically), paged."""
        client = self.client
        try:
            for blob in client.list_blobs(self.destination.bucket, prefix=prefix,
                                          timeout=TIMEOUT):
                yield ObjectInfo(blob.name, int(blob.size or 0))
        except Exception as exc:
            raise classify(exc, f"listing {self._url(prefix)}") from exc

    def read(self, key: str) -> bytes:
        """The whole object, its CRC32C checked by the library."""
        return self._download(key)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` in one ranged GET (``Range: bytes=a-b``); a
        start at or past the end (HTTP 416) is ``b""``. See :meth:`wal_bridge.sink.Sink.read_range`.
        """
        check_range(start, length)
        # A zero-length range cannot be asked for; ask for one byte so that a missing object
        # still says so, and return none of it.
        data = self._download(key, start, start + max(length, 1) - 1)
        return data[:length]

    def _download(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        blob = self._bucket().blob(key)
        what = f"reading {self._url(key)}"
        try:
            return bytes(blob.download_as_bytes(start=start, end=end, timeout=TIMEOUT))
        except Exception as exc:
            status = _status(exc)
            if status == 416 and start is not None:
                return b""
            if status == 404:
                self._list_one(what)  # a missing bucket raises here
                raise ObjectNotFoundError(key, f"{what}: no such object") from exc
            raise classify(exc, what) from exc
