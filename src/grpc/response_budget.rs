//! The response byte budget: answer bytes the handlers have produced and the
//! transport has not yet taken, across every connection
//! (`--max-inflight-response-mb`). The request byte budget (`budget.rs`)
//! bounds what clients send; this bounds what waits for clients that read
//! slowly or not at all.
//!
//! Found by review: an answer was handed to hyper whole once built, and h2
//! kept it until the client's flow-control window let it out, so a client
//! that asked and never read held every answer it asked for: a `Get` of
//! 1,000 distinct 32 KB items holds ~33 MB, and such calls were bounded only
//! by streams per connection x connections (64 x 1,024).
//!
//! How it counts: each data frame of an answer reserves its bytes before it
//! is handed over, and is handed to hyper in pieces of at most `PIECE_BYTES`
//! (copied, so the transport never holds a slice that keeps the whole
//! message alive). hyper asks for the next piece only once h2 had room for
//! the one before (its send buffer below 400 KiB and the peer's window
//! open), so a frame's bytes are released when hyper asks for more after
//! its last piece. What the budget does not count is bounded per call: h2's
//! send buffer (400 KiB) and one piece.
//!
//! When a frame does not fit: an answer of one message (unary, server
//! streaming excluded) is dropped and the call ends `RESOURCE_EXHAUSTED` in
//! its trailers, freeing the memory at once (waiting would hold it); a
//! stream's next message waits for room (backpressure: the stream's
//! producer then waits too), first come first served.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::Frame;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tonic::body::Body;
use tonic::Status;

/// The most bytes of an answer handed to the transport at once.
pub const PIECE_BYTES: usize = 64 * 1024;

/// Answer bytes held, against a fixed limit.
pub struct ResponseBudget {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl ResponseBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Arc::new(ResponseBudget {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        })
    }

    /// Bytes counted now.
    pub fn in_use(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// The permits a frame of `bytes` takes: its length, at most the whole
    /// budget (a frame larger than the budget would otherwise wait for good).
    fn permits_for(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.min(self.limit)).unwrap_or(u32::MAX)
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// An answer's body, counted against the budget and handed over in pieces.
struct Outgoing {
    inner: Body,
    budget: Arc<ResponseBudget>,
    /// A stream waits for room; an answer of one message is refused.
    waits: bool,
    /// What is left to hand over of the frame being sent.
    rest: Bytes,
    /// Whether that frame goes out in copied pieces (it is over one piece).
    copied: bool,
    /// The frame's reservation, released once all of it is handed over.
    held: Option<OwnedSemaphorePermit>,
    /// A stream's frame waiting for room.
    waiting: Option<(Bytes, Acquiring)>,
    /// Refused: the trailers have been given, nothing follows.
    ended: bool,
}

impl Outgoing {
    fn new(inner: Body, budget: Arc<ResponseBudget>, waits: bool) -> Self {
        Outgoing {
            inner,
            budget,
            waits,
            rest: Bytes::new(),
            copied: false,
            held: None,
            waiting: None,
            ended: false,
        }
    }

    fn start(&mut self, frame: Bytes, permit: OwnedSemaphorePermit) {
        self.copied = frame.len() > PIECE_BYTES;
        self.rest = frame;
        self.held = Some(permit);
    }

    /// The next piece of the frame being sent.
    fn next_piece(&mut self) -> Bytes {
        if !self.copied {
            return std::mem::take(&mut self.rest);
        }
        let take = self.rest.len().min(PIECE_BYTES);
        let piece = Bytes::copy_from_slice(&self.rest[..take]);
        self.rest.advance(take);
        if self.rest.is_empty() {
            // An empty slice still keeps the message's buffer alive.
            self.rest = Bytes::new();
        }
        piece
    }

    /// The trailers of an answer refused for room.
    fn refusal(&self, bytes: usize) -> http::HeaderMap {
        let mib = |bytes: usize| bytes.div_ceil(1024 * 1024);
        let status = Status::resource_exhausted(format!(
            "the server is holding {} MiB of answers its clients have not read yet, and this \
             answer of {bytes} bytes does not fit in --max-inflight-response-mb ({} MiB): read \
             the answers of your calls in progress, ask for less (fewer ids), or retry later",
            mib(self.budget.in_use()),
            mib(self.budget.limit),
        ));
        let mut trailers = http::HeaderMap::new();
        // A message of ASCII text always makes valid header values.
        let _ = status.add_header(&mut trailers);
        trailers
    }
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if !this.rest.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(this.next_piece()))));
            }
            // Asked for more: the transport took all of the last frame.
            this.held = None;
            if let Some((_, acquiring)) = &mut this.waiting {
                let acquired = ready!(acquiring.as_mut().poll(cx));
                let (frame, _) = this.waiting.take().expect("checked above");
                match acquired {
                    Ok(permit) => this.start(frame, permit),
                    // The semaphore is never closed.
                    Err(_) => {
                        return Poll::Ready(Some(Err(Status::internal("answer budget closed"))))
                    }
                }
                continue;
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => {
                        let permits = this.budget.permits_for(data.len());
                        match this.budget.permits.clone().try_acquire_many_owned(permits) {
                            Ok(permit) => this.start(data, permit),
                            Err(TryAcquireError::NoPermits) if this.waits => {
                                let acquiring = Box::pin(
                                    this.budget.permits.clone().acquire_many_owned(permits),
                                );
                                this.waiting = Some((data, acquiring));
                            }
                            Err(_) => {
                                // Drop the answer (and the rest of the body) now.
                                let trailers = this.refusal(data.len());
                                drop(data);
                                this.inner = Body::empty();
                                this.ended = true;
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.waiting.is_none() && (self.ended || self.inner.is_end_stream())
    }
}

/// Tower layer that counts every answer against one budget.
#[derive(Clone)]
pub struct ResponseBudgetLayer {
    budget: Arc<ResponseBudget>,
    /// Paths of the methods that answer one message.
    single: Arc<HashSet<String>>,
}

impl ResponseBudgetLayer {
    /// `descriptors`: encoded descriptor sets of the services served.
    pub fn new(budget: Arc<ResponseBudget>, descriptors: &[&[u8]]) -> Self {
        ResponseBudgetLayer {
            budget,
            single: Arc::new(super::budget::method_paths(descriptors, |method| {
                !method.server_streaming()
            })),
        }
    }
}

impl<S> tower_layer::Layer<S> for ResponseBudgetLayer {
    type Service = ResponseBudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseBudgetService {
            inner,
            budget: self.budget.clone(),
            single: self.single.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ResponseBudgetService<S> {
    inner: S,
    budget: Arc<ResponseBudget>,
    single: Arc<HashSet<String>>,
}

impl<S> tower_service::Service<http::Request<Body>> for ResponseBudgetService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = super::BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Unknown paths answer without a body (UNIMPLEMENTED).
        let waits = !self.single.contains(request.uri().path());
        let budget = self.budget.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| Body::new(Outgoing::new(inner, budget, waits))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use std::collections::VecDeque;

    /// Frames given one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// A body of these frames, then trailers with status OK.
    fn body(frames: Vec<Bytes>) -> Body {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = frames
            .into_iter()
            .map(Frame::data)
            .chain(std::iter::once(Frame::trailers(trailers)));
        Body::new(Frames(frames.collect()))
    }

    fn next(body: &mut Outgoing) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let waker = std::task::Waker::noop();
        Pin::new(body).poll_frame(&mut Context::from_waker(waker))
    }

    fn data(polled: Poll<Option<Result<Frame<Bytes>, Status>>>) -> Bytes {
        match polled {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().expect("a data frame"),
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn trailers(polled: Poll<Option<Result<Frame<Bytes>, Status>>>) -> http::HeaderMap {
        match polled {
            Poll::Ready(Some(Ok(frame))) => frame.into_trailers().expect("trailers"),
            other => panic!("expected trailers, got {other:?}"),
        }
    }

    #[test]
    fn a_large_frame_goes_out_in_copied_pieces_and_is_counted_until_all_are_taken() {
        let budget = ResponseBudget::new(1 << 20);
        let message = Bytes::from(
            (0..PIECE_BYTES * 2 + 10)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let mut out = Outgoing::new(body(vec![message.clone()]), budget.clone(), false);
        let mut sent = Vec::new();
        for expected in [PIECE_BYTES, PIECE_BYTES, 10] {
            let piece = data(next(&mut out));
            assert_eq!(piece.len(), expected);
            // A copy: the message's buffer is not shared with the transport.
            assert!(!message.as_ptr_range().contains(&piece.as_ptr()));
            sent.extend_from_slice(&piece);
            assert_eq!(budget.in_use(), message.len());
        }
        assert_eq!(sent, message);
        assert_eq!(trailers(next(&mut out))["grpc-status"], "0");
        assert_eq!(budget.in_use(), 0);
        assert!(matches!(next(&mut out), Poll::Ready(None)));
    }

    #[test]
    fn a_small_frame_is_handed_over_as_it_is() {
        let budget = ResponseBudget::new(1 << 20);
        let message = Bytes::from_static(b"\0\0\0\0\x03abc");
        let mut out = Outgoing::new(body(vec![message.clone()]), budget.clone(), false);
        let piece = data(next(&mut out));
        assert_eq!(piece.as_ptr(), message.as_ptr());
        assert_eq!(budget.in_use(), message.len());
        trailers(next(&mut out));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_single_answer_that_does_not_fit_ends_resource_exhausted() {
        let budget = ResponseBudget::new(100);
        let mut first = Outgoing::new(body(vec![Bytes::from(vec![1; 60])]), budget.clone(), false);
        data(next(&mut first));
        let mut second = Outgoing::new(body(vec![Bytes::from(vec![2; 60])]), budget.clone(), false);
        let refused = trailers(next(&mut second));
        assert_eq!(refused["grpc-status"], "8");
        let message = refused["grpc-message"].to_str().unwrap();
        assert!(message.contains("max-inflight-response-mb"), "{message}");
        assert!(matches!(next(&mut second), Poll::Ready(None)));
        assert!(second.is_end_stream());
        // The first still holds its bytes until it is all taken.
        assert_eq!(budget.in_use(), 60);
        drop(first);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_stream_waits_for_room_in_turn() {
        let budget = ResponseBudget::new(100);
        let mut first = Outgoing::new(body(vec![Bytes::from(vec![1; 60])]), budget.clone(), false);
        data(next(&mut first));
        let mut stream = Outgoing::new(
            body(vec![Bytes::from(vec![2; 60]), Bytes::from(vec![3; 500])]),
            budget.clone(),
            true,
        );
        assert!(next(&mut stream).is_pending());
        assert!(!stream.is_end_stream());
        // The first answer taken: the stream's message fits now.
        trailers(next(&mut first));
        assert_eq!(data(next(&mut stream)), Bytes::from(vec![2; 60]));
        // A frame over the whole budget takes all of it rather than none.
        assert_eq!(data(next(&mut stream)).len(), 500);
        assert_eq!(budget.in_use(), 100);
        trailers(next(&mut stream));
        assert_eq!(budget.in_use(), 0);
    }
}
