//! A TCP relay in front of a gateway, for the tests of clients that must
//! outlive their connection: cutting it drops every connection it carries
//! (a network fault) while the gateway lives on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP relay to the gateway that the test can cut: while it is down, the
/// connections it carried are closed and those it accepts are closed at
/// once, as a network fault would do.
pub struct Relay {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Connections carried to the gateway.
    pub carried: Arc<AtomicUsize>,
}

impl Relay {
    pub async fn to(gateway: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let up = watch::Sender::new(true);
        let carried = Arc::new(AtomicUsize::new(0));
        let (state, count) = (up.subscribe(), carried.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = state.clone();
                if !*state.borrow() {
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(gateway).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { addr, up, carried }
    }

    /// The gateway's WebSocket endpoint through the relay.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The gateway's HTTP side (the console) through the relay.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Cuts (`false`) or restores (`true`) the way to the gateway.
    pub fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}
