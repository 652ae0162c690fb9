//! Serving a named service from this node: requests arrive on a [`Service`] handle, each
//! answered once through its [`IncomingRequest`].

use consort_proto::messaging::{Request, ServeId};
use consort_proto::NodeId;
use tokio::sync::mpsc;

/// An answer on its way back to the driver.
pub(crate) type Response = (ServeId, Result<Vec<u8>, String>);

/// This node's registration as a provider of one service. Requests for it arrive here; dropping
/// the handle stops advertising the service.
pub struct Service {
    pub(crate) name: String,
    pub(crate) requests: mpsc::Receiver<IncomingRequest>,
    pub(crate) unserve: mpsc::UnboundedSender<String>,
}

impl Service {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next request; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<IncomingRequest> {
        self.requests.recv().await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.unserve.send(self.name.clone());
    }
}

/// A request to run. Answer it with [`IncomingRequest::respond`]; dropped unanswered, the caller
/// gets an error.
pub struct IncomingRequest {
    request: Request,
    responses: mpsc::UnboundedSender<Response>,
    answered: bool,
}

impl IncomingRequest {
    pub(crate) fn new(request: Request, responses: mpsc::UnboundedSender<Response>) -> Self {
        IncomingRequest {
            request,
            responses,
            answered: false,
        }
    }

    /// The caller.
    pub fn from(&self) -> NodeId {
        self.request.from
    }

    /// The service.
    pub fn service(&self) -> &str {
        &self.request.service
    }

    /// The request body.
    pub fn body(&self) -> &[u8] {
        &self.request.body
    }

    /// Answers with a reply body, or an error message the caller sees.
    pub fn respond(mut self, result: Result<Vec<u8>, String>) {
        self.answered = true;
        let _ = self.responses.send((self.request.id, result));
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if !self.answered {
            let error = "the handler dropped the request without answering".to_string();
            let _ = self.responses.send((self.request.id, Err(error)));
        }
    }
}
