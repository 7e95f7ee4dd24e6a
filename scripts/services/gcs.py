"""fake-gcs-server as the GCS emulator, built from its Go module and run on a free loopback port.

Pinned to v1.56.1 after checking the precondition the uploader relies on: with
google-cloud-storage 3.17 a second create-only upload (``if_generation_match=0``) of an existing
name gets 412 Precondition Failed, for a multipart upload (objects of at most 8 MiB; the client
picks multipart for those even when ``chunk_size`` is set) and for a resumable upload (larger
objects, or a stream of unknown size), where the 412 comes on the final PUT and the stored
object is left unchanged. ``tests/integration/test_harness_smoke.py`` keeps that checked.

The emulator answers a resumable upload's first request with a ``Location`` built from its
external URL, so the data of a resumable upload goes to that URL even when the first request
went through a proxy. ``set_external_url`` moves it (for instance onto a Toxiproxy listener).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from .cache import go_binary
from .errors import ServiceError
from .procs import LOOPBACK, LoopbackServer

PACKAGE = "github.com/fsouza/fake-gcs-server"
VERSION = "v1.56.1"


def provision(root: Path) -> Path:
    """The emulator binary in the cache, built with `go install` on first use."""
    return go_binary(root, PACKAGE, VERSION, "fake-gcs-server", "fake-gcs-server")


def _request(method: str, url: str, body: dict[str, object] | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        payload: bytes = response.read()
        return payload


def emulator_ready(url: str) -> bool:
    """Whether the emulator at ``url`` answers its JSON API."""
    try:
        _request("GET", f"{url}/storage/v1/b")
    except (urllib.error.URLError, OSError):
        return False
    return True


def create_bucket(url: str, name: str, project: str = "test") -> None:
    """Create ``name`` through the JSON API; an existing bucket is fine."""
    try:
        _request("POST", f"{url}/storage/v1/b?project={project}", {"name": name})
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            detail = exc.read().decode(errors="replace")
            raise ServiceError(f"creating bucket {name!r} failed: {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceError(f"creating bucket {name!r}: emulator at {url}: {exc}") from exc


class Gcs(Protocol):
    """What tests use of the emulator, whether the harness started it or not."""

    url: str
    managed: bool

    def create_bucket(self, name: str) -> None: ...


class ExternalGcs:
    """An emulator named by the environment (``WAL_BRIDGE_TEST_GCS``)."""

    managed = False

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def create_bucket(self, name: str) -> None:
        create_bucket(self.url, name)

    def alive(self) -> bool:
        return emulator_ready(self.url)


class FakeGcs(LoopbackServer):
    """A fake-gcs-server process with an in-memory backend, owned by the harness."""

    name = "fake-gcs-server"

    def command(self, binary: Path) -> list[str]:
        return [
            str(binary),
            "-scheme", "http",
            "-host", LOOPBACK,
            "-port", str(self.port),
            "-backend", "memory",
            "-public-host", f"{LOOPBACK}:{self.port}",
            "-external-url", self.url,
            "-log-level", "warn",
        ]  # fmt: skip

    def ready(self) -> bool:
        return emulator_ready(self.url)

    def create_bucket(self, name: str) -> None:
        create_bucket(self.url, name)

    def set_external_url(self, url: str | None) -> None:
        """Where resumable upload sessions point (``None``: back to the emulator itself)."""
        _request("PUT", f"{self.url}/_internal/config", {"externalUrl": url or self.url})
