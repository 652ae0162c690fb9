//! Stopping on SIGINT or SIGTERM.

use anyhow::Context;

/// SIGINT and SIGTERM, caught from startup on, so that a signal always leads to a graceful stop
/// (`up`, `demo`).
pub struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers.
    #[cfg(unix)]
    pub fn install() -> anyhow::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Shutdown {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// Installs the handlers.
    #[cfg(not(unix))]
    pub fn install() -> anyhow::Result<Shutdown> {
        Ok(Shutdown {})
    }

    /// Waits for a signal and names it.
    #[cfg(unix)]
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// Waits for a signal and names it.
    #[cfg(not(unix))]
    pub async fn wait(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}
