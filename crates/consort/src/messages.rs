//! Messages, calls and services on the [`Node`] handle.

use std::time::Duration;

use consort_proto::messaging::{
    CallError, CallOptions, Policy, Reply, SendError, SendOptions, ServiceError, Target,
};
use consort_proto::NodeId;
use tokio::sync::{mpsc, oneshot};

use crate::driver::Command;
use crate::group::GroupEvents;
use crate::service::Service;
use crate::Node;

/// Requests waiting for a service's handler on this node before new ones are refused.
const HANDLER_QUEUE: usize = 1024;

/// Why a message or call could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The send failed.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The provider ran the request and answered with an error.
    #[error("provider {from} answered with an error: {error}")]
    Service {
        /// The provider.
        from: NodeId,
        /// Its error.
        error: ServiceError,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// A message handed to the node by [`Node::start_send`].
pub struct PendingSend {
    rx: oneshot::Receiver<Result<(), SendError>>,
}

impl PendingSend {
    /// Waits for the outcome: sent (best-effort), or acknowledged by every receiver (reliable).
    pub async fn outcome(self) -> Result<(), MessageError> {
        Ok(self.rx.await.map_err(|_| MessageError::Stopped)??)
    }
}

impl Node {
    /// Sends a message (see [`Target`]). Best-effort sends return once handed to the network;
    /// reliable ones once every receiver acknowledged them, or with
    /// [`SendError::Undelivered`] at the deadline.
    pub async fn send(
        &self,
        target: Target,
        body: impl Into<Vec<u8>>,
        options: SendOptions,
    ) -> Result<(), MessageError> {
        self.start_send(target, body, options)
            .await?
            .outcome()
            .await
    }

    /// Hands a message to the node and returns without waiting for its outcome: messages
    /// started one after the other from one task are sent (and, reliable, delivered) in that
    /// order. Waits only while the node's command queue is full.
    pub async fn start_send(
        &self,
        target: Target,
        body: impl Into<Vec<u8>>,
        options: SendOptions,
    ) -> Result<PendingSend, MessageError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Send {
            target,
            body: body.into(),
            options,
            reply: Some(reply),
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| MessageError::Stopped)?;
        Ok(PendingSend { rx })
    }

    /// Queues a message without waiting for anything (for synchronous callbacks); errors other
    /// than a full command queue are not reported.
    pub fn send_now(
        &self,
        target: Target,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<(), SendError> {
        let command = Command::Send {
            target,
            body,
            options,
            reply: None,
        };
        self.commands
            .try_send(command)
            .map_err(|_| SendError::QueueFull(self.id()))
    }

    /// The leader's broadcast to every member, this node included (p2plib's
    /// `broadcast_to_all`), best-effort. On a follower: [`SendError::NotLeader`].
    pub async fn broadcast(&self, body: impl Into<Vec<u8>>) -> Result<(), MessageError> {
        self.send(Target::Broadcast, body, SendOptions::default())
            .await
    }

    /// Sends to the leader (p2plib's `send_to_leader`), best-effort.
    pub async fn send_to_leader(&self, body: impl Into<Vec<u8>>) -> Result<(), MessageError> {
        self.send(Target::Leader, body, SendOptions::default())
            .await
    }

    /// Calls `service` on one provider picked by `options.policy` and returns its reply body.
    /// For [`Policy::All`], use [`Node::call_all`].
    pub async fn call(
        &self,
        service: &str,
        body: impl Into<Vec<u8>>,
        options: CallOptions,
    ) -> Result<Vec<u8>, MessageError> {
        let replies = self.call_all(service, body, options).await?;
        let reply = replies
            .into_iter()
            .next()
            .ok_or_else(|| CallError::NoProvider(service.to_string()))?;
        reply.result.map_err(|error| MessageError::Service {
            from: reply.from,
            error,
        })
    }

    /// Calls `service` and returns every reply: one, or one per provider for [`Policy::All`].
    pub async fn call_all(
        &self,
        service: &str,
        body: impl Into<Vec<u8>>,
        options: CallOptions,
    ) -> Result<Vec<Reply>, MessageError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Call {
            service: service.to_string(),
            body: body.into(),
            options,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| MessageError::Stopped)?;
        Ok(rx.await.map_err(|_| MessageError::Stopped)??)
    }

    /// Calls `service` round robin with a timeout.
    pub async fn call_with_timeout(
        &self,
        service: &str,
        body: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Vec<u8>, MessageError> {
        let options = CallOptions {
            policy: Policy::RoundRobin,
            timeout,
        };
        self.call(service, body, options).await
    }

    /// Provides `service` from this node: advertises it to the group and returns the handle its
    /// requests arrive on. Dropping the handle stops advertising it. Serving a name again
    /// replaces the previous handle.
    pub async fn serve(&self, service: &str) -> Result<Service, MessageError> {
        let (tx, requests) = mpsc::channel(HANDLER_QUEUE);
        let (reply, rx) = oneshot::channel();
        let command = Command::Serve {
            service: service.to_string(),
            requests: tx,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| MessageError::Stopped)?;
        rx.await.map_err(|_| MessageError::Stopped)??;
        Ok(Service {
            name: service.to_string(),
            requests,
            unserve: self.unserves.clone(),
        })
    }

    /// The group's events in order, starting with the current peers and role (see
    /// [`crate::group`]). `None` once the node has stopped.
    pub async fn group_events(&self) -> Option<GroupEvents> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::GroupEvents(reply)).await.ok()?;
        rx.await.ok()
    }
}
