"""A webhook receiver for the tests: a threaded http.server on 127.0.0.1 that verifies every
request with the `standardwebhooks` library (what a team's own receiver would use, so passing it
shows the signatures interoperate) and keeps the events it accepted."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError


class Receiver:
    """A webhook endpoint on 127.0.0.1:`port`, started and stopped at will. Each request is
    verified with `secret`; `answers` (a list of statuses, taken one per request; empty: 204)
    lets it fail for a while."""

    def __init__(self, port: int, secret: str):
        self.port, self.secret = port, secret
        self.url = f"http://127.0.0.1:{port}/hooks/replayft"
        self.received: list[dict[str, Any]] = []  # verified events, in arrival order
        self.headers: list[dict[str, str]] = []
        self.refused: list[str] = []  # why a request failed verification
        self.answers: list[int] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    event = Verifier(receiver.secret).verify(body, headers)
                except WebhookVerificationError as exc:
                    with receiver.lock:
                        receiver.refused.append(str(exc))
                    status = 400
                else:
                    with receiver.lock:
                        status = receiver.answers.pop(0) if receiver.answers else 204
                        if 200 <= status < 300:
                            receiver.received.append(event)
                            receiver.headers.append(headers)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the senders' parallel posts, none refused by the backlog

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def ids(self) -> Counter:
        with self.lock:
            return Counter(e["id"] for e in self.received)
