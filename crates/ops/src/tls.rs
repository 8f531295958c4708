//! HTTPS for the services' own listeners (the gateway and the registry), written once: the
//! certificate and key files of a section checked at startup ([`TlsAcceptor::from_files`]),
//! a handshake bounded in time ([`TlsAcceptor::handshake`]), and a listener for `axum::serve`
//! that handshakes many connections at once ([`TlsListener`]), so a client that connects and
//! never says hello holds neither the accept loop nor a slot for long.
//!
//! rustls with the ring provider (no post-quantum key exchange); TLS 1.2 and 1.3; HTTP/1.1
//! only (no ALPN).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

pub use tokio_rustls::server::TlsStream;

/// Why a section's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One of `tls_cert_file` and `tls_key_file` is set without the other.
    #[error("tls_cert_file and tls_key_file go together: set both (HTTPS) or neither (HTTP)")]
    Incomplete,
    /// A file cannot be read or holds no usable PEM block.
    #[error("{setting} {path}: {reason}")]
    File { setting: &'static str, path: PathBuf, reason: String },
    /// The certificate chain and the key do not make a server configuration.
    #[error("tls_cert_file and tls_key_file cannot serve HTTPS: {0}")]
    Config(String),
}

/// Accepts TLS connections with the certificate chain and key of one listener.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor").field("handshake_timeout", &self.handshake_timeout).finish()
    }
}

impl TlsAcceptor {
    /// The acceptor of a section's `tls_cert_file` (PEM: the server's certificate first, then
    /// any intermediates) and `tls_key_file` (PEM: PKCS#8, PKCS#1 or SEC1): `None` when
    /// neither is set (plain HTTP), an error when only one is or a file is unusable. A
    /// handshake must finish within `handshake_timeout`.
    pub fn from_files(
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        handshake_timeout: Duration,
    ) -> Result<Option<Self>, TlsError> {
        let (cert_file, key_file) = match (cert_file, key_file) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => return Err(TlsError::Incomplete),
        };
        let file_error = |setting, path: &Path, reason: String| TlsError::File {
            setting,
            path: path.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert_file)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| file_error("tls_cert_file", cert_file, e.to_string()))?;
        if chain.is_empty() {
            let reason = "holds no PEM certificate".to_owned();
            return Err(file_error("tls_cert_file", cert_file, reason));
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| file_error("tls_key_file", key_file, e.to_string()))?;
        // Deprecated in rustls 0.23.48 only because ring has no post-quantum key exchange
        // (X25519MLKEM768 needs aws-lc-rs, a long native build): the key exchange offered is
        // X25519, P-256 and P-384, as before.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let inner = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Ok(Some(Self { inner, handshake_timeout }))
    }

    /// The server side of a TLS handshake on `io`, abandoned after the handshake timeout.
    pub async fn handshake<IO>(&self, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(self.handshake_timeout, self.inner.accept(io)).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake did not finish in time")
        })?
    }
}

/// Most handshakes a [`TlsListener`] runs at once; beyond them it stops accepting until one
/// ends (each ends within the handshake timeout).
const MAX_HANDSHAKES: usize = 1024;

/// A listener for `axum::serve` that hands out connections once their TLS handshake is done.
/// Handshakes run side by side; one that fails or times out is logged and dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<io::Result<(TlsStream<TcpStream>, std::net::SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS with `acceptor` on the connections `tcp` accepts.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        Self { tcp, acceptor, handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe: axum may drop this future for a shutdown.
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    match accepted {
                        Ok((tcp, peer)) => {
                            let acceptor = self.acceptor.clone();
                            self.handshakes.spawn(async move {
                                Ok((acceptor.handshake(tcp).await?, peer))
                            });
                        }
                        Err(e) => {
                            // Out of file descriptors, for example: wait instead of spinning.
                            tracing::warn!(error = %e, "accepting a connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                Some(done) = self.handshakes.join_next() => match done {
                    Ok(Ok(conn)) => return conn,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(e) => tracing::warn!(error = %e, "TLS handshake task failed"),
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tributary-ops-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn neither_file_is_plain_http_and_one_alone_is_refused() {
        assert!(TlsAcceptor::from_files(None, None, T).expect("plain").is_none());
        let f = Path::new("/nonexistent.pem");
        let e = TlsAcceptor::from_files(Some(f), None, T).expect_err("half");
        assert!(e.to_string().contains("set both"), "{e}");
        let e = TlsAcceptor::from_files(None, Some(f), T).expect_err("half");
        assert!(matches!(e, TlsError::Incomplete), "{e}");
    }

    #[test]
    fn unreadable_or_empty_files_are_named() {
        let missing = Path::new("/nonexistent/cert.pem");
        let e = TlsAcceptor::from_files(Some(missing), Some(missing), T).expect_err("missing");
        assert!(e.to_string().starts_with("tls_cert_file /nonexistent/cert.pem: "), "{e}");
        let empty = temp_file("empty.pem", "not pem\n");
        let e = TlsAcceptor::from_files(Some(&empty), Some(&empty), T).expect_err("empty");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    }
}
