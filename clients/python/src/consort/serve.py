"""Providing a service from Python: :meth:`consort.Client.serve` attaches a handler to a
service on the local daemon over a WebSocket, and answers the requests the daemon hands it.

The daemon advertises the service to the group while at least one handler is attached; calls
from any node reach one of the handlers (round-robin across handlers and nodes). If the daemon
goes away, the server attaches again once it is back.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional

import websocket

from ._http import Backoff, Transport
from .errors import ApiError, ConsortError, DaemonUnreachable
from .model import Json
from .streams import FrameSession

log = logging.getLogger("consort.serve")

#: A service handler: the request's body in, the reply's body out (any JSON value). An
#: exception becomes an error reply, which the caller sees as :class:`~consort.ProviderError`.
Handler = Callable[[Json], Json]


class Server:
    """One service's handler, attached to the daemon: a reader thread takes requests and a
    small pool of worker threads runs the handler and sends the replies."""

    def __init__(self, transport: Transport, service: str, handler: Handler, workers: int):
        if not service:
            raise ValueError("a service needs a name")
        self.service = service
        self.handler = handler
        self._transport = transport
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=service)
        self._closed = threading.Event()
        self._session: Optional[FrameSession] = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"consort-serve-{service}", daemon=True
        )

    def start(self) -> None:
        """Attaches (raising what went wrong if the daemon refuses) and starts answering."""
        self._session = self._attach()
        self._thread.start()

    def _attach(self) -> FrameSession:
        session = FrameSession(self._transport.websocket())
        try:
            session.send({"op": "serve", "service": self.service})
            frame = session.recv()
        except (OSError, ValueError, websocket.WebSocketException) as e:
            session.close()
            raise DaemonUnreachable(f"cannot attach to serve {self.service!r}: {e}") from e
        if frame is not None and frame.get("type") == "serving":
            return session
        session.close()
        if frame is None:
            raise DaemonUnreachable("the daemon closed the session before serving")
        raise ApiError(400, str(frame.get("error", frame)))

    def _run(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                session = self._session
            if session is not None:
                self._answer_all(session)
            if self._closed.is_set():
                return
            log.warning("lost the daemon serving %r; attaching again", self.service)
            self._reattach()

    def _reattach(self) -> None:
        """Attaches again, retrying until it works or the server is closed."""
        backoff = Backoff()
        while not self._closed.is_set():
            try:
                session = self._attach()
            except ConsortError as e:
                log.debug("cannot attach %r yet: %s", self.service, e)
                if backoff.wait(self._closed):
                    return
                continue
            with self._lock:
                if self._closed.is_set():
                    session.close()
                    return
                self._session = session
            log.info("serving %r again", self.service)
            return

    def _answer_all(self, session: FrameSession) -> None:
        while True:
            frame = session.recv()
            if frame is None:
                return
            if frame.get("type") == "request":
                self._pool.submit(self._answer, session, frame)
            elif frame.get("type") == "error":
                log.warning("daemon refused a reply for %r: %s", self.service, frame.get("error"))

    def _answer(self, session: FrameSession, request: Dict[str, Any]) -> None:
        reply: Dict[str, Any] = {"op": "respond", "id": request.get("id")}
        try:
            body = self.handler(request.get("body"))
            json.dumps(body, allow_nan=False)
            reply["body"] = body
        except Exception as e:  # the handler's failure is the caller's error reply
            log.debug("handler for %r failed", self.service, exc_info=True)
            reply["error"] = f"{type(e).__name__}: {e}"
        try:
            session.send(reply)
        except Exception as e:  # the session is gone; the caller's call fails over
            log.debug("cannot reply to %r: %s", self.service, e)

    def close(self) -> None:
        """Detaches: the daemon stops advertising the service if no other handler remains."""
        with self._lock:
            self._closed.set()
            session = self._session
        if session is not None:
            session.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False)
