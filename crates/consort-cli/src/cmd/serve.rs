//! `consort serve SERVICE --exec "CMD"`: this node provides SERVICE; each call runs CMD once with
//! the request on its stdin, and its stdout is the reply.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};
use tungstenite::Message;

use crate::client::{ClientArgs, Daemon};
use crate::exit::usage;

/// Provide SERVICE from this node: for each request, run CMD (with `sh -c`) once, the request's
/// JSON on its stdin; its stdout is the reply (JSON, or else sent as a string); a non-zero exit
/// answers with an error carrying its stderr. Runs until interrupted or the daemon stops.
#[derive(Debug, Args)]
pub struct Serve {
    #[command(flatten)]
    client: ClientArgs,
    /// The service name
    service: String,
    /// The command to run for each request
    #[arg(long, value_name = "CMD")]
    exec: String,
}

impl Serve {
    /// Attaches to the daemon as the service's handler and answers requests one at a time.
    pub fn run(self) -> anyhow::Result<()> {
        if !consort_proto::messaging::valid_service_name(&self.service) {
            return Err(usage(format!(
                "service name {:?} is not valid: 1 to 64 bytes of letters, digits and -_.:/",
                self.service
            )));
        }
        let daemon = Daemon::locate(&self.client)?;
        let mut socket = daemon.websocket()?;
        let serve = json!({ "op": "serve", "service": self.service });
        socket.send(Message::text(serve.to_string()))?;
        let gone = || anyhow!("the daemon at {} ended the session", daemon.base());
        loop {
            let text = match socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) | Err(_) => return Err(gone()),
                Ok(_) => continue,
            };
            let frame: Value = serde_json::from_str(text.as_str())?;
            match frame["type"].as_str() {
                Some("serving") => eprintln!("serving {} with: {}", self.service, self.exec),
                Some("error") => {
                    return Err(anyhow!("{}", frame["error"].as_str().unwrap_or("refused")))
                }
                Some("request") => {
                    let answer = run(&self.exec, &frame["body"]);
                    let mut out = json!({ "op": "respond", "id": frame["id"] });
                    match answer {
                        Ok(body) => out["body"] = body,
                        Err(e) => out["error"] = json!(e),
                    }
                    socket
                        .send(Message::text(out.to_string()))
                        .map_err(|_| gone())?;
                }
                _ => {}
            }
        }
    }
}

/// Runs `cmd` once with `body` on its stdin.
fn run(cmd: &str, body: &Value) -> Result<Value, String> {
    let spawned = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the command");
    let mut child = spawned.map_err(|e| format!("{e:#}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine: ignore a broken pipe.
        let _ = writeln!(stdin, "{body}");
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{} ({})", stderr.trim(), output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = stdout.trim();
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
}
