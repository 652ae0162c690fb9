//! A queue of named deadlines. Time is always an argument; nothing here reads a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines with a payload, popped in time order (ties in insertion order).
#[derive(Debug)]
pub(crate) struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: std::collections::HashMap<u64, T>,
    seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            entries: Default::default(),
            seq: 0,
        }
    }
}

impl<T> TimerQueue<T> {
    /// Schedules `timer` to fire at `at`.
    pub(crate) fn push(&mut self, at: Instant, timer: T) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.entries.insert(self.seq, timer);
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let Reverse((at, seq)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.entries.remove(&seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.push(t0 + Duration::from_millis(20), "b");
        q.push(t0 + Duration::from_millis(10), "a");
        q.push(t0 + Duration::from_millis(20), "c");
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(q.pop_due(t0), None);
        let now = t0 + Duration::from_millis(20);
        assert_eq!(q.pop_due(now), Some("a"));
        assert_eq!(q.pop_due(now), Some("b"));
        assert_eq!(q.pop_due(now), Some("c"));
        assert_eq!(q.pop_due(now), None);
        assert_eq!(q.next_deadline(), None);
    }
}
