//! Messages and services in a simulation: sending and calling through a node's engine, every
//! delivery, request served and outcome recorded, and the invariants of the delivery classes:
//! reliable messages exactly once and in order per sender while both ends run, no leader
//! message of a stale term delivered, each service request run at most once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use consort_proto::election::Term;
use consort_proto::messaging::{
    CallError, CallId, CallOptions, Kind, Message, MessageId, Reply, Request, SendError,
    SendOptions, ServeId, Target,
};
use consort_proto::NodeId;

use crate::check::Divergence;
use crate::sim::Sim;

/// A message a node delivered to its users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Virtual time of the delivery.
    pub at: Duration,
    /// The receiving node.
    pub to: usize,
    /// The receiver's run (counts starts): exactly-once holds within one run.
    pub run: u64,
    /// The message as delivered.
    pub message: Message,
    /// The term the receiver held when it delivered it.
    pub receiver_term: Term,
}

/// A request a node ran for one of its services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRequest {
    /// Virtual time it ran.
    pub at: Duration,
    /// The provider.
    pub node: usize,
    /// The caller.
    pub from: NodeId,
    /// The service.
    pub service: String,
    /// The request body.
    pub body: Vec<u8>,
}

/// What the simulation records of messaging.
#[derive(Debug, Default)]
pub(crate) struct Log {
    deliveries: Vec<Delivery>,
    served: Vec<ServedRequest>,
    sends: HashMap<(usize, MessageId), Result<(), SendError>>,
    calls: HashMap<(usize, CallId), Result<Vec<Reply>, CallError>>,
    /// Answers to give before the next outputs are taken: request and reply body.
    pub(crate) answers: Vec<(ServeId, Vec<u8>)>,
}

impl Sim {
    /// Sends a message from `node` (see [`consort_proto::Engine::send`]).
    pub fn send_message(
        &mut self,
        node: usize,
        target: Target,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        let now = self.instant();
        let engine = self.nodes[node].engine.as_mut().expect("a running node");
        let sent = engine.send(now, target, body, options);
        self.drain(node);
        sent
    }

    /// Calls `service` from `node` (see [`consort_proto::Engine::call`]).
    pub fn call(
        &mut self,
        node: usize,
        service: &str,
        body: Vec<u8>,
        options: CallOptions,
    ) -> Result<CallId, CallError> {
        let now = self.instant();
        let engine = self.nodes[node].engine.as_mut().expect("a running node");
        let call = engine.call(now, service, body, options);
        self.drain(node);
        call
    }

    /// Makes the running `node` provide `service`; each request is answered at once with
    /// `done:` and the request body.
    pub fn serve(&mut self, node: usize, service: &str) {
        let now = self.instant();
        let engine = self.nodes[node].engine.as_mut().expect("a running node");
        engine.serve(now, service).expect("a valid service name");
        self.drain(node);
    }

    /// Every message delivered so far, in order.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.messaging.deliveries
    }

    /// Every request served so far, in order.
    pub fn served(&self) -> &[ServedRequest] {
        &self.messaging.served
    }

    /// How a reliable send from `node` ended, once it has.
    pub fn send_outcome(&self, node: usize, id: MessageId) -> Option<&Result<(), SendError>> {
        self.messaging.sends.get(&(node, id))
    }

    /// How a call from `node` ended, once it has.
    pub fn call_outcome(&self, node: usize, id: CallId) -> Option<&Result<Vec<Reply>, CallError>> {
        self.messaging.calls.get(&(node, id))
    }

    /// Bodies of the messages `to` delivered from `from` in one class, in delivery order.
    pub fn delivered(&self, from: usize, to: usize, reliable: bool) -> Vec<Vec<u8>> {
        let from = self.nodes[from].id;
        self.messaging
            .deliveries
            .iter()
            .filter(|d| d.to == to && d.message.from == from && d.message.reliable == reliable)
            .map(|d| d.message.body.clone())
            .collect()
    }

    /// No leader message was delivered below the term its receiver held: a demoted leader's
    /// old-term messages are dropped.
    pub fn no_stale_leader_messages(&self) -> Result<(), Divergence> {
        let problems: Vec<String> = self
            .messaging
            .deliveries
            .iter()
            .filter_map(|d| match d.message.kind {
                Kind::Broadcast { term } if term < d.receiver_term => Some(format!(
                    "n{} delivered {}'s broadcast of term {term} while at term {} ({:.3}s)",
                    d.to,
                    d.message.from,
                    d.receiver_term,
                    d.at.as_secs_f64()
                )),
                _ => None,
            })
            .collect();
        self.verdict(problems)
    }

    /// Every reliable message was delivered at most once per receiver run, and each sender's
    /// messages in the order sent (bodies must be unique and increasing per sender: the
    /// scenario numbers them).
    pub fn reliable_in_order_at_most_once(&self) -> Result<(), Divergence> {
        let mut last: BTreeMap<(usize, u64, NodeId), Vec<u8>> = BTreeMap::new();
        let mut problems = Vec::new();
        for d in self
            .messaging
            .deliveries
            .iter()
            .filter(|d| d.message.reliable)
        {
            let key = (d.to, d.run, d.message.from);
            if let Some(prev) = last.get(&key) {
                if d.message.body <= *prev {
                    problems.push(format!(
                        "n{} delivered {:?} from {} after {:?}",
                        d.to,
                        String::from_utf8_lossy(&d.message.body),
                        d.message.from,
                        String::from_utf8_lossy(prev)
                    ));
                }
            }
            last.insert(key, d.message.body.clone());
        }
        self.verdict(problems)
    }

    /// No two deliveries of one best-effort message (unique bodies per sender) in one run.
    pub fn best_effort_at_most_once(&self) -> Result<(), Divergence> {
        let mut seen = std::collections::HashSet::new();
        let problems: Vec<String> = self
            .messaging
            .deliveries
            .iter()
            .filter(|d| !d.message.reliable)
            .filter(|d| !seen.insert((d.to, d.run, d.message.from, d.message.body.clone())))
            .map(|d| format!("n{} delivered a best-effort message twice", d.to))
            .collect();
        self.verdict(problems)
    }

    /// No request (unique bodies per caller) ran twice on one provider, and none that `single`
    /// says went to one provider (every policy but `all`) ran on two.
    pub fn requests_ran_at_most_once(
        &self,
        single: impl Fn(&ServedRequest) -> bool,
    ) -> Result<(), Divergence> {
        let mut runs: BTreeMap<(NodeId, &str, &[u8]), Vec<usize>> = BTreeMap::new();
        let mut one_provider = std::collections::HashSet::new();
        for s in &self.messaging.served {
            let key = (s.from, s.service.as_str(), s.body.as_slice());
            runs.entry(key).or_default().push(s.node);
            if single(s) {
                one_provider.insert(key);
            }
        }
        let problems: Vec<String> = runs
            .iter()
            .filter(|(key, nodes)| {
                let mut distinct = (*nodes).clone();
                distinct.sort_unstable();
                distinct.dedup();
                distinct.len() < nodes.len() || (one_provider.contains(*key) && nodes.len() > 1)
            })
            .map(|((from, service, body), nodes)| {
                format!(
                    "{service} request {:?} from {from} ran on {nodes:?}",
                    String::from_utf8_lossy(body)
                )
            })
            .collect();
        self.verdict(problems)
    }

    fn verdict(&self, problems: Vec<String>) -> Result<(), Divergence> {
        if problems.is_empty() {
            return Ok(());
        }
        Err(Divergence {
            subject: Divergence::MESSAGING,
            at: self.now(),
            problems,
        })
    }

    pub(crate) fn record_message(&mut self, node: usize, message: Message) {
        let n = &self.nodes[node];
        let receiver_term = n.engine.as_ref().map_or(0, |e| e.term());
        let delivery = Delivery {
            at: self.now(),
            to: node,
            run: n.run,
            message,
            receiver_term,
        };
        self.messaging.deliveries.push(delivery);
    }

    pub(crate) fn record_request(&mut self, node: usize, request: Request) {
        let mut reply = b"done:".to_vec();
        reply.extend_from_slice(&request.body);
        self.messaging.answers.push((request.id, reply));
        self.messaging.served.push(ServedRequest {
            at: self.now(),
            node,
            from: request.from,
            service: request.service,
            body: request.body,
        });
    }

    pub(crate) fn record_send(
        &mut self,
        node: usize,
        id: MessageId,
        result: Result<(), SendError>,
    ) {
        self.messaging.sends.insert((node, id), result);
    }

    pub(crate) fn record_call(
        &mut self,
        node: usize,
        id: CallId,
        result: Result<Vec<Reply>, CallError>,
    ) {
        self.messaging.calls.insert((node, id), result);
    }
}
