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
//! How it counts: a data frame over `PIECE_BYTES` reserves its bytes before
//! it is handed over, and goes to hyper in pieces of at most `PIECE_BYTES`
//! (copied, so the transport never holds a slice that keeps the whole
//! message alive). hyper asks for the next piece only once h2 had room for
//! the one before (its send buffer below 400 KiB and the peer's window
//! open), so a frame's bytes are released when hyper asks for more after
//! its last piece, or when the body is dropped (the call ended or reset).
//! Outside the count, per call: h2's send buffer (at most 400 KiB), up to
//! two pieces (one in h2, one hyper holds while it waits for room), and
//! frames of at most one piece (health answers, most searches: they cost no
//! more than that slack, and are never refused).
//!
//! When a frame does not fit:
//! - a read's answer (`Policy::Refuse`: Get, Search, Report, ... the methods
//!   that change nothing) is dropped and the call ends `RESOURCE_EXHAUSTED`
//!   in its trailers, freeing the memory at once (waiting would hold it);
//! - another stream's message (`Policy::Wait`: AnalyzeStream, health Watch;
//!   reflection, whose descriptors are not passed, is not counted)
//!   tries again as bytes are released, for at most `STREAM_WAIT`, then the
//!   stream ends `RESOURCE_EXHAUSTED`: a client that never reads cannot
//!   stall other clients' streams for good. Nothing is set aside while it
//!   waits (an answer that fits is never refused because a larger one
//!   waits), and the waiting message is outside the count;
//! - a write's answer (IngestStream's acks too) is never counted or refused
//!   (the change is made; refusing its answer would invite a second one).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::Frame;
use tokio::sync::Notify;
use tonic::body::Body;
use tonic::Status;

use super::budget::ByteBudget;

/// The most bytes of an answer handed to the transport at once; frames of
/// at most this are not counted.
pub const PIECE_BYTES: usize = 64 * 1024;

/// How long a stream's message waits for room before the stream ends.
pub const STREAM_WAIT: Duration = Duration::from_secs(10);

/// Answer bytes held, against a fixed limit: the request budget's count,
/// and a wake-up for the streams waiting for room.
pub struct ResponseBudget {
    counted: Arc<ByteBudget>,
    /// Woken when bytes are released: streams waiting for room try again.
    freed: Notify,
}

impl ResponseBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ResponseBudget {
            counted: ByteBudget::new(limit),
            freed: Notify::new(),
        })
    }

    /// Bytes counted now.
    pub fn in_use(&self) -> usize {
        self.counted.in_use()
    }

    /// Counts a frame of `bytes` (at most the whole budget: a frame larger
    /// than the budget would otherwise never fit) if there is room.
    fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Held> {
        let bytes = bytes.min(self.counted.limit());
        self.counted.try_reserve(bytes).then(|| Held {
            budget: self.clone(),
            bytes,
        })
    }

    /// `reserve`, trying again as bytes are released, for at most `wait`.
    /// Nothing is set aside while it waits, so an answer that fits is never
    /// refused because a larger one waits.
    async fn reserve_within(self: Arc<Self>, bytes: usize, wait: Duration) -> Option<Held> {
        let room = async {
            loop {
                let freed = self.freed.notified();
                tokio::pin!(freed);
                // Registered before the check: a release after it wakes us.
                freed.as_mut().enable();
                if let Some(held) = self.reserve(bytes) {
                    return held;
                }
                freed.await;
            }
        };
        tokio::time::timeout(wait, room).await.ok()
    }

    fn refusal(&self, what: &str) -> http::HeaderMap {
        let mib = |bytes: usize| bytes.div_ceil(1024 * 1024);
        let status = Status::resource_exhausted(format!(
            "{what}: the server is holding {} MiB of answers their clients have not read yet \
             (--max-inflight-response-mb is {} MiB); read the answers of your calls in \
             progress, ask for less (fewer ids, a smaller page), or retry later",
            mib(self.in_use()),
            mib(self.counted.limit()),
        ));
        let mut trailers = http::HeaderMap::new();
        // A message of ASCII text always makes valid header values.
        let _ = status.add_header(&mut trailers);
        trailers
    }
}

/// Bytes of one frame counted; released (and waiting streams woken) when
/// dropped.
struct Held {
    budget: Arc<ResponseBudget>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.counted.release(self.bytes);
        self.budget.freed.notify_waiters();
    }
}

/// What an answer that finds no room does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A read's one message: dropped, the call ends RESOURCE_EXHAUSTED.
    Refuse,
    /// A stream's message: waits up to `wait`, then the stream ends
    /// RESOURCE_EXHAUSTED.
    Wait { wait: Duration },
}

type Acquiring = Pin<Box<dyn Future<Output = Option<Held>> + Send>>;

/// An answer's body, counted against the budget and handed over in pieces.
struct Outgoing {
    inner: Body,
    budget: Arc<ResponseBudget>,
    policy: Policy,
    /// What is left to hand over of the frame being sent.
    rest: Bytes,
    /// The frame's reservation, released once all of it is handed over.
    held: Option<Held>,
    /// A stream's frame waiting for room, and the wait (None at its end:
    /// timed out).
    waiting: Option<(Bytes, Acquiring)>,
}

impl Outgoing {
    fn new(inner: Body, budget: Arc<ResponseBudget>, policy: Policy) -> Self {
        Outgoing {
            inner,
            budget,
            policy,
            rest: Bytes::new(),
            held: None,
            waiting: None,
        }
    }

    fn start(&mut self, frame: Bytes, held: Held) {
        self.rest = frame;
        self.held = Some(held);
    }

    /// The next piece of the frame being sent (a copy: frames counted are
    /// over one piece).
    fn next_piece(&mut self) -> Bytes {
        let take = self.rest.len().min(PIECE_BYTES);
        let piece = Bytes::copy_from_slice(&self.rest[..take]);
        self.rest.advance(take);
        if self.rest.is_empty() {
            // An empty slice still keeps the message's buffer alive.
            self.rest = Bytes::new();
        }
        piece
    }

    /// Ends the answer with `trailers`, dropping the rest of it now (the
    /// empty body that takes its place ends the answer after them).
    fn end(&mut self, trailers: http::HeaderMap) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.inner = Body::empty();
        self.rest = Bytes::new();
        self.waiting = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
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
            if let Some((frame, acquiring)) = &mut this.waiting {
                let bytes = frame.len();
                match ready!(acquiring.as_mut().poll(cx)) {
                    Some(held) => {
                        let (frame, _) = this.waiting.take().expect("checked above");
                        this.start(frame, held);
                        continue;
                    }
                    None => {
                        let trailers = this.budget.refusal(&format!(
                            "this stream's next message of {bytes} bytes waited {} s for room",
                            match this.policy {
                                Policy::Wait { wait } => wait.as_secs(),
                                Policy::Refuse => 0,
                            }
                        ));
                        return this.end(trailers);
                    }
                }
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    // Within the slack each call has anyway: not counted.
                    Ok(data) if data.len() <= PIECE_BYTES => {
                        return Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(data) => match (this.budget.reserve(data.len()), this.policy) {
                        (Some(held), _) => this.start(data, held),
                        (None, Policy::Wait { wait }) => {
                            let acquiring: Acquiring =
                                Box::pin(this.budget.clone().reserve_within(data.len(), wait));
                            this.waiting = Some((data, acquiring));
                        }
                        (None, Policy::Refuse) => {
                            let trailers = this.budget.refusal(&format!(
                                "this answer of {} bytes does not fit",
                                data.len()
                            ));
                            drop(data);
                            return this.end(trailers);
                        }
                    },
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.waiting.is_none() && self.inner.is_end_stream()
    }
}

/// Tower layer that counts answers against one budget.
#[derive(Clone)]
pub struct ResponseBudgetLayer {
    budget: Arc<ResponseBudget>,
    /// Paths of the methods whose answers may be refused (reads).
    refusable: Arc<HashSet<String>>,
    /// Paths of the methods that answer writes: never counted or refused.
    writes: Arc<HashSet<String>>,
    /// Paths of the methods that answer with a stream.
    streams: Arc<HashSet<String>>,
}

impl ResponseBudgetLayer {
    /// `descriptors`: encoded descriptor sets of the services served;
    /// `reads`: the paths of the unary methods that change nothing, whose
    /// answer may be refused; `writes`: those whose answers say a change was
    /// made (unary or streams), never counted or refused. Other streams wait
    /// for room; other unary methods are not counted.
    pub fn new(
        budget: Arc<ResponseBudget>,
        descriptors: &[&[u8]],
        reads: &[&str],
        writes: &[&str],
    ) -> Self {
        let paths = |list: &[&str]| Arc::new(list.iter().map(|path| path.to_string()).collect());
        ResponseBudgetLayer {
            budget,
            refusable: paths(reads),
            writes: paths(writes),
            streams: Arc::new(super::budget::method_paths(descriptors, |method| {
                method.server_streaming()
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
            refusable: self.refusable.clone(),
            writes: self.writes.clone(),
            streams: self.streams.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ResponseBudgetService<S> {
    inner: S,
    budget: Arc<ResponseBudget>,
    refusable: Arc<HashSet<String>>,
    writes: Arc<HashSet<String>>,
    streams: Arc<HashSet<String>>,
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
        let path = request.uri().path();
        let policy = if self.writes.contains(path) {
            None
        } else if self.streams.contains(path) {
            Some(Policy::Wait { wait: STREAM_WAIT })
        } else if self.refusable.contains(path) {
            Some(Policy::Refuse)
        } else {
            None
        };
        let budget = self.budget.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match policy {
                Some(policy) => {
                    response.map(|inner| Body::new(Outgoing::new(inner, budget, policy)))
                }
                None => response,
            })
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

    const REFUSE: Policy = Policy::Refuse;
    const WAIT: Policy = Policy::Wait {
        wait: Duration::from_secs(3600),
    };

    fn frame(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[test]
    fn a_large_frame_goes_out_in_copied_pieces_and_is_counted_until_all_are_taken() {
        let budget = ResponseBudget::new(1 << 20);
        let message = Bytes::from(
            (0..PIECE_BYTES * 2 + 10)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let mut out = Outgoing::new(body(vec![message.clone()]), budget.clone(), REFUSE);
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
    fn a_frame_of_one_piece_is_handed_over_as_it_is_and_not_counted() {
        let budget = ResponseBudget::new(70_000);
        // The budget is all taken: a small answer still goes out.
        let mut big = Outgoing::new(body(vec![frame(1, 70_000)]), budget.clone(), REFUSE);
        data(next(&mut big));
        assert_eq!(budget.in_use(), 70_000);
        let message = frame(2, PIECE_BYTES);
        let mut out = Outgoing::new(body(vec![message.clone()]), budget.clone(), REFUSE);
        let piece = data(next(&mut out));
        assert_eq!(piece.as_ptr(), message.as_ptr());
        assert_eq!(trailers(next(&mut out))["grpc-status"], "0");
    }

    #[test]
    fn a_read_answer_that_does_not_fit_ends_resource_exhausted() {
        let budget = ResponseBudget::new(200_000);
        let mut first = Outgoing::new(body(vec![frame(1, 120_000)]), budget.clone(), REFUSE);
        data(next(&mut first));
        let mut second = Outgoing::new(body(vec![frame(2, 100_000)]), budget.clone(), REFUSE);
        let refused = trailers(next(&mut second));
        assert_eq!(refused["grpc-status"], "8");
        let message = refused["grpc-message"]
            .to_str()
            .unwrap()
            .replace("%20", " ");
        assert!(message.contains("max-inflight-response-mb"), "{message}");
        assert!(message.contains("100000 bytes"), "{message}");
        assert!(matches!(next(&mut second), Poll::Ready(None)));
        assert!(second.is_end_stream());
        // The first still holds its bytes until it is all taken, or dropped.
        assert_eq!(budget.in_use(), 120_000);
        drop(first);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_stream_waits_for_room_in_turn() {
        let budget = ResponseBudget::new(200_000);
        let mut first = Outgoing::new(body(vec![frame(1, 120_000)]), budget.clone(), REFUSE);
        data(next(&mut first));
        let mut stream = Outgoing::new(
            body(vec![frame(2, 100_000), frame(3, 500_000)]),
            budget.clone(),
            WAIT,
        );
        assert!(next(&mut stream).is_pending());
        assert!(!stream.is_end_stream());
        // Nothing is set aside while it waits: a read that fits goes out.
        let mut fits = Outgoing::new(body(vec![frame(4, 70_000)]), budget.clone(), REFUSE);
        assert_eq!(data(next(&mut fits)).len(), PIECE_BYTES);
        assert_eq!(budget.in_use(), 190_000);
        drop(fits);
        assert!(next(&mut stream).is_pending());
        // The first answer taken: the stream's message fits now.
        data(next(&mut first));
        trailers(next(&mut first));
        assert_eq!(data(next(&mut stream)), frame(2, PIECE_BYTES));
        assert_eq!(data(next(&mut stream)).len(), 100_000 - PIECE_BYTES);
        // A frame over the whole budget takes all of it rather than none.
        let mut rest = 500_000;
        while rest > 0 {
            rest -= data(next(&mut stream)).len();
            assert_eq!(budget.in_use(), 200_000);
        }
        trailers(next(&mut stream));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_stream_that_waits_too_long_ends_resource_exhausted() {
        let budget = ResponseBudget::new(200_000);
        let mut first = Outgoing::new(body(vec![frame(1, 150_000)]), budget.clone(), REFUSE);
        data(next(&mut first));
        let mut stream = Outgoing::new(
            body(vec![frame(2, 100_000)]),
            budget.clone(),
            Policy::Wait {
                wait: Duration::from_millis(50),
            },
        );
        let polled = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_frame(cx)).await;
        let refused = trailers(Poll::Ready(polled));
        assert_eq!(refused["grpc-status"], "8");
        let message = refused["grpc-message"]
            .to_str()
            .unwrap()
            .replace("%20", " ");
        assert!(message.contains("waited"), "{message}");
        assert!(matches!(next(&mut stream), Poll::Ready(None)));
        // The wait took nothing.
        assert_eq!(budget.in_use(), 150_000);
    }
}
