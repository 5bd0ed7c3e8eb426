"""A loopback HTTP proxy that loses answers: the transient failure a retrying client meets.

It forwards every request to the real server; for chosen API paths it then drops the
server's answer and replies 503 instead, a given number of times. The server has done the
work, the client does not know, and MLflow's client retries: exactly the case where a
retried `create_run` makes a second run.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class FlakyProxy:
    def __init__(self, upstream: str, lose: dict[str, int]) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._left = dict(lose)
        self.lost: list[str] = []
        """Paths whose answers were dropped after the server handled them, in order."""
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(*proxy._upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    status, reply = resp.status, resp.getheaders()
                finally:
                    conn.close()
                path = self.path.split("?")[0]
                with proxy._lock:
                    proxy.seen[path] += 1
                    drop = proxy._left.get(path, 0) > 0 and status == 200
                    if drop:
                        proxy._left[path] -= 1
                        proxy.lost.append(path)
                if drop:
                    status, reply, data = 503, [("Content-Type", "text/plain")], b"answer lost"
                self.send_response(status)
                for k, v in reply:
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
