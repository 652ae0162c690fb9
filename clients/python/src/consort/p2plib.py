"""info-beamer's ``p2plib.PeerGroup`` on top of a local Consort daemon.

A program written for info-beamer's p2plib runs with its import line changed::

    from consort.p2plib import PeerGroup      # was: from p2plib import PeerGroup

The daemon does what p2plib did itself: it finds the other devices, elects the leader and
carries the messages, encrypted and authenticated with the group secret. This module turns the
daemon's group events (its WebSocket ``listen`` stream) into the p2plib callbacks, and
``broadcast_to_all`` and ``send_to_leader`` into the daemon's messages.

How it maps:

- The constructor's ``port`` selects nothing: the daemon owns the group and its port. See
  :class:`PeerGroup`.
- ``device_id`` is the Consort node id (16 hex digits): unique in the group and kept across
  restarts (it lives in the daemon's data dir), as an info-beamer device id is. Node names are
  chosen by people and need not be unique, so they are not used.
- ``ip`` is the address the peer's datagrams come from, ``127.0.0.1`` for this device (as in
  p2plib). Several nodes may share one host, so use ``device_id`` as the key for peers.
- ``delta`` is the peer's clock minus this device's clock, in seconds (a peer's time is about
  ``time.time() + delta``); ``ping`` is the round-trip time in seconds. Both are ``0.0`` for
  this device and until measured.
- Messages are JSON objects. ``broadcast_to_all(**msg)`` sends ``msg`` as the leader's
  broadcast, which the daemon also delivers to the leader itself: every device, the leader
  included, gets it in ``on_leader_message``. ``send_to_leader(**msg)`` reaches the leader's
  ``on_peer_message`` (locally, on the leader). Delivery is best-effort and at most once, as in
  p2plib.
- Callbacks run on one background thread per group, one at a time, in the order the daemon
  saw the changes (p2plib ran them on two threads). Properties and methods are thread-safe and
  may be used from callbacks and from other threads.
- If the daemon goes away, the group demotes this device (``demote_leader`` or
  ``demote_follower``), removes every peer (``on_peer_removed``) and connects again in the
  background; once the daemon is back, the peers are added and the role promoted again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from ._http import Backoff, PathLike
from .client import Client
from .errors import BadRequest, ConsortError, DaemonUnreachable
from .model import Event
from .streams import Listener

__all__ = ["PeerGroup", "PeerInfo", "ROLE_LEADER", "ROLE_FOLLOWER"]

log = logging.getLogger("consort.p2plib")

#: The roles, as p2plib numbers them.
ROLE_LEADER, ROLE_FOLLOWER = 1, 2

#: This device's ``ip`` in a :class:`PeerInfo`, as in p2plib.
LOCAL_IP = "127.0.0.1"

#: How old clock and round-trip measurements may be before ``peers`` asks again, in seconds.
MEASURE_EVERY = 1.0


class PeerInfo(NamedTuple):
    """What p2plib tells about a peer (the same four fields, in the same order)."""

    #: The peer's IP address; ``127.0.0.1`` for this device.
    ip: str
    #: The peer's Consort node id (16 hex digits).
    device_id: str
    #: Its clock minus this device's clock, in seconds.
    delta: float
    #: Round-trip time to it, in seconds.
    ping: float


class PeerGroup:
    """A group of devices with one leader, run by the local Consort daemon.

    Subclass it and override the callbacks you need; create it once and keep the program
    running. The callbacks are called on a background thread.

    Args:
        port: Accepted for compatibility with p2plib and otherwise unused. In p2plib it chose
            the UDP port, which kept the groups of different programs on one device apart.
            Here the daemon owns the group: its port, its members and its secret. To run two
            separate groups on one device, run a daemon for each and point each PeerGroup at
            its daemon with ``api`` or ``CONSORT_API``.
        api: The daemon's API URL; default as for :class:`consort.Client` (``CONSORT_API``,
            else ``http://127.0.0.1:7471``).
        token: The daemon's API token, if it has one (default ``CONSORT_API_TOKEN``).
        data_dir: The data dir of the daemon to use, instead of ``api``.

    ``setup_peer`` is called once, from the constructor; the other callbacks follow once the
    daemon is reached (the constructor does not wait for it, and retries in the background if
    it is not running yet).
    """

    def __init__(
        self,
        port: Optional[int] = None,
        *,
        api: Optional[str] = None,
        token: Optional[str] = None,
        data_dir: Optional[PathLike] = None,
    ) -> None:
        if port is not None and not isinstance(port, int):
            raise TypeError(f"port must be an int or None, not {type(port).__name__}")
        self.__link = _Link(self, Client(api, token=token, data_dir=data_dir))
        self.setup_peer()
        self.__link.start()

    # ----- Callbacks to override -----

    def setup_peer(self) -> None:
        """Called once, before any other callback."""

    def promote_leader(self, peer_info: PeerInfo) -> None:
        """This device became the leader; ``peer_info`` describes this device."""

    def demote_leader(self) -> None:
        """This device is no longer the leader (``is_leader`` is still true during the call,
        as in p2plib)."""

    def promote_follower(self, peer_info: PeerInfo) -> None:
        """This device became a follower; ``peer_info`` describes this device."""

    def demote_follower(self) -> None:
        """This device is no longer a follower."""

    def on_peer_added(self, peer_info: PeerInfo) -> None:
        """Another device joined the group."""

    def on_peer_removed(self, peer_info: PeerInfo) -> None:
        """Another device left the group or failed."""

    def on_leader_message(self, msg: Any, peer_info: PeerInfo) -> None:
        """The leader's ``broadcast_to_all`` message (a dict); ``peer_info`` is the leader.
        Every device gets it, the leader included; at most once."""

    def on_peer_message(self, msg: Any, peer_info: PeerInfo) -> None:
        """A message to this device (a dict), on the leader from ``send_to_leader``;
        ``peer_info`` is the sender."""

    # ----- Properties and methods -----

    @property
    def is_leader(self) -> bool:
        """Whether this device is the leader."""
        return self.__link.role() == ROLE_LEADER

    @property
    def is_follower(self) -> bool:
        """Whether this device follows a leader."""
        return self.__link.role() == ROLE_FOLLOWER

    @property
    def num_peers(self) -> int:
        """How many devices are in the group, this one included (0 while the daemon is not
        reached)."""
        return self.__link.count()

    @property
    def peers(self) -> List[PeerInfo]:
        """Every device of the group, this one included (``ip`` ``127.0.0.1``), sorted, with
        clock offsets and round-trip times measured in the last second or so."""
        return self.__link.peer_infos()

    @property
    def leader(self) -> Optional[PeerInfo]:
        """The leader, or ``None`` while there is none."""
        return self.__link.leader()

    @property
    def client(self) -> Client:
        """The :class:`consort.Client` of the daemon, for what p2plib did not have (state,
        services, reliable messages)."""
        return self.__link.client

    def broadcast_to_all(self, **message: Any) -> None:
        """On the leader, sends ``message`` (JSON-serializable keyword arguments) to every
        device, this one included (``on_leader_message``). Elsewhere it has no effect.

        Raises:
            TypeError, ValueError: ``message`` is not JSON-serializable.
            BadRequest: ``message`` is larger than a message may be.
        """
        if self.__link.role() != ROLE_LEADER:
            return
        self.__link.send("broadcast", message)

    def send_to_leader(self, **message: Any) -> None:
        """Sends ``message`` to the leader's ``on_peer_message`` (a local delivery on the
        leader). Dropped while there is no leader."""
        if self.__link.role() is None:
            return
        self.__link.send("leader", message)

    def close(self) -> None:
        """Stops following the group: no more callbacks (none is called for the stop).
        p2plib had no way to stop a group; here it is optional."""
        self.__link.close()


class _Link:
    """The connection of a :class:`PeerGroup` to its daemon: the group as last reported, and
    the thread that turns the daemon's events into callbacks."""

    def __init__(self, group: PeerGroup, client: Client) -> None:
        self.group = group
        self.client = client
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener: Optional[Listener] = None
        self._role: Optional[int] = None
        self._me: Optional[PeerInfo] = None
        self._leader_id: Optional[str] = None
        self._peers: Dict[str, PeerInfo] = {}
        self._measured: Dict[str, PeerInfo] = {}
        self._measured_at = float("-inf")
        self._thread = threading.Thread(target=self._run, name="consort-p2plib", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ----- what the properties read -----

    def role(self) -> Optional[int]:
        with self._lock:
            return self._role

    def count(self) -> int:
        with self._lock:
            return 0 if self._me is None else 1 + len(self._peers)

    def leader(self) -> Optional[PeerInfo]:
        with self._lock:
            leader = self._leader_id
        return self._info_of(leader) if leader is not None else None

    def peer_infos(self) -> List[PeerInfo]:
        self._measure(fresh=False)
        with self._lock:
            if self._me is None:
                return []
            others = [self._with_measures(p) for p in self._peers.values()]
            return sorted([self._me] + others)

    # ----- sends -----

    def send(self, to: str, message: Dict[str, Any]) -> None:
        try:
            self.client.send(to, message)
        except BadRequest:
            raise
        except DaemonUnreachable as e:
            log.warning("cannot send to %s: %s", to, e)
        except ConsortError as e:
            # The role changed under the send (not the leader, no leader): dropped, as a
            # datagram to a device that left would be.
            log.debug("message to %s dropped: %s", to, e)

    # ----- the event thread -----

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            listener = self._listener
        if listener is not None:
            listener.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        warned, backoff = False, Backoff()
        while not self._closed.is_set():
            try:
                status = self.client.status()
                listener = self.client.listen()
            except ConsortError as e:
                if not warned:
                    log.warning("cannot reach the consort daemon (retrying): %s", e)
                    warned = True
                backoff.wait(self._closed)
                continue
            warned = False
            backoff.reset()
            with self._lock:
                if self._closed.is_set():
                    listener.close()
                    return
                self._listener = listener
                self._me = PeerInfo(LOCAL_IP, status.id, 0.0, 0.0)
            self._follow(listener)
            if self._closed.is_set():
                return
            self._lost()

    def _follow(self, listener: Listener) -> None:
        """Turns events into callbacks until the stream ends."""
        try:
            for event in listener:
                try:
                    self._handle(event)
                except Exception:  # a bug here must not stop the group
                    log.exception("cannot handle %r", event)
        except ConsortError as e:
            if not self._closed.is_set():
                log.warning("lost the consort daemon at %s: %s", self.client.url, e)
        finally:
            listener.close()

    def _handle(self, event: Event) -> None:
        kind = event.type
        if kind == "peer_added" and event.peer:
            info = self._added(event.peer)
            self._call("on_peer_added", info)
        elif kind == "peer_removed" and event.peer:
            with self._lock:
                gone = self._peers.pop(event.peer["id"], None)
            self._call("on_peer_removed", gone or _info_from(event.peer))
        elif kind == "leader_changed":
            with self._lock:
                self._leader_id = event.leader
        elif kind in ("promote_leader", "promote_follower"):
            with self._lock:
                if kind == "promote_leader":
                    self._role = ROLE_LEADER
                    self._leader_id = self._me.device_id if self._me else None
                else:
                    self._role = ROLE_FOLLOWER
                    self._leader_id = event.leader or self._leader_id
                me = self._me
            self._call(kind, me)
        elif kind in ("demote_leader", "demote_follower"):
            self._call(kind)
            with self._lock:
                self._role = None
        elif kind in ("leader_message", "peer_message") and event.sender:
            callback = "on_leader_message" if kind == "leader_message" else "on_peer_message"
            self._call(callback, event.body, self._info_of(event.sender))

    def _lost(self) -> None:
        """The daemon went away: demote, then remove every peer, as p2plib orders them."""
        with self._lock:
            role = self._role
            self._listener = None
        if role == ROLE_LEADER:
            self._call("demote_leader")
        elif role == ROLE_FOLLOWER:
            self._call("demote_follower")
        with self._lock:
            removed = sorted(self._peers.values())
            self._role, self._leader_id, self._me = None, None, None
            self._peers = {}
        for info in removed:
            self._call("on_peer_removed", info)

    def _call(self, name: str, *args: Any) -> None:
        """Runs the group's callback ``name``; a failing callback is logged, as p2plib did,
        and the group goes on."""
        callback: Callable[..., None] = getattr(self.group, name)
        try:
            callback(*args)
        except Exception:
            log.exception("the %s callback failed", name)

    # ----- peers and their measurements -----

    def _added(self, peer: Dict[str, str]) -> PeerInfo:
        self._measure(fresh=True)
        info = self._with_measures(_info_from(peer))
        with self._lock:
            self._peers[info.device_id] = info
        return info

    def _info_of(self, device_id: str) -> PeerInfo:
        with self._lock:
            if self._me is not None and device_id == self._me.device_id:
                return self._me
            known = self._peers.get(device_id)
        if known is not None:
            return self._with_measures(known)
        self._measure(fresh=True)
        with self._lock:
            return self._measured.get(device_id, PeerInfo("", device_id, 0.0, 0.0))

    def _with_measures(self, info: PeerInfo) -> PeerInfo:
        measured = self._measured.get(info.device_id)
        if measured is None:
            return info
        return info._replace(delta=measured.delta, ping=measured.ping)

    def _measure(self, fresh: bool) -> None:
        """Reads clock offsets and round-trip times from ``GET /v1/peers``, unless they were
        read less than :data:`MEASURE_EVERY` ago (``fresh``: for a new peer, unless read just
        now)."""
        now = time.monotonic()
        if now - self._measured_at < (0.2 if fresh else MEASURE_EVERY):
            return
        try:
            peers = self.client.peers()
        except ConsortError:
            return
        measured = {
            p.id: PeerInfo(
                p.ip,
                p.id,
                (p.clock_offset_ms or 0.0) / 1000.0,
                (p.rtt_ms or 0.0) / 1000.0,
            )
            for p in peers
            if not p.is_self
        }
        with self._lock:
            self._measured = measured
            self._measured_at = now


def _info_from(peer: Dict[str, str]) -> PeerInfo:
    """A peer of a ``peer_added`` or ``peer_removed`` event, not yet measured."""
    addr = peer.get("addr", "")
    ip = addr.rsplit(":", 1)[0].strip("[]") if ":" in addr else addr
    return PeerInfo(ip, peer["id"], 0.0, 0.0)
