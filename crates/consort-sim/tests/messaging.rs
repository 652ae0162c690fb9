//! Messages and services over the simulated network: reliable messages exactly once and in
//! order under loss, duplication, partitions and crashes of bystanders; best-effort never
//! twice; a demoted leader's old-term broadcast never delivered; service requests run at most
//! once while providers crash and the network loses datagrams.

use std::time::Duration;

use consort_proto::election::{ElectionConfig, Mode};
use consort_proto::messaging::{CallError, CallOptions, Kind, Policy, SendOptions, Target};
use consort_sim::{Scenario, SeedRun, Sim};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn reliable(timeout: Duration) -> SendOptions {
    SendOptions {
        reliable: true,
        timeout: Some(timeout),
    }
}

/// A message body that sorts in sending order.
fn numbered(n: u32) -> Vec<u8> {
    format!("{n:08}").into_bytes()
}

fn numbers(bodies: &[Vec<u8>]) -> Vec<u32> {
    bodies
        .iter()
        .map(|b| String::from_utf8_lossy(b).parse().expect("numbered"))
        .collect()
}

/// Bodies of calls made with the `all` policy start with this.
const FANOUT: &[u8] = b"all:";

/// The invariants every run must keep.
fn sound(sim: &Sim) -> Result<(), String> {
    sim.reliable_in_order_at_most_once()
        .and_then(|()| sim.best_effort_at_most_once())
        .and_then(|()| sim.no_stale_leader_messages())
        .and_then(|()| sim.requests_ran_at_most_once(|r| !r.body.starts_with(FANOUT)))
        .map_err(|d| d.to_string())
}

#[test]
fn ten_thousand_reliable_messages_at_20_percent_loss_arrive_once_in_order() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "ten_thousand_reliable_messages_at_20_percent_loss_arrive_once_in_order",
    )
    .count(2)
    .run(|seed| {
        let mut sim = Scenario::new(seed).nodes(3).seeded_through(1).build();
        sim.await_convergence(Duration::from_secs(5))
            .map_err(|d| d.to_string())?;
        sim.set_loss(0.2);
        let to = sim.node_id(1);
        let mut ids = Vec::new();
        for n in 0..10_000 {
            let options = reliable(Duration::from_secs(120));
            let id = sim
                .send_message(0, Target::Node(to), numbered(n), options)
                .map_err(|e| e.to_string())?;
            ids.push(id);
            if n % 200 == 199 {
                sim.run_for(Duration::from_millis(10));
            }
        }
        sim.run_for(Duration::from_secs(30));
        let got = numbers(&sim.delivered(0, 1, true));
        if got != (0..10_000).collect::<Vec<_>>() {
            return Err(format!(
                "{} delivered, in order: {}",
                got.len(),
                got.is_sorted()
            ));
        }
        let acked = ids
            .iter()
            .filter(|id| sim.send_outcome(0, **id) == Some(&Ok(())))
            .count();
        if acked != 10_000 {
            return Err(format!("{acked} of 10000 acknowledged"));
        }
        sound(&sim)
    });
}

/// One random run: loss, duplication, a partition that heals before the messages' deadline, a
/// bystander crashing and restarting; reliable messages to one node and to all, best-effort to
/// all. Every reliable message must reach every live receiver once, in order.
fn messages_through_faults(seed: u64) -> Result<(), String> {
    let mut pick = StdRng::seed_from_u64(seed);
    let nodes = pick.random_range(3..=6);
    let loss = pick.random_range(0.0..0.2);
    let mut sim = Scenario::new(seed)
        .nodes(nodes)
        .seeded_through(2)
        .duplicate(pick.random_range(0.0..0.05))
        .build();
    sim.await_convergence(Duration::from_secs(10))
        .map_err(|d| d.to_string())?;
    sim.set_loss(loss);
    let (sender, receiver) = (0, 1);
    let to = sim.node_id(receiver);
    let bystander = nodes - 1;
    let count = 300;
    let mut reliable_ids = Vec::new();
    // One sequence per sender over both targets: bodies sort in sending order.
    let (mut direct_ks, mut all_ks) = (Vec::new(), Vec::new());
    let mut k = 0;
    for n in 0..count {
        let options = reliable(Duration::from_secs(60));
        let direct = sim
            .send_message(sender, Target::Node(to), numbered(k), options)
            .map_err(|e| e.to_string())?;
        direct_ks.push(k);
        let to_all = sim
            .send_message(sender, Target::All, numbered(k + 1), options)
            .map_err(|e| e.to_string())?;
        all_ks.push(k + 1);
        k += 2;
        reliable_ids.extend([direct, to_all]);
        let best_effort = numbered(1_000_000 + n);
        sim.send_message(sender, Target::All, best_effort, SendOptions::default())
            .map_err(|e| e.to_string())?;
        sim.run_for(Duration::from_millis(pick.random_range(0..20)));
        match n {
            50 => sim.partition(&[&[sender], &(1..nodes).collect::<Vec<_>>()]),
            80 => sim.heal(),
            150 if nodes > 3 => sim.crash(bystander),
            200 if nodes > 3 => sim.restart(bystander),
            _ => {}
        }
    }
    sim.heal();
    sim.run_for(Duration::from_secs(20));
    sound(&sim)?;
    let context = format!("{nodes} nodes, {:.0}% loss", loss * 100.0);
    let mut both: Vec<u32> = direct_ks.iter().chain(&all_ks).copied().collect();
    both.sort_unstable();
    let got = numbers(&sim.delivered(sender, receiver, true));
    if got != both {
        return Err(format!(
            "{context}: the receiver delivered {} of {} reliable messages",
            got.len(),
            both.len()
        ));
    }
    // Every node that ran throughout got every message to all.
    for node in (2..nodes).filter(|&n| n != bystander || nodes == 3) {
        let all = numbers(&sim.delivered(sender, node, true));
        if all != all_ks {
            return Err(format!(
                "{context}: n{node} got {} of {count} messages to all",
                all.len()
            ));
        }
    }
    let failed = reliable_ids
        .iter()
        .filter(|id| sim.send_outcome(sender, **id) != Some(&Ok(())))
        .count();
    // Sends to all that counted the crashed bystander as a receiver may end unacknowledged.
    if nodes == 3 && failed > 0 {
        return Err(format!(
            "{context}: {failed} reliable sends not acknowledged"
        ));
    }
    Ok(())
}

#[test]
fn reliable_messages_survive_loss_duplication_partitions_and_crashes() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "reliable_messages_survive_loss_duplication_partitions_and_crashes",
    )
    .count(60)
    .run(messages_through_faults);
}

/// The leader is cut off; the others elect a new leader at a higher term. Then only the old
/// leader's direction is mended: it still believes it leads, and its broadcasts (both classes)
/// reach the others, who must drop them. After the full heal, nothing stale was delivered.
fn demoted_leader_broadcast(seed: u64) -> Result<(), String> {
    let mut pick = StdRng::seed_from_u64(seed);
    let nodes = pick.random_range(3..=5);
    let mode = if pick.random_bool(0.5) {
        Mode::Ranked
    } else {
        Mode::Sticky
    };
    let mut sim = Scenario::new(seed)
        .nodes(nodes)
        .seeded_through(2)
        .election(ElectionConfig { mode, quorum: None })
        .build();
    sim.await_convergence(Duration::from_secs(10))
        .map_err(|d| d.to_string())?;
    let (_, parts) = sim
        .await_leaders(Duration::from_secs(3))
        .map_err(|d| d.to_string())?;
    let old = parts[0].leader.ok_or("no leader")?;
    let old_term = sim.engine(old).expect("runs").term();
    let others: Vec<usize> = (0..nodes).filter(|&n| n != old).collect();
    sim.partition(&[&[old], &others]);
    let moved = sim.run_until(Duration::from_secs(6), |s| {
        others.iter().all(|&n| {
            s.engine(n).is_some_and(|e| {
                e.term() > old_term && e.leader().is_some_and(|l| l != s.node_id(old))
            })
        })
    });
    moved.ok_or_else(|| format!("{mode}: the majority did not elect a new leader"))?;
    for &n in &others {
        sim.mend(old, n);
    }
    let before = sim.deliveries().len();
    for i in 0..20 {
        if sim.engine(old).is_some_and(|e| e.is_leader()) {
            let body = numbered(i);
            let options = if i % 2 == 0 {
                SendOptions::default()
            } else {
                reliable(Duration::from_secs(5))
            };
            sim.send_message(old, Target::Broadcast, body, options)
                .map_err(|e| e.to_string())?;
        }
        sim.run_for(Duration::from_millis(20));
    }
    let stale: Vec<usize> = sim.deliveries()[before..]
        .iter()
        .filter(|d| {
            d.to != old && matches!(d.message.kind, Kind::Broadcast { term } if term <= old_term)
        })
        .map(|d| d.to)
        .collect();
    if !stale.is_empty() {
        return Err(format!(
            "{mode}: nodes {stale:?} delivered n{old}'s old-term broadcast"
        ));
    }
    sim.heal();
    sim.run_for(Duration::from_secs(5));
    sound(&sim)
}

#[test]
fn a_demoted_leaders_old_term_broadcast_is_dropped() {
    SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "a_demoted_leaders_old_term_broadcast_is_dropped",
    )
    .count(60)
    .run(demoted_leader_broadcast);
}

/// Calls from one node to a service two or three others provide, under loss; one provider
/// crashes (and maybe returns) mid-run. No request runs twice; every call ends; calls that did
/// not reach a provider that died succeed.
fn calls_through_faults(seed: u64) -> Result<u64, String> {
    let mut pick = StdRng::seed_from_u64(seed);
    let providers = pick.random_range(2..=3);
    let nodes = providers + 1;
    let loss = pick.random_range(0.0..0.2);
    let mut sim = Scenario::new(seed).nodes(nodes).seeded_through(2).build();
    sim.await_convergence(Duration::from_secs(10))
        .map_err(|d| d.to_string())?;
    for p in 1..=providers {
        sim.serve(p, "light");
    }
    sim.run_for(Duration::from_secs(1));
    sim.set_loss(loss);
    let caller = 0;
    let victim = pick.random_range(1..=providers);
    let crash_at = pick.random_range(10..40);
    let mut calls = Vec::new();
    for n in 0..60u32 {
        if n == crash_at {
            sim.crash(victim);
        }
        if n == crash_at + 10 && pick.random_bool(0.5) {
            sim.restart(victim);
            sim.run_for(Duration::from_millis(300));
            sim.serve(victim, "light");
        }
        let fanout = n % 5 == 0;
        let options = CallOptions {
            policy: if fanout {
                Policy::All
            } else {
                Policy::RoundRobin
            },
            timeout: Duration::from_secs(5),
        };
        let body = if fanout {
            [FANOUT, &numbered(n)].concat()
        } else {
            numbered(n)
        };
        let id = sim
            .call(caller, "light", body, options)
            .map_err(|e| e.to_string())?;
        calls.push((n, id, options.policy));
        sim.run_for(Duration::from_millis(pick.random_range(5..100)));
    }
    sim.run_for(Duration::from_secs(8));
    sound(&sim)?;
    let mut ok = 0;
    for (n, id, policy) in calls {
        match sim.call_outcome(caller, id) {
            None => return Err(format!("call {n} never ended")),
            Some(Ok(replies)) => {
                if policy != Policy::All {
                    let body = replies[0].result.as_ref().map_err(|e| e.to_string())?;
                    if *body != [b"done:".as_slice(), &numbered(n)].concat() {
                        return Err(format!("call {n} got another call's reply"));
                    }
                }
                ok += 1;
            }
            // Accepted by the provider that crashed: not retried elsewhere, by design.
            Some(Err(CallError::ProviderLost(_) | CallError::Timeout(_))) => {}
            Some(Err(e)) => return Err(format!("call {n}: {e}")),
        }
    }
    Ok(ok)
}

#[test]
fn service_requests_run_at_most_once_through_loss_and_provider_crashes() {
    let results = SeedRun::new(
        env!("CARGO_CRATE_NAME"),
        "service_requests_run_at_most_once_through_loss_and_provider_crashes",
    )
    .count(60)
    .run(calls_through_faults);
    let ok: u64 = results.iter().map(|(_, ok)| ok).sum();
    println!(
        "{} runs: {ok} of {} calls succeeded, none ran twice",
        results.len(),
        results.len() * 60
    );
}
