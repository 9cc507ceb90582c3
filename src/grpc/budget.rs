//! The request byte budget: request bytes received and not yet answered,
//! across every connection, bounded *before* tonic buffers and decodes a
//! message. A request that would go over it is answered RESOURCE_EXHAUSTED at
//! once; nothing waits, so partly received requests can never deadlock each
//! other. Bytes stay counted until the response is ready (unary) or, for a
//! client stream, until the message is answered: every client stream served
//! answers each message with one response message, in order (IngestStream's
//! acks, AnalyzeStream's results, reflection), so each response message
//! releases the oldest message not yet answered. At most `STREAM_WINDOW`
//! unanswered messages stay counted (a method that answered less often
//! would otherwise hold its stream's every byte).
//!
//! Found by probing: a stream's bytes were released only when 8 newer
//! messages arrived, so a bulk-load stream left open after its acks held
//! ~62 MiB of the budget and other clients' large requests were refused.
//!
//! Following the gRPC framing also lets the edge answer framing faults as
//! the client's (INVALID_ARGUMENT) where tonic would say INTERNAL: a message
//! flagged compressed in a request without `grpc-encoding`, a flag byte other
//! than 0 or 1, and a request that ends inside a message.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::body::Body;
use tonic::Status;

/// Unanswered messages of one stream that stay counted at most: an
/// IngestStream holds up to 8 batches waiting to be durable, one waiting
/// for room in the write queue and one being decoded.
const STREAM_WINDOW: usize = 10;
/// A gRPC message starts with a flag byte and a 4-byte big-endian length.
const GRPC_HEADER: usize = 5;

/// Bytes in use against a fixed limit.
pub struct ByteBudget {
    limit: usize,
    in_use: AtomicUsize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ByteBudget {
            limit,
            in_use: AtomicUsize::new(0),
        })
    }

    /// The limit, in bytes.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    pub(super) fn try_reserve(&self, bytes: usize) -> bool {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    pub(super) fn release(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes counted now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

/// What one request holds of the budget; released in full when dropped.
struct Reservation {
    budget: Arc<ByteBudget>,
    state: Mutex<Held>,
}

/// Where the gRPC framing of one direction stands.
#[derive(Default)]
struct Framing {
    header: [u8; GRPC_HEADER],
    /// Header bytes seen of the message being received.
    header_seen: usize,
    /// Body bytes still to come.
    body_left: usize,
    /// Bytes of the message being received.
    partial: usize,
}

/// What `Framing::advance` saw.
enum Framed {
    /// A message's first byte.
    Started,
    /// A message's whole header.
    Header([u8; GRPC_HEADER]),
    /// A whole message, of this many bytes (header included).
    Completed(usize),
}

impl Framing {
    /// Follows the framing over `chunk`, telling `seen` what happened in
    /// order; stops at its first error.
    fn advance(
        &mut self,
        mut chunk: &[u8],
        mut seen: impl FnMut(Framed) -> Result<(), Status>,
    ) -> Result<(), Status> {
        while !chunk.is_empty() {
            if self.header_seen < GRPC_HEADER {
                if self.header_seen == 0 {
                    seen(Framed::Started)?;
                }
                let take = (GRPC_HEADER - self.header_seen).min(chunk.len());
                self.header[self.header_seen..self.header_seen + take]
                    .copy_from_slice(&chunk[..take]);
                self.header_seen += take;
                self.partial += take;
                chunk = &chunk[take..];
                if self.header_seen == GRPC_HEADER {
                    seen(Framed::Header(self.header))?;
                    let [_, a, b, c, d] = self.header;
                    self.body_left = u32::from_be_bytes([a, b, c, d]) as usize;
                }
            } else {
                let take = self.body_left.min(chunk.len());
                self.body_left -= take;
                self.partial += take;
                chunk = &chunk[take..];
            }
            if self.header_seen == GRPC_HEADER && self.body_left == 0 {
                self.header_seen = 0;
                seen(Framed::Completed(std::mem::take(&mut self.partial)))?;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Held {
    total: usize,
    /// Sizes of the complete messages not yet answered, oldest first.
    window: VecDeque<usize>,
    framing: Framing,
    /// Whether the request declared a `grpc-encoding` (compression).
    encoding_declared: bool,
    /// The method takes one request message (not a client stream).
    single: bool,
    /// Messages started so far.
    messages: usize,
}

impl Held {
    /// Follows the gRPC framing over `chunk`; returns the sizes of the
    /// messages it completed.
    fn advance(&mut self, chunk: &[u8]) -> Result<Vec<usize>, Status> {
        let mut completed = Vec::new();
        let (single, encoding_declared) = (self.single, self.encoding_declared);
        let messages = &mut self.messages;
        self.framing.advance(chunk, |framed| match framed {
            Framed::Started => {
                *messages += 1;
                if single && *messages > 1 {
                    return Err(Status::invalid_argument(
                        "this method takes one request message; the request carries more",
                    ));
                }
                Ok(())
            }
            Framed::Header(header) => match header[0] {
                0 => Ok(()),
                1 if encoding_declared => Ok(()),
                1 => Err(Status::invalid_argument(
                    "a message is flagged compressed but the request has no \
                     grpc-encoding header",
                )),
                flag => Err(Status::invalid_argument(format!(
                    "invalid gRPC message flag {flag} (0 or 1 allowed)"
                ))),
            },
            Framed::Completed(size) => {
                completed.push(size);
                Ok(())
            }
        })?;
        Ok(completed)
    }

    /// At the end of the request: a message cut short is the client's fault.
    fn finish(&self) -> Result<(), Status> {
        match (self.framing.header_seen, self.framing.body_left) {
            (0, _) if self.single && self.messages == 0 => Err(Status::invalid_argument(
                "the request ended without its message",
            )),
            (0, _) => Ok(()),
            (GRPC_HEADER, left) => Err(Status::invalid_argument(format!(
                "the request ended inside a gRPC message ({left} bytes of it missing)"
            ))),
            (seen, _) => Err(Status::invalid_argument(format!(
                "the request ended inside a gRPC message header ({seen} of 5 bytes)"
            ))),
        }
    }
}

impl Reservation {
    fn new(budget: Arc<ByteBudget>, encoding_declared: bool, single: bool) -> Self {
        Reservation {
            budget,
            state: Mutex::new(Held {
                encoding_declared,
                single,
                ..Held::default()
            }),
        }
    }

    /// Counts a received chunk; refused when the budget cannot take it or the
    /// framing is broken.
    fn add(&self, chunk: &[u8]) -> Result<(), Status> {
        if !self.budget.try_reserve(chunk.len()) {
            let limit = self.budget.limit / (1024 * 1024);
            return Err(Status::resource_exhausted(format!(
                "the server is holding {limit} MiB of requests in flight \
                 (--max-inflight-request-mb); retry with backoff"
            )));
        }
        let mut held = self.state.lock().unwrap_or_else(|e| e.into_inner());
        held.total += chunk.len();
        let completed = held.advance(chunk)?;
        held.window.extend(completed);
        while held.window.len() > STREAM_WINDOW {
            let old = held.window.pop_front().expect("non-empty");
            held.total -= old;
            self.budget.release(old);
        }
        Ok(())
    }

    /// A response message went out: the oldest message not yet answered
    /// is no longer held.
    fn answered(&self) {
        let mut held = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(oldest) = held.window.pop_front() {
            held.total -= oldest;
            self.budget.release(oldest);
        }
    }

    fn finish(&self) -> Result<(), Status> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.budget.release(held.total);
    }
}

/// A request body that counts its bytes against the budget.
struct Metered {
    inner: Body,
    reservation: Arc<Reservation>,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = self.reservation.add(data) {
                        return Poll::Ready(Some(Err(status)));
                    }
                }
            }
            Poll::Ready(None) => {
                if let Err(status) = self.reservation.finish() {
                    return Poll::Ready(Some(Err(status)));
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client stream's response body: each response message releases the
/// request message it answers (`Reservation::answered`).
struct Answers {
    inner: Body,
    reservation: Arc<Reservation>,
    framing: Framing,
}

impl http_body::Body for Answers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let this = &mut *self;
                let reservation = &this.reservation;
                let _ = this.framing.advance(data, |framed| {
                    if let Framed::Completed(_) = framed {
                        reservation.answered();
                    }
                    Ok(())
                });
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Tower layer that meters every request body against one budget, and
/// holds a call of a method that takes one request message to exactly one
/// (tonic would read the first and drop the rest, answering OK).
#[derive(Clone)]
pub struct RequestBudgetLayer {
    budget: Arc<ByteBudget>,
    single: Arc<HashSet<String>>,
}

impl RequestBudgetLayer {
    /// `descriptors`: encoded descriptor sets of the services served; their
    /// methods that are not client streams take one message.
    pub fn new(budget: Arc<ByteBudget>, descriptors: &[&[u8]]) -> Self {
        RequestBudgetLayer {
            budget,
            single: Arc::new(single_message_paths(descriptors)),
        }
    }
}

/// The paths (`/package.Service/Method`) of the methods whose request is
/// one message.
fn single_message_paths(descriptors: &[&[u8]]) -> HashSet<String> {
    method_paths(descriptors, |method| !method.client_streaming())
}

/// The paths (`/package.Service/Method`) of the methods `pick` takes, from
/// encoded descriptor sets.
pub(super) fn method_paths(
    descriptors: &[&[u8]],
    pick: impl Fn(&prost_types::MethodDescriptorProto) -> bool,
) -> HashSet<String> {
    use prost::Message;
    let mut paths = HashSet::new();
    for encoded in descriptors {
        let set = prost_types::FileDescriptorSet::decode(*encoded)
            .expect("the descriptor sets built into the binary decode");
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    if pick(method) {
                        let service = match package {
                            "" => service.name().to_string(),
                            package => format!("{package}.{}", service.name()),
                        };
                        paths.insert(format!("/{service}/{}", method.name()));
                    }
                }
            }
        }
    }
    paths
}

impl<S> tower_layer::Layer<S> for RequestBudgetLayer {
    type Service = RequestBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBudget {
            inner,
            budget: self.budget.clone(),
            single: self.single.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestBudget<S> {
    inner: S,
    budget: Arc<ByteBudget>,
    single: Arc<HashSet<String>>,
}

use super::BoxFuture;

impl<S> tower_service::Service<http::Request<Body>> for RequestBudget<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let encoding_declared = request.headers().contains_key("grpc-encoding");
        let single = self.single.contains(request.uri().path());
        let reservation = Arc::new(Reservation::new(
            self.budget.clone(),
            encoding_declared,
            single,
        ));
        let metered = reservation.clone();
        let request = request.map(move |inner| {
            Body::new(Metered {
                inner,
                reservation: metered,
            })
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let out = response.await;
            if single {
                return out;
            }
            // A client stream: its answers release what they answer.
            out.map(|response| {
                response.map(|inner| {
                    Body::new(Answers {
                        inner,
                        reservation,
                        framing: Framing::default(),
                    })
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len));
        bytes
    }

    #[test]
    fn a_single_message_method_takes_exactly_one() {
        let single = || Held {
            single: true,
            ..Held::default()
        };
        let mut one = single();
        assert_eq!(one.advance(&message(3)).unwrap(), vec![8]);
        assert!(one.finish().is_ok());
        // A second message, in the same chunk or a later one, is refused.
        let mut two = message(3);
        two.extend(message(2));
        let status = single().advance(&two).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let mut later = single();
        later.advance(&message(3)).unwrap();
        assert!(later.advance(&message(0)[..1]).is_err());
        // None at all is the client's fault too (tonic says INTERNAL).
        let status = single().finish().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        // A stream may carry any number, none included.
        let mut stream = Held::default();
        assert_eq!(stream.advance(&two).unwrap(), vec![8, 7]);
        assert!(Held::default().finish().is_ok());
    }

    #[test]
    fn single_message_paths_come_from_the_descriptors() {
        let paths = single_message_paths(crate::grpc::DESCRIPTORS);
        for path in [
            "/verbatim.v1.FeedbackService/Search",
            "/verbatim.v1.FeedbackService/Ingest",
            "/verbatim.v1.FeedbackService/Report",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
        ] {
            assert!(paths.contains(path), "{path}");
        }
        for path in [
            "/verbatim.v1.FeedbackService/IngestStream",
            "/verbatim.v1.FeedbackService/AnalyzeStream",
        ] {
            assert!(!paths.contains(path), "{path}");
        }
    }

    #[test]
    fn framing_is_followed_across_chunks() {
        let mut held = Held::default();
        let mut stream = message(3);
        stream.extend(message(0));
        stream.extend(message(10));
        let mut completed = Vec::new();
        for chunk in stream.chunks(4) {
            completed.extend(held.advance(chunk).unwrap());
        }
        assert_eq!(completed, vec![8, 5, 15]);
        assert_eq!(held.framing.partial, 0);
        assert!(held.finish().is_ok());
    }

    #[test]
    fn framing_faults_are_the_clients() {
        let mut cut = message(10);
        cut.truncate(9);
        let mut held = Held::default();
        held.advance(&cut).unwrap();
        let status = held.finish().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("6 bytes of it missing"),
            "{status:?}"
        );

        let mut compressed = message(3);
        compressed[0] = 1;
        let status = Held::default().advance(&compressed).unwrap_err();
        assert!(status.message().contains("grpc-encoding"), "{status:?}");
        let declared = Held {
            encoding_declared: true,
            ..Held::default()
        };
        assert!({ declared }.advance(&compressed).is_ok());
        compressed[0] = 7;
        assert!(Held::default().advance(&compressed).is_err());
    }

    #[test]
    fn over_budget_is_refused_and_everything_is_released_on_drop() {
        let budget = ByteBudget::new(100);
        let first = Reservation::new(budget.clone(), false, false);
        assert!(first.add(&message(60)).is_ok());
        let second = Reservation::new(budget.clone(), false, false);
        let refused = second.add(&message(60)).unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "65 + 65 > 100"
        );
        assert!(second.add(&message(20)).is_ok());
        drop(first);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn an_answered_message_is_released_at_once() {
        let budget = ByteBudget::new(10_000);
        let stream = Reservation::new(budget.clone(), false, false);
        for _ in 0..3 {
            stream.add(&message(95)).unwrap();
        }
        assert_eq!(budget.in_use(), 300);
        stream.answered();
        stream.answered();
        assert_eq!(budget.in_use(), 100);
        // More answers than messages (none waiting) release nothing more.
        stream.answered();
        stream.answered();
        assert_eq!(budget.in_use(), 0);
        stream.add(&message(45)).unwrap();
        assert_eq!(budget.in_use(), 50);
        drop(stream);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_stream_keeps_only_its_latest_messages_counted() {
        let budget = ByteBudget::new(10_000);
        let stream = Reservation::new(budget.clone(), false, false);
        for _ in 0..100 {
            assert!(stream.add(&message(95)).is_ok());
        }
        assert_eq!(budget.in_use(), STREAM_WINDOW * 100);
        drop(stream);
        assert_eq!(budget.in_use(), 0);
    }
}
