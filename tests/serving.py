"""A real `dycoke serve` process for the server tests: started on a free port of 127.0.0.1, its address
read from the line it prints, stopped with SIGTERM; plus the small HTTP helpers the tests share.

Every wait is bounded, so a server that hangs fails its test instead of the suite.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 180.0  # importing, loading the model and binding, on a loaded 2-core machine


class Server:
    def __init__(self, *args: str, env: dict | None = None):
        self.args = ["--port", "0", *args]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dycoke_cli", "serve", *self.args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.stderr: list[str] = []
        self.url = self._wait_for_address()

    def _wait_for_address(self) -> str:
        found = threading.Event()
        url: list[str] = []

        def read() -> None:
            for line in self.process.stderr:
                self.stderr.append(line)
                if " on http://" in line and not url:
                    url.append(line.split(" on ", 1)[1].split()[0])
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(START_TIMEOUT_S) or not url:
            self.process.kill()
            raise AssertionError("the server did not start: " + "".join(self.stderr))
        return url[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def health(self, key: str | None = None) -> dict:
        return request(self, "GET", "/health", key=key)[1]

    def wait_until(self, predicate, timeout_s: float = 60.0, key: str | None = None) -> dict:
        """Poll /health until predicate(health) holds; the last health on success."""
        deadline = time.monotonic() + timeout_s
        while True:
            health = self.health(key)
            if predicate(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"health never satisfied the condition: {health}")
            time.sleep(0.05)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("the server did not stop on SIGTERM") from None


def request(server: Server, method: str, path: str, body=None, key: str | None = None, timeout_s: float = 120.0,
            headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one request; an error status is returned, not raised."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=dict(headers or {}))
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def chat_body(video_url: str, question: str, **fields) -> dict:
    """A chat-completions body: one user message with the video and the question."""
    content = [{"type": "video_url", "video_url": {"url": video_url}}, {"type": "text", "text": question}]
    return {"messages": [{"role": "user", "content": content}], **fields}


def raw_exchange(server: Server, head: bytes, body_parts=(), timeout_s: float = 30.0, pause_s: float = 0.0) -> bytes:
    """Send a raw request (head, then each part) on a socket and read until the server closes it or
    `timeout_s` passes; sending stops as soon as the server has answered (or takes no more)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as sock:
        sock.sendall(head)
        for part in body_parts:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(part)
            except OSError:
                break
            time.sleep(pause_s)
        reply = b""
        try:
            while not _complete(reply) and (chunk := sock.recv(65536)):
                reply += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return reply


def _complete(reply: bytes) -> bool:
    """Whether `reply` holds a whole response with a Content-Length."""
    head, found, body = reply.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(found and lengths and len(body) >= int(lengths[0]))


def status_and_json(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)
