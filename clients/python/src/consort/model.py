"""The values the client returns: typed views of the daemon's JSON answers.

Each is a frozen dataclass built from the JSON the HTTP API or the WebSocket sends; the field
names follow the API's (``from`` is ``sender``, as ``from`` is a Python keyword).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

#: Any JSON value: what keys hold, what messages and service calls carry.
Json = Any


@dataclass(frozen=True)
class Entry:
    """A key's entry: ``GET /v1/kv/{key}`` and each item of a listing."""

    key: str
    value: Json
    #: ``<hlc>-<origin>``; versions of one key order its writes.
    version: str
    #: The node that wrote it (the owner, for owned keys).
    origin: str

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Entry":
        return cls(data["key"], data.get("value"), data["version"], data["origin"])


@dataclass(frozen=True)
class Written:
    """The outcome of a write or delete: durable at ``version``, or queued for the key's owner
    (``set(..., queue=True)`` while the owner is away), in which case version and origin are
    ``None``."""

    version: Optional[str]
    origin: Optional[str]
    queued: bool = False

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Written":
        if data.get("queued"):
            return cls(None, None, True)
        return cls(data["version"], data["origin"])


@dataclass(frozen=True)
class Status:
    """``GET /v1/status``: the node answering and what it sees."""

    id: str
    name: str
    addr: str
    group: str
    #: The leader's node id, or ``None``.
    leader: Optional[str]
    term: int
    #: Live members other than this node.
    peers: int
    #: The whole answer (member counts, datagram counters...).
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Status":
        node = data["node"]
        return cls(
            node["id"],
            node["name"],
            node["addr"],
            data.get("group", ""),
            data.get("leader"),
            int(data.get("term", 0)),
            int(data.get("peers", 0)),
            data,
        )


@dataclass(frozen=True)
class Peer:
    """One member as ``GET /v1/peers`` shows it (this node included, with ``is_self``)."""

    id: str
    name: str
    #: ``IP:PORT`` where it receives datagrams.
    addr: str
    #: ``alive``, ``suspect``, ``down`` or ``left``.
    state: str
    is_leader: bool
    #: Round-trip time in ms, once measured.
    rtt_ms: Optional[float]
    #: Its clock minus ours in ms, once measured.
    clock_offset_ms: Optional[float]
    services: List[str]
    is_self: bool
    generation: int

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Peer":
        return cls(
            data["id"],
            data.get("name", ""),
            data.get("addr", ""),
            data.get("state", ""),
            bool(data.get("is_leader", False)),
            data.get("rtt_ms"),
            data.get("clock_offset_ms"),
            list(data.get("services") or []),
            bool(data.get("is_self", False)),
            int(data.get("generation", 0)),
        )

    @property
    def ip(self) -> str:
        """The IP address part of :attr:`addr` (without brackets for IPv6)."""
        host = self.addr.rsplit(":", 1)[0] if ":" in self.addr else self.addr
        return host.strip("[]")

    @property
    def is_live(self) -> bool:
        """Whether it is alive or suspect (not down, not left)."""
        return self.state in ("alive", "suspect")


@dataclass(frozen=True)
class Leader:
    """``GET /v1/leader``: the leader (``None`` while there is none) and the term."""

    leader: Optional[Peer]
    term: int
    #: Whether the answering node leads.
    is_self: bool

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Leader":
        entry = data.get("leader")
        peer = Peer.from_json(entry) if entry else None
        return cls(peer, int(data.get("term", 0)), bool(data.get("is_self", False)))

    @property
    def id(self) -> Optional[str]:
        """The leader's node id, or ``None``."""
        return self.leader.id if self.leader else None


@dataclass(frozen=True)
class Change:
    """A watched key changed (``deleted`` for a delete, ``value`` then ``None``)."""

    #: The node's sequence number of the change: resume after it with ``from_seq``.
    seq: int
    key: str
    value: Json
    deleted: bool
    version: str
    origin: str

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Change":
        return cls(
            int(data["seq"]),
            data["key"],
            data.get("value"),
            bool(data.get("deleted", False)),
            data.get("version", ""),
            data.get("origin", ""),
        )


@dataclass(frozen=True)
class Pulse:
    """A pulse on a watched key: delivered, never stored."""

    key: str
    value: Json
    origin: str

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Pulse":
        return cls(data["key"], data.get("value"), data.get("origin", ""))


@dataclass(frozen=True)
class Lagged:
    """The watcher fell behind and ``missed`` events were dropped: re-read the state."""

    missed: int


#: What a watch yields.
WatchEvent = Union[Change, Pulse, Lagged]


@dataclass(frozen=True)
class Event:
    """A group event or message from :meth:`consort.Client.listen`.

    ``type`` is one of ``peer_added``, ``peer_removed``, ``promote_leader``,
    ``demote_leader``, ``promote_follower``, ``demote_follower``, ``leader_changed``,
    ``leader_message`` and ``peer_message``; ``data`` is the whole frame. The properties read
    the fields an event type carries and are ``None`` on the others.
    """

    type: str
    data: Dict[str, Any] = field(repr=False)

    @property
    def body(self) -> Json:
        """A message's body."""
        return self.data.get("body")

    @property
    def sender(self) -> Optional[str]:
        """A message's sender (its node id)."""
        return self.data.get("from")

    @property
    def kind(self) -> Optional[str]:
        """A message's kind: ``broadcast``, ``leader``, ``direct`` or ``publish``."""
        return self.data.get("kind")

    @property
    def reliable(self) -> Optional[bool]:
        """Whether a message was sent reliably."""
        return self.data.get("reliable")

    @property
    def peer(self) -> Optional[Dict[str, str]]:
        """The peer added or removed: ``{"id", "name", "addr"}``."""
        return self.data.get("peer")

    @property
    def leader(self) -> Optional[str]:
        """The leader named by ``promote_follower``, ``demote_follower``, ``leader_changed``."""
        return self.data.get("leader")

    @property
    def term(self) -> Optional[int]:
        """The term of ``leader_changed`` and of a leader's broadcast."""
        return self.data.get("term")

    def __repr__(self) -> str:
        fields = {k: v for k, v in self.data.items() if k != "type"}
        return f"Event({self.type!r}, {fields!r})"


@dataclass(frozen=True)
class Reply:
    """A provider's answer to a call: its ``body``, or for ``call_all`` possibly its
    ``error``."""

    #: The node that answered.
    sender: str
    body: Json
    error: Optional[str] = None

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Reply":
        return cls(data.get("from", ""), data.get("body"), data.get("error"))
