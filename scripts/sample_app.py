"""The demo's local app: a page that shows the request it received through the tunnel.

python scripts/sample_app.py PORT     # prints "sample app ready" once it listens
"""

from __future__ import annotations

import html
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        headers = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
            for k, v in self.headers.items()
        )
        body = (
            "<!doctype html><title>Hatchway demo</title>"
            "<h1>Hello from your laptop, through Hatchway</h1>"
            f"<p>{html.escape(self.command)} {html.escape(self.path)}</p>"
            f"<table>{headers}</table>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("sample app ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
