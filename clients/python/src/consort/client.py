"""The client of one Consort daemon: state, pulses, peers, messages and services over its
HTTP API and WebSocket."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlencode

from ._http import DEFAULT_TIMEOUT, PathLike, Transport, key_path, locate
from .errors import NotFound
from .model import Entry, Json, Leader, Peer, Reply, Status, Written
from .serve import Handler, Server
from .streams import Listener, Watch

#: Where a message goes: ``"broadcast"`` (the leader's broadcast, to every member including
#: itself; only the leader may), ``"leader"``, ``"all"`` (every other member), or a node id.
Target = str

#: How much longer than the daemon's own timeout a request may take, in seconds.
_SLACK = 5.0


class Client:
    """One Consort daemon, found as the ``consort`` CLI finds it.

    Args:
        api: The daemon's API URL (``http://127.0.0.1:7471`` or ``127.0.0.1:7471``).
            Without it: the API recorded in ``data_dir``'s ``ports.json``, else
            ``$CONSORT_API``, else the default data dir's ``ports.json``, else
            ``http://127.0.0.1:7471``.
        token: The bearer token of a daemon started with ``--api-token``; default
            ``$CONSORT_API_TOKEN``.
        data_dir: The data dir of the daemon to use.
        timeout: How long a request may take, in seconds (calls and reliable sends get
            their own timeout plus a margin).

    The client is thread-safe: every request is its own HTTP exchange. Close it (or use it as a
    context manager) to stop the services it serves.
    """

    def __init__(
        self,
        api: Optional[str] = None,
        *,
        token: Optional[str] = None,
        data_dir: Optional[PathLike] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if token is None:
            token = os.environ.get("CONSORT_API_TOKEN") or None
        self._transport = Transport(locate(api, data_dir), token, timeout)
        self._servers: List[Server] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The daemon's API base URL."""
        return self._transport.base_url

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ----- the node and the group -----

    def status(self) -> Status:
        """This node, its leader and term, and how many live peers it sees."""
        return Status.from_json(self._transport.request("GET", "/v1/status"))

    def peers(self) -> List[Peer]:
        """Every member this node knows, itself included (``is_self``), with state, round-trip
        time and clock offset."""
        return [Peer.from_json(p) for p in self._transport.request("GET", "/v1/peers")]

    def leader(self) -> Leader:
        """The leader as this node sees it (``leader`` is ``None`` while there is none)."""
        return Leader.from_json(self._transport.request("GET", "/v1/leader"))

    # ----- the replicated state -----

    def get(self, key: str) -> Optional[Entry]:
        """The entry of ``key``, or ``None`` if it holds nothing (never written, or deleted).
        A stored JSON ``null`` is an entry whose value is ``None``."""
        try:
            return Entry.from_json(self._transport.request("GET", key_path("/v1/kv/", key)))
        except NotFound:
            return None

    def set(self, key: str, value: Json, *, queue: bool = False) -> Written:
        """Writes ``value`` (any JSON value) to ``key``; returns once the write is durable on
        the node that applies it. With ``queue=True``, a write to an owned key whose owner is
        unreachable waits for the owner instead of failing (``Written.queued``)."""
        path = key_path("/v1/kv/", key) + ("?queue=true" if queue else "")
        return Written.from_json(self._transport.request("PUT", path, value))

    def delete(self, key: str, *, queue: bool = False) -> Written:
        """Deletes ``key`` (a tombstone: the delete wins over older writes everywhere)."""
        path = key_path("/v1/kv/", key) + ("?queue=true" if queue else "")
        return Written.from_json(self._transport.request("DELETE", path))

    def list(self, prefix: str = "") -> List[Entry]:
        """The entries at or under ``prefix`` (all when empty), in key order."""
        query = "?" + urlencode({"prefix": prefix}) if prefix else ""
        return [Entry.from_json(e) for e in self._transport.request("GET", "/v1/kv" + query)]

    def watch(self, prefix: str = "", *, from_seq: Optional[int] = None) -> Watch:
        """Changes and pulses at or under ``prefix``, from now on (or replayed from after
        sequence number ``from_seq``), as an iterator of :class:`~consort.Change`,
        :class:`~consort.Pulse` and :class:`~consort.Lagged`.

        Returns once the daemon has subscribed, so a write made after it is seen. Close the
        watch (or use it in a ``with`` block) to end it::

            with client.watch("kitchen") as changes:
                for change in changes:
                    print(change.key, change.value)
        """
        query: Dict[str, Any] = {"prefix": prefix}
        if from_seq is not None:
            query["from"] = from_seq
        return Watch(self._transport, "/v1/watch?" + urlencode(query))

    def pulse(self, key: str, value: Json) -> None:
        """Sends ``value`` to everyone watching ``key``, without storing it."""
        self._transport.request("POST", key_path("/v1/pulse/", key), value)

    # ----- messages -----

    def send(
        self,
        to: Target,
        body: Json,
        *,
        reliable: bool = False,
        timeout_ms: Optional[int] = None,
    ) -> None:
        """Sends a message; see :data:`Target` for ``to``.

        Best-effort (the default) returns once the message is handed to the network; at most
        once, possibly lost. ``reliable=True`` returns once every receiver acknowledged it
        (retried until ``timeout_ms``, delivered exactly once and in order per sender).

        Raises:
            Conflict: ``"broadcast"`` from a node that does not lead.
            Unavailable: ``"leader"`` while there is no leader.
            NotFound: an unknown node id.
            DeliveryTimeout: a reliable message not acknowledged in time.
        """
        request: Dict[str, Any] = {"to": to, "body": body, "reliable": reliable}
        if timeout_ms is not None:
            request["timeout_ms"] = timeout_ms
        wait = self._transport.timeout + (timeout_ms or 30_000) / 1000 if reliable else None
        self._transport.request("POST", "/v1/messages", request, timeout=wait)

    def listen(self) -> Listener:
        """Group events and messages for this node as an iterator of :class:`~consort.Event`.

        It starts with the group as it is (``peer_added`` for each live peer, then
        ``promote_leader`` or ``promote_follower``), then each change and each message
        (``leader_message``, ``peer_message``) once, in order. Close it when done.
        """
        return Listener(self._transport)

    # ----- services -----

    def call(
        self,
        service: str,
        body: Json = None,
        *,
        timeout_ms: Optional[int] = None,
        policy: Optional[str] = None,
    ) -> Reply:
        """Calls ``service`` on one provider and returns its :class:`~consort.Reply`.

        ``policy`` picks the provider: ``round_robin`` (default), ``local_first``,
        ``leader`` or ``node:ID``; a provider that does not answer in time is failed over.

        Raises:
            Unavailable: no node provides the service.
            DeliveryTimeout: no answer within ``timeout_ms`` (default 5000).
            ProviderError: the provider's handler failed (its message is the error's).
        """
        if policy == "all":
            raise ValueError("policy 'all' has several replies: use call_all()")
        answer = self._call(service, body, timeout_ms, policy)
        return Reply.from_json(answer)

    def call_all(
        self, service: str, body: Json = None, *, timeout_ms: Optional[int] = None
    ) -> List[Reply]:
        """Calls ``service`` on every provider; one :class:`~consort.Reply` each (with
        ``error`` set for a provider that failed)."""
        answer = self._call(service, body, timeout_ms, "all")
        return [Reply.from_json(r) for r in answer.get("replies", [])]

    def _call(
        self, service: str, body: Json, timeout_ms: Optional[int], policy: Optional[str]
    ) -> Dict[str, Any]:
        request: Dict[str, Any] = {"body": body}
        if timeout_ms is not None:
            request["timeout_ms"] = timeout_ms
        if policy is not None:
            request["policy"] = policy
        wait = (timeout_ms or 5000) / 1000 + _SLACK
        path = key_path("/v1/services/", service) + "/call"
        answer: Dict[str, Any] = self._transport.request("POST", path, request, timeout=wait)
        return answer

    def services(self) -> Dict[str, List[str]]:
        """Each service provided in the group, with the ids of its live providers."""
        answer: Dict[str, List[str]] = self._transport.request("GET", "/v1/services")
        return answer

    def serve(self, service: str, *, workers: int = 4) -> Callable[[Handler], Handler]:
        """A decorator that makes this daemon provide ``service``, answered by the function::

            @client.serve("thermostat")
            def thermostat(body):
                return {"target": 21.5}

        The function gets each request's body and returns the reply's body (any JSON value);
        if it raises, the caller gets the error (:class:`~consort.ProviderError`). Serving
        starts at once, in background threads (up to ``workers`` requests at a time), and goes
        on until :meth:`close` or :meth:`stop_serving`; the daemon advertises the service
        while it is served. The function is returned unchanged.
        """

        def attach(handler: Handler) -> Handler:
            server = Server(self._transport, service, handler, workers)
            server.start()
            with self._lock:
                self._servers.append(server)
            return handler

        return attach

    def stop_serving(self, service: Optional[str] = None) -> None:
        """Stops serving ``service`` (every service when ``None``)."""
        with self._lock:
            stopping = [s for s in self._servers if service is None or s.service == service]
            self._servers = [s for s in self._servers if s not in stopping]
        for server in stopping:
            server.close()

    def close(self) -> None:
        """Stops every service this client serves."""
        self.stop_serving()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
