//! TLS on the gRPC listener (rustls with ring): the certificate chain and key
//! from PEM files, re-read when either file changes (checked at most once a
//! second, on the next connection), so a renewed certificate needs no
//! restart; optionally client certificates signed by a CA file (mutual TLS).
//! A renewal that cannot be loaded is logged and the previous certificate
//! stays in use. Handshakes run off the accept loop, each bounded in time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files' modification times are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The PEM files of `--tls-cert`, `--tls-key`, `--tls-client-ca`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Current {
    stamps: Vec<Stamp>,
    checked: Instant,
    acceptor: TlsAcceptor,
}

/// The acceptor of the current certificate, rebuilt when the files change.
pub struct TlsReloader {
    files: TlsFiles,
    current: Mutex<Current>,
}

impl TlsReloader {
    /// Loads the files; an unreadable or invalid file is an error here (at
    /// startup), only a logged warning on a later reload.
    pub fn load(files: TlsFiles) -> anyhow::Result<TlsReloader> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&files)?));
        let stamps = Self::stamps(&files);
        Ok(TlsReloader {
            files,
            current: Mutex::new(Current {
                stamps,
                checked: Instant::now(),
                acceptor,
            }),
        })
    }

    fn stamps(files: &TlsFiles) -> Vec<Stamp> {
        let mut stamps = vec![stamp(&files.cert), stamp(&files.key)];
        if let Some(ca) = &files.client_ca {
            stamps.push(stamp(ca));
        }
        stamps
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.checked.elapsed() >= CHECK_EVERY {
            current.checked = Instant::now();
            let stamps = Self::stamps(&self.files);
            if stamps != current.stamps {
                current.stamps = stamps;
                match server_config(&self.files) {
                    Ok(config) => {
                        current.acceptor = TlsAcceptor::from(Arc::new(config));
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(error) => tracing::error!(
                        error = crate::error::chain_text(&error),
                        "TLS files changed but cannot be loaded; the previous certificate stays in use"
                    ),
                }
            }
        }
        current.acceptor.clone()
    }
}

fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect())
        .with_context(|| {
            format!(
                "--tls-cert {}: no PEM certificate chain",
                files.cert.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--tls-cert {}: no certificate in the file",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("--tls-key {}: no PEM private key", files.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("--tls-client-ca {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("--tls-client-ca {}", ca.display()))?)
                    .with_context(|| format!("--tls-client-ca {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("--tls-client-ca {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("--tls-cert / --tls-key: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepted connections after their TLS handshake (at most `slots` at once,
/// see `listen::incoming`). A failed or slow handshake is logged at debug
/// and dropped; it never holds up the others.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    slots: usize,
) -> impl futures::Stream<Item = std::io::Result<super::listen::Guarded<TlsStream<TcpStream>>>> {
    super::listen::incoming(listener, slots, move |stream, peer| {
        let acceptor = tls.acceptor();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        }
    })
}
