//! Exit codes and error lines: 0 ok, 1 not found or refused, 2 usage error.
//!
//! Errors travel as `anyhow::Error`; an error that is the user's to fix is marked by wrapping it
//! in [`Usage`] (or by being one of the library's input errors), and [`code`] reads the mark.

use std::fmt;

use consort::StartError;

use crate::client::Refused;
use crate::config::ConfigError;

/// Exit code for "not found or refused".
pub const FAILURE: u8 = 1;
/// Exit code for a usage error.
pub const USAGE: u8 = 2;

/// A usage error: the command line, config file or secret is wrong, not the world.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Marks `message` as a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// The exit code `err` deserves.
pub fn code(err: &anyhow::Error) -> u8 {
    let is_usage = err.chain().any(|e| {
        e.is::<Usage>()
            || e.is::<ConfigError>()
            || e.downcast_ref::<Refused>().is_some_and(Refused::is_usage)
            || matches!(
                e.downcast_ref::<StartError>(),
                Some(StartError::Secret(_) | StartError::Group(_))
            )
    });
    if is_usage {
        USAGE
    } else {
        FAILURE
    }
}

/// The error and its causes on one line, as `a: b: c`; a cause that its parent's message
/// already quotes is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_marks_survive_context() {
        let err = usage("bad flag").context("starting");
        assert_eq!(code(&err), USAGE);
        assert_eq!(code(&anyhow::anyhow!("refused")), FAILURE);
    }

    #[test]
    fn one_line_joins_causes_and_lines() {
        let err = anyhow::anyhow!("line one\nline two").context("outer");
        assert_eq!(one_line(&err), "outer: line one line two");
        let io = std::io::Error::other("disk full");
        let err = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "f".into(),
            source: io,
        });
        assert_eq!(one_line(&err), "cannot read f: disk full");
    }
}
