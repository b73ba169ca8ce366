"""CloudFormation's side of a custom resource: the event it sends, and a loopback stand-in for
the pre-signed S3 URL its answer is PUT to."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ResponseBucket:
    """Records the PUTs it receives, as S3 would store the answer."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        bucket = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                bucket.received.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/response?X-Amz-Signature=s"

    def __enter__(self) -> ResponseBucket:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def cfn_event(request_type: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/hatchway/abc",
        "RequestId": "req-1",
        "LogicalResourceId": "DnsReconcileNow",
        "ResourceType": "Custom::DnsReconcile",
        "ResourceProperties": {"ServiceToken": "arn:...", "Domain": "t.example.com"},
        **extra,
    }
