"""The benchmark's backend app: fixed-size GETs and a POST sink over HTTP/1.1 keep-alive.

python bench/backend.py PORT      # prints "backend ready" once it listens on 127.0.0.1
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PAYLOADS: dict[int, bytes] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # quiet: hey makes thousands
        pass

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        size = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/bytes/") else 0
        if size not in _PAYLOADS:
            _PAYLOADS[size] = bytes(i % 251 for i in range(size))
        self._send(_PAYLOADS[size])

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(b"ok")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("backend ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
