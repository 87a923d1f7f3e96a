//! Running `chatctl` as a child process with exactly the stack's settings.

use e2e::Stack;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

pub struct Cli {
    env: Vec<(String, String)>,
    /// The working directory: no stray ./streams.toml is picked up.
    pub dir: tempfile::TempDir,
}

impl Cli {
    /// No settings but these.
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        Cli {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The stack's environment, and a streams.toml with its shard count.
    pub fn for_stack(stack: &Stack) -> Self {
        let mut cli = Cli::with_env(&[]);
        cli.env = stack
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let streams = cli.dir.path().join("streams.toml");
        std::fs::write(
            &streams,
            format!("[fanout]\nshards = {}\n", stack.streams.fanout.shards),
        )
        .expect("write streams.toml");
        cli.env.push((
            "CHAT_STREAMS".into(),
            streams.to_str().expect("path").to_owned(),
        ));
        cli
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_owned(), v.to_owned()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chatctl"));
        c.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path());
        c
    }

    /// Runs to completion (off the async threads).
    pub async fn run(&self, args: &[&str]) -> Out {
        let mut c = self.command(args);
        let out = tokio::task::spawn_blocking(move || c.output().expect("run chatctl"))
            .await
            .expect("join");
        Out(out)
    }

    /// Starts a long-running command with its output piped.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut c = tokio::process::Command::from(self.command(args));
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().expect("spawn chatctl");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        Running {
            child,
            stdout,
            stderr,
        }
    }
}

/// A finished run.
pub struct Out(pub Output);

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.0.status.code()
    }

    /// Exit 0, or the output in the failure message.
    pub fn ok(&self) -> &Self {
        assert!(
            self.0.status.success(),
            "chatctl failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// A clean failure: non-zero, a message, no panic.
    pub fn refused(&self) -> &Self {
        assert!(
            !self.0.status.success(),
            "expected a failure, got:\n{}",
            self.stdout()
        );
        assert!(!self.stderr().contains("panicked"), "{}", self.stderr());
        self
    }
}

/// A command still running.
pub struct Running {
    pub child: Child,
    pub stdout: Lines<BufReader<ChildStdout>>,
    pub stderr: Lines<BufReader<ChildStderr>>,
}

impl Running {
    pub async fn stdout_line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
            .await
            .expect("a line on stdout within 10 s")
            .expect("read stdout")
            .expect("stdout still open")
    }

    /// Reads stderr until a line contains `needle`.
    pub async fn stderr_until(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.stderr.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} on stderr within 10 s"))
                .expect("read stderr")
                .unwrap_or_else(|| panic!("stderr closed before {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Sends a signal (by the child's own pid) and waits for the exit.
    pub async fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} {pid}");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits within 10 s of the signal")
            .expect("wait")
    }
}
