//! Starting an ingress process and talking to it.

use futures_util::{SinkExt, StreamExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "process-test-secret-0123456789abcdef";
pub const API_KEY: &str = "process-test-api-key-0123";
/// The longest a test waits for one thing it expects.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A child process, killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An ingress process on a free loopback port.
pub struct Node {
    pub proc: Proc,
    pub addr: String,
    /// Its stdout (the log), for what it said.
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts the ingress with the test secret and key, `env` on top, and
    /// (when given) a descriptor limit; returns once `/readyz` answers 200.
    pub async fn start(redis_url: &str, env: &[(&str, &str)], nofile: Option<u32>) -> Node {
        let port = chat_devkit::redis_server::free_port().expect("port");
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("ingress.log");
        let bin = env!("CARGO_BIN_EXE_ingress");
        let mut cmd = match nofile {
            // `ulimit` sets the soft and the hard limit, so the node cannot raise it.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.env("CHAT_REDIS_URL", redis_url)
            .env("CHAT_LISTEN", &addr)
            .env("CHAT_JWT_SECRET", SECRET)
            .env("CHAT_API_KEYS", API_KEY)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let node = Node {
            proc: Proc(cmd.spawn().expect("ingress starts")),
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + DEADLINE;
        while !http_get(&node.addr, "/readyz")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            assert!(
                Instant::now() < deadline,
                "ingress not ready: {}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// Descriptors the process has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A counter or gauge from `/metrics` (the sum over its label sets
    /// matching `labels`), 0 when absent.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = http_get(&self.addr, "/metrics").await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter(|l| l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `metric` reaches `at_least`.
    pub async fn wait_metric(&self, name: &str, labels: &str, at_least: f64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.metric(name, labels).await;
            if v >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{{{labels}}} = {v}, want {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `PUT /v1/sessions/{sid}` for `user` with the admin key; expects 204.
    pub async fn put_session(&self, sid: &str, user: &str) {
        let r = http()
            .put(self.http(&format!("/v1/sessions/{sid}")))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"user": user, "ttl_secs": 600}))
            .send()
            .await
            .expect("PUT session");
        assert_eq!(r.status(), 204, "PUT session {sid}");
    }

    /// `DELETE /v1/sessions/{sid}` with the admin key; expects 204.
    pub async fn delete_session(&self, sid: &str) {
        let r = http()
            .delete(self.http(&format!("/v1/sessions/{sid}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("DELETE session");
        assert_eq!(r.status(), 204, "DELETE session {sid}");
    }

    /// Connects with `Authorization: Bearer` and reads `ready`.
    pub async fn connect(&self, token: &str) -> Ws {
        let mut ws = Ws::connect(&self.ws_url(), Some(token)).await;
        let ready = ws.frame().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        ws
    }
}

/// A token for `user`, any room, an hour, with `extra` claims.
pub fn token_with(user: &str, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({"sub": user, "exp": now() + 3600, "rooms": ["*"]});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn token(user: &str) -> String {
    token_with(user, serde_json::json!({}))
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A free loopback address, for a second listener.
pub fn free_addr() -> String {
    let port = chat_devkit::redis_server::free_port().expect("port");
    format!("127.0.0.1:{port}")
}

/// Waits until the `/metrics` text at `addr` satisfies `ok`.
pub async fn wait_metrics(addr: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = http_get(addr, "/metrics").await.unwrap_or_default();
        if ok(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "metrics never matched: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/1.1 request on a fresh connection; the whole answer, or `None`
/// when the connection failed.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out)
}

/// What a read from a socket gave.
#[derive(Debug, PartialEq)]
pub enum Event {
    Frame(serde_json::Value),
    /// The close frame's code; `None` when the connection ended without one
    /// (what a browser reports as 1006).
    Closed(Option<u16>),
}

pub struct Ws(pub WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Ws {
    pub async fn connect(url: &str, token: Option<&str>) -> Ws {
        Self::try_connect(url, token).await.expect("upgrade")
    }

    pub async fn try_connect(
        url: &str,
        token: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request().expect("request");
        if let Some(t) = token {
            req.headers_mut().insert(
                "Authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        Ok(Ws(tokio_tungstenite::connect_async(req).await?.0))
    }

    /// Over a TCP socket whose receive buffer is `rcvbuf` bytes.
    pub async fn connect_small_buffer(addr: &str, token: &str, rcvbuf: u32) -> Ws {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        let tcp = sock
            .connect(addr.parse().expect("addr"))
            .await
            .expect("connect");
        let mut req = format!("ws://{addr}/v1/ws")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
            .await
            .expect("upgrade");
        Ws(ws)
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.0
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    /// The next frame or close, within the deadline.
    pub async fn event(&mut self) -> Event {
        loop {
            let m = tokio::time::timeout(DEADLINE, self.0.next())
                .await
                .expect("timed out waiting for a frame");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Event::Frame(serde_json::from_str(&t).expect("JSON"));
                }
                Some(Ok(Message::Close(f))) => {
                    return Event::Closed(f.map(|CloseFrame { code, .. }| u16::from(code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    pub async fn frame(&mut self) -> serde_json::Value {
        match self.event().await {
            Event::Frame(v) => v,
            Event::Closed(c) => panic!("closed ({c:?}) while waiting for a frame"),
        }
    }

    /// Reads until the close; its code and the frames before it.
    pub async fn until_closed(&mut self) -> (Option<u16>, Vec<serde_json::Value>) {
        let mut frames = Vec::new();
        loop {
            match self.event().await {
                Event::Frame(v) => frames.push(v),
                Event::Closed(c) => return (c, frames),
            }
        }
    }
}

/// An admin HTTP client.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client")
}
