//! Replicated state: every node holds every entry; writes spread at once, anti-entropy repairs
//! what was lost, last writer wins.

pub mod entry;
pub mod reconcile;
pub mod store;

pub use entry::{Clock, Entry, Hlc, InvalidData, Key, Value, Version, MAX_KEY_LEN};
pub use reconcile::{Session, Step};
pub use store::{Applied, Store};
