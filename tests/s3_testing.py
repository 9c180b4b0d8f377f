"""S3 for tests: a moto server on 127.0.0.1, and a loopback HTTP proxy in front of it that fails chosen requests,
for any S3 client (s3fs, DVC, MLflow/boto3).

Faults: HTTP 500 InternalError, 503 ServiceUnavailable, 503 SlowDown, and a connection reset (RST, no response).
`every=N` fails every Nth forwarded request, cycling through `kinds`; `persistent=True` fails every request whose
method is in `methods` (e.g. all uploads).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
from dataclasses import dataclass, field
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[str, int]]:
    """An in-process moto S3 server on a free loopback port: yields (host, port), stopped on exit."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()

ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
}


@contextlib.contextmanager
def moto_with_bucket(bucket: str, retries=None) -> Iterator[tuple[str, int]]:
    """A moto server with `bucket` created, and the AWS_* credentials and endpoint set for the block."""
    import pytest

    from k2core.storage.root import root_filesystem

    with pytest.MonkeyPatch.context() as patch, moto_server() as (host, port):
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            patch.setenv(key, value)
        root_filesystem(f"s3://{bucket}", retries)[0].mkdir(bucket)
        yield host, port


@dataclass
class FaultPlan:
    every: int = 0  # 0: no periodic faults
    kinds: tuple[str, ...] = ("500", "503", "slowdown", "reset")
    persistent: bool = False
    methods: tuple[str, ...] = ("PUT", "POST")
    requests: int = 0
    faults: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, method: str) -> str | None:
        with self.lock:
            self.requests += 1
            if self.persistent and method in self.methods:
                kind = self.kinds[len(self.faults) % len(self.kinds)]
            elif self.every and self.requests % self.every == 0:
                kind = self.kinds[len(self.faults) % len(self.kinds)]
            else:
                return None
            self.faults.append(kind)
            return kind


class FaultProxy:
    """`with FaultProxy(upstream_port) as proxy:` -> `proxy.url`; `proxy.plan` is changed between calls."""

    def __init__(self, upstream_host: str, upstream_port: int, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                kind = proxy.plan.next_fault(self.command)
                if kind == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind is not None:
                    status, code, message = ERRORS[kind]
                    payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                               f"<Message>{message}</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(upstream_host, upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                head = self.command == "HEAD"  # keeps the object's Content-Length; no body follows
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "server", "date") and (
                            head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
