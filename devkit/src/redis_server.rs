//! A real `redis-server` child on a free loopback port in a temporary
//! directory: used by the tests (one per test) and by the one-command local
//! stack when no `CHAT_REDIS_URL` is set. Stopped by pid when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("redis-server is not installed (apt-get install -y redis-server): {0}")]
    NotInstalled(std::io::Error),
    #[error("redis-server did not start: {0}")]
    Start(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port.
    pub fn start() -> Result<Self, ServerError> {
        Self::start_with(&[])
    }

    /// A free port is only free until someone binds it: tests run in
    /// parallel, so a port taken in between is retried with another.
    /// Starts a server with more `redis-server` arguments (e.g.
    /// `--appendonly yes`), kept for its restarts.
    pub fn start_with(extra: &[&str]) -> Result<Self, ServerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(extra) {
                Err(ServerError::Start(log)) if attempt < 5 && log.contains("in use") => continue,
                r => return r,
            }
        }
    }

    fn start_once(extra: &[&str]) -> Result<Self, ServerError> {
        let dir = tempfile::Builder::new().prefix("chat-redis-").tempdir()?;
        let port = free_port()?;
        let child = spawn(dir.path(), port, extra)?;
        let extra = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut s = Self {
            child,
            port,
            dir,
            extra,
        };
        s.wait_ready()?;
        Ok(s)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL, data lost) and starts a new empty one on
    /// the same port: what clients see when Redis restarts without its data.
    pub fn restart_empty(&mut self) -> Result<(), ServerError> {
        self.restart(false)
    }

    /// Writes a snapshot now (`SAVE`): what a later
    /// [`restart_from_snapshot`](Self::restart_from_snapshot) brings back.
    pub fn snapshot(&self) -> Result<(), ServerError> {
        match ask(self.port, "SAVE") {
            Some(r) if r.starts_with("+OK") => Ok(()),
            r => Err(ServerError::Start(format!("SAVE answered {r:?}"))),
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port from
    /// its last snapshot: every write acknowledged since then is gone, as
    /// after a restart from an RDB file (or a failover to a replica that was
    /// that far behind).
    pub fn restart_from_snapshot(&mut self) -> Result<(), ServerError> {
        self.restart(true)
    }

    fn restart(&mut self, keep_snapshot: bool) -> Result<(), ServerError> {
        self.stop();
        if !keep_snapshot {
            let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
            match spawn(self.dir.path(), self.port, &extra) {
                Ok(child) => {
                    self.child = child;
                    if self.wait_ready().is_ok() {
                        return Ok(());
                    }
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(ServerError::Start("restart timed out".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a replica of the server on `primary`'s port.
    pub fn start_replica_of(primary: u16) -> Result<Self, ServerError> {
        let primary = primary.to_string();
        // It serves its own replicas once promoted: at once, without the
        // default 5 s wait for more of them.
        Self::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &primary,
            "--repl-diskless-sync-delay",
            "0",
        ])
    }

    /// `REPLICAOF`: follow the server on `primary`'s port, or with `None`
    /// stop following and take writes (a promotion).
    pub fn replicate(&self, primary: Option<u16>) -> Result<(), ServerError> {
        let command = match primary {
            Some(p) => format!("REPLICAOF 127.0.0.1 {p}"),
            None => "REPLICAOF NO ONE".to_owned(),
        };
        match ask(self.port, &command) {
            Some(r) if r.starts_with("+OK") => Ok(()),
            r => Err(ServerError::Start(format!("{command} answered {r:?}"))),
        }
    }

    /// The replication offset this server has reached (`master_repl_offset`
    /// of `INFO replication`): a replica has every write of its primary
    /// when the two are equal.
    pub fn repl_offset(&self) -> Option<u64> {
        let info = ask(self.port, "INFO replication")?;
        info.lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Kills the server (SIGKILL); `restart_empty` brings it back.
    pub fn kill(&mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self) -> Result<(), ServerError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                return Err(ServerError::Start(format!("exited with {status}: {log}")));
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 16];
                    if let Ok(n) = s.read(&mut buf)
                        && buf[..n].starts_with(b"+PONG")
                    {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ServerError::Start("not answering PING after 10s".into()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Result<Child, ServerError> {
    let log: PathBuf = dir.join("redis.log");
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--dir",
            &dir.to_string_lossy(),
            "--logfile",
            &log.to_string_lossy(),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ServerError::NotInstalled(e),
            _ => ServerError::Io(e),
        })
}

/// A real Redis Cluster on loopback: `masters` cluster-enabled servers
/// (no replicas) joined with `redis-cli --cluster create`. Stopped by pid
/// when dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Masters killed by a failover, kept until the cluster is dropped.
    dead: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Result<Self, ServerError> {
        Self::start_with_replicas(masters, 0)
    }

    /// `masters` masters with `replicas` replicas each (`redis-cli` pairs
    /// them up).
    pub fn start_with_replicas(masters: usize, replicas: usize) -> Result<Self, ServerError> {
        let total = masters * (1 + replicas);
        let mut nodes: Vec<RedisServer> = Vec::with_capacity(total);
        while nodes.len() < total {
            nodes.push(Self::spawn_node(&nodes)?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ServerError::NotInstalled(e),
                _ => ServerError::Io(e),
            })?;
        if !out.status.success() {
            return Err(ServerError::Start(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = Self {
            nodes,
            dead: Vec::new(),
        };
        cluster.wait_ok()?;
        if replicas > 0 {
            for node in &cluster.nodes {
                if ask(node.port(), "INFO replication").is_some_and(|r| r.contains("role:master")) {
                    replicas_acking(node.port(), replicas)?;
                }
            }
        }
        Ok(cluster)
    }

    /// A cluster-enabled server, not yet in any cluster. The bus port is
    /// chosen too: port + 10000 may be taken or out of range. Never one a
    /// node of this cluster already has.
    fn spawn_node(nodes: &[RedisServer]) -> Result<RedisServer, ServerError> {
        let mut attempts = 0;
        loop {
            let mut bus = free_port()?;
            while nodes
                .iter()
                .any(|n| n.port() == bus || n.extra.contains(&bus.to_string()))
            {
                bus = free_port()?;
            }
            let bus = bus.to_string();
            match RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--repl-diskless-sync-delay",
                "0",
                "--cluster-port",
                &bus,
            ]) {
                Ok(n) => return Ok(n),
                // The bus port was taken meanwhile: another one.
                Err(ServerError::Start(log)) if attempts < 5 && log.contains("in use") => {
                    attempts += 1
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The ports of the master that serves `key` and of its replicas, from
    /// `CLUSTER NODES` as a live node sees it.
    pub fn shard_of(&self, key: &str) -> Option<(u16, Vec<u16>)> {
        let node = self.nodes.first()?;
        let slot: u16 = ask(node.port(), &format!("CLUSTER KEYSLOT {key}"))?
            .trim()
            .strip_prefix(':')?
            .parse()
            .ok()?;
        let table = ask(node.port(), "CLUSTER NODES")?;
        // <id> <ip:port@bus> <flags> <master id or -> <ping> <pong> <epoch> <link> <slots...>
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .filter(|f: &Vec<&str>| f.len() >= 8)
            .collect();
        let port = |f: &[&str]| -> Option<u16> { f[1].split(['@', ':']).nth(1)?.parse().ok() };
        let serves = |f: &[&str]| {
            f[8..].iter().any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            })
        };
        let master = rows
            .iter()
            .find(|f| f[2].contains("master") && !f[2].contains("fail") && serves(f))?;
        let replicas = rows
            .iter()
            .filter(|f| f[3] == master[0] && !f[2].contains("fail"))
            .filter_map(|f| port(f))
            .collect();
        Some((port(master)?, replicas))
    }

    /// The shard that serves `key` fails over: its master dies (SIGKILL)
    /// once its replica has everything, the replica takes over
    /// (`CLUSTER FAILOVER TAKEOVER`), and a fresh node joins as the new
    /// master's replica. The other shards are untouched.
    pub fn fail_over_shard(&mut self, key: &str) -> Result<(), ServerError> {
        let fail = |m: &str| ServerError::Start(m.to_owned());
        // Who replicates whom spreads by gossip after the cluster is made.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (master, replica) = loop {
            match self.shard_of(key) {
                Some((m, r)) if !r.is_empty() => break (m, r[0]),
                _ if Instant::now() > deadline => return Err(fail("the shard has no replica")),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let by_port = |p: u16| self.nodes.iter().position(|n| n.port() == p);
        let (mi, ri) = (
            by_port(master).ok_or_else(|| fail("master"))?,
            by_port(replica).ok_or_else(|| fail("replica"))?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.nodes[ri].repl_offset() != self.nodes[mi].repl_offset() {
            if Instant::now() > deadline {
                return Err(fail("the replica did not catch up"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut dead = self.nodes.remove(mi);
        dead.kill();
        self.dead.push(dead);
        match ask(replica, "CLUSTER FAILOVER TAKEOVER") {
            Some(r) if r.starts_with("+OK") => {}
            r => return Err(fail(&format!("CLUSTER FAILOVER TAKEOVER answered {r:?}"))),
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.shard_of(key).map(|(m, _)| m) != Some(replica) {
            if Instant::now() > deadline {
                return Err(fail("the replica did not take over"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ok()?;
        let fresh = Self::spawn_node(&self.nodes)?;
        let id = ask(replica, "CLUSTER MYID")
            .and_then(|r| r.lines().nth(1).map(str::to_owned))
            .ok_or_else(|| fail("CLUSTER MYID"))?;
        let out = Command::new("redis-cli")
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{}", fresh.port()))
            .arg(format!("127.0.0.1:{replica}"))
            .args(["--cluster-slave", "--cluster-master-id", &id])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(fail(&format!(
                "redis-cli --cluster add-node: {}",
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        self.nodes.push(fresh);
        replicas_acking(replica, 1)
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kills every node (SIGKILL, data lost).
    pub fn kill(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// Starts every node again, empty but with its cluster config (node id
    /// and slots), and waits until the cluster is up.
    pub fn restart_empty(&mut self) -> Result<(), ServerError> {
        for n in &mut self.nodes {
            n.restart_empty()?;
        }
        self.wait_ok()
    }

    /// A snapshot of every node ([`RedisServer::snapshot`]).
    pub fn snapshot(&self) -> Result<(), ServerError> {
        self.nodes.iter().try_for_each(RedisServer::snapshot)
    }

    /// Every node killed and started again from its snapshot.
    pub fn restart_from_snapshot(&mut self) -> Result<(), ServerError> {
        for n in &mut self.nodes {
            n.restart_from_snapshot()?;
        }
        self.wait_ok()
    }

    /// Every node agrees the cluster is up and knows every other node.
    fn wait_ok(&self) -> Result<(), ServerError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        // A dead master stays known (flagged `fail`).
        let want = format!("cluster_known_nodes:{}", self.nodes.len() + self.dead.len());
        while Instant::now() < deadline {
            let ok = self.nodes.iter().all(|n| {
                ask(n.port(), "CLUSTER INFO")
                    .is_some_and(|info| info.contains("cluster_state:ok") && info.contains(&want))
            });
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ServerError::Start("cluster not ok after 20s".into()))
    }
}

/// One inline command, its reply as text (enough for `CLUSTER INFO`).
fn ask(port: u16, command: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits until `n` replicas of the server on `port` are online and have
/// acknowledged its stream: `WAIT` counts a replica only from its first
/// acknowledgement (sent once a second), and only of an offset above zero,
/// so the server pings its replicas each second meanwhile.
pub fn replicas_acking(port: u16, n: usize) -> Result<(), ServerError> {
    let _ = ask(port, "CONFIG SET repl-ping-replica-period 1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = ask(port, "INFO replication").unwrap_or_default();
        let acking = info
            .lines()
            .filter(|l| {
                l.starts_with("slave") && l.contains("state=online") && !l.contains("offset=0,")
            })
            .count();
        if acking >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ServerError::Start(format!(
                "{acking} of {n} replicas acknowledging after 30s"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port the OS just handed out; free again once the listener is dropped.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
