//! Accepting gRPC connections, plain or TLS: at most `--max-connections` at
//! once (beyond that they wait in the listen backlog), a pause after a
//! failed accept, and a deadline for a connection's HTTP/2 handshake.
//!
//! Found by probing: a connection that never sent a byte was kept for good,
//! so a few hundred idle sockets used up the process's file descriptors;
//! every accept then failed at once and tonic retried at once (two cores
//! busy doing nothing), and the indexer could not open its files ("Too many
//! open files"), so acknowledged items stopped becoming searchable.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a new connection may take to send its HTTP/2 preface and its
/// first frame (after the TLS handshake, which has its own limit). Until
/// then hyper has no deadline of its own, and its keep-alive pings (which
/// close a connection whose peer is gone) start only after the handshake:
/// a client that sent one byte and stalled held its slot for good.
pub const H2_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 client preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_BYTES: usize = 24;
/// An HTTP/2 frame header: 24-bit length, type, flags, stream id.
const FRAME_HEADER_BYTES: usize = 9;

/// File descriptors kept for everything but connections (the store, the
/// index's files and merges, the models, the metrics endpoint, logs).
pub const FD_RESERVE: u64 = 256;

/// The pause after a failed accept (out of file descriptors, say): without
/// it the listener, still ready, is polled again at once.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// How often the same warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How many connections the server may hold at once: `asked`, unless the
/// process may open too few files for that and `FD_RESERVE` more (`limit`,
/// its soft `RLIMIT_NOFILE` after `raise_fd_limit`). At least 1.
pub fn connection_cap(asked: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => {
            let room = limit.saturating_sub(FD_RESERVE).max(1);
            asked.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => asked,
    }
}

/// Raises the soft limit on open files to the hard one (a server's sockets
/// and index files need more than the usual 1,024) and returns the soft
/// limit in force; None where it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read or write the one struct
        // passed, which lives for both calls.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        // rlim_t is u64 on Linux, not everywhere.
        #[allow(clippy::unnecessary_cast)]
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A connection with its slot among `--max-connections`, held until it is
/// dropped, and the deadline for its handshake.
pub struct Guarded<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    /// Until the preface and the first frame have arrived.
    handshake: Option<Handshake>,
}

/// How far a connection's handshake got.
struct Handshake {
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Bytes received so far.
    seen: usize,
    /// The first frame's length, from the bytes of its header seen so far.
    frame_length: usize,
}

impl Handshake {
    /// Counts `bytes`, the next ones received; true once the preface and
    /// the whole first frame (the client's SETTINGS) are in.
    fn complete_after(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            // The frame header's first three bytes are its length.
            if (PREFACE_BYTES..PREFACE_BYTES + 3).contains(&self.seen) {
                self.frame_length = self.frame_length << 8 | usize::from(byte);
            }
            self.seen += 1;
            if self.seen >= PREFACE_BYTES + FRAME_HEADER_BYTES + self.frame_length
                && self.seen >= PREFACE_BYTES + FRAME_HEADER_BYTES
            {
                return true;
            }
        }
        false
    }
}

impl<S> Guarded<S> {
    fn new(inner: S, slot: OwnedSemaphorePermit, timeout: Duration) -> Self {
        Guarded {
            inner,
            _slot: slot,
            handshake: Some(Handshake {
                deadline: Box::pin(tokio::time::sleep(timeout)),
                seen: 0,
                frame_length: 0,
            }),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(handshake) = self.handshake.as_mut() {
            match &polled {
                // Counts the bytes read, once.
                Poll::Ready(Ok(())) if handshake.complete_after(&buf.filled()[before..]) => {
                    self.handshake = None;
                }
                Poll::Pending if handshake.deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client did not complete its HTTP/2 handshake in time",
                    )));
                }
                _ => {}
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A warning logged at most once per `WARN_EVERY`, with how many times it
/// happened meanwhile.
struct Warnings {
    last: Option<Instant>,
    since: u64,
}

impl Warnings {
    fn new() -> Self {
        Warnings {
            last: None,
            since: 0,
        }
    }

    fn due(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

/// The accepted connections, each made ready by `open` (a TLS handshake, or
/// nothing), with a slot among `slots` taken before the accept.
pub fn incoming<S, F, Fut>(
    listener: TcpListener,
    slots: usize,
    open: F,
) -> impl futures::Stream<Item = std::io::Result<Guarded<S>>>
where
    S: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(slots));
    let total = slots.available_permits();
    tokio::spawn(async move {
        let mut full = Warnings::new();
        let mut failed = Warnings::new();
        loop {
            // A slot first: beyond the limit, connections wait in the backlog.
            let next = async {
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        if let Some(times) = full.due() {
                            tracing::warn!(
                                max_connections = total,
                                times,
                                "every connection slot is taken: new connections wait \
                                 (--max-connections)"
                            );
                        }
                        slots.clone().acquire_owned().await.expect("never closed")
                    }
                };
                (slot, listener.accept().await)
            };
            let (slot, accepted) = tokio::select! {
                () = tx.closed() => return,
                next = next => next,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(times) = failed.due() {
                        tracing::warn!(%error, times, "cannot accept a connection; pausing");
                    }
                    drop(slot);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            // Small responses must not wait for delayed ACKs (Nagle).
            let _ = stream.set_nodelay(true);
            let ready = open(stream, peer);
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(stream) = ready.await {
                    let _ = tx
                        .send(Ok(Guarded::new(stream, slot, H2_HANDSHAKE_TIMEOUT)))
                        .await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_cap_leaves_file_descriptors_for_the_rest() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_cap(1024, Some(1024)), 768);
        assert_eq!(connection_cap(1024, Some(100)), 1);
    }

    #[tokio::test]
    async fn a_connection_must_complete_its_handshake_in_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(2));
        let accept = || {
            let listener = &listener;
            let slots = slots.clone();
            async move {
                let (stream, _) = listener.accept().await.unwrap();
                let slot = slots.try_acquire_owned().unwrap();
                Guarded::new(stream, slot, Duration::from_millis(100))
            }
        };
        let mut buf = [0u8; 64];
        // Silent, or a byte and a stall (found by probing: the first
        // version's deadline ended at the first byte).
        for sent in [
            &b""[..],
            b"P",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04",
            // A whole frame header, half its payload.
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00",
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut guarded = accept().await;
            client.write_all(sent).await.unwrap();
            let error = loop {
                match guarded.read(&mut buf).await {
                    Ok(_) => continue,
                    Err(error) => break error,
                }
            };
            assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{sent:?}");
            drop(guarded);
            assert_eq!(slots.available_permits(), 2, "the slot is given back");
        }

        // The preface and a whole SETTINGS frame, in pieces: no deadline.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut guarded = accept().await;
        let handshake: &[u8] =
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64";
        let (mut sent, mut got) = (0, 0);
        for piece in handshake.chunks(7) {
            client.write_all(piece).await.unwrap();
            sent += piece.len();
            while got < sent {
                got += guarded.read(&mut buf).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"*").await.unwrap();
        assert_eq!(
            guarded.read(&mut buf).await.unwrap(),
            1,
            "no deadline once it shook hands"
        );
    }
}
