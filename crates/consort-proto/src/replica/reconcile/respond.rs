//! The responder: answers a [`Request`] from the store alone, remembering nothing.

use std::collections::BTreeMap;

use super::message::{
    encoded_len, Answer, Probe, Reply, Request, Summary, VersionAt, FINGERPRINT_LEN, HEADER_LEN,
    MAX_MESSAGE, TAG_LEN,
};
use super::tree::{Node, ARITY, MAX_LEVEL};
use super::{differing, salt, ItemTag, LISTED_MAX, SPLIT_ABOVE};
use crate::replica::entry::Key;
use crate::replica::store::Store;

/// What to do for one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Send this back to the initiator.
    pub reply: Reply,
    /// Send these entries to the initiator: it lacks them or asked for them.
    pub push: Vec<Key>,
    /// The initiator's summary, when the request opened a round.
    pub peer: Option<Summary>,
}

/// Why a request was refused. It comes from a group member, so this is a bug or a version
/// mismatch, never routine; nothing was answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRequest {
    /// A probe names a node that does not exist, or asks for the children of a last-level node.
    #[error("no such tree node: {0:?}")]
    Node(Node),
    /// A child fingerprint list is not 16 fingerprints long.
    #[error("expected {expected} bytes of child fingerprints, got {got}")]
    Fingerprints {
        /// The length required.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// An item list is not whole tags, or holds more than a probe may.
    #[error("bad item list of {0} bytes")]
    Tags(usize),
}

impl Store {
    /// Answers a reconciliation request: as many of its probes as fit one reply, in order.
    ///
    /// Each probe costs work proportional to the entries under its node, and a node with more
    /// than a few dozen is never listed (the answer is [`Answer::Split`]), so a request never
    /// makes the store scan much of itself.
    pub fn answer(&self, request: &Request) -> Result<Response, BadRequest> {
        request.probes.iter().try_for_each(check)?;
        let salt = salt(request.round);
        let mut response = Response {
            reply: Reply {
                round: request.round,
                seq: request.seq,
                answers: Vec::new(),
            },
            push: Vec::new(),
            peer: None,
        };
        let mut size = HEADER_LEN;
        for probe in &request.probes {
            let mut push = Vec::new();
            let answer = self.answer_probe(probe, salt, &mut push);
            size += encoded_len(&answer);
            if size > MAX_MESSAGE {
                break;
            }
            if let Probe::Root { summary, .. } = probe {
                response.peer = Some(*summary);
            }
            response.reply.answers.push(answer);
            response.push.extend(push);
        }
        Ok(response)
    }

    /// This store's [`Summary`].
    pub fn summary(&self) -> Summary {
        Summary {
            len: self.len() as u64,
            horizon: self.gc_horizon(),
        }
    }

    fn answer_probe(&self, probe: &Probe, salt: u64, push: &mut Vec<Key>) -> Answer {
        match probe {
            Probe::Root {
                summary,
                fingerprint,
            } => {
                let mine = self.fingerprint(Node::ROOT);
                let same = summary.len == mine.count && *fingerprint == mine.salted::<8>(salt);
                Answer::Root {
                    summary: self.summary(),
                    children: (!same).then(|| self.salted_children(Node::ROOT, salt)),
                }
            }
            Probe::Children { node, fingerprints } => {
                let differ = differing(&self.salted_children(*node, salt), fingerprints);
                Answer::Children { differ }
            }
            Probe::Items { node, tags } => self.compare_items(*node, tags, salt, push),
            Probe::Pull { keys } => {
                push.extend(keys.iter().filter(|k| self.get(k).is_some()).cloned());
                Answer::Pulled
            }
        }
    }

    /// The 16 child fingerprints of `node`, salted and cut, end to end.
    pub(crate) fn salted_children(&self, node: Node, salt: u64) -> Vec<u8> {
        let children = self.child_fingerprints(node);
        children
            .iter()
            .flat_map(|fp| fp.salted::<FINGERPRINT_LEN>(salt))
            .collect()
    }

    /// Matches the initiator's listed entries with this store's by key tag. A tag that stands
    /// for more than one key on either side is left alone: the next round's salt splits it.
    fn compare_items(&self, node: Node, tags: &[u8], salt: u64, push: &mut Vec<Key>) -> Answer {
        if node.level < MAX_LEVEL && self.count_upto(node, SPLIT_ABOVE + 1) > SPLIT_ABOVE {
            return Answer::Split;
        }
        let theirs: Vec<ItemTag> = tags
            .chunks_exact(TAG_LEN)
            .map(ItemTag::from_bytes)
            .collect();
        let mut listed: BTreeMap<u16, usize> = BTreeMap::new();
        for tag in &theirs {
            *listed.entry(tag.key).or_default() += 1;
        }
        let mine: Vec<(ItemTag, &Key)> = self
            .placed_under(node)
            .map(|(kid, placed)| (ItemTag::new(kid, placed.item, salt), &placed.key))
            .collect();
        let mut by_tag: BTreeMap<u16, Vec<(u16, &Key)>> = BTreeMap::new();
        for (tag, key) in &mine {
            by_tag.entry(tag.key).or_default().push((tag.version, *key));
            if !listed.contains_key(&tag.key) {
                push.push((*key).clone()); // they did not list it: theirs to take
            }
        }
        let mut want = vec![0u8; theirs.len().div_ceil(8)];
        let mut differ = Vec::new();
        for (index, tag) in theirs.iter().enumerate() {
            if listed[&tag.key] > 1 {
                continue;
            }
            match by_tag.get(&tag.key).map(Vec::as_slice) {
                None => want[index / 8] |= 1 << (index % 8),
                Some([(version, _)]) if *version == tag.version => {}
                Some([(_, key)]) => differ.push(VersionAt {
                    index: index as u16,
                    version: self.get(key).expect("placed entries are stored").version,
                }),
                Some(_) => {}
            }
        }
        Answer::Items { want, differ }
    }
}

/// Checks a probe's shape before anything is answered.
fn check(probe: &Probe) -> Result<(), BadRequest> {
    match probe {
        Probe::Root { .. } | Probe::Pull { .. } => Ok(()),
        Probe::Children { node, fingerprints } => {
            if !node.is_valid() || node.level == MAX_LEVEL {
                return Err(BadRequest::Node(*node));
            }
            let expected = ARITY * FINGERPRINT_LEN;
            if fingerprints.len() != expected {
                return Err(BadRequest::Fingerprints {
                    expected,
                    got: fingerprints.len(),
                });
            }
            Ok(())
        }
        Probe::Items { node, tags } => {
            if !node.is_valid() {
                return Err(BadRequest::Node(*node));
            }
            if tags.len() % TAG_LEN != 0 || tags.len() / TAG_LEN > LISTED_MAX {
                return Err(BadRequest::Tags(tags.len()));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::replica::entry::{Entry, Hlc, Value, Version};
    use crate::replica::reconcile::message::encoded_len;
    use crate::replica::reconcile::Message;

    fn entry(key: &str, hlc: u64) -> Entry {
        Entry {
            key: Key::new(key).unwrap(),
            value: Some(Value::parse("1").unwrap()),
            version: Version {
                hlc: Hlc(hlc),
                origin: NodeId(1),
            },
        }
    }

    fn store(keys: impl IntoIterator<Item = (String, u64)>) -> Store {
        let mut s = Store::new();
        for (k, hlc) in keys {
            s.apply(entry(&k, hlc));
        }
        s
    }

    fn request(probes: Vec<Probe>) -> Request {
        Request {
            round: 5,
            seq: 0,
            probes,
        }
    }

    fn listing(store: &Store, node: Node, round: u32) -> (Vec<u8>, Vec<Key>) {
        let (mut tags, mut keys) = (Vec::new(), Vec::new());
        for (kid, placed) in store.placed_under(node) {
            tags.extend(ItemTag::new(kid, placed.item, salt(round)).to_bytes());
            keys.push(placed.key.clone());
        }
        (tags, keys)
    }

    #[test]
    fn malformed_probes_are_refused_whole() {
        let s = store([("a".to_string(), 1)]);
        let pull = Probe::Pull {
            keys: vec![Key::new("a").unwrap()],
        };
        let bad = [
            Probe::Children {
                node: Node::ROOT,
                fingerprints: vec![0; 63],
            },
            Probe::Children {
                node: Node {
                    level: 16,
                    prefix: 0,
                },
                fingerprints: vec![0; 64],
            },
            Probe::Items {
                node: Node {
                    level: 2,
                    prefix: 256,
                },
                tags: Vec::new(),
            },
            Probe::Items {
                node: Node::ROOT,
                tags: vec![0; 5],
            },
        ];
        for probe in bad {
            assert!(s.answer(&request(vec![pull.clone(), probe])).is_err());
        }
        let ok = s.answer(&request(vec![pull])).unwrap();
        assert_eq!(ok.push, [Key::new("a").unwrap()]);
    }

    #[test]
    fn listings_sort_out_who_lacks_what() {
        // Initiator: a@1, b@1, c@1. Responder: b@1, c@2, d@1.
        let init = store([("a", 1), ("b", 1), ("c", 1)].map(|(k, h)| (k.to_string(), h)));
        let resp = store([("b", 1), ("c", 2), ("d", 1)].map(|(k, h)| (k.to_string(), h)));
        let (tags, keys) = listing(&init, Node::ROOT, 5);
        let probe = Probe::Items {
            node: Node::ROOT,
            tags,
        };
        let response = resp.answer(&request(vec![probe])).unwrap();
        assert_eq!(response.push, [Key::new("d").unwrap()]);
        let [Answer::Items { want, differ }] = response.reply.answers.as_slice() else {
            panic!("{:?}", response.reply);
        };
        let at = |k: &str| keys.iter().position(|x| x.as_str() == k).unwrap();
        assert_eq!(want[0], 1 << at("a"));
        assert_eq!(differ.len(), 1);
        assert_eq!(usize::from(differ[0].index), at("c"));
        assert_eq!(differ[0].version.hlc, Hlc(2));
    }

    #[test]
    fn crowded_nodes_are_split_not_listed() {
        let s = store((0..SPLIT_ABOVE as u64 + 1).map(|i| (format!("k/{i}"), 1)));
        let probe = Probe::Items {
            node: Node::ROOT,
            tags: Vec::new(),
        };
        let response = s.answer(&request(vec![probe])).unwrap();
        assert_eq!(response.reply.answers, [Answer::Split]);
        assert!(response.push.is_empty());
    }

    #[test]
    fn replies_stop_before_a_datagram_is_full() {
        // Every listed entry has another version on the responder: the longest answers there are.
        let init = store((0..3000).map(|i| (format!("k/{i}"), 1)));
        let resp = store((0..3000).map(|i| (format!("k/{i}"), u64::MAX >> 8)));
        let probes: Vec<Probe> = (0..16)
            .map(|nibble| {
                let node = Node::ROOT.child(nibble).child(0);
                let tags = listing(&init, node, 5).0;
                Probe::Items { node, tags }
            })
            .collect();
        let response = resp.answer(&request(probes)).unwrap();
        let answered = response.reply.answers.len();
        assert!(answered > 0 && answered < 16, "{answered}");
        assert!(Message::Reply(response.reply).encoded_len() <= MAX_MESSAGE);
        assert!(encoded_len(&Answer::Pulled) == 1);
    }
}
