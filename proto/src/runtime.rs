//! Serving plumbing the three servers share: logging set-up, the shutdown
//! signal, the accepted connections' socket options, and the address file
//! through which a server bound to port 0 tells its launcher where it
//! listens.

use std::net::SocketAddr;
use std::path::Path;

/// Sets up `tracing` from `RUST_LOG` (default `info`), logging to stderr.
/// `json` switches to one JSON object per line, for log collectors.
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests running several servers in one process) is harmless.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// The connections a server accepts on `listener`, with `TCP_NODELAY` set.
///
/// tonic sets it on connections only when it binds the address itself; a
/// server handed a bound listener (ours are, so that port 0 works) would
/// otherwise answer with Nagle's algorithm on, and a response written in
/// more than one segment then waits for the client's delayed ACK (up to
/// 40 ms on Linux) before its last part leaves.
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Writes `addr` to `path` atomically (temp file, then rename), so a reader
/// polling for the file never sees half an address.
pub fn write_addr_file(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    /// Without it a server's multi-segment answers wait on the client's
    /// delayed ACK: the lab's operator measurement of 250 teachers sat
    /// idle two thirds of its 4.9 s (docs/BENCHMARKS.md).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let stream = accepted.next().await.expect("a connection").expect("accepted");
        assert!(stream.nodelay().expect("getsockopt"), "TCP_NODELAY not set on an accepted connection");
    }
}
