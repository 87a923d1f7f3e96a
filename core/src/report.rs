//! An error as a process's last line says it: every cause once, on one
//! line. A wrapper that prints its source (`redis: {0}`) and then that
//! source again, as anyhow's `{:#}` and `Caused by:` do, would say
//! "Connection refused (os error 111)" three times.

use std::error::Error;
use std::process::ExitCode;

/// The causes of `err`, outermost first, joined by ": ", each left out when
/// the text before it already says it.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// `main`'s end: success, or `error: <chain>` on stderr and exit 1.
pub fn exit<E: AsRef<dyn Error + Send + Sync + 'static>>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("redis: {0}")]
        Redis(#[from] std::io::Error),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("starting ingress")]
    struct Context(#[source] Outer);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = Context(Outer::Redis(io));
        assert_eq!(chain(&err), "starting ingress: redis: Connection refused");
    }
}
