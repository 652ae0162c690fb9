"""Long-lived subscriptions: a watch of the state (server-sent events) and a listen to the
group (WebSocket).

Each has a reader thread that puts what arrives in a queue, so that iterating blocks on the
queue alone, :meth:`Subscription.get` can wait with a timeout, and :meth:`Subscription.close`
from any thread ends both the iteration and the connection.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Dict, Generic, Iterator, Optional, TypeVar

import websocket

from ._http import Transport, shutdown
from .errors import ConsortError, DaemonUnreachable
from .model import Change, Event, Lagged, Pulse, WatchEvent

T = TypeVar("T")
S = TypeVar("S", bound="Subscription[Any]")


class _End:
    """What the reader thread leaves in the queue when it stops: why, if not closed."""

    def __init__(self, error: Optional[BaseException]) -> None:
        self.error = error


class Subscription(Generic[T]):
    """Items arriving from the daemon, in order. Iterate it, or :meth:`get` one at a time;
    :meth:`close` it (or use it as a context manager) when done.

    Iteration ends after :meth:`close`; if the daemon goes away, the next read raises
    :class:`~consort.DaemonUnreachable`.
    """

    def __init__(self, name: str) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._closed = threading.Event()
        self._ended: Optional[_End] = None
        self._thread = threading.Thread(target=self._pump, name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    # Implemented by each kind: read items and pass them to `self._put` until the stream ends.
    def _read(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _put(self, item: T) -> None:
        self._queue.put(item)

    def _pump(self) -> None:
        error: Optional[BaseException] = None
        try:
            self._read()
            error = DaemonUnreachable("the daemon closed the connection")
        except Exception as e:  # the connection broke, or close() broke it
            error = e
        finally:
            self._queue.put(_End(None if self._closed.is_set() else _as_lost(error)))

    def get(self, timeout: Optional[float] = None) -> T:
        """The next item; waits at most ``timeout`` seconds (for ever if ``None``).

        Raises:
            TimeoutError: Nothing came in time.
            StopIteration: The subscription was closed.
            DaemonUnreachable: The connection to the daemon was lost.
        """
        if self._ended is not None or self._closed.is_set():
            return self._finish()
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"nothing arrived within {timeout} s") from None
        if isinstance(item, _End):
            self._ended = item
            return self._finish()
        return item  # type: ignore[no-any-return]

    def _finish(self) -> T:
        if self._ended is not None and self._ended.error is not None:
            raise self._ended.error
        raise StopIteration

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return self.get()

    def close(self) -> None:
        """Ends the subscription and its connection; iteration stops."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._disconnect()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_lost(error: Optional[BaseException]) -> BaseException:
    if isinstance(error, ConsortError):
        return error
    return DaemonUnreachable(f"the connection to the daemon was lost: {error}")


class Watch(Subscription[WatchEvent]):
    """Changes and pulses under a prefix: :class:`~consort.Change`, :class:`~consort.Pulse`
    and :class:`~consort.Lagged`, read from ``GET /v1/watch`` (server-sent events)."""

    def __init__(self, transport: Transport, path: str) -> None:
        super().__init__("consort-watch")
        self._conn, self._response = transport.open_stream(path)
        self._start()

    def _read(self) -> None:
        event, data = "message", []
        while True:
            line = self._response.readline()
            if not line:
                return
            text = line.decode("utf-8").rstrip("\r\n")
            if text:
                name, _, value = text.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                continue
            if data:
                parsed = _sse_event(event, json.loads("\n".join(data)))
                if parsed is not None:
                    self._put(parsed)
            event, data = "message", []

    def _disconnect(self) -> None:
        shutdown(self._conn.sock)
        self._conn.close()


def _sse_event(event: str, data: Dict[str, Any]) -> Optional[WatchEvent]:
    if event == "change":
        return Change.from_json(data)
    if event == "pulse":
        return Pulse.from_json(data)
    if event == "lagged":
        return Lagged(int(data.get("missed", 0)))
    return None


class FrameSession:
    """A WebSocket session of JSON frames: one thread reads, any thread may send (sends are
    serialized)."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self._send_lock = threading.Lock()

    def send(self, frame: Dict[str, Any]) -> None:
        """Sends one JSON frame."""
        text = json.dumps(frame, allow_nan=False, separators=(",", ":"))
        with self._send_lock:
            self.ws.send(text)

    def recv(self) -> Optional[Dict[str, Any]]:
        """The next JSON frame, or ``None`` once the session ended."""
        while True:
            try:
                text = self.ws.recv()
            except (websocket.WebSocketException, OSError):
                return None
            if not text:
                # An empty read is the end of the stream (close frame or closed socket).
                if not self.ws.connected:
                    return None
                continue
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            frame = json.loads(text)
            if isinstance(frame, dict):
                return frame

    def close(self) -> None:
        """Ends the session; a thread blocked in :meth:`recv` returns ``None``."""
        shutdown(self.ws.sock)
        try:
            self.ws.close(timeout=0.2)
        except Exception:  # already gone: nothing more to do
            pass


class Listener(Subscription[Event]):
    """Group events and messages as :class:`~consort.Event` values, from the WebSocket's
    ``listen`` operation. The first events describe the group as it is (a ``peer_added``
    per live peer, then this node's role); after that each change comes once, in order."""

    def __init__(self, transport: Transport) -> None:
        super().__init__("consort-listen")
        self._session = FrameSession(transport.websocket())
        try:
            self._session.send({"op": "listen"})
        except (OSError, websocket.WebSocketException) as e:
            self._session.close()
            raise DaemonUnreachable(f"cannot listen: {e}") from e
        self._start()

    def _read(self) -> None:
        while True:
            frame = self._session.recv()
            if frame is None:
                return
            self._put(Event(str(frame.get("type", "")), frame))

    def _disconnect(self) -> None:
        self._session.close()
