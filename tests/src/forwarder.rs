//! A TCP forwarder on a loopback port whose target can be switched: the one
//! address the services know for Redis, which after a failover leads to the
//! promoted replica, as a Sentinel-aware proxy or a moved DNS name would.
//! It runs on a thread of its own, so it forwards whatever the test's own
//! runtime is doing.

use std::net::TcpListener as StdListener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Forwarder {
    port: u16,
    target: watch::Sender<u16>,
    stop: CancellationToken,
}

impl Forwarder {
    /// Forwards every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> std::io::Result<Self> {
        let listener = StdListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = watch::channel(target);
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stopped = stop.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let inbound = tokio::select! {
                        _ = stopped.cancelled() => return,
                        r = listener.accept() => match r {
                            Ok((s, _)) => s,
                            Err(_) => continue,
                        },
                    };
                    tokio::spawn(forward(inbound, rx.clone(), stopped.clone()));
                }
            });
        });
        Ok(Self {
            port,
            target: tx,
            stop,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// New connections go to `target`; the open ones are closed, as the
    /// old primary's are when it dies.
    pub fn switch(&self, target: u16) {
        self.target.send_replace(target);
    }
}

async fn forward(
    mut inbound: TcpStream,
    mut target: watch::Receiver<u16>,
    stop: CancellationToken,
) {
    let port = *target.borrow_and_update();
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = target.changed() => {}
        _ = stop.cancelled() => {}
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
