"""The demo's local app: a page that shows the request it received through the tunnel, and an
echo of any POST body, so that the demo can show a request with a body going both ways.

python scripts/sample_app.py PORT     # prints "sample app ready" once it listens
"""

from __future__ import annotations

import html
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_ECHO_BYTES = 1024 * 1024
"""Largest POST body echoed back; a larger one is refused with 413."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    def _page(self) -> bytes:
        headers = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
            for k, v in self.headers.items()
        )
        return (
            "<!doctype html><title>Hatchway demo</title>"
            "<h1>Hello from your laptop, through Hatchway</h1>"
            f"<p>{html.escape(self.command)} {html.escape(self.path)}</p>"
            f"<table>{headers}</table>"
        ).encode()

    def _answer(self, status: int, content_type: str, body: bytes, send_body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200, "text/html; charset=utf-8", self._page())

    def do_HEAD(self) -> None:
        self._answer(200, "text/html; charset=utf-8", self._page(), send_body=False)

    def do_POST(self) -> None:
        """Echoes the body with its content type, as a webhook receiver's test double would."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_ECHO_BYTES:
            self.close_connection = True
            self._answer(413, "text/plain; charset=utf-8", b"the sample app echoes up to 1 MiB\n")
            return
        body = self.rfile.read(length)
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        self._answer(200, content_type, body)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("sample app ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
