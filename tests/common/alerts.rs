//! What the alert tests watch alerts with: a subscriber of the gateway's
//! `alerts` service, and a real HTTP server standing for the operator's
//! webhook receiver, which answers as a test scripts it and records what
//! it was sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::Client;

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) << 20
}

/// A client subscribed to the `alerts` service.
pub struct Follower {
    client: Client,
}

impl Follower {
    /// Subscribes (again until the gateway's publisher has created the
    /// service).
    pub async fn subscribe(url: &str) -> Follower {
        let mut client = Client::connect(url).await;
        client
            .identify_with(json!({"type": "IDENTIFY", "name": format!("watch_{}", std::process::id() ^ rand_suffix()), "version": "0.2.0"}))
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // The gateway numbers a client's requests from 0.
        for seq in 0.. {
            let reply = client
                .answer(json!({"type": "SELF_SUBSCRIBE", "service": "alerts"}), seq)
                .await;
            if reply["successful"] == true {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{reply}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Follower { client }
    }

    /// The next event broadcast, within `patience`.
    pub async fn next(&mut self, patience: Duration) -> Value {
        let message = self.client.skip_to_within("MESSAGE", patience).await;
        assert_eq!(message["origin"]["service"]["name"], "alerts", "{message}");
        message["data"].clone()
    }
}

/// How the receiver answers one POST.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// 200 after this long (longer than the gateway waits).
    Late(Duration),
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
    /// Whether it was answered 2xx in time.
    pub acknowledged: bool,
}

/// A webhook receiver on 127.0.0.1 (see the module documentation).
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on `addr`; answers the first POSTs as `script` says, the
    /// others 200.
    pub async fn start(addr: SocketAddr, script: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("the port is free");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, script.clone(), log.clone()));
            }
        });
        Receiver { received, task }
    }

    /// The events acknowledged, in the order they were.
    pub fn acknowledged(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.acknowledged)
            .map(|r| r.event.clone())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers the POSTs of one connection.
async fn serve(
    stream: TcpStream,
    script: Arc<Mutex<VecDeque<Answer>>>,
    log: Arc<Mutex<Vec<Received>>>,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if first {
                assert!(line.starts_with("POST /hook "), "{line}");
                first = false;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if name.eq_ignore_ascii_case("content-type") {
                    assert_eq!(value.trim(), "application/json");
                }
            }
        }
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let event: Value = serde_json::from_slice(&body).expect("a JSON event");
        let answer = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Status(200));
        // Logged as it arrives; acknowledged once a 2xx is written in time.
        let at = {
            let mut log = log.lock().unwrap();
            log.push(Received {
                event,
                acknowledged: false,
            });
            log.len() - 1
        };
        let status = match answer {
            Answer::Status(status) => status,
            Answer::Late(pause) => {
                tokio::time::sleep(pause).await;
                200
            }
        };
        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if stream.get_mut().write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if (200..300).contains(&status) && matches!(answer, Answer::Status(_)) {
            log.lock().unwrap()[at].acknowledged = true;
        }
    }
}
