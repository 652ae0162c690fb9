//! Replicated state: every node holds every entry; writes spread at once, anti-entropy repairs
//! what was lost, last writer wins.

pub mod entry;

pub use entry::{Clock, Entry, Hlc, InvalidData, Key, Value, Version, MAX_KEY_LEN};
