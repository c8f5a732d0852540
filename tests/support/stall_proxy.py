"""A TCP proxy that can freeze an HTTP upload half-way, to kill its sender mid-upload.

``StallProxy(target_port)`` forwards every connection on loopback to the target. Once
``arm()``ed, the next client chunk that starts an HTTP ``PUT`` is cut: its first ``keep`` bytes
(the request line, headers and the start of the body) go through, the rest and everything after
it on that connection is held back; ``stalled`` is set. ``release()`` closes the held
connections (their server side sees a truncated request) and forwards normally again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class StallProxy:
    target_port: int
    keep: int = 600
    bind: str = "127.0.0.1"  # 0.0.0.0: reachable from the local cluster's pods too
    port: int = 0
    stalled: threading.Event = field(default_factory=threading.Event)
    _armed: bool = False
    _held: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    stalled_request: bytes = b""  # the request line of the PUT that was frozen

    def start(self) -> StallProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.bind, 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self) -> None:
        with self._lock:
            self.stalled.clear()
            self._armed = True

    def release(self) -> None:
        with self._lock:
            self._armed = False
            held, self._held = self._held, []
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()

    def stop(self) -> None:
        self.release()
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream and self._stall(data, source, sink):
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _stall(self, data: bytes, source: socket.socket, sink: socket.socket) -> bool:
        with self._lock:
            if not (self._armed and data.startswith(b"PUT ")):
                return False
            self._armed = False
            self._held += [source, sink]
        sink.sendall(data[: self.keep])
        self.stalled_request = data.split(b"\r\n", 1)[0]
        self.stalled.set()
        return True
