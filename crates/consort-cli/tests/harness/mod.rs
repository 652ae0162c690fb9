//! Test harness: real `consort up` processes, and a tiny HTTP client for their API.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "harness secret: 0123456789abcdef0123456789abcdef";

/// A free UDP port on loopback (also free for TCP in practice).
pub fn free_port() -> u16 {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
    if tcp.is_ok() {
        port
    } else {
        free_port()
    }
}

/// Writes `secret` to a file in `dir` and returns its path.
pub fn secret_file(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join("secret.txt");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// A `consort up` process; killed when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub group_addr: SocketAddr,
    pub api: SocketAddr,
    pub args: Vec<String>,
    pub id: String,
}

impl Daemon {
    /// Starts `consort up` on fresh loopback ports and waits until its API answers.
    pub fn start(data_dir: &Path, extra: &[String]) -> Daemon {
        let group_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Daemon::start_at(data_dir, group_addr, api, extra)
    }

    /// Starts `consort up` on the given ports and waits until its API answers.
    pub fn start_at(
        data_dir: &Path,
        group_addr: SocketAddr,
        api: SocketAddr,
        extra: &[String],
    ) -> Daemon {
        let mut args = vec![
            "up".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--bind".into(),
            group_addr.to_string(),
            "--api".into(),
            api.to_string(),
            "--no-mdns".into(),
        ];
        args.extend(extra.iter().cloned());
        let mut d = Daemon {
            child: None,
            data_dir: data_dir.to_path_buf(),
            group_addr,
            api,
            args,
            id: String::new(),
        };
        d.spawn();
        d
    }

    /// (Re)starts the process with the same arguments and waits for its API.
    pub fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_consort"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn consort up");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(status) = self.try_get("/v1/status") {
                self.id = status["node"]["id"].as_str().unwrap().to_string();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "consort up did not start: {:?}",
                self.args
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn sigterm(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("consort did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn try_get(&self, path: &str) -> std::io::Result<Value> {
        http_get(self.api, path)
    }

    pub fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.api))
    }

    /// The state this node shows for `id`, if listed.
    pub fn state_of(&self, id: &str) -> Option<String> {
        let peers = self.try_get("/v1/peers").ok()?;
        peers
            .as_array()?
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["state"].as_str().unwrap_or("").to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// GET over HTTP/1.1 on a fresh connection; parses the JSON body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| std::io::Error::other("no HTTP body"))?;
    serde_json::from_str(body).map_err(std::io::Error::other)
}

/// Polls `check` every 10 ms until it holds; returns the time it took, or None past `limit`.
pub fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Median of a list of durations, in seconds.
pub fn median_secs(samples: &[Duration]) -> f64 {
    let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// A group of `n` daemons on loopback, each seeded with all the others.
pub fn cluster(root: &Path, n: usize, group: &str) -> Vec<Daemon> {
    let secret = secret_file(root, SECRET);
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    (0..n)
        .map(|i| {
            let mut extra = vec![
                "--group".to_string(),
                group.to_string(),
                "--secret-file".into(),
                secret.display().to_string(),
                "--name".into(),
                format!("n{i}"),
            ];
            for (j, (port, _)) in ports.iter().enumerate() {
                if j != i {
                    extra.push("--seed".into());
                    extra.push(format!("127.0.0.1:{port}"));
                }
            }
            let group_addr: SocketAddr = ([127, 0, 0, 1], ports[i].0).into();
            let api: SocketAddr = ([127, 0, 0, 1], ports[i].1).into();
            Daemon::start_at(&root.join(format!("node{i}")), group_addr, api, &extra)
        })
        .collect()
}
