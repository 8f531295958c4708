//! The gateway's accept loop: HTTP/1.1 (with WebSocket upgrades) on hyper, with what
//! `axum::serve` does not offer: a deadline for a request's header, so a client that opens a
//! connection and never finishes its header is disconnected instead of holding it forever; and
//! a lingering close, so a client still sending a body the gateway refused (413, 408) reads the
//! answer instead of a connection reset. With a certificate, every connection is TLS first:
//! the handshake runs on the connection's own task and must finish within the header deadline.

use crate::Api;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tributary_ops::tls::TlsAcceptor;

/// Serves `api` on `listener` (over TLS with `tls`) until `stop` turns true, then asks every
/// open connection to finish its request in flight and close, and returns once all have.
pub async fn serve_until(
    listener: TcpListener,
    api: Api,
    header_timeout: Duration,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let api = std::sync::Arc::new(api);
    // Each connection holds a receiver; `closed()` resolves when the last one is dropped.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, for example: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let conn = Connection {
            api: std::sync::Arc::clone(&api),
            peer,
            header_timeout,
            tls: tls.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(conn.run(tcp, open_rx.clone()));
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: it must not live across an await.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// One accepted connection and what it is served with.
struct Connection {
    api: std::sync::Arc<Api>,
    /// The client's address, given to handlers as `ConnectInfo` (the rate limiter uses it).
    peer: SocketAddr,
    header_timeout: Duration,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, _open: watch::Receiver<()>) {
        // Small writes (a 201, a WebSocket frame) go out at once: with Nagle's algorithm a
        // frame waits for the client's delayed ACK of the one before it (measured: +15 ms at
        // p50 on the stream, bench/e2e.sh).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
        let Some(tls) = self.tls.take() else { return self.serve(tcp).await };
        // Bounded by the acceptor's timeout (the header deadline); a stop need not wait for it.
        let handshake = tokio::select! {
            handshake = tls.handshake(tcp) => handshake,
            () = stopped(&mut self.stop) => return,
        };
        match handshake {
            Ok(stream) => self.serve(stream).await,
            Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
        }
    }

    /// Serves HTTP on `io` (a TCP or TLS stream) until the client leaves or a stop.
    async fn serve<S>(mut self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The peer's address, for the rate limiter (`ConnectInfo`, as `axum::serve` gives it).
        let peer = self.peer;
        let api = std::sync::Arc::clone(&self.api);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let api = std::sync::Arc::clone(&api);
            async move { Ok::<_, Infallible>(api.call(req.map(Body::new), peer).await) }
        });
        // hyper's HTTP/1 connection itself, not hyper-util's `auto` one: that first waits,
        // with no deadline, for the bytes that tell HTTP/1 from HTTP/2, so a connection that
        // sends nothing (or nothing after its TLS handshake) was never closed.
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.header_timeout);
        let io = TokioIo::new(Lingering(Some(io)));
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            () = stopped(&mut self.stop) => {}
        }
        conn.as_mut().graceful_shutdown();
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended during shutdown");
        }
    }
}

/// How long, and how many bytes, a closed connection is still read and discarded.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 8 * 1024 * 1024;

/// A connection that, when hyper drops it, stops sending and reads (and discards) what the
/// client still sends, for at most [`LINGER`] and [`LINGER_BYTES`]. Closing a socket with
/// unread data makes the kernel reset it, and a client still writing the rest of a refused
/// body would see the reset instead of the answer already sent. Over TLS, stopping sends
/// `close_notify` and what is discarded is decrypted first.
struct Lingering<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(Option<S>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<S> {
    fn stream(&mut self) -> io::Result<&mut S> {
        self.0.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<S> {
    fn drop(&mut self) {
        let Some(mut tcp) = self.0.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let _ = tcp.shutdown().await;
            let mut sink = tokio::io::sink();
            let mut rest = (&mut tcp).take(LINGER_BYTES);
            let _ = tokio::time::timeout(LINGER, tokio::io::copy(&mut rest, &mut sink)).await;
        });
    }
}
