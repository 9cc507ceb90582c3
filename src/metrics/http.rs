//! The metrics endpoint: a minimal HTTP/1.1 responder on its own listener
//! (`--metrics-listen`). It reads one request head (at most `MAX_HEAD`
//! bytes, within `READ_TIMEOUT`), answers `GET /metrics` (and `HEAD`) with
//! the exposition text, anything else with 404 / 405 / 400 / 431, and closes
//! the connection; no keep-alive, no request bodies. At most
//! `MAX_CONNECTIONS` connections are handled at once; further ones wait in
//! the listen backlog. No authentication: bind it to loopback or a private
//! network.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Bytes of a request head at most.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once.
pub const MAX_CONNECTIONS: usize = 16;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug)]
struct Limits {
    connections: usize,
    read_timeout: Duration,
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves; then stops
/// accepting and drops the connections still open.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    serve_with(
        listener,
        shutdown,
        Limits {
            connections: MAX_CONNECTIONS,
            read_timeout: READ_TIMEOUT,
        },
    )
    .await;
}

async fn serve_with(listener: TcpListener, shutdown: impl Future<Output = ()>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: beyond the limit, connections wait in the backlog.
        let next = async {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            (slot, listener.accept().await)
        };
        let (slot, accepted) = tokio::select! {
            () = &mut shutdown => break,
            next = next => next,
        };
        match accepted {
            Ok((stream, _peer)) => {
                connections.spawn(async move {
                    if let Err(error) = handle(stream, limits.read_timeout).await {
                        tracing::debug!(%error, "metrics connection ended with an error");
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: pause, then go on.
                tracing::warn!(%error, "metrics listener cannot accept a connection");
                drop(slot);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    tracing::debug!("metrics endpoint stopped");
}

/// What reading a request head gave.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed the connection before the head was complete.
    Closed,
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let searched_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head[searched_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            head.truncate(searched_from + end);
            return Ok(Head::Complete(head));
        }
        if head.len() >= MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

async fn handle(mut stream: TcpStream, read_timeout: Duration) -> std::io::Result<()> {
    let head = match tokio::time::timeout(read_timeout, read_head(&mut stream)).await {
        Err(_) => return Ok(()), // too slow: close
        Ok(head) => head?,
    };
    let answer = match head {
        Head::Closed => return Ok(()),
        Head::TooLarge => plain(
            "431 Request Header Fields Too Large",
            "",
            "request head too large\n",
        ),
        Head::Complete(head) => answer(&head).await,
    };
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Read what the client still sends (the rest of a head too large)
        // until it closes: closing with unread input would reset the
        // connection and could lose the answer on its way.
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok(())
    })
    .await
    .unwrap_or(Ok(()))
}

/// The full response to one request head.
async fn answer(head: &[u8]) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain("400 Bad Request", "", "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return plain("400 Bad Request", "", "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return plain("404 Not Found", "", "not found; metrics are at /metrics\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return plain(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "only GET /metrics\n",
            )
        }
    };
    // Scrape hooks may read the store and the index directory.
    match tokio::task::spawn_blocking(super::render).await {
        Ok(text) => response("200 OK", CONTENT_TYPE, "", text.as_bytes(), head_only),
        Err(error) => {
            tracing::error!(%error, "rendering the metrics failed");
            plain(
                "500 Internal Server Error",
                "",
                "rendering the metrics failed\n",
            )
        }
    }
}

fn plain(status: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body.as_bytes(),
        false,
    )
}

fn response(
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    async fn start(
        limits: Limits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            listener,
            async {
                let _ = stopped.await;
            },
            limits,
        ));
        (addr, stop, server)
    }

    /// Sends `request` raw and reads the answer until the server closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server answers and closes")
            .unwrap();
        String::from_utf8(answer).unwrap()
    }

    const LIMITS: Limits = Limits {
        connections: 4,
        read_timeout: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn answers_get_metrics_and_refuses_the_rest() {
        let (addr, stop, server) = start(LIMITS).await;
        super::super::METRICS
            .rpc_requests
            .with(&["HttpTest", "-", "OK"])
            .inc();

        let ok = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        )
        .await;
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert!(body.contains("# TYPE verbatim_rpc_requests_total counter\n"));
        assert!(body.contains(
            "verbatim_rpc_requests_total{method=\"HttpTest\",tenant=\"-\",code=\"OK\"} "
        ));

        // A query string is ignored; HEAD gets the headers only.
        let with_query = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(
            with_query.starts_with("HTTP/1.1 200 OK\r\n"),
            "{with_query}"
        );
        let head_only = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"), "{head_only}");
        assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");

        let missing = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        let garbage = exchange(addr, b"hello\r\n\r\n").await;
        assert!(
            garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{garbage}"
        );
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        let too_large = exchange(addr, &huge).await;
        assert!(
            too_large.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{too_large}"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops on shutdown")
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_and_connections_are_bounded() {
        let (addr, stop, server) = start(Limits {
            connections: 1,
            read_timeout: Duration::from_millis(300),
        })
        .await;
        // The only slot goes to a client that sends nothing.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        // The next one is served once the silent one has timed out.
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "waited for the slot"
        );
        let mut rest = Vec::new();
        let closed = silent.read_to_end(&mut rest).await;
        assert!(
            matches!(closed, Ok(0)) || closed.is_err(),
            "closed without an answer"
        );
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("dropping the sender stops the server too")
            .unwrap();
    }
}
