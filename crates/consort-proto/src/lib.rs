//! Consort's protocol as a deterministic state machine: no sockets, no tasks, no clock reads.
//!
//! A node is an [`Engine`]. The driver (the `consort` crate, or the `consort-sim` simulator) owns the
//! socket and the clock and moves bytes and time in and out. The rule, as in quinn-proto and str0m:
//! **after every input, drain [`Engine::poll_output`] until it returns `None`, acting on each output in
//! order; then sleep until a datagram arrives or [`Engine::poll_timeout`] passes.**
//!
//! ```no_run
//! use std::time::Instant;
//! use consort_proto::{Config, Engine, Keyring, NodeId, Output, SavedState, Setup};
//! # fn recv() -> (std::net::SocketAddr, Vec<u8>) { unimplemented!() }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # fn persist(_: SavedState) {}
//! let keyring = Keyring::from_secrets(&["a group secret of 16+ bytes"], "home").unwrap();
//! let mut engine = Engine::new(
//!     Setup {
//!         id: NodeId(0x1234),
//!         name: "kitchen".into(),
//!         priority: 0,
//!         addr: "192.168.1.10:7470".parse().unwrap(),
//!         saved: SavedState::default(),
//!         keyring,
//!         config: Config::default(),
//!         seed: 42,
//!         wall_ms: 0,
//!         replica: Default::default(),
//!         entries: Vec::new(),
//!         meta: Default::default(),
//!         election: Default::default(),
//!     },
//!     Instant::now(),
//! );
//! engine.add_seed(Instant::now(), "192.168.1.11:7470".parse().unwrap());
//! loop {
//!     while let Some(output) = engine.poll_output() {
//!         match output {
//!             Output::Transmit { to, datagram } => send(to, &datagram),
//!             Output::Save(state) => persist(state), // durable before the next output
//!             Output::Event(event) => println!("{event:?}"),
//!             _ => {}
//!         }
//!     }
//!     // Wait for a datagram or until `engine.poll_timeout()`; then feed whichever came first:
//!     let (from, bytes) = recv();
//!     engine.handle_datagram(Instant::now(), from, &bytes);
//!     engine.handle_timeout(Instant::now());
//! }
//! ```
//!
//! Modules, one concern each: [`wire`] (framing, AEAD, replay window), [`membership`] (SWIM via
//! foca, plus graceful leave), [`codec`] (Consort's control messages), [`id`] (node ids and
//! identities), [`config`] (timings).

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod clock;
pub mod codec;
pub mod config;
pub mod election;
mod engine;
pub mod id;
pub mod membership;
pub mod messaging;
pub mod replica;
pub mod stream;
mod timer;
pub mod wire;

pub use config::Config;
pub use engine::{Engine, Event, Output, SavedState, Setup, Stats};
pub use id::{Identity, NodeId};
pub use membership::{Member, MemberEvent, MemberState};
pub use wire::{Keyring, RejectReason};
