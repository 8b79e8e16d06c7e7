//! A backend's response body on its way to the client, from either client, and the body of
//! every response the proxy sends.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1::SendRequest,
};

use flynn_http1::client::{self as backend, ResponseBody};

use crate::table::{Endpoint, InFlight, UpstreamRequestBody};

/// The body of every response the proxy sends: a backend's, streamed, or one of ours.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// A backend's response body, streamed; when it has been read to the end the connection goes
/// back to the endpoint's pool, and the endpoint's in-flight count drops.
#[derive(Debug)]
pub struct UpstreamBody {
    pub(crate) inner: Upstream,
    pub(crate) in_flight: Option<InFlight>,
}

/// Which client fetched the response.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// hyper's (requests with a body, upgrades): the connection goes back to the pool here.
    Hyper {
        body: Incoming,
        pool: Option<(Arc<Endpoint>, SendRequest<UpstreamRequestBody>)>,
    },
    /// The router's own, which pools its connection itself.
    Raw(ResponseBody),
}

/// Why a backend's response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    /// hyper's client.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The router's own.
    #[error(transparent)]
    Raw(#[from] backend::BodyError),
}

impl UpstreamBody {
    fn finish(&mut self) {
        if let Upstream::Hyper { pool, .. } = &mut self.inner
            && let Some((endpoint, tx)) = pool.take()
        {
            endpoint.checkin(tx);
        }
        self.in_flight = None;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let polled = match &mut self.inner {
            Upstream::Hyper { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(UpstreamBodyError::from))),
            Upstream::Raw(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(UpstreamBodyError::from))),
        };
        if let Poll::Ready(None) = polled {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Upstream::Hyper { body, .. } => body.is_end_stream(),
            Upstream::Raw(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Upstream::Hyper { body, .. } => body.size_hint(),
            Upstream::Raw(body) => body.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper does not poll a body it knows is empty (204, HEAD, Content-Length: 0), and a
        // client may go away mid-body: pool the connection only if the response was complete.
        if self.is_end_stream() {
            self.finish();
        }
    }
}
