"""Chromium's DevTools channel, for this process only: Chromium talks over a pipe
(--remote-debugging-pipe: it reads commands on its fd 3 and writes on its fd 4, each JSON message
ended by a NUL byte), never a TCP port another local user could drive. Playwright (through
Crawl4AI) can only attach over a WebSocket, so a WebSocket endpoint on 127.0.0.1 forwards one
session to the pipe; its path holds a random token that only this process knows, and a
connection without it is refused.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PROBE_ID = 2_000_000_000  # Playwright numbers its commands from 1; this reply is ours
_MAX_HEADER_BYTES = 16384
# One DevTools message (a page's HTML, a screenshot) larger than this ends the session.
MAX_MESSAGE_BYTES = 256 * 2**20


class MessageTooLarge(ValueError):
    """A DevTools message over MAX_MESSAGE_BYTES."""


class DevToolsPipe:
    """The two pipes. The child's ends are given to /bin/sh as its stdin and stdout, and
    `shell_prefix` moves them to fds 3 and 4 of the command it runs (a preexec function would be
    unsafe with threads running; sh's redirections only take single-digit fds)."""

    def __init__(self) -> None:
        self._commands_in, self._commands_out = os.pipe()  # Chromium reads _commands_in
        self._replies_in, self._replies_out = os.pipe()  # Chromium writes _replies_out
        self._buffer = bytearray()
        self._scanned = 0  # the buffer's bytes already searched for the NUL ending a message

    @property
    def child_stdin(self) -> int:
        return self._commands_in

    @property
    def child_stdout(self) -> int:
        return self._replies_out

    @staticmethod
    def shell_prefix() -> list[str]:
        return ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null']

    def close_child_ends(self) -> None:
        for fd in (self._commands_in, self._replies_out):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self.close_child_ends()
        for fd in (self._commands_out, self._replies_in):
            with contextlib.suppress(OSError):
                os.close(fd)

    def send(self, message: bytes) -> None:
        view = memoryview(message + b"\0")
        while view:
            view = view[os.write(self._commands_out, view) :]

    def receive(self, timeout: float | None = None) -> bytes | None:
        """The next message; None at end of file, or when `timeout` passes first;
        MessageTooLarge past MAX_MESSAGE_BYTES. Only new bytes are searched for its end."""
        while (end := self._buffer.find(b"\0", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            if self._scanned > MAX_MESSAGE_BYTES:
                raise MessageTooLarge(
                    f"a DevTools message from Chromium is larger than {MAX_MESSAGE_BYTES} bytes"
                )
            ready, _, _ = select.select([self._replies_in], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._replies_in, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        message = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        return message

    def probe(self, deadline: float, alive: Callable[[], bool]) -> bool:
        """Whether Chromium answers on the pipe before `deadline` (False once it is dead)."""
        try:
            self.send(json.dumps({"id": _PROBE_ID, "method": "Browser.getVersion"}).encode())
        except BrokenPipeError:  # it exited before reading
            return False
        while time.monotonic() < deadline and alive():
            message = self.receive(timeout=0.1)
            if message is not None and json.loads(message).get("id") == _PROBE_ID:
                return True
        return False


class DevToolsBridge:
    """One WebSocket session on 127.0.0.1, at a path with a secret token, forwarded to `pipe`."""

    def __init__(self, pipe: DevToolsPipe) -> None:
        self._pipe = pipe
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._path = f"/devtools/browser/{secrets.token_urlsafe(32)}"
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}{self._path}"
        self._client: socket.socket | None = None
        self._claimed = False  # the one session's slot, taken under _claim_lock
        self._claim_lock = threading.Lock()
        self._send_lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._pipe_to_client, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ValueError):
            conn.settimeout(10)
            path, key = _read_handshake(conn)
            if key is None or not self._claim(path):
                # Without the token, or a second session: nothing reaches the browser.
                log.debug("web: refused a DevTools connection to %s", path[:20])
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            conn.settimeout(None)
            self._client = conn
            self._client_to_pipe(conn)

    def _claim(self, path: str) -> bool:
        """Whether `path` holds the token and the session's slot was free (it is then taken:
        two connections with the token never both pass)."""
        if not secrets.compare_digest(path.encode(), self._path.encode()):
            return False
        with self._claim_lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def _client_to_pipe(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        message = b""
        while True:
            opcode, payload, final = _read_frame(reader)
            if opcode == 8:  # close
                self._send_frame(8, payload[:2])
                return
            if opcode == 9:  # ping
                self._send_frame(10, payload)
            elif opcode in (0, 1, 2):
                message += payload
                if len(message) > MAX_MESSAGE_BYTES:
                    raise MessageTooLarge(
                        f"a DevTools message is larger than {MAX_MESSAGE_BYTES} bytes"
                    )
                if final:
                    self._pipe.send(message)
                    message = b""

    def _pipe_to_client(self) -> None:
        # Read to the end even with no client: a full pipe would stall the browser.
        with contextlib.suppress(OSError, ValueError):
            try:
                while (message := self._pipe.receive()) is not None:
                    if self._client is not None:
                        with contextlib.suppress(OSError):
                            self._send_frame(1, message)
            except MessageTooLarge as exc:
                log.info("web: %s: the DevTools session ends", exc)
        if self._client is not None:  # the browser is gone: so is the session
            with contextlib.suppress(OSError):
                self._send_frame(8, struct.pack("!H", 1001))
                self._client.shutdown(socket.SHUT_RDWR)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        assert self._client is not None
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        with self._send_lock:
            self._client.sendall(head + payload)


def _read_handshake(conn: socket.socket) -> tuple[str, str | None]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk or len(data) > _MAX_HEADER_BYTES:
            raise ValueError("no complete WebSocket handshake")
        data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    path = parts[1] if len(parts) == 3 and parts[0] == "GET" else ""
    return path, headers.get("sec-websocket-key")


def _read_frame(reader: object) -> tuple[int, bytes, bool]:
    read = reader.read  # type: ignore[attr-defined]

    def exactly(n: int) -> bytes:
        data: bytes = read(n)
        if len(data) != n:
            raise OSError("the DevTools client closed the connection")
        return data

    first, second = exactly(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", exactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", exactly(8))[0]
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"a DevTools frame is larger than {MAX_MESSAGE_BYTES} bytes")
    mask = exactly(4) if second & 0x80 else b""
    payload = exactly(size)
    if mask:
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
    return first & 0x0F, payload, bool(first & 0x80)
