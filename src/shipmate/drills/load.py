"""Bounded HTTP load through a router, with what every request got: for drills and tests.

Called by `shipmate drill rollback` and by end-to-end tests. Talks to loopback only. `Load(port)`
starts `threads` keep-alive clients that ask for `path` (with `?roomId=<room>` over `rooms`
rooms, so that a sticky key has something to stick to) until `stop()`; every answer is kept with
the time it was sent, its status and, when the body is JSON with a "version", that version; a
refused or broken request is a failure. Bounded: `max_requests` ends the run early.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request was sent
    seconds: float
    room: str
    status: int  # 0 for a request that failed without an answer
    version: str
    error: str = ""


class Load:
    def __init__(self, port: int, *, path: str = "/play", threads: int = 4, rooms: int = 40,
                 pause: float = 0.002, max_requests: int = 200_000, host: str = "127.0.0.1") -> None:
        self.port = port
        self.path = path
        self.host = host
        self.rooms = rooms
        self.pause = pause
        self.max_requests = max_requests
        self.answers: list[Answer] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _client(self, n: int) -> None:
        conn: http.client.HTTPConnection | None = None
        i = n
        separator = "&" if "?" in self.path else "?"
        while not self._stop.is_set() and len(self.answers) < self.max_requests:
            room = f"room-{i % self.rooms}"
            i += 1
            began = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                conn.request("GET", f"{self.path}{separator}roomId={room}")
                response = conn.getresponse()
                body = response.read()
                self.answers.append(Answer(began, time.monotonic() - began, room, response.status, _version(body)))
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.answers.append(Answer(began, time.monotonic() - began, room, 0, "",
                                           f"{type(exc).__name__}: {exc}"))
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def in_order(self) -> list[Answer]:
        return sorted(self.answers, key=lambda a: a.sent)

    def failed(self, *, server_errors: bool = True) -> list[Answer]:
        """Requests without an answer, and (with `server_errors`) those answered 5xx."""
        return [a for a in self.answers if a.status == 0 or (server_errors and a.status >= 500)]

    def timeline(self, step: float = 0.25) -> list[tuple[float, int, int]]:
        """(seconds since start, requests, failed requests) per `step` seconds."""
        buckets: dict[int, list[int]] = {}
        for a in self.answers:
            slot = buckets.setdefault(int((a.sent - self.started) / step), [0, 0])
            slot[0] += 1
            slot[1] += int(a.status == 0 or a.status >= 500)
        return [(k * step, v[0], v[1]) for k, v in sorted(buckets.items())]


def _version(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("version", "")) if isinstance(data, dict) else ""
