//! A TCP relay in front of a local server (Redis, a gateway), for the tests
//! of what a cut connection does while the server lives on: a replica cut
//! off from Redis, a client that must outlive its connection.

/// A TCP relay to a local port: [`Relay::cut`] closes every relayed
/// connection and refuses new ones (accepted and closed at once) until
/// [`Relay::mend`], as a network fault would. It runs on the test's
/// runtime.
pub struct Relay {
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target_port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let cut = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let state = cut.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *state.borrow() {
                    continue; // dropped: closed at once
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    // Both ends are dropped, so closed, when the relay is cut.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay {
            port,
            cut,
            accepting,
        }
    }

    /// A gateway's WebSocket endpoint through the relay.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// A gateway's HTTP side (the console) through the relay.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Cuts the way through: every relayed connection is closed, and new
    /// ones are closed as soon as they are made.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets connections through again.
    pub fn mend(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}
