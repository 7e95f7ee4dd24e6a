"""Toxiproxy v2.12.0: a TCP proxy whose connections a test can cut, slow or reset.

The server binary is the module's ``cmd/server`` package (there is no ``cmd/toxiproxy-server``
package; the release archives only rename it), kept in the cache as
``bin/toxiproxy-server-v2.12.0``. ``ToxiproxyClient`` covers the HTTP API with urllib:
proxies (create, delete, enable, disable) and toxics (add, remove), plus ``reset``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import go_binary
from .errors import ServiceError
from .procs import LOOPBACK, LoopbackServer

PACKAGE = "github.com/Shopify/toxiproxy/v2/cmd/server"
VERSION = "v2.12.0"


def provision(root: Path) -> Path:
    """The Toxiproxy server binary in the cache, built with `go install` on first use."""
    return go_binary(root, PACKAGE, VERSION, "server", "toxiproxy-server")


@dataclass(frozen=True)
class Proxy:
    """A proxy as Toxiproxy reports it; ``listen`` is the actual ``host:port``."""

    name: str
    listen: str
    upstream: str
    enabled: bool

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def url(self) -> str:
        """``http://listen``, for HTTP upstreams such as the GCS emulator."""
        return f"http://{self.listen}"


class ToxiproxyClient:
    """The Toxiproxy HTTP API; proxies created here are deleted again by ``cleanup``."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._created: set[str] = set()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ServiceError(f"toxiproxy {method} {path}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError(f"toxiproxy at {self.url}: {exc}") from exc
        return json.loads(payload) if payload.strip() else None

    def version(self) -> str:
        request = urllib.request.Request(f"{self.url}/version")
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode().strip())

    def alive(self) -> bool:
        try:
            self.version()
        except (urllib.error.URLError, OSError):
            return False
        return True

    @staticmethod
    def _proxy(data: dict[str, Any]) -> Proxy:
        return Proxy(data["name"], data["listen"], data["upstream"], bool(data["enabled"]))

    def create_proxy(self, name: str, upstream: str, listen: str = f"{LOOPBACK}:0") -> Proxy:
        """Proxy ``listen`` to ``upstream`` (``host:port``); port 0 lets Toxiproxy choose."""
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        proxy = self._proxy(self._call("POST", "/proxies", body))
        self._created.add(name)
        return proxy

    def get_proxy(self, name: str) -> Proxy:
        return self._proxy(self._call("GET", f"/proxies/{name}"))

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")
        self._created.discard(name)

    def disable(self, name: str) -> None:
        """Cut: close every connection through the proxy and refuse new ones."""
        self._call("POST", f"/proxies/{name}", {"enabled": False})

    def enable(self, name: str) -> None:
        self._call("POST", f"/proxies/{name}", {"enabled": True})

    def add_toxic(
        self,
        proxy: str,
        toxic_type: str,
        attributes: dict[str, Any] | None = None,
        *,
        stream: str = "downstream",
        name: str | None = None,
        toxicity: float = 1.0,
    ) -> str:
        """Add a toxic (``latency``, ``timeout``, ``reset_peer``, ``bandwidth``, ...); its name."""
        toxic_name = name or f"{toxic_type}_{stream}"
        body = {
            "name": toxic_name,
            "type": toxic_type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes or {},
        }
        self._call("POST", f"/proxies/{proxy}/toxics", body)
        return toxic_name

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic}")

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    def cleanup(self) -> None:
        """Reset, and delete the proxies this client created."""
        self.reset()
        for name in sorted(self._created):
            self.delete_proxy(name)


class ToxiproxyServer(LoopbackServer):
    """A toxiproxy-server process owned by the harness."""

    name = "toxiproxy-server"

    def command(self, binary: Path) -> list[str]:
        return [str(binary), "-host", LOOPBACK, "-port", str(self.port)]

    def ready(self) -> bool:
        return ToxiproxyClient(self.url).alive()
