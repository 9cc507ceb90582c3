//! `TestServer`: the real `verbatim` binary on port 0 with a temporary data
//! dir, driven through generated gRPC clients. `TEST_LOG=1` shows its logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use verbatim::grpc::pb;
use verbatim::grpc::pb::feedback_service_client::FeedbackServiceClient;

pub type Client = FeedbackServiceClient<Channel>;

pub const BIN: &str = env!("CARGO_BIN_EXE_verbatim");

pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    args: Vec<String>,
    temp: Option<TempDir>,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestServer {
    pub async fn spawn() -> TestServer {
        Self::spawn_with(&[]).await
    }

    /// With the transformer analysis on (models from `models/cache`, which
    /// `python3 models/prepare.py` fills).
    pub async fn spawn_with_analysis(args: &[&str]) -> TestServer {
        let models = repo_path("models/cache");
        let models = models.to_str().expect("utf-8 path");
        let mut all = vec!["--analysis", "on", "--models-dir", models];
        all.extend_from_slice(args);
        Self::spawn_with(&all).await
    }

    /// Without the analysis unless `args` turn it on: store and search tests
    /// need no models.
    pub async fn spawn_with(args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut server = Self::start(&data_dir, args.iter().map(|a| a.to_string()).collect()).await;
        server.temp = Some(temp);
        server
    }

    /// On a data dir the test owns (e.g. on a small tmpfs).
    pub async fn spawn_in(data_dir: &Path, args: &[&str]) -> TestServer {
        Self::start(data_dir, args.iter().map(|a| a.to_string()).collect()).await
    }

    async fn start(data_dir: &Path, args: Vec<String>) -> TestServer {
        Self::start_until(data_dir, args, ServingStatus::Serving).await
    }

    /// Starts the server and waits until its health answers `want`.
    async fn start_until(data_dir: &Path, args: Vec<String>, want: ServingStatus) -> TestServer {
        // Port 0 (a free port) unless the test names one in `args`.
        let listen = match args.iter().any(|a| a == "--listen") {
            true => None,
            false => Some("127.0.0.1:0"),
        };
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(listen.iter().flat_map(|addr| ["--listen", addr]))
            .arg("--data-dir")
            .arg(data_dir)
            .args(&args)
            .env("VERBATIM_LOG_FILTER", "verbatim=debug,tantivy=warn")
            .env("VERBATIM_ANALYSIS", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn verbatim");
        let stderr = child.stderr.take().expect("stderr piped");
        let (addr_tx, addr_rx) = mpsc::channel();
        let show = std::env::var_os("TEST_LOG").is_some();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if show {
                    eprintln!("[server] {line}");
                }
                sink.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr: SocketAddr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs its address within 60 s (TEST_LOG=1 shows its log)")
            .parse()
            .expect("a socket address");
        let server = TestServer {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            args,
            temp: None,
            logs,
        };
        server.wait_health(want).await;
        server
    }

    /// CPU seconds the server process has used so far (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.as_ref().expect("a running server").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
        // Fields after the command name (which may hold spaces): utime and
        // stime are the 12th and 13th.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Everything the server has logged so far (all of its runs).
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits (at most `within`) until the server has logged `text`.
    pub async fn wait_for_log(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log_text().contains(text) {
            assert!(Instant::now() < deadline, "the server logs {text:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The overall health status (grpc.health.v1, service "").
    pub async fn health(&self) -> tonic_health::pb::health_check_response::ServingStatus {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        tonic_health::pb::health_check_response::ServingStatus::try_from(status).expect("a status")
    }

    /// Waits (at most 5 s) for health to report `want`: the health task
    /// follows the stores' signal a moment after a write is refused.
    pub async fn health_becomes(
        &self,
        want: tonic_health::pb::health_check_response::ServingStatus,
    ) {
        self.health_becomes_within(want, Duration::from_secs(5))
            .await
    }

    /// `health_becomes` with a longer wait (a store's recovery probe backs
    /// off up to 5 s between tries).
    pub async fn health_becomes_within(&self, want: ServingStatus, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let now = self.health().await;
            if now == want {
                return;
            }
            assert!(Instant::now() < deadline, "health is {now:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_health(&self, want: ServingStatus) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = self.endpoint().connect().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if let Ok(response) = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    if response.into_inner().status == want as i32 {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "server not {want:?} within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's endpoint: plaintext, or TLS trusting the test CA (and
    /// presenting the test client certificate) when the server was started
    /// with `--tls-cert` (and `--tls-client-ca`).
    pub fn endpoint(&self) -> tonic::transport::Endpoint {
        if !self.args.iter().any(|a| a == "--tls-cert") {
            return Channel::from_shared(format!("http://{}", self.addr)).unwrap();
        }
        let read =
            |name: &str| std::fs::read(repo_path(&format!("tests/data/tls/{name}"))).unwrap();
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
            .domain_name("localhost");
        if self.args.iter().any(|a| a == "--tls-client-ca") {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read("client.pem"),
                read("client.key"),
            ));
        }
        Channel::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
    }

    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.expect("connect")
    }

    pub async fn client(&self) -> Client {
        FeedbackServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    /// Sends a signal (`TERM`, `HUP`, ...) and returns at once
    /// (`terminate` waits for the exit).
    pub fn send_signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM")
            / 1024
    }

    /// SIGKILL: no chance to flush or commit anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(
                        status.success(),
                        "server exited with {status} after SIGTERM"
                    );
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "server did not stop within 30 s of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again on the same data dir with other flags.
    pub async fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.restart().await;
    }

    /// Starts the server again on the same data dir (after `kill9` or `terminate`).
    pub async fn restart(&mut self) {
        self.restart_until(ServingStatus::Serving).await;
    }

    /// `restart`, waiting until health answers `want` (a server started
    /// on a full disk answers NOT_SERVING).
    pub async fn restart_until(&mut self, want: ServingStatus) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let mut next = Self::start_until(&self.data_dir, self.args.clone(), want).await;
        self.child = next.child.take();
        self.addr = next.addr;
        // The new process's lines (its reader threads keep writing to
        // `next.logs`) follow the earlier processes' ones.
        let earlier = std::mem::take(&mut *self.logs.lock().unwrap());
        next.logs.lock().unwrap().splice(0..0, earlier);
        self.logs = next.logs.clone();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A feedback item with text and id; other fields default.
pub fn item(id: &str, text: &str) -> pb::Feedback {
    pb::Feedback {
        id: id.into(),
        text: text.into(),
        ..Default::default()
    }
}

pub async fn ingest(client: &mut Client, items: Vec<pb::Feedback>) -> pb::IngestResponse {
    client
        .ingest(pb::IngestRequest {
            items,
            ..Default::default()
        })
        .await
        .expect("Ingest")
        .into_inner()
}

pub fn search_request(query: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        query: query.into(),
        ..Default::default()
    }
}

pub async fn search(client: &mut Client, request: pb::SearchRequest) -> pb::SearchResponse {
    client.search(request).await.expect("Search").into_inner()
}

/// Repeats the search until `done` holds (at most 5 s; writes are promised
/// searchable within 1 s) and returns the last response.
pub async fn search_until(
    client: &mut Client,
    request: pb::SearchRequest,
    done: impl Fn(&pb::SearchResponse) -> bool,
) -> pb::SearchResponse {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = search(client, request.clone()).await;
        if done(&response) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "search {:?} never reached the expected state; last: {} hits",
            request.query,
            response.total_hits
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs `verbatim reindex` on a data dir no server is using; asserts that it
/// succeeded and returns its standard output.
pub fn reindex_offline(data_dir: &Path) -> String {
    let output = Command::new(BIN)
        .args(["reindex", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn hit_ids(response: &pb::SearchResponse) -> Vec<String> {
    response
        .hits
        .iter()
        .map(|h| h.item.as_ref().expect("hit item").id.clone())
        .collect()
}

/// A word no other test uses.
pub fn unique_word(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub async fn stats(client: &mut Client) -> pb::StatsResponse {
    client
        .stats(pb::StatsRequest {})
        .await
        .expect("Stats")
        .into_inner()
}

/// A tmpfs of a few MiB mounted for one test (unmounted on drop). None where
/// mounting is not permitted (not root): the caller then skips, loudly.
pub struct Tmpfs {
    _temp: Option<TempDir>,
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(size_mib: u32) -> Option<Tmpfs> {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut mounted = Self::mount_at(temp.path(), size_mib)?;
        mounted._temp = Some(temp);
        Some(mounted)
    }

    /// Mounts over an existing (empty) folder.
    pub fn mount_at(path: &Path, size_mib: u32) -> Option<Tmpfs> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs {
                _temp: None,
                path: path.to_path_buf(),
            }),
            _ => {
                eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file of zeros until the file system is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            if file.write_all(&block).is_err() {
                break;
            }
        }
        // The last partial blocks too.
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// An ext4 file system in a loop-mounted image file, mounted with
/// `errors=remount-ro` for one test (unmounted on drop). `fail` makes the
/// kernel turn it read-only under open files, as it does on a disk error
/// (a tmpfs cannot be remounted read-only while a file is open for
/// writing). None where loop devices or `mkfs.ext4` are not available: the
/// caller then skips, loudly.
pub struct Ext4Image {
    _temp: TempDir,
    image: PathBuf,
    path: PathBuf,
}

impl Ext4Image {
    pub fn mount(size_mib: u64) -> Option<Ext4Image> {
        let temp = tempfile::tempdir().expect("temp dir");
        let image = temp.path().join("fs.img");
        let path = temp.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("image file");
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .stderr(Stdio::null())
            .status();
        let mounted = Ext4Image {
            _temp: temp,
            image,
            path,
        };
        if !matches!(made, Ok(s) if s.success()) || !mounted.mount_image() {
            eprintln!("SKIPPED: cannot make and loop-mount an ext4 image here (needs root, mkfs.ext4, loop devices)");
            return None;
        }
        Some(mounted)
    }

    fn mount_image(&self) -> bool {
        Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&self.image)
            .arg(&self.path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error of the file system, as the kernel would record on a disk
    /// error: with `errors=remount-ro` it is read-only from now on, open
    /// files included, until it is unmounted.
    pub fn fail(&self) {
        let source = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.path)
            .output()
            .expect("findmnt");
        let source = String::from_utf8(source.stdout).expect("device name");
        let device = Path::new(source.trim())
            .file_name()
            .expect("a loop device")
            .to_owned();
        let knob = Path::new("/sys/fs/ext4")
            .join(device)
            .join("trigger_fs_error");
        std::fs::write(&knob, "1").expect("trigger an ext4 error");
        assert!(
            std::fs::write(self.path.join(".still-writable"), b"x").is_err(),
            "the file system turned read-only"
        );
    }

    /// Unmounts, repairs (`e2fsck`) and mounts the file system again,
    /// writable: what an operator does after such an error.
    pub fn repair_and_remount(&self) {
        let status = Command::new("umount")
            .arg(&self.path)
            .status()
            .expect("umount");
        assert!(status.success(), "umount (is a process still using it?)");
        let status = Command::new("e2fsck")
            .arg("-fy")
            .arg(&self.image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("e2fsck");
        // 0: clean, 1: errors corrected (the recorded error).
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
        assert!(self.mount_image(), "mount the repaired image");
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `verbatim keys add`; returns the token (the last line of its output).
pub fn add_key(data_dir: &Path, tenant: &str, roles: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command
        .args(["keys", "add", "--data-dir"])
        .arg(data_dir)
        .args(["--tenant", tenant]);
    for role in roles {
        command.args(["--role", role]);
    }
    let output = command.output().expect("run verbatim keys add");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.lines().last().expect("a token line").to_string();
    assert!(token.starts_with("vb_"), "{stdout}");
    token
}

/// A request with `authorization: Bearer TOKEN` (none with `None`).
pub fn authed<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

// The Prometheus endpoint of a server started with `--metrics-listen`.

/// The endpoint's address, as the server logs it (`metrics_addr=...`).
pub fn metrics_addr(server: &TestServer) -> SocketAddr {
    let log = server.log_text();
    let rest = log
        .split("metrics_addr=")
        .nth(1)
        .expect("the server logs metrics_addr=");
    rest.chars()
        .take_while(|c| !c.is_whitespace())
        .collect::<String>()
        .parse()
        .expect("a socket address")
}

/// One raw HTTP/1.1 exchange; returns the head and the body.
pub async fn metrics_get(addr: SocketAddr, target: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to metrics");
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the endpoint answers and closes")
        .unwrap();
    let answer = String::from_utf8(answer).expect("utf-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    (head.to_string(), body.to_string())
}

/// The value of the sample line that starts with `series` (name and labels).
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// A hand-written copy of `Feedback` whose text is `bytes`, so a test can
/// put invalid UTF-8 on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawFeedback {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(bytes = "vec", tag = "2")]
    pub text: Vec<u8>,
}

/// `IngestRequest` of `RawFeedback` items.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawIngestRequest {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<RawFeedback>,
}

/// Holds part of the server's request budget (`--max-inflight-request-mb`)
/// until dropped: an IngestStream whose one message announces 16 MiB and
/// sends only `bytes` of it, over its own HTTP/2 connection.
pub struct BudgetHolder {
    _send: h2::SendStream<bytes::Bytes>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for BudgetHolder {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// A call of `method` (`FeedbackService/Get`, ...) over its own raw HTTP/2
/// connection, with `headers` besides gRPC's: its response head to come,
/// its request body's sender, and the connection's task (abort it to
/// close the connection).
pub async fn raw_call(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
) -> (
    h2::client::ResponseFuture,
    h2::SendStream<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("ready");
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/verbatim.v1.{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, send) = client
        .send_request(request.body(()).unwrap(), false)
        .expect("send request");
    (response, send, connection)
}

pub async fn hold_budget(addr: SocketAddr, bytes: usize) -> BudgetHolder {
    let (_response, mut send, connection) =
        raw_call(addr, "FeedbackService/IngestStream", &[]).await;
    let mut data = bytes::BytesMut::new();
    data.extend_from_slice(&[0]);
    data.extend_from_slice(&(16u32 << 20).to_be_bytes());
    data.extend_from_slice(&vec![0x0a; bytes]);
    let mut data = data.freeze();
    // Within HTTP/2 flow control: the server's window opens as it reads
    // (and counts) what came before.
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx))
            .await
            .expect("the stream is open")
            .expect("capacity");
        send.send_data(data.split_to(granted.min(data.len())), false)
            .expect("send data");
    }
    // The last window's worth is read (and counted) shortly after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    BudgetHolder {
        _send: send,
        connection,
    }
}

/// The lines `child` writes to its standard error (piped), as they come.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (line_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    lines
}

/// `verbatim serve` on `data_dir` (a free port, analysis off) run to its
/// end: for starts that must fail. One still running after 60 s (it
/// started serving) is killed, and so fails the caller's checks.
pub fn serve_to_end(data_dir: &Path) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--analysis",
            "off",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run verbatim serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().expect("collect the output")
}
