"""``consort.p2plib.PeerGroup`` against real daemons: the p2plib callbacks, properties and
methods, and info-beamer's example program failing over when its leader's daemon dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import consort
from consort.p2plib import PeerGroup, PeerInfo
from harness import Cluster, Daemon, poll

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "leader_broadcast.py"

#: The acceptance bound: another node leads this soon after the leader's daemon is killed.
FAILOVER_LIMIT = 3.0

Call = Tuple[Any, ...]


class Recorder(PeerGroup):
    """Records every callback with its arguments (and the role it saw during the call)."""

    def setup_peer(self) -> None:
        self.calls: List[Call] = []
        self.cond = threading.Condition()
        self.fail_next_leader_message = False
        self.record("setup_peer")

    def record(self, *call: Any) -> None:
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()

    def promote_leader(self, peer_info: PeerInfo) -> None:
        self.record("promote_leader", peer_info, self.is_leader, self.num_peers)

    def demote_leader(self) -> None:
        self.record("demote_leader", self.is_leader)

    def promote_follower(self, peer_info: PeerInfo) -> None:
        self.record("promote_follower", peer_info, self.is_follower)

    def demote_follower(self) -> None:
        self.record("demote_follower")

    def on_peer_added(self, peer_info: PeerInfo) -> None:
        self.record("on_peer_added", peer_info)

    def on_peer_removed(self, peer_info: PeerInfo) -> None:
        self.record("on_peer_removed", peer_info)

    def on_leader_message(self, msg: Any, peer_info: PeerInfo) -> None:
        self.record("on_leader_message", msg, peer_info)
        if self.fail_next_leader_message:
            self.fail_next_leader_message = False
            raise RuntimeError("a callback that fails")

    def on_peer_message(self, msg: Any, peer_info: PeerInfo) -> None:
        self.record("on_peer_message", msg, peer_info)

    def named(self, name: str) -> List[Call]:
        with self.cond:
            return [c for c in self.calls if c[0] == name]

    def wait(self, what: str, check: Callable[[List[Call]], bool], timeout: float = 5) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: check(self.calls), timeout):
                pytest.fail(f"not within {timeout} s: {what}; calls: {self.calls}")


def has(name: str, *args: Any) -> Callable[[List[Call]], bool]:
    return lambda calls: any(c[0] == name and c[1 : 1 + len(args)] == args for c in calls)


def test_peer_group_callbacks_properties_and_messages(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.daemons
    ids = {n1.id, n2.id, n3.id}
    g1 = Recorder(api=n1.api)
    g2 = Recorder(api=n2.api)
    g3 = Recorder(61234, api=n3.api)  # p2plib's port: accepted, selects nothing
    groups = (g1, g2, g3)
    try:
        g1.wait("n1 leads", lambda calls: bool(g1.named("promote_leader")))
        for group in (g2, g3):
            group.wait("a follower", has("promote_follower"))

        me1 = PeerInfo("127.0.0.1", n1.id, 0.0, 0.0)
        names = [c[0] for c in g1.calls]
        assert names == ["setup_peer", "on_peer_added", "on_peer_added", "promote_leader"]
        assert g1.named("promote_leader") == [("promote_leader", me1, True, 3)]
        added = [c[1] for c in g1.named("on_peer_added")]
        assert {p.device_id for p in added} == {n2.id, n3.id}
        assert {p.ip for p in added} == {"127.0.0.1"}
        for group, daemon in ((g2, n2), (g3, n3)):
            me = PeerInfo("127.0.0.1", daemon.id, 0.0, 0.0)
            assert group.named("promote_follower") == [("promote_follower", me, True)]
            assert (group.is_leader, group.is_follower) == (False, True)
            assert group.num_peers == 3
            assert group.leader is not None and group.leader.device_id == n1.id
        assert (g1.is_leader, g1.is_follower, g1.num_peers) == (True, False, 3)

        peers = poll(5, lambda: g2.peers if all(p.ping > 0 for p in g2.peers if p.device_id != n2.id) else None)
        assert peers is not None, "round-trip times are measured"
        assert peers == sorted(peers) and {p.device_id for p in peers} == ids
        assert [p for p in peers if p.device_id == n2.id] == [PeerInfo("127.0.0.1", n2.id, 0.0, 0.0)]
        assert all(abs(p.delta) < 0.5 and p.ping < 0.5 for p in peers), "one machine, one clock"

        g2.send_to_leader(hello="from n2", n=[1, 2])
        g1.wait("the leader gets the follower's message", has("on_peer_message", {"hello": "from n2", "n": [1, 2]}))
        sender = [c[2] for c in g1.named("on_peer_message")][0]
        assert sender.device_id == n2.id and sender.ip == "127.0.0.1"
        g1.send_to_leader(note="to myself")
        g1.wait("the leader's message to itself", has("on_peer_message", {"note": "to myself"}, me1))

        g2.broadcast_to_all(ignored=True)  # a follower's broadcast has no effect
        g3.fail_next_leader_message = True
        g1.broadcast_to_all(x=1, y=[1, 2])
        for group in groups:
            group.wait("the leader's broadcast", has("on_leader_message", {"x": 1, "y": [1, 2]}))
            leader_info = group.named("on_leader_message")[0][2]
            assert leader_info.device_id == n1.id
        assert g1.named("on_leader_message")[0][2] == me1, "the leader gets its own broadcast"
        g1.broadcast_to_all(x=2)
        g3.wait("messages after a failing callback", has("on_leader_message", {"x": 2}))
        for group in groups:
            assert [c[1] for c in group.named("on_leader_message")][0] == {"x": 1, "y": [1, 2]}
            assert not group.named("on_leader_message") or all(
                c[1] != {"ignored": True} for c in group.named("on_leader_message")
            )
        assert g1.client.status().id == n1.id
    finally:
        for group in groups:
            group.close()
    assert not any(g.named("demote_leader") or g.named("demote_follower") for g in groups)


def test_peer_group_follows_its_daemon_away_and_back(make_cluster: Callable[[str], Cluster]) -> None:
    daemon = make_cluster("lone").add("l1")
    group = Recorder(data_dir=daemon.data_dir)
    try:
        group.wait("a lone node leads itself", has("promote_leader"))
        assert (group.is_leader, group.num_peers) == (True, 1)
        group.broadcast_to_all(alone=True)
        group.wait("its own broadcast", has("on_leader_message", {"alone": True}))
        daemon.kill9()
        group.wait("demoted when the daemon goes", has("demote_leader", True), timeout=3)
        state = lambda: (group.is_leader, group.is_follower, group.num_peers, group.peers)  # noqa: E731
        assert poll(2, lambda: True if state() == (False, False, 0, []) else None), state()
        group.send_to_leader(dropped=True)
        group.broadcast_to_all(dropped=True)
        daemon.restart()
        group.wait("promoted again", lambda calls: len(group.named("promote_leader")) == 2)
        assert group.is_leader and group.leader == PeerInfo("127.0.0.1", daemon.id, 0.0, 0.0)
    finally:
        group.close()


class Program:
    """The example program run against one daemon, its JSON lines read as they come."""

    def __init__(self, daemon: Daemon, workdir: Path) -> None:
        self.daemon = daemon
        self.lines: List[Tuple[float, Dict[str, Any]]] = []
        self.lock = threading.Lock()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSORT_")}
        env["CONSORT_API"] = daemon.api
        # The program imports the same consort package as the tests.
        package_root = str(Path(consort.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.log_path = workdir / f"{daemon.name}.program.log"
        self.stderr = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLE)], cwd=workdir, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            with self.lock:
                self.lines.append((time.monotonic(), event))

    def events(self, name: Optional[str] = None, after: float = float("-inf")) -> List[Dict[str, Any]]:
        with self.lock:
            return [e for t, e in self.lines if (name is None or e["event"] == name) and t > after]

    def first(self, name: str, after: float) -> Optional[float]:
        """When ``name`` was first reported after ``after`` (monotonic time)."""
        with self.lock:
            return next((t for t, e in self.lines if e["event"] == name and t > after), None)

    def messages_from(self, sender: str, after: float = float("-inf")) -> List[Dict[str, Any]]:
        return [e["message"] for e in self.events("on_leader_message", after) if e["sender"] == sender]

    def log(self) -> str:
        """What the program printed on stderr."""
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.stderr.close()


def test_info_beamer_program_fails_over(make_cluster: Callable[[str], Cluster], tmp_path: Path) -> None:
    cluster = make_cluster("p2p")
    for name in ("p1", "p2", "p3"):
        cluster.add(name)
    leader = cluster.wait_converged()
    programs = [Program(d, tmp_path) for d in cluster.daemons]
    try:
        for program in programs:
            ok = poll(10, lambda: True if len(program.messages_from(leader)) >= 2 else None)
            assert ok, f"{program.daemon.name} gets the leader's messages: {program.events()}\n{program.log()}"

        promoted = [p for p in programs if p.events("promote_leader")]
        assert [p.daemon.id for p in promoted] == [leader], "exactly one node is promoted"
        assert promoted[0].events("promote_leader")[0]["num_peers"] == 3
        for program in programs:
            others = {d.id for d in cluster.daemons} - {program.daemon.id}
            assert {e["device_id"] for e in program.events("on_peer_added")} == others
            assert program.events("demote_leader") == program.events("demote_follower") == []
            if program.daemon.id != leader:
                assert [e["leader"] for e in program.events("promote_follower")] == [leader]
            counts = [m["count"] for m in program.messages_from(leader)]
            assert counts == sorted(set(counts)), f"at most once, in order: {counts}"

        old = next(p for p in programs if p.daemon.id == leader)
        survivors = [p for p in programs if p is not old]
        killed_at = time.monotonic()
        old.daemon.kill9()
        promoted_at = poll(FAILOVER_LIMIT + 2, lambda: next(
            (t for t in (p.first("promote_leader", killed_at) for p in survivors) if t is not None),
            None,
        ))
        assert promoted_at is not None, "another node is promoted"
        failover = promoted_at - killed_at
        print(f"\nfailover: the leader's daemon was killed; another program was promoted "
              f"{failover:.2f} s later (limit {FAILOVER_LIMIT} s)")
        assert failover < FAILOVER_LIMIT

        new = [p for p in survivors if p.events("promote_leader")]
        assert len(new) == 1, "exactly one survivor is promoted"
        new_id = new[0].daemon.id
        for program in survivors:
            got = poll(5, lambda: True if program.messages_from(new_id, killed_at) else None)
            assert got, f"{program.daemon.name} gets the new leader's messages"
            assert poll(3, lambda: True if program.events("on_peer_removed") else None)
            removed = [e["device_id"] for e in program.events("on_peer_removed")]
            assert removed == [leader]
        follower = next(p for p in survivors if p is not new[0])
        follows_new = poll(3, lambda: True if follower.events("promote_follower")[-1]["leader"] == new_id else None)
        assert follows_new, f"the other survivor follows the new leader: {follower.events()}"
        # Without its daemon, the old leader's program is demoted, then its peers are removed.
        lost = sorted(p.daemon.id for p in survivors)
        removed_all = poll(5, lambda: True if len(old.events("on_peer_removed")) >= 2 else None)
        assert removed_all, f"the old leader's program loses its peers: {old.events()}"
        assert sorted(e["device_id"] for e in old.events("on_peer_removed")) == lost
        names = [e["event"] for e in old.events() if e["event"] in ("demote_leader", "on_peer_removed")]
        assert names == ["demote_leader", "on_peer_removed", "on_peer_removed"]
    finally:
        for program in programs:
            program.stop()
