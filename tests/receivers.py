"""Real alert receivers on 127.0.0.1 for the tests: an HTTP server standing in for Slack and webhooks, and an
SMTP server (aiosmtpd). Each records what it received."""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


class HttpReceiver:
    """POSTs to any path are recorded as (path, JSON body); `status` sets the HTTP status it answers."""

    def __init__(self, status: int = 200):
        self.received: list[tuple[str, dict]] = []
        self.status = status
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.received.append((self.path, json.loads(body or b"{}")))
                self.send_response(owner.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, kind: str | None = None) -> list[dict]:
        return [b for _, b in self.received if kind is None or b.get("kind") == kind]


class _Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class SmtpReceiver:
    """An SMTP server on 127.0.0.1; `messages` holds the email.message.Message objects it received."""

    def __init__(self):
        self.box = _Mailbox()
        self.controller = Controller(self.box, hostname="127.0.0.1", port=free_port())

    @property
    def messages(self):
        return self.box.messages

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.controller.port}"

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: a channel that is down."""
    return f"http://127.0.0.1:{free_port()}/services/T000/B000/s3cr3t-token"
