//! A real MongoDB-wire-protocol server for the tests: `nx-27017` (MongoDB's
//! wire protocol over SQLite, from PyPI) on a free loopback port with its
//! database file in a temporary directory. No MongoDB server package
//! installs on the project's machines; `scripts/ensure-mongo` installs this
//! one. Stopped by pid when dropped; `stop`/`start_again` keep the data, as
//! a MongoDB restart would.

use crate::redis_server::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum MongoServerError {
    #[error("nx-27017 is not installed (scripts/ensure-mongo installs it): {0}")]
    NotInstalled(std::io::Error),
    #[error("nx-27017 did not start: {0}")]
    Start(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub struct MongoServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// `CHAT_NX_27017` when set, else `nx-27017` on the PATH, else where
/// `scripts/ensure-mongo` puts it.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHAT_NX_27017") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nx-27017"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_default();
        Path::new(&home).join(".cache/chat-nx-27017/bin/nx-27017")
    })
}

impl MongoServer {
    pub fn start() -> Result<Self, MongoServerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new().prefix("chat-mongo-").tempdir()?;
            let mut s = Self {
                child: None,
                port: free_port()?,
                dir,
            };
            match s.start_again() {
                Ok(()) => return Ok(s),
                // A free port is only free until someone binds it.
                Err(MongoServerError::Start(log)) if attempt < 5 && log.contains("in use") => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL); its data file stays for `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server on its port with the data it had.
    pub fn start_again(&mut self) -> Result<(), MongoServerError> {
        self.stop();
        let log = self.dir.path().join("nx.log");
        let deadline = Instant::now() + Duration::from_secs(20);
        let child = Command::new(binary())
            .arg("--db")
            .arg(self.dir.path().join("archive.db"))
            .args(["--host", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("--log-file")
            .arg(&log)
            .arg("--pid-file")
            .arg(self.dir.path().join("nx.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                self.dir.path().join("stderr.log"),
            )?))
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => MongoServerError::NotInstalled(e),
                _ => MongoServerError::Io(e),
            })?;
        self.child = Some(child);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let err =
                    std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(MongoServerError::Start(format!(
                    "exited with {status}: {err} {log}"
                )));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(MongoServerError::Start("not listening after 20s".into()))
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
