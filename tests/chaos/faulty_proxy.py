"""A small HTTP proxy that answers chosen requests with an error status and forwards the rest.

Toxiproxy works on TCP: it can cut, slow or slice a connection, but it cannot make the GCS
emulator answer ``429`` or ``503``. This proxy can. It listens on 127.0.0.1, forwards every
request to the upstream (the emulator) unchanged, and answers the matching requests it is told
to fail with a GCS-style JSON error instead, without forwarding them::

    with FaultyProxy(gcs.url, plan=[503, 503, None, 429], match="POST /upload/") as proxy:
        ...  # STORAGE_EMULATOR_HOST=proxy.url

``plan`` is consumed one entry per matching request: a status fails that request, ``None``
forwards it, and a negative status forwards it and then answers the error anyway (the upload
happened, the client is told it failed: what a response lost on the way back looks like).
Past the end of the plan every request is forwarded. Standard library only.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"}
REASONS = {429: "rateLimitExceeded", 500: "backendError", 502: "badGateway",
           503: "backendError", 504: "gatewayTimeout"}


class FaultyProxy:
    """Forward HTTP to ``upstream``; fail the matching requests as ``plan`` says."""

    def __init__(self, upstream: str, plan: Iterable[int | None], match: str = "") -> None:
        target = urlparse(upstream if "://" in upstream else f"http://{upstream}")
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.match = match  # "METHOD /path-prefix", "METHOD" or "/path-prefix"; "" matches all
        self.plan = list(plan)
        self.matched = 0
        self.failed: list[tuple[int, str]] = []  # (status, request line) of each failure
        self.forwarded = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="faulty-proxy")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _matches(self, method: str, path: str) -> bool:
        want_method, _, want_path = self.match.partition(" ")
        if want_method.startswith("/"):
            want_method, want_path = "", want_method
        return (not want_method or method == want_method) and path.startswith(want_path)

    def _decide(self, method: str, path: str) -> int | None:
        """The status to fail this request with (negative: after forwarding it), or None."""
        if not self._matches(method, path):
            return None
        with self._lock:
            index = self.matched
            self.matched += 1
            status = self.plan[index] if index < len(self.plan) else None
            if status is not None:
                self.failed.append((abs(status), f"{method} {path}"))
            return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads ``failed`` and ``forwarded`` instead."""

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int) -> None:
                error = {"error": {"code": status, "message": f"injected {status}",
                                   "errors": [{"reason": REASONS.get(status, "injected"),
                                               "message": f"injected {status}"}]}}
                headers = [("Content-Type", "application/json")]
                if status == 429:
                    headers.append(("Retry-After", "1"))
                self._reply(status, headers, json.dumps(error).encode())

            def _handle(self) -> None:
                body = self._body()
                status = proxy._decide(self.command, self.path)
                if status is not None and status > 0:
                    self._error(status)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    forward = {k: v for k, v in self.headers.items()
                               if k.lower() not in HOP_BY_HOP}
                    forward["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=forward)
                    response = upstream.getresponse()
                    payload = response.read()
                    with proxy._lock:
                        proxy.forwarded += 1
                finally:
                    upstream.close()
                if status is not None:
                    self._error(-status)
                    return
                self._reply(response.status, response.getheaders(), payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return Handler
