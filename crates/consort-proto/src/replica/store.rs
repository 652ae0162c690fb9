//! The replicated store: every entry by key, merged last-writer-wins, with the fingerprints that
//! reconciliation compares kept up to date on every change.
//!
//! Merging is [`Store::apply`]: an entry replaces the stored one only if its [`Version`] is
//! greater, so applying any set of entries, in any order, any number of times, gives the same
//! store. Deletes are tombstones; [`Store::collect_tombstones`] drops old ones, and the store then
//! remembers the newest timestamp it collected (the GC horizon) and refuses entries stamped at or
//! before it for keys it does not hold, since such an entry may be a write that a collected
//! delete had overridden.
//!
//! Each entry is also kept in the order of the reconciliation tree (see
//! [`reconcile`](crate::replica::reconcile)), and the fingerprints of the tree's top levels are
//! updated in place on every change: O(depth) XORs, no rehash, no scan.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;

#[cfg(doc)]
use crate::replica::entry::Version;
use crate::replica::entry::{Entry, Hlc, Key};
use crate::replica::reconcile::tree::{item_hash, KeyHash, Node, Place, Tree, ARITY};
use crate::replica::reconcile::Fingerprint;

/// What [`Store::apply`] did with an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// The key was new.
    Inserted,
    /// The entry won over the stored one.
    Replaced {
        /// The entry it replaced.
        previous: Entry,
    },
    /// Nothing changed: the stored version is the same or newer, or the key is absent and the
    /// entry is not newer than the GC horizon (see [`Store::gc_horizon`]).
    Ignored,
}

/// Every entry of the replicated state, by key.
#[derive(Clone, Default)]
pub struct Store {
    entries: BTreeMap<StoredKey, Slot>,
    /// The same entries in tree order, with their item hashes.
    placed: BTreeMap<Place, Placed>,
    /// Tombstones, oldest first, for collection.
    tombstones: BTreeSet<(Hlc, Key)>,
    tree: Tree,
    horizon: Option<Hlc>,
}

#[derive(Clone)]
struct Slot {
    entry: Entry,
    place: Place,
}

#[derive(Clone, Debug)]
pub(crate) struct Placed {
    pub(crate) key: Key,
    pub(crate) item: u64,
}

/// A key as the map's key, so that lookups and ranges can go by `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StoredKey(Key);

impl Borrow<str> for StoredKey {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Merges `entry` in, last writer wins. Idempotent, and the result does not depend on order.
    ///
    /// An entry for a key the store does not hold is ignored if its timestamp is at or before the
    /// GC horizon: it may be an old write whose delete was collected, and taking it would bring
    /// the key back to life. (At, not only before: the write a delete overrode may share the
    /// delete's timestamp and lose on the origin.)
    pub fn apply(&mut self, entry: Entry) -> Applied {
        let Some(slot) = self.entries.get_mut(entry.key.as_str()) else {
            if self.horizon.is_some_and(|h| entry.version.hlc <= h) {
                return Applied::Ignored;
            }
            self.insert(entry);
            return Applied::Inserted;
        };
        if slot.entry.version >= entry.version {
            return Applied::Ignored;
        }
        let place = slot.place;
        let previous = std::mem::replace(&mut slot.entry, entry);
        let current = &slot.entry;
        let hash = KeyHash::from_place(place);
        let placed = self.placed.get_mut(&place).expect("every entry is placed");
        let old_item = placed.item;
        placed.item = item_hash(hash.kid, current.version);
        self.tree.swap(hash.pos, old_item, placed.item);
        if previous.is_tombstone() {
            self.tombstones
                .remove(&(previous.version.hlc, previous.key.clone()));
        }
        if current.is_tombstone() {
            self.tombstones
                .insert((current.version.hlc, current.key.clone()));
        }
        Applied::Replaced { previous }
    }

    fn insert(&mut self, entry: Entry) {
        let hash = KeyHash::of(&entry.key);
        let item = item_hash(hash.kid, entry.version);
        let key = entry.key.clone();
        if entry.is_tombstone() {
            self.tombstones.insert((entry.version.hlc, key.clone()));
        }
        let clash = self.placed.insert(
            hash.place(),
            Placed {
                key: key.clone(),
                item,
            },
        );
        debug_assert!(clash.is_none(), "two keys share 128 bits of SHA-256");
        self.tree.toggle(hash.pos, item, true);
        self.entries.insert(
            StoredKey(key),
            Slot {
                entry,
                place: hash.place(),
            },
        );
        if self.tree.should_grow(self.len()) {
            let items = self.placed.iter().map(|(p, x)| ((p >> 64) as u64, x.item));
            self.tree = self.tree.deepened(items);
        }
    }

    /// Forgets `key` outright and returns its entry. This is not a delete (a delete is a
    /// tombstone, merged with [`Store::apply`]): it is for dropping what a resync showed the group
    /// has forgotten, and it leaves no trace that would stop the key from coming back.
    pub fn remove(&mut self, key: &Key) -> Option<Entry> {
        let slot = self.entries.remove(key.as_str())?;
        let placed = self
            .placed
            .remove(&slot.place)
            .expect("every entry is placed");
        let pos = KeyHash::from_place(slot.place).pos;
        self.tree.toggle(pos, placed.item, false);
        if slot.entry.is_tombstone() {
            self.tombstones
                .remove(&(slot.entry.version.hlc, slot.entry.key.clone()));
        }
        Some(slot.entry)
    }

    /// The entry for `key`, tombstone or not.
    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key.as_str()).map(|slot| &slot.entry)
    }

    /// Entries whose key is `prefix` or lies under it (see [`Key::is_under`]), tombstones
    /// included, in key order. Visits only the matching range.
    pub fn range<'a>(&'a self, prefix: &str) -> impl Iterator<Item = &'a Entry> + 'a {
        let prefix = prefix.trim_end_matches('/');
        // Keys under `p` are `p` itself and those from "p/" up to "p0" ('0' follows '/').
        let (exact, below) = if prefix.is_empty() {
            (None, (Bound::Unbounded, Bound::Unbounded))
        } else {
            let below = (
                Bound::Included(format!("{prefix}/")),
                Bound::Excluded(format!("{prefix}0")),
            );
            (self.entries.get(prefix), below)
        };
        let bounds = (as_str(&below.0), as_str(&below.1));
        exact
            .into_iter()
            .chain(self.entries.range::<str, _>(bounds).map(|(_, slot)| slot))
            .map(|slot| &slot.entry)
    }

    /// Every entry, tombstones included, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.values().map(|slot| &slot.entry)
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries that hold a value.
    pub fn live_len(&self) -> usize {
        self.len() - self.tombstone_count()
    }

    /// Number of tombstones.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Removes the tombstones whose timestamp is before `older_than` and returns their keys.
    ///
    /// Peers should collect with the same rule (a fixed age behind `now`), so that a tombstone
    /// leaves every store at about the same time. A node that has not reconciled with anyone for
    /// longer than that age must resync from a peer instead of merging: it may hold writes whose
    /// deletes are gone everywhere else (compare [`Store::gc_horizon`]s).
    pub fn collect_tombstones(&mut self, older_than: Hlc) -> Vec<Key> {
        let mut collected = Vec::new();
        while let Some((hlc, _)) = self.tombstones.first() {
            if *hlc >= older_than {
                break;
            }
            let (hlc, key) = self.tombstones.pop_first().expect("just seen");
            let slot = self
                .entries
                .remove(key.as_str())
                .expect("tombstones are stored");
            let placed = self
                .placed
                .remove(&slot.place)
                .expect("every entry is placed");
            self.tree
                .toggle(KeyHash::from_place(slot.place).pos, placed.item, false);
            self.horizon = Some(self.horizon.map_or(hlc, |h| h.max(hlc)));
            collected.push(key);
        }
        collected
    }

    /// The newest timestamp of any tombstone ever collected (zero if none): entries at or before
    /// it are refused for keys the store does not hold.
    pub fn gc_horizon(&self) -> Hlc {
        self.horizon.unwrap_or_default()
    }

    /// The fingerprint of the entries under `node`: O(1) for the top levels of the tree, a scan
    /// of the node's entries below them.
    pub fn fingerprint(&self, node: Node) -> Fingerprint {
        self.tree.get(node).unwrap_or_else(|| {
            let mut fp = Fingerprint::default();
            for (_, placed) in self.placed.range(node.span()) {
                fp.add_item(placed.item);
            }
            fp
        })
    }

    /// The fingerprints of the 16 children of `node` (which must be above [`tree::MAX_LEVEL`]).
    ///
    /// [`tree::MAX_LEVEL`]: crate::replica::reconcile::tree::MAX_LEVEL
    pub(crate) fn child_fingerprints(&self, node: Node) -> [Fingerprint; ARITY] {
        let mut children = [Fingerprint::default(); ARITY];
        if self.tree.get(node.child(0)).is_some() {
            for (nibble, fp) in children.iter_mut().enumerate() {
                *fp = self.fingerprint(node.child(nibble));
            }
        } else {
            for (place, placed) in self.placed.range(node.span()) {
                children[node.nibble_of((place >> 64) as u64)].add_item(placed.item);
            }
        }
        children
    }

    /// How many entries lie under `node`, counting no further than `limit`.
    pub(crate) fn count_upto(&self, node: Node, limit: usize) -> usize {
        match self.tree.get(node) {
            Some(fp) => fp.count as usize,
            None => self.placed.range(node.span()).take(limit).count(),
        }
    }

    /// The entries under `node` in tree order: key id, item hash and key.
    pub(crate) fn placed_under(&self, node: Node) -> impl Iterator<Item = (u64, &Placed)> + '_ {
        self.placed
            .range(node.span())
            .map(|(place, placed)| (KeyHash::from_place(*place).kid, placed))
    }
}

fn as_str(bound: &Bound<String>) -> Bound<&str> {
    match bound {
        Bound::Included(s) => Bound::Included(s.as_str()),
        Bound::Excluded(s) => Bound::Excluded(s.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Two stores are equal when they hold the same entries; GC horizons are not compared.
impl PartialEq for Store {
    fn eq(&self, other: &Store) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Store {}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.len())
            .field("tombstones", &self.tombstone_count())
            .field("gc_horizon", &self.gc_horizon())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::replica::entry::{Value, Version};

    fn entry(key: &str, value: Option<&str>, hlc: u64, origin: u64) -> Entry {
        Entry {
            key: Key::new(key).unwrap(),
            value: value.map(|v| Value::parse(v).unwrap()),
            version: Version {
                hlc: Hlc(hlc),
                origin: NodeId(origin),
            },
        }
    }

    /// Recomputes the fingerprints of levels 0 to 3 from the entries and compares.
    fn audit(store: &Store) {
        let mut fresh = std::collections::HashMap::<Node, Fingerprint>::new();
        for e in store.iter() {
            for level in 0..=3 {
                let node = Node::containing(&e.key, level);
                fresh.entry(node).or_default().add(Fingerprint::of(e));
            }
        }
        for level in 0..=3u8 {
            for prefix in 0..(1u64 << (4 * level)) {
                let node = Node { level, prefix };
                let expected = fresh.get(&node).copied().unwrap_or_default();
                assert_eq!(store.fingerprint(node), expected, "{node:?}");
                if level < 3 {
                    let children = store.child_fingerprints(node);
                    for (nibble, fp) in children.iter().enumerate() {
                        assert_eq!(*fp, store.fingerprint(node.child(nibble)));
                    }
                }
            }
        }
    }

    #[test]
    fn last_writer_wins_and_ties_break_on_origin() {
        let mut s = Store::new();
        assert_eq!(s.apply(entry("a", Some("1"), 10, 1)), Applied::Inserted);
        assert_eq!(s.apply(entry("a", Some("0"), 9, 9)), Applied::Ignored);
        assert_eq!(s.apply(entry("a", Some("1"), 10, 1)), Applied::Ignored);
        let won = s.apply(entry("a", Some("2"), 10, 2));
        assert_eq!(
            won,
            Applied::Replaced {
                previous: entry("a", Some("1"), 10, 1)
            }
        );
        assert_eq!(
            s.get(&Key::new("a").unwrap()).unwrap().version.origin,
            NodeId(2)
        );
        audit(&s);
    }

    #[test]
    fn counts_follow_tombstones() {
        let mut s = Store::new();
        s.apply(entry("a", Some("1"), 1, 1));
        s.apply(entry("b", Some("1"), 1, 1));
        s.apply(entry("a", None, 2, 1));
        assert_eq!((s.len(), s.live_len(), s.tombstone_count()), (2, 1, 1));
        s.apply(entry("a", Some("3"), 3, 1));
        assert_eq!((s.len(), s.live_len(), s.tombstone_count()), (2, 2, 0));
        audit(&s);
    }

    #[test]
    fn ranges_match_whole_segments() {
        let mut s = Store::new();
        for k in ["a", "a-b", "a/b", "a/b/c", "a0", "ab", "b"] {
            s.apply(entry(k, Some("1"), 1, 1));
        }
        let keys = |p: &str| s.range(p).map(|e| e.key.to_string()).collect::<Vec<_>>();
        assert_eq!(keys("a"), ["a", "a/b", "a/b/c"]);
        assert_eq!(keys("a/"), ["a", "a/b", "a/b/c"]);
        assert_eq!(keys("a/b"), ["a/b", "a/b/c"]);
        assert_eq!(keys("").len(), 7);
        assert!(keys("c").is_empty());
        assert!(keys("a//b").is_empty());
        for p in ["a", "a/b", "", "ab", "zz"] {
            let slow: Vec<_> = s.iter().filter(|e| e.key.is_under(p)).collect();
            assert_eq!(s.range(p).collect::<Vec<_>>(), slow, "{p}");
        }
    }

    #[test]
    fn collected_deletes_stay_deleted() {
        let mut s = Store::new();
        s.apply(entry("a", None, 100, 1));
        s.apply(entry("b", None, 200, 1));
        s.apply(entry("c", Some("1"), 50, 1));
        assert_eq!(s.collect_tombstones(Hlc(150)), [Key::new("a").unwrap()]);
        assert_eq!(s.gc_horizon(), Hlc(100));
        assert_eq!((s.len(), s.tombstone_count()), (2, 1));
        // The write the delete overrode comes back from a stale peer: refused.
        assert_eq!(s.apply(entry("a", Some("0"), 90, 1)), Applied::Ignored);
        assert_eq!(s.apply(entry("a", Some("0"), 100, 0)), Applied::Ignored);
        // A newer write is taken; so is an old one for a key the store holds.
        assert_eq!(s.apply(entry("a", Some("2"), 101, 1)), Applied::Inserted);
        assert!(matches!(
            s.apply(entry("c", Some("2"), 60, 1)),
            Applied::Replaced { .. }
        ));
        assert!(s.collect_tombstones(Hlc(150)).is_empty());
        assert_eq!(s.gc_horizon(), Hlc(100));
        audit(&s);
    }

    #[test]
    fn fingerprints_survive_growth_and_removal() {
        let mut s = Store::new();
        for i in 0..3000u64 {
            s.apply(entry(&format!("k/{i}"), Some("1"), i, 1));
        }
        assert!(s
            .tree
            .get(Node {
                level: 2,
                prefix: 0
            })
            .is_some());
        for i in (0..3000u64).step_by(3) {
            s.apply(entry(&format!("k/{i}"), None, 5000 + i, 2));
        }
        s.collect_tombstones(Hlc(9000));
        assert_eq!(s.len(), 2000);
        audit(&s);
        for i in (1..3000u64).step_by(3).take(500) {
            assert!(s.remove(&Key::new(&format!("k/{i}")).unwrap()).is_some());
        }
        s.apply(entry("k/0", None, 9999, 1));
        assert!(s.remove(&Key::new("k/0").unwrap()).unwrap().is_tombstone());
        assert!(s.remove(&Key::new("k/0").unwrap()).is_none());
        assert_eq!((s.len(), s.tombstone_count()), (1500, 0));
        audit(&s);
    }

    #[test]
    fn deep_fingerprints_come_from_scans() {
        let mut s = Store::new();
        for i in 0..40u64 {
            s.apply(entry(&format!("k/{i}"), Some("1"), i, 1));
        }
        let key = Key::new("k/7").unwrap();
        let leaf = Node::containing(&key, 16);
        assert_eq!(s.fingerprint(leaf), Fingerprint::of(s.get(&key).unwrap()));
        let node = Node::containing(&key, 4);
        let sum = s
            .child_fingerprints(node)
            .iter()
            .map(|f| f.count)
            .sum::<u64>();
        assert_eq!(sum, s.fingerprint(node).count);
        assert_eq!(s.count_upto(Node::ROOT, 5), 40);
        assert_eq!(
            s.count_upto(node.child(3).child(3), 5),
            s.fingerprint(node.child(3).child(3)).count as usize
        );
    }
}
