//! The fingerprint tree: a 16-ary tree over the 64-bit position hash of each key.
//!
//! A [`Node`] at level `l` holds the keys whose position hash starts with its `l` nibbles; its
//! [`Fingerprint`] is the XOR of the item hashes of those entries (a hash of key and version) and
//! their count. XOR makes the fingerprint order-free and lets an apply update it in place: remove
//! the old item, add the new one, at every level. The store keeps the top levels in one dense
//! array ([`Tree`]) and finds deeper fingerprints by scanning the few entries below a node.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::replica::entry::{Entry, Key, Version};

/// Children per node.
pub const ARITY: usize = 16;

/// The deepest level: at 16 nibbles a node is one position hash.
pub const MAX_LEVEL: u8 = 16;

/// Deepest level kept in the dense array; below it, fingerprints come from a scan.
const MAX_DENSE_DEPTH: u8 = 5;

/// The dense array deepens once the store averages more entries than this per deepest node.
const GROW_AT: usize = 8;

/// A node of the fingerprint tree: the keys whose position hash starts with the `level` nibbles
/// of `prefix` (right-aligned: `prefix < 16^level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node {
    /// Depth, 0 (the root, every key) to [`MAX_LEVEL`].
    pub level: u8,
    /// The leading nibbles of the position hash, as a number.
    pub prefix: u64,
}

impl Node {
    /// The root: every key.
    pub const ROOT: Node = Node {
        level: 0,
        prefix: 0,
    };

    /// The node at `level` that holds `key`.
    pub fn containing(key: &Key, level: u8) -> Node {
        Node::at(KeyHash::of(key).pos, level.min(MAX_LEVEL))
    }

    /// Whether the node exists: level at most [`MAX_LEVEL`], prefix within `16^level`.
    pub fn is_valid(self) -> bool {
        self.level <= MAX_LEVEL && (self.level == MAX_LEVEL || self.prefix >> (4 * self.level) == 0)
    }

    /// Whether `key` lies under this node.
    pub fn contains(self, key: &Key) -> bool {
        Node::containing(key, self.level) == self
    }

    /// Child number `nibble` (0 to 15). The caller checks `level < MAX_LEVEL`.
    pub fn child(self, nibble: usize) -> Node {
        debug_assert!(self.level < MAX_LEVEL && nibble < ARITY);
        Node {
            level: self.level + 1,
            prefix: (self.prefix << 4) | nibble as u64,
        }
    }

    pub(crate) fn at(pos: u64, level: u8) -> Node {
        let prefix = match level {
            0 => 0,
            _ => pos >> (64 - 4 * u32::from(level)),
        };
        Node { level, prefix }
    }

    /// Which child of this node holds position `pos`.
    pub(crate) fn nibble_of(self, pos: u64) -> usize {
        (Node::at(pos, self.level + 1).prefix & 0xf) as usize
    }

    /// The [`Place`]s under this node, as an inclusive range.
    pub(crate) fn span(self) -> std::ops::RangeInclusive<Place> {
        if self.level == 0 {
            return 0..=Place::MAX;
        }
        let shift = 128 - 4 * u32::from(self.level);
        let low = u128::from(self.prefix) << shift;
        low..=low | ((1u128 << shift) - 1)
    }
}

/// Where an entry sits in the tree: its position hash in the high 64 bits, its key id in the low
/// 64. Both come from SHA-256 of the key, so two keys share a place only if they share 128 bits of
/// SHA-256 (never, in practice).
pub(crate) type Place = u128;

/// The hashes of a key: where it sits in the tree, and an id that is independent of the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyHash {
    pub(crate) pos: u64,
    pub(crate) kid: u64,
}

impl KeyHash {
    pub(crate) fn of(key: &Key) -> KeyHash {
        let digest = Sha256::new()
            .chain_update(b"consort/replica/key\0")
            .chain_update(key.as_str().as_bytes())
            .finalize();
        let word = |i: usize| u64::from_be_bytes(digest[i..i + 8].try_into().expect("8 bytes"));
        KeyHash {
            pos: word(0),
            kid: word(8),
        }
    }

    pub(crate) fn place(self) -> Place {
        (u128::from(self.pos) << 64) | u128::from(self.kid)
    }

    pub(crate) fn from_place(place: Place) -> KeyHash {
        KeyHash {
            pos: (place >> 64) as u64,
            kid: place as u64,
        }
    }
}

/// The item hash of a key at a version: what a fingerprint adds up.
pub(crate) fn item_hash(kid: u64, version: Version) -> u64 {
    let h = mix(kid ^ version.hlc.0.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    mix(h ^ version.origin.0.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
}

/// The MurmurHash3 64-bit finalizer: a bijection whose every output bit depends on every input bit.
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A summary of a set of entries: XOR of their item hashes, and how many there are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// XOR of the item hashes.
    pub hash: u64,
    /// Number of entries.
    pub count: u64,
}

impl Fingerprint {
    /// The fingerprint of a set holding only `entry`.
    pub fn of(entry: &Entry) -> Fingerprint {
        let kid = KeyHash::of(&entry.key).kid;
        Fingerprint {
            hash: item_hash(kid, entry.version),
            count: 1,
        }
    }

    /// Adds the entries summed up by `other` (a disjoint set).
    pub fn add(&mut self, other: Fingerprint) {
        self.hash ^= other.hash;
        self.count += other.count;
    }

    pub(crate) fn add_item(&mut self, item: u64) {
        self.add(Fingerprint {
            hash: item,
            count: 1,
        });
    }

    /// The fingerprint under a round's salt, cut to `N` bytes. Salting makes a collision of the
    /// cut form last one round only: a different salt mixes differently.
    pub(crate) fn salted<const N: usize>(self, salt: u64) -> [u8; N] {
        let mixed = mix(mix(self.hash ^ salt) ^ self.count);
        mixed.to_be_bytes()[..N].try_into().expect("N <= 8")
    }
}

/// The dense top of the tree: one fingerprint per node for levels `0..=depth`.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    depth: u8,
    cells: Vec<Cell>,
}

/// A dense fingerprint; the count fits in 32 bits to keep the array small.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    hash: u64,
    count: u32,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::with_depth(1)
    }
}

impl Tree {
    fn with_depth(depth: u8) -> Tree {
        Tree {
            depth,
            cells: vec![Cell::default(); offset(depth + 1)],
        }
    }

    /// Adds (or removes: XOR is its own inverse) an item at position `pos` on every level.
    pub(crate) fn toggle(&mut self, pos: u64, item: u64, added: bool) {
        for level in 0..=self.depth {
            let cell = &mut self.cells[index(Node::at(pos, level))];
            cell.hash ^= item;
            if added {
                cell.count += 1;
            } else {
                cell.count -= 1;
            }
        }
    }

    /// Swaps one item hash for another at position `pos` on every level.
    pub(crate) fn swap(&mut self, pos: u64, old: u64, new: u64) {
        for level in 0..=self.depth {
            self.cells[index(Node::at(pos, level))].hash ^= old ^ new;
        }
    }

    /// The fingerprint of `node`, if the dense array goes that deep.
    pub(crate) fn get(&self, node: Node) -> Option<Fingerprint> {
        (node.level <= self.depth).then(|| {
            let cell = self.cells[index(node)];
            Fingerprint {
                hash: cell.hash,
                count: u64::from(cell.count),
            }
        })
    }

    /// Whether a store of `len` entries calls for a deeper array.
    pub(crate) fn should_grow(&self, len: usize) -> bool {
        self.depth < MAX_DENSE_DEPTH && len > GROW_AT << (4 * u32::from(self.depth))
    }

    /// A one-level-deeper array filled from every item: O(len), and rare (each growth is 16x).
    pub(crate) fn deepened(&self, items: impl Iterator<Item = (u64, u64)>) -> Tree {
        let mut tree = Tree::with_depth(self.depth + 1);
        for (pos, item) in items {
            tree.toggle(pos, item, true);
        }
        tree
    }
}

/// Cells before level `level`: 1 + 16 + ... + 16^(level-1).
fn offset(level: u8) -> usize {
    ((1usize << (4 * u32::from(level))) - 1) / 15
}

fn index(node: Node) -> usize {
    offset(node.level) + node.prefix as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_nest_and_spans_partition() {
        let pos = 0xabcd_ef01_2345_6789u64;
        assert_eq!(Node::at(pos, 0), Node::ROOT);
        assert_eq!(Node::at(pos, 1).prefix, 0xa);
        assert_eq!(Node::at(pos, 3).prefix, 0xabc);
        assert_eq!(Node::at(pos, 16).prefix, pos);
        assert_eq!(Node::at(pos, 2).child(0xc), Node::at(pos, 3));
        assert_eq!(Node::at(pos, 2).nibble_of(pos), 0xc);
        let place = KeyHash { pos, kid: 7 }.place();
        for level in 0..=MAX_LEVEL {
            let node = Node::at(pos, level);
            assert!(node.is_valid());
            assert!(node.span().contains(&place));
        }
        let n = Node::at(pos, 1);
        assert_eq!(*n.span().start(), 0xa << 124);
        assert_eq!(*n.span().end(), (0xb << 124) - 1);
        assert!(!Node {
            level: 1,
            prefix: 16
        }
        .is_valid());
        assert!(!Node {
            level: 17,
            prefix: 0
        }
        .is_valid());
    }

    #[test]
    fn offsets_lay_levels_end_to_end() {
        assert_eq!(offset(0), 0);
        assert_eq!(offset(1), 1);
        assert_eq!(offset(2), 17);
        assert_eq!(offset(3), 273);
        assert_eq!(
            index(Node {
                level: 2,
                prefix: 255
            }),
            272
        );
    }

    #[test]
    fn salted_forms_differ_by_salt_but_agree_on_equal_sets() {
        let a = Fingerprint { hash: 1, count: 1 };
        let b = Fingerprint { hash: 2, count: 1 };
        assert_eq!(a.salted::<4>(9), a.salted::<4>(9));
        assert_ne!(a.salted::<8>(9), b.salted::<8>(9));
        assert_ne!(a.salted::<8>(9), a.salted::<8>(10));
    }
}
