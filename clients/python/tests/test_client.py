"""The client against real daemons: every method, from one node and seen from the others."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from harness import Cluster, poll, wait_for
from consort import (
    BadRequest,
    Change,
    Client,
    Conflict,
    DaemonUnreachable,
    DeliveryTimeout,
    Entry,
    Event,
    Listener,
    NotFound,
    ProviderError,
    Pulse,
    Reply,
    Unauthorized,
    Unavailable,
)


def clients(cluster: Cluster) -> List[Client]:
    return [Client(d.api) for d in cluster.daemons]


def test_status_peers_and_leader(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.daemons
    c1, c2, c3 = clients(cluster)
    status = c2.status()
    assert (status.id, status.name, status.leader, status.peers) == (n2.id, "n2", n1.id, 2)
    assert status.addr == n2.seed
    peers = c2.peers()
    assert sorted(p.id for p in peers) == sorted([n1.id, n2.id, n3.id])
    assert [p.id for p in peers if p.is_self] == [n2.id]
    assert [p.id for p in peers if p.is_leader] == [n1.id]
    assert {p.state for p in peers} == {"alive"}
    assert {p.ip for p in peers} == {"127.0.0.1"}
    for client, daemon in zip((c1, c2, c3), cluster.daemons):
        leader = client.leader()
        assert leader.id == n1.id
        assert leader.leader is not None and leader.leader.name == "n1"
        assert leader.is_self == (daemon is n1)
        assert leader.term >= 1


def test_set_get_list_delete_across_nodes(cluster: Cluster) -> None:
    n1, n2, _ = cluster.daemons
    c1, c2, c3 = clients(cluster)
    written = c1.set("t-kv/a", {"on": True})
    assert written.origin == n1.id and not written.queued
    assert written.version is not None and written.version.endswith(n1.id)
    entry = poll(5, lambda: c3.get("t-kv/a"))
    assert entry == Entry("t-kv/a", {"on": True}, written.version, n1.id)
    c1.set("t-kv/b", [1, 2])
    c1.set("t-kv/c/d", None)
    c1.set("t-kvx", "not under the prefix")
    listed = poll(5, lambda: c2.list("t-kv") if len(c2.list("t-kv")) == 3 else None)
    assert listed is not None
    assert [(e.key, e.value) for e in listed] == [
        ("t-kv/a", {"on": True}),
        ("t-kv/b", [1, 2]),
        ("t-kv/c/d", None),
    ]
    stored_null = c1.get("t-kv/c/d")
    assert stored_null is not None and stored_null.value is None
    assert c1.get("t-kv/never-written") is None

    deleted = c2.delete("t-kv/a")
    assert deleted.origin == n2.id
    wait_for(5, lambda: c1.get("t-kv/a") is None, "the delete reaches n1")
    assert [e.key for e in c1.list("t-kv/")] == ["t-kv/b", "t-kv/c/d"]

    c1.set("t-kv/a b/é?#", 7)
    assert c1.get("t-kv/a b/é?#") == Entry("t-kv/a b/é?#", 7, c1.get("t-kv/a b/é?#").version, n1.id)  # type: ignore[union-attr]
    with pytest.raises(BadRequest, match="empty segment"):
        c1.set("t-kv//x", 1)
    with pytest.raises(ValueError):
        c1.set("t-kv/nan", float("nan"))


def test_watch_sees_changes_deletes_and_pulses(cluster: Cluster) -> None:
    n1, _, n3 = cluster.daemons
    c1, c2, c3 = clients(cluster)
    with c2.watch("t-watch") as watch:
        c1.set("t-watch/x", 1)
        first = watch.get(timeout=5)
        assert isinstance(first, Change)
        assert (first.key, first.value, first.deleted, first.origin) == ("t-watch/x", 1, False, n1.id)
        c1.set("t-watched-not", 2)
        c3.pulse("t-watch/bell", {"ding": 1})
        assert watch.get(timeout=5) == Pulse("t-watch/bell", {"ding": 1}, n3.id)
        c1.delete("t-watch/x")
        gone = watch.get(timeout=5)
        assert isinstance(gone, Change)
        assert (gone.key, gone.value, gone.deleted) == ("t-watch/x", None, True)
        assert gone.seq > first.seq
        with pytest.raises(TimeoutError):
            watch.get(timeout=0.3)
    assert list(watch) == [], "a closed watch ends"

    with c2.watch("t-watch", from_seq=first.seq) as resumed:
        replayed = resumed.get(timeout=5)
        assert isinstance(replayed, Change)
        assert (replayed.seq, replayed.key, replayed.deleted) == (gone.seq, "t-watch/x", True)


def expect(listener: Listener, match: Callable[[Event], bool], timeout: float = 5) -> List[Event]:
    """Reads events until one matches; returns those before it and it."""
    seen: List[Event] = []
    while True:
        try:
            event = listener.get(timeout=timeout)
        except TimeoutError:
            pytest.fail(f"no matching event within {timeout} s; got {seen}")
        seen.append(event)
        if match(event):
            return seen


def message(kind: str, sender: str, body: object) -> Callable[[Event], bool]:
    return lambda e: (e.type, e.sender, e.body) == (kind, sender, body)


def test_listen_and_send(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.daemons
    c1, c2, c3 = clients(cluster)
    listeners = [c.listen() for c in (c1, c2, c3)]
    try:
        for listener, daemon in zip(listeners, cluster.daemons):
            role = "promote_leader" if daemon is n1 else "promote_follower"
            before = expect(listener, lambda e: e.type == role)
            added = {e.peer["id"] for e in before if e.type == "peer_added" and e.peer}
            assert added == {d.id for d in cluster.daemons} - {daemon.id}
            assert before[-1].leader == (None if daemon is n1 else n1.id)
        term = c1.leader().term

        c1.send("broadcast", {"n": 1})
        for listener in listeners:
            got = expect(listener, message("leader_message", n1.id, {"n": 1}))[-1]
            assert (got.kind, got.term, got.reliable) == ("broadcast", term, False)

        c2.send("leader", {"q": 2})
        got = expect(listeners[0], message("peer_message", n2.id, {"q": 2}))[-1]
        assert got.kind == "leader"

        c3.send(n2.id, {"d": 3}, reliable=True)
        got = expect(listeners[1], message("peer_message", n3.id, {"d": 3}))[-1]
        assert (got.kind, got.reliable) == ("direct", True)

        c2.send("all", {"p": 4})
        for listener in (listeners[0], listeners[2]):
            assert expect(listener, message("peer_message", n2.id, {"p": 4}))[-1].kind == "publish"
        c1.send("broadcast", {"n": "end"})
        before_end = expect(listeners[1], message("leader_message", n1.id, {"n": "end"}))
        assert [e.body for e in before_end] == [{"n": "end"}], "n2 does not get its own publish"

        with pytest.raises(Conflict):
            c2.send("broadcast", {"from": "a follower"})
        with pytest.raises(NotFound):
            c1.send("00000000000000ff", {})
        with pytest.raises(BadRequest):
            c1.send("kitchen", {})
    finally:
        for listener in listeners:
            listener.close()


def test_call_and_serve(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.daemons
    c1, c2, c3 = clients(cluster)
    try:

        @c2.serve("py-adder")
        def add(body: dict) -> dict:
            if body.get("fail"):
                raise ValueError("no thanks")
            return {"sum": body["a"] + body["b"], "by": "n2"}

        assert add({"a": 1, "b": 1}) == {"sum": 2, "by": "n2"}, "the function is unchanged"
        wait_for(5, lambda: c1.services().get("py-adder") == [n2.id], "n1 learns the provider")

        assert c1.call("py-adder", {"a": 2, "b": 3}) == Reply(n2.id, {"sum": 5, "by": "n2"})
        assert c3.call("py-adder", {"a": 1, "b": 2}, policy=f"node:{n2.id}").body["sum"] == 3
        assert c2.call("py-adder", {"a": 0, "b": 0}, policy="local_first").sender == n2.id
        with pytest.raises(ProviderError, match="no thanks"):
            c1.call("py-adder", {"fail": True})
        assert c1.call_all("py-adder", {"a": 1, "b": 2}) == [Reply(n2.id, {"sum": 3, "by": "n2"})]
        with pytest.raises(Unavailable):
            c1.call("py-nobody", {})
        with pytest.raises(ValueError):
            c1.call("py-adder", {}, policy="all")

        c3.serve("py-adder")(lambda body: {"sum": body["a"] + body["b"], "by": "n3"})
        wait_for(5, lambda: sorted(c1.services().get("py-adder", [])) == sorted([n2.id, n3.id]),
                 "n1 learns the second provider")
        answers = [c1.call("py-adder", {"a": i, "b": 1}) for i in range(4)]
        assert [a.body["sum"] for a in answers] == [1, 2, 3, 4]
        assert {a.sender for a in answers} == {n2.id, n3.id}, "round robin uses both"
        assert {a.body["by"] for a in answers} == {"n2", "n3"}

        c2.stop_serving("py-adder")
        c3.close()
        wait_for(5, lambda: "py-adder" not in c1.services(), "the service is withdrawn")
        with pytest.raises(Unavailable):
            c1.call("py-adder", {"a": 1, "b": 1})
    finally:
        c2.close()
        c3.close()


def test_serving_resumes_when_the_daemon_comes_back(make_cluster: Callable[[str], Cluster]) -> None:
    daemon = make_cluster("serve").add("s1")
    client = Client(daemon.api)
    try:
        client.serve("py-echo")(lambda body: {"echo": body})
        assert client.call("py-echo", "hi").body == {"echo": "hi"}
        daemon.kill9()
        daemon.restart()
        answer = poll(5, lambda: _call_or_none(client, "py-echo", "again"))
        assert answer is not None and answer.body == {"echo": "again"}
    finally:
        client.close()


def _call_or_none(client: Client, service: str, body: object) -> Optional[Reply]:
    try:
        return client.call(service, body, timeout_ms=2000)
    except (Unavailable, ProviderError, DaemonUnreachable, DeliveryTimeout):
        return None


def test_subscriptions_fail_when_the_daemon_goes(make_cluster: Callable[[str], Cluster]) -> None:
    daemon = make_cluster("gone").add("g1")
    client = Client(daemon.api)
    watch, listener = client.watch(), client.listen()
    expect(listener, lambda e: e.type == "promote_leader")
    daemon.kill9()
    with pytest.raises(DaemonUnreachable):
        watch.get(timeout=5)
    with pytest.raises(DaemonUnreachable):
        while True:
            listener.get(timeout=5)
    with pytest.raises(DaemonUnreachable):
        client.status()


def test_token(make_cluster: Callable[[str], Cluster], monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = make_cluster("token").add("k1", "--api-token", "s3cret")
    with pytest.raises(Unauthorized):
        Client(daemon.api).status()
    with pytest.raises(Unauthorized):
        Client(daemon.api).listen()
    assert Client(daemon.api, token="s3cret").status().id == daemon.id
    monkeypatch.setenv("CONSORT_API_TOKEN", "s3cret")
    with Client(daemon.api).listen() as listener:
        expect(listener, lambda e: e.type == "promote_leader")


def test_finding_the_daemon(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    n1, n2, n3 = cluster.daemons
    for var in ("CONSORT_API", "CONSORT_DATA_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Client().url == "http://127.0.0.1:7471", "the default address"
    monkeypatch.setenv("CONSORT_DATA_DIR", str(n1.data_dir))
    assert Client().url == n1.api, "the default data dir's ports.json"
    monkeypatch.setenv("CONSORT_API", n2.api + "/")
    assert Client().status().id == n2.id, "CONSORT_API wins over the data dir"
    assert Client(data_dir=n3.data_dir).status().id == n3.id, "an argument wins over CONSORT_API"
    assert Client(f"127.0.0.1:{n1.api_port}").url == n1.api
    with pytest.raises(ValueError):
        Client("https://127.0.0.1:7471")
    with pytest.raises(DaemonUnreachable):
        Client(data_dir=tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.raises(DaemonUnreachable):
        Client(f"http://127.0.0.1:{free}").status()
