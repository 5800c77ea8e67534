//! A DNS listener on one port, UDP and TCP, that hands every message to a
//! handler: shared by the demo's authoritative server and its resolver caches.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// A boxed future, as the handler returns it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Answers one DNS message (wire bytes in, wire bytes out; `None` drops it).
/// With `over_udp` the handler truncates its reply to what UDP carries (512
/// bytes unless the request has EDNS) and sets TC.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, request: &'a [u8], over_udp: bool) -> BoxFuture<'a, Option<Vec<u8>>>;
}

/// A running listener; stops when dropped.
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Listener {
    /// Binds UDP and TCP on the same port of `bind` (port 0: any free port,
    /// the same for both) and serves `handler` on them.
    pub async fn bind<H: Handler>(bind: SocketAddr, handler: Arc<H>) -> io::Result<Self> {
        let mut last_err = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind(bind).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let udp = Arc::new(udp);
                    let h = handler.clone();
                    let udp_task = tokio::spawn(serve_udp(udp, h));
                    let tcp_task = tokio::spawn(serve_tcp(tcp, handler));
                    return Ok(Listener {
                        addr,
                        tasks: vec![udp_task, tcp_task],
                    });
                }
                Err(e) if bind.port() == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_udp<H: Handler>(sock: Arc<UdpSocket>, handler: Arc<H>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let request = buf[..n].to_vec();
        let (sock, handler) = (sock.clone(), handler.clone());
        tokio::spawn(async move {
            if let Some(reply) = handler.handle(&request, true).await {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

async fn serve_tcp<H: Handler>(listener: TcpListener, handler: Arc<H>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(stream, handler.clone()));
    }
}

async fn serve_tcp_conn<H: Handler>(mut stream: TcpStream, handler: Arc<H>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some(reply) = handler.handle(&request, false).await else {
            continue;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
