//! A deterministic simulator for Consort: many [`consort_proto::Engine`]s in one thread, a virtual
//! clock, and a seeded network that delays, loses, reorders and duplicates datagrams, and can be
//! partitioned. Nodes crash, stop gracefully, restart from their saved state and change address.
//!
//! One `u64` seed fixes everything: node ids, every engine's random choices, and the fate of every
//! datagram. The only real clock read is one [`std::time::Instant`] taken when a [`Sim`] is
//! created; engines see that instant plus the virtual time. Hours of virtual time run in seconds.
//!
//! # Writing a scenario
//!
//! ```
//! use std::time::Duration;
//! use consort_proto::MemberState;
//! use consort_sim::Scenario;
//!
//! // Five nodes on a LAN with 5% loss, all joining through node 0.
//! let mut sim = Scenario::new(42).nodes(5).loss(0.05).build();
//! sim.await_convergence(Duration::from_secs(10)).expect("joined");
//!
//! sim.crash(3);
//! let crashed_at = sim.now();
//! sim.run_for(Duration::from_secs(5));
//! for (observer, took) in sim.detections(3, crashed_at, MemberState::Down) {
//!     println!("n{observer} saw n3 down after {took:?}");
//! }
//! // Under loss a live peer may be suspect at any instant: ask for agreement "soon".
//! sim.await_convergence(Duration::from_secs(5)).expect("every live node sees n3 down");
//! ```
//!
//! Lower-level control is on [`Sim`]: [`Sim::add_node`], [`Sim::add_seed`], [`Sim::start`],
//! [`Sim::crash`], [`Sim::stop`], [`Sim::restart`], [`Sim::set_addr`], [`Sim::partition`],
//! [`Sim::cut`] (one direction), [`Sim::mend`] (one direction), [`Sim::heal`],
//! [`Sim::set_loss`], [`Sim::run_for`], [`Sim::run_until`]. Nodes are named by index (`n0`,
//! `n1`, ...) and listen at `10.213.0.<index+1>:7470`.
//!
//! The simulator drives membership, elections and replicated state: datagrams, timers, saved
//! state, events, streams and commits. Each node's simulated disk keeps its
//! [`consort_proto::SavedState`] and the entries and metadata of every `Output::Commit`, durable
//! at once (newer versions only, collected keys removed); the engine is then told the commit's
//! writes are durable before anything else happens. A restart passes the disk's entries and
//! metadata back in `Setup`: a crash loses nothing committed, and nothing else. Each node's wall
//! clock is virtual time plus an optional skew ([`Sim::set_skew`], [`Scenario::max_skew`]).
//! `Output::Stream` frames reach the node listening at the address if it has the expected id,
//! after the link's latency, in order per (sender, receiver) pair, and are never lost, except
//! that a stream breaks (frames in flight dropped) when the link is cut either way or either end
//! stops or crashes.
//!
//! Each node's election priority and settings ([`Sim::set_priority`], [`Sim::set_election`],
//! [`Scenario::priorities`], [`Scenario::election`]) apply from its next start; its clock skew
//! may be negative ([`Sim::set_skew_ms`], [`Scenario::signed_skew`]). [`Sim::slow_down`] makes
//! one direction of a link slower than the other ([`LinkDelay`]: a constant extra delay, and
//! bursts of queueing), for datagrams only.
//!
//! [`Sim::write`] writes through a node (not queued) and records each write acknowledged as
//! applied ([`Sim::acked_writes`]); [`Sim::store`] lists a node's entries, tombstones included.
//! [`Sim::state_converged`] checks that every running node holds the same entries, and
//! [`Sim::acked_writes_survive`] that no acknowledged write was lost or rolled back anywhere.
//!
//! # Seeds and replay
//!
//! Tests run a scenario over many seeds with [`SeedRun`], on every core. When one fails, it prints
//! the seed and a command such as
//!
//! ```text
//! CONSORT_SIM_SEED=1234 cargo test -p consort-sim --release --test churn -- members_agree_after_faults_stop --exact --nocapture
//! ```
//!
//! which runs exactly that seed, and nothing else, again. Add `CONSORT_SIM_TRACE=1` to print every
//! scenario step and membership event with its virtual time, or `CONSORT_SIM_TRACE=2` to print
//! every delivered datagram, decoded, as well. `CONSORT_SIM_RUNS=5000` runs that many seeds of
//! every test instead of its own count, for a soak.
//!
//! # Invariants and measurements
//!
//! [`Sim::membership_converged`] checks that every running node lists every other running node
//! once, `Alive`, at its current address and generation, and every crashed or stopped node as
//! `Down`, `Left` or not at all. [`Sim::false_downs`] lists `Down` events about nodes that were in
//! fact running. [`Sim::leaders_agree`] checks the election invariant: in each connected part of
//! the network ([`Sim::components`]) every node follows the same leader at the same term, that
//! leader is in the part and alone in leading there, and a part below its quorum has none
//! ([`Sim::await_leaders`] waits for it). [`Sim::election_history_sound`] checks the recorded
//! election events ([`Sim::election_records`]): terms never go down within a run, and nobody
//! follows a leadership its leader never held. [`Sim::wall_us`] is a node's exact wall clock,
//! against which [`Sim::offset_error_us`] measures its clock estimates. [`Sim::detections`]
//! measures how long each peer took to report a crash or a leave; [`Summary`] gives median, p90
//! and max. The `tune` example measures failure detection and false downs for any timings:
//!
//! ```text
//! cargo run -p consort-sim --release --example tune -- probe_period=300 suspect=600 minutes=100
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod check;
mod coordination;
mod messaging;
mod net;
mod node;
mod record;
mod replay;
mod scenario;
mod sim;
mod state;
mod trace;

pub use check::Divergence;
pub use coordination::Leadership;
pub use messaging::{Delivery, ServedRequest};
pub use net::{lan_addr, LinkDelay, NetConfig, NetStats, PORT};
pub use node::NodeStatus;
pub use record::{ElectionRecord, Record, Summary};
pub use replay::{env_runs, env_seed, SeedRun, RUNS_ENV, SEED_ENV};
pub use scenario::Scenario;
pub use sim::{Sim, Tap, CHECK_EVERY, TRACE_ENV, WALL_EPOCH_MS};
pub use state::AckedWrite;
