//! TLS on the gRPC listener: plaintext clients are refused, the certificate
//! is re-read when its files change, client certificates when required.

use std::path::Path;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use verbatim::grpc::pb;

use crate::helpers::*;

fn tls_file(name: &str) -> String {
    repo_path(&format!("tests/data/tls/{name}"))
        .to_str()
        .unwrap()
        .to_string()
}

async fn stats_over(endpoint: tonic::transport::Endpoint) -> Result<u64, String> {
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    pb::feedback_service_client::FeedbackServiceClient::new(channel)
        .stats(pb::StatsRequest {})
        .await
        .map(|r| r.into_inner().items)
        .map_err(|e| format!("{e:?}"))
}

fn https(server: &TestServer, ca: &str, identity: bool) -> tonic::transport::Endpoint {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(tls_file(ca)).unwrap()))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(tls_file("client.pem")).unwrap(),
            std::fs::read(tls_file("client.key")).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
}

fn copy(from: &str, to: &Path) {
    // Write then rename: what a certificate manager does.
    let tmp = to.with_extension("tmp");
    std::fs::copy(tls_file(from), &tmp).unwrap();
    std::fs::rename(tmp, to).unwrap();
}

#[tokio::test]
async fn tls_serves_refuses_plaintext_and_reloads_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    copy("server.pem", &cert);
    copy("server.key", &key);
    let server = TestServer::spawn_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    assert!(server.log_text().contains("tls=true"));
    assert_eq!(stats_over(https(&server, "ca.pem", false)).await, Ok(0));
    let plaintext = Channel::from_shared(format!("http://{}", server.addr)).unwrap();
    assert!(
        stats_over(plaintext).await.is_err(),
        "plaintext must not be served"
    );
    // A client that trusts only the second CA is refused...
    assert!(stats_over(https(&server, "ca2.pem", false)).await.is_err());
    // ...until the certificate is renewed (signed by that CA): no restart.
    copy("server2.key", &key);
    copy("server2.pem", &cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stats_over(https(&server, "ca2.pem", false)).await {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "not reloaded: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.log_text().contains("TLS certificate reloaded"));
    // A broken renewal keeps the last good certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(stats_over(https(&server, "ca2.pem", false)).await.is_ok());
}

#[tokio::test]
async fn client_certificates_when_required() {
    let server = TestServer::spawn_with(&[
        "--tls-cert",
        &tls_file("server.pem"),
        "--tls-key",
        &tls_file("server.key"),
        "--tls-client-ca",
        &tls_file("ca.pem"),
    ])
    .await;
    assert!(stats_over(https(&server, "ca.pem", true)).await.is_ok());
    assert!(
        stats_over(https(&server, "ca.pem", false)).await.is_err(),
        "a client without a certificate must be refused"
    );
    // The CLI speaks TLS too.
    let output = std::process::Command::new(BIN)
        .args([
            "search",
            "--server",
            &format!("https://localhost:{}", server.addr.port()),
        ])
        .args(["--ca-cert", &tls_file("ca.pem")])
        .args(["--client-cert", &tls_file("client.pem")])
        .args(["--client-key", &tls_file("client.key")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_bad_certificate_is_refused_at_startup() {
    let temp = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--analysis", "off"])
        .args([
            "--tls-cert",
            &tls_file("server.pem"),
            "--tls-key",
            &tls_file("server2.key"),
        ])
        .arg("--data-dir")
        .arg(temp.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
}
