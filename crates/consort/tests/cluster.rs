//! Three real nodes on loopback: join through a seed, leave gracefully, restart as the same node.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use consort::{MemberState, Node, NodeConfig, NodeId};

const SECRET: &str = "cluster test secret, 32 bytes ok";

fn config(dir: &Path, group: &str, seeds: &[SocketAddr]) -> NodeConfig {
    let mut c = NodeConfig::new(dir, group, SECRET);
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.mdns = false;
    c.seeds = seeds.to_vec();
    c
}

/// The state `observer` shows for `id`, if listed.
async fn state_of(observer: &Node, id: NodeId) -> Option<MemberState> {
    observer
        .members()
        .await
        .into_iter()
        .find(|m| m.identity.id == id)
        .map(|m| m.state)
}

/// Polls until every observer shows `id` in `state`; returns how long it took.
async fn wait_for(
    observers: &[&Node],
    id: NodeId,
    state: MemberState,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for o in observers {
            all &= state_of(o, id).await == Some(state);
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{id} not {state:?} everywhere within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_leave_and_return() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Node::start(config(dirs[0].path(), "cluster-test", &[]))
        .await
        .unwrap();
    let seed = a.local_addr();
    let b = Node::start(config(dirs[1].path(), "cluster-test", &[seed]))
        .await
        .unwrap();
    let c = Node::start(config(dirs[2].path(), "cluster-test", &[seed]))
        .await
        .unwrap();

    for n in [&a, &b, &c] {
        wait_for(
            &[&a, &b, &c],
            n.id(),
            MemberState::Alive,
            Duration::from_secs(3),
        )
        .await;
    }
    for n in [&a, &b, &c] {
        assert_eq!(n.members().await.len(), 3, "one entry per node");
    }

    // A graceful stop is `left`, not `down`.
    let c_id = c.id();
    c.leave().await;
    drop(c); // the handle owns the data dir lock
    wait_for(&[&a, &b], c_id, MemberState::Left, Duration::from_secs(1)).await;

    // Restarted from the same data dir: the same id, alive again, listed once.
    let c = Node::start(config(dirs[2].path(), "cluster-test", &[seed]))
        .await
        .unwrap();
    assert_eq!(c.id(), c_id);
    wait_for(&[&a, &b], c_id, MemberState::Alive, Duration::from_secs(2)).await;
    for n in [&a, &b] {
        let entries = n
            .members()
            .await
            .into_iter()
            .filter(|m| m.identity.id == c_id)
            .count();
        assert_eq!(entries, 1);
    }
    for n in [a, b, c] {
        n.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_secret_never_joins_and_is_counted() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Node::start(config(dirs[0].path(), "secret-test", &[]))
        .await
        .unwrap();
    let mut stranger = config(dirs[1].path(), "secret-test", &[a.local_addr()]);
    stranger.secrets = vec!["a different secret, also long enough".into()];
    let stranger = Node::start(stranger).await.unwrap();

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(a.members().await.len(), 1);
        assert_eq!(stranger.members().await.len(), 1);
    }
    let stats = a.status().await.unwrap().stats;
    let rejected = stats.rejected(consort::RejectReason::UnknownKey)
        + stats.rejected(consort::RejectReason::BadTag);
    assert!(
        rejected >= 2,
        "stranger's announces were rejected: {stats:?}"
    );
    a.leave().await;
    stranger.leave().await;
}
