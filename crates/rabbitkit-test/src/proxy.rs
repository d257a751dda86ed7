//! A fault-injecting TCP proxy on loopback, to put between a client and a
//! broker node: it can cut every connection, stall them (bytes stop, the
//! sockets stay open, as with a dead peer behind a silent network), delay
//! them, or refuse new ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
struct State {
    /// Bumped by `cut`: pumps of an older epoch close their sockets.
    epoch: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    delay_ms: AtomicU64,
    refuse: AtomicBool,
    connections: AtomicU64,
}

/// A TCP proxy from a local port to `upstream`, with faults on demand.
/// Runs on the current tokio runtime; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            epoch: watch::channel(0).0,
            stalled: watch::channel(false).0,
            delay_ms: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    st.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let epoch = *st.epoch.borrow();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pump(cr, sw, st.clone(), epoch));
                    let down = tokio::spawn(pump(sr, cw, st.clone(), epoch));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(Self {
            addr,
            upstream,
            state,
            accept,
        })
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// An `amqp://` URL through the proxy (guest user, default vhost).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Connections forwarded so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Closes every open connection at once (both sides see a reset/EOF).
    pub fn cut(&self) {
        self.state.epoch.send_modify(|e| *e += 1);
    }

    /// Stops forwarding bytes in both directions; sockets stay open.
    pub fn stall(&self) {
        self.state.stalled.send_replace(true);
    }

    /// Forwards bytes again after [`stall`](Self::stall).
    pub fn resume(&self) {
        self.state.stalled.send_replace(false);
    }

    /// Delays each chunk of bytes by `delay` (zero: no delay).
    pub fn delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Refuses (accepts and closes at once) new connections while `true`.
    pub fn refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    epoch: u64,
) {
    let mut epochs = state.epoch.subscribe();
    let mut stalled = state.stalled.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While stalled, neither read nor write (the kernel buffers fill up).
        while *stalled.borrow_and_update() {
            tokio::select! {
                _ = stalled.changed() => {}
                _ = epochs.changed() => if *epochs.borrow() != epoch { return },
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = epochs.changed() => if *epochs.borrow() != epoch { return } else { continue },
            _ = stalled.changed() => continue,
        };
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // Bytes read before a stall are held until it ends.
        while *stalled.borrow_and_update() {
            tokio::select! {
                _ = stalled.changed() => {}
                _ = epochs.changed() => if *epochs.borrow() != epoch { return },
            }
        }
        if *epochs.borrow() != epoch || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
