//! Helpers for the end-to-end tests: run the real `consort` binary on loopback with temp data
//! dirs, poll it through its own client commands, and kill what was spawned however a test ends.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a daemon may take to answer its first status request.
pub const STARTUP: Duration = Duration::from_secs(5);

/// Environment variables that would change what the binary does; removed for every run.
const CONSORT_ENV: [&str; 6] = [
    "CONSORT_SECRET",
    "CONSORT_API",
    "CONSORT_API_TOKEN",
    "CONSORT_DATA_DIR",
    "XDG_DATA_HOME",
    "RUST_LOG",
];

/// The binary, with a clean environment.
pub fn consort() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_consort"));
    for var in CONSORT_ENV {
        command.env_remove(var);
    }
    command
}

/// Runs `consort ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    consort().args(args).output().expect("consort runs")
}

/// Stdout of a finished run, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr of a finished run, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that a run failed with `code` and said why on exactly one line containing `needle`.
pub fn assert_fails(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("consort: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

/// A group name no other test uses, so stray mDNS or seeds never mix tests.
pub fn unique_group(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{n}", std::process::id())
}

/// Writes `secret` into a new file in `dir`.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("secret file written");
    path
}

/// Polls `probe` until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `consort up`, killed when dropped (so a failing test leaves no process behind).
pub struct Daemon {
    child: Child,
    /// Its data dir (and, beside it, the files its output goes to).
    pub data_dir: PathBuf,
    out_path: PathBuf,
    err_path: PathBuf,
    _tmp: TempDir,
}

/// What a test needs to say to start a node.
pub struct UpArgs<'a> {
    /// Group name.
    pub group: &'a str,
    /// Secret file, or none to let the node create its own.
    pub secret_file: Option<&'a Path>,
    /// Group ports to join through.
    pub seeds: Vec<SocketAddr>,
    /// Anything else (`--api ...`, `--api-token ...`).
    pub extra: Vec<String>,
}

impl Daemon {
    /// Starts `consort up` on loopback with a fresh data dir; does not wait for it.
    pub fn spawn(args: UpArgs<'_>) -> Daemon {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let (out_path, err_path) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
        let mut command = consort();
        command.args([
            "up",
            "--no-mdns",
            "--bind",
            "127.0.0.1:0",
            "--group",
            args.group,
        ]);
        command.arg("--data-dir").arg(&data_dir);
        if let Some(file) = args.secret_file {
            command.arg("--secret-file").arg(file);
        }
        for seed in &args.seeds {
            command.args(["--seed", &seed.to_string()]);
        }
        if !args.extra.iter().any(|a| a == "--api") {
            command.args(["--api", "127.0.0.1:0"]);
        }
        command.args(&args.extra);
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("consort up starts");
        Daemon {
            child,
            data_dir,
            out_path,
            err_path,
            _tmp: tmp,
        }
    }

    /// Starts a node and waits until its API answers; returns it with its status.
    pub fn start(args: UpArgs<'_>) -> (Daemon, Value) {
        let mut daemon = Daemon::spawn(args);
        let status = daemon.wait_ready();
        (daemon, status)
    }

    /// Polls `consort status --json` until the node answers; panics with its stderr otherwise.
    pub fn wait_ready(&mut self) -> Value {
        self.wait_ready_with(&[])
    }

    /// [`Daemon::wait_ready`] with extra client flags (`--api-token T`).
    pub fn wait_ready_with(&mut self, extra: &[&str]) -> Value {
        let status = poll(STARTUP, || {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("consort up exited with {exit}: {}", self.stderr());
            }
            self.status_with(extra)
        });
        status.unwrap_or_else(|| panic!("consort up never answered: {}", self.stderr()))
    }

    /// `consort status --json`, or `None` if it failed.
    pub fn status(&self) -> Option<Value> {
        self.status_with(&[])
    }

    /// `consort status --json` with extra client flags.
    pub fn status_with(&self, extra: &[&str]) -> Option<Value> {
        self.client_json("status", extra)
    }

    /// `consort peers --json`, or `None` if it failed.
    pub fn peers(&self) -> Option<Vec<Value>> {
        match self.client_json("peers", &[])? {
            Value::Array(peers) => Some(peers),
            other => panic!("peers is not a list: {other}"),
        }
    }

    /// Runs a client command against this node's data dir and parses its JSON.
    fn client_json(&self, command: &str, extra: &[&str]) -> Option<Value> {
        let output = consort()
            .args([command, "--json", "--data-dir"])
            .arg(&self.data_dir)
            .args(extra)
            .output()
            .expect("consort runs");
        if !output.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&output.stdout).expect("--json prints JSON"))
    }

    /// The node's id, from its status.
    pub fn id(&self) -> String {
        let status = self.status().expect("node answers");
        status["node"]["id"].as_str().expect("id").to_string()
    }

    /// The ports the node recorded.
    pub fn ports(&self) -> Value {
        let text = std::fs::read_to_string(self.data_dir.join("ports.json")).expect("ports.json");
        serde_json::from_str(&text).expect("ports.json is JSON")
    }

    /// Where peers reach the node's group port.
    pub fn group_addr(&self) -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            self.ports()["group"].as_u64().expect("group") as u16,
        ))
    }

    /// Where the node's HTTP API listens, as reachable from this host.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            self.ports()["api"].as_u64().expect("api") as u16,
        ))
    }

    /// Everything the node printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// Everything the node printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("API reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout set");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
