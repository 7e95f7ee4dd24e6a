"""Google Cloud Storage through google-cloud-storage: create-only uploads, errors classified.

The library's own retries are off (``retry=None``): :mod:`wal_bridge.uploader` owns the policy,
so that every failure is seen, logged and counted once. ``STORAGE_EMULATOR_HOST`` points the
client at an emulator with anonymous credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from wal_bridge.config import Destination
from wal_bridge.errors import ObjectConflictError, SinkError
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


class GcsSink:
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
        if self._client is None:
            try:
                self._client = self._make_client()
            except (ValueError, KeyError, OSError) as exc:
                # An unreadable or malformed key file: no retry will fix it.
                raise SinkError(
                    f"GOOGLE_APPLICATION_CREDENTIALS={self._credentials_file}: not a usable "
                    f"service account key ({type(exc).__name__}: {_short(exc)}); fix the file "
                    "or unset the variable to use workload identity", transient=False,
                ) from exc
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
        if self._credentials_file:
            return storage.Client.from_service_account_json(str(self._credentials_file))
        return storage.Client()

    def _bucket(self) -> Any:
        return self.client.bucket(self.destination.bucket)

    def check(self) -> None:
        """List one object: needs only storage.objects.list, which objectAdmin grants."""
        what = f"checking gs://{self.destination.bucket}"
        try:
            blobs = self.client.list_blobs(self.destination.bucket, max_results=1,
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
        try:
            for blob in self.client.list_blobs(self.destination.bucket, prefix=prefix,
                                               timeout=TIMEOUT):
                yield ObjectInfo(blob.name, int(blob.size or 0))
        except Exception as exc:
            raise classify(exc, f"listing gs://{self.destination.bucket}/{prefix}") from exc

    def read(self, key: str) -> bytes:
        try:
            return bytes(self._bucket().blob(key).download_as_bytes(timeout=TIMEOUT))
        except Exception as exc:
            raise classify(exc, f"reading gs://{self.destination.bucket}/{key}") from exc
