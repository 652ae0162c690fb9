//! Helpers for the end-to-end tests: run the real `consort` binary (one-shot commands, or
//! `consort up` daemons on loopback that are killed however a test ends), ask them over their
//! own client commands or a bare HTTP client, and poll and time what they do.

// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod lan;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a node started by [`Daemon::spawn`] may take to answer its first status request.
pub const STARTUP: Duration = Duration::from_secs(5);

/// The same for a node on fixed ports ([`Daemon::start_at`], [`Daemon::respawn`]).
pub const STARTUP_AT: Duration = Duration::from_secs(10);

/// How often [`poll`] asks again.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// A group secret for tests that do not care which.
pub const SECRET: &str = "harness secret: 0123456789abcdef0123456789abcdef";

/// Variables besides `CONSORT_*` that would change what the binary does.
const OTHER_ENV: [&str; 2] = ["XDG_DATA_HOME", "RUST_LOG"];

/// The binary, with a clean environment.
pub fn consort() -> Command {
    consort_via(&[])
}

/// The binary run through `wrapper` (e.g. `ip netns exec NS`), with a clean environment.
pub fn consort_via(wrapper: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_consort");
    let mut command = match wrapper {
        [] => Command::new(binary),
        [program, args @ ..] => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
    };
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("CONSORT_") {
            command.env_remove(var);
        }
    }
    for var in OTHER_ENV {
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

/// Writes `secret` into the file `name` in `dir`.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("secret file written");
    path
}

/// Asks `probe` every 10 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`poll`]s `check` until it holds; returns the time it took, or `None` past `limit`.
pub fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    poll(limit, || check().then(|| start.elapsed()))
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

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `n` distinct loopback ports, each free for both UDP and TCP when chosen.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("UDP port");
        let port = udp.local_addr().expect("bound").port();
        if let Ok(tcp) = std::net::TcpListener::bind(loopback(port)) {
            held.push((port, udp, tcp));
        }
    }
    held.into_iter().map(|(port, ..)| port).collect()
}

/// What a test needs to say to start a node.
pub struct UpArgs<'a> {
    /// Group name.
    pub group: &'a str,
    /// Secret file, or none to let the node create its own.
    pub secret_file: Option<&'a Path>,
    /// Group ports to join through.
    pub seeds: Vec<SocketAddr>,
    /// Anything else (`--name ...`, `--api ...`, `--api-token ...`).
    pub extra: Vec<String>,
}

impl UpArgs<'_> {
    /// `consort up` on `data_dir` without mDNS, bound to `bind`, its API on `api` unless
    /// `extra` names one.
    fn command_line(&self, data_dir: &Path, bind: SocketAddr, api: SocketAddr) -> Vec<OsString> {
        let mut line: Vec<OsString> = ["up", "--no-mdns", "--group", self.group, "--data-dir"]
            .map(OsString::from)
            .to_vec();
        line.push(data_dir.into());
        line.extend(["--bind".into(), bind.to_string().into()]);
        if let Some(file) = self.secret_file {
            line.extend(["--secret-file".into(), file.into()]);
        }
        for seed in &self.seeds {
            line.extend(["--seed".into(), seed.to_string().into()]);
        }
        if !self.extra.iter().any(|a| a == "--api") {
            line.extend(["--api".into(), api.to_string().into()]);
        }
        line.extend(self.extra.iter().map(OsString::from));
        line
    }
}

/// A `consort up` process, killed when dropped (so a failing test leaves no process behind).
/// It keeps its arguments, so it can be stopped and started again as the same node.
pub struct Daemon {
    child: Option<Child>,
    args: Vec<OsString>,
    startup: Duration,
    id: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Holds the files its output goes to (and the data dir, for [`Daemon::spawn`]).
    tmp: TempDir,
}

impl Daemon {
    /// Starts `consort up` on loopback ports the OS picks, with a fresh data dir; does not
    /// wait for it.
    pub fn spawn(args: UpArgs<'_>) -> Daemon {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let args = args.command_line(&data_dir, loopback(0), loopback(0));
        Daemon::launch(args, data_dir, tmp, STARTUP)
    }

    /// Starts a node as [`Daemon::spawn`] does and waits until its API answers.
    pub fn start(args: UpArgs<'_>) -> Daemon {
        let mut daemon = Daemon::spawn(args);
        daemon.wait_ready();
        daemon
    }

    /// Starts `consort up` on `data_dir` and the given loopback ports; waits until its API
    /// answers.
    pub fn start_at(
        data_dir: &Path,
        group_addr: SocketAddr,
        api: SocketAddr,
        args: UpArgs<'_>,
    ) -> Daemon {
        let args = args.command_line(data_dir, group_addr, api);
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut daemon = Daemon::launch(args, data_dir.to_path_buf(), tmp, STARTUP_AT);
        daemon.wait_ready();
        daemon
    }

    fn launch(args: Vec<OsString>, data_dir: PathBuf, tmp: TempDir, startup: Duration) -> Daemon {
        let mut daemon = Daemon {
            child: None,
            args,
            startup,
            id: String::new(),
            data_dir,
            tmp,
        };
        daemon.spawn_child();
        daemon
    }

    /// Runs the process with its arguments, its output appended to its files.
    fn spawn_child(&mut self) {
        let log = |name| -> File {
            let path = self.tmp.path().join(name);
            let file = OpenOptions::new().create(true).append(true).open(path);
            file.expect("output file")
        };
        let child = consort()
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"))
            .spawn()
            .expect("consort up starts");
        self.child = Some(child);
    }

    /// Starts the process again with the same arguments (after [`Daemon::kill9`] or
    /// [`Daemon::wait_exit`]) and waits until its API answers.
    pub fn respawn(&mut self) {
        self.spawn_child();
        self.wait_ready();
    }

    /// Polls `GET /v1/status` until the node answers; panics with its stderr otherwise.
    pub fn wait_ready(&mut self) -> Value {
        self.wait_ready_with(None)
    }

    /// [`Daemon::wait_ready`] for an API that wants `token`.
    pub fn wait_ready_with(&mut self, token: Option<&str>) -> Value {
        let status = poll(self.startup, || {
            let child = self.child.as_mut().expect("process started");
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("consort up exited with {exit}: {}", self.stderr());
            }
            http_get_json(self.port("api")?, "/v1/status", token).ok()
        });
        let status = status.unwrap_or_else(|| {
            let (args, startup) = (&self.args, self.startup);
            panic!(
                "consort up {args:?} did not answer within {startup:?}: {}",
                self.stderr()
            )
        });
        self.id = status["node"]["id"].as_str().expect("node id").to_string();
        status
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop (SIGTERM).
    pub fn sigterm(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit; returns its exit code. Panics past `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let Some(exit) = poll(limit, || child.try_wait().expect("process polled")) else {
            let _ = child.kill();
            panic!("consort did not exit within {limit:?}");
        };
        exit.code()
    }

    /// The node's id, as its API gave it when it last became ready.
    pub fn id(&self) -> String {
        assert!(!self.id.is_empty(), "the node was not waited for");
        self.id.clone()
    }

    /// `consort status --json`, or `None` if it failed.
    pub fn status(&self) -> Option<Value> {
        self.status_with(&[])
    }

    /// `consort status --json` with extra client flags (`--api-token T`).
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

    /// Runs the client command `consort ARGS --data-dir DIR` against this node to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        consort()
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("consort runs")
    }

    /// `GET path` on the node's API, parsed; panics if it fails.
    pub fn get(&self, path: &str) -> Value {
        let api = self.api_addr();
        http_get_json(api, path, None).unwrap_or_else(|e| panic!("GET {path} on {api}: {e}"))
    }

    /// The state this node's API shows for `id`, if listed.
    pub fn state_of(&self, id: &str) -> Option<String> {
        let peers = http_get_json(self.api_addr(), "/v1/peers", None).ok()?;
        peers
            .as_array()?
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["state"].as_str().unwrap_or("").to_string())
    }

    /// A port the node recorded in its `ports.json` (`group` or `api`), on loopback.
    fn port(&self, name: &str) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(self.data_dir.join("ports.json")).ok()?;
        let ports: Value = serde_json::from_str(&text).ok()?;
        Some(loopback(ports[name].as_u64()? as u16))
    }

    /// `GET /v1/leader`: the leader's id (`None` when there is none) and the term; `None` if
    /// the node does not answer.
    pub fn leader(&self) -> Option<(Option<String>, u64)> {
        let answer = http_get_json(self.port("api")?, "/v1/leader", None).ok()?;
        let leader = answer["leader"]["id"].as_str().map(str::to_string);
        Some((leader, answer["term"].as_u64()?))
    }

    /// Where peers reach the node's group port.
    pub fn group_addr(&self) -> SocketAddr {
        self.port("group").expect("ports.json names the group port")
    }

    /// Where the node's HTTP API listens, as reachable from this host.
    pub fn api_addr(&self) -> SocketAddr {
        self.port("api").expect("ports.json names the API port")
    }

    /// Everything the node printed on stdout so far (over all its runs).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("stdout")).unwrap_or_default()
    }

    /// Everything the node printed on stderr so far (over all its runs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `n` nodes of `group` on fixed loopback ports, data dirs `root/node{i}`, names `n{i}`, one
/// secret ([`SECRET`]), each seeded with all the others; all answering.
pub fn cluster(root: &Path, n: usize, group: &str) -> Vec<Daemon> {
    cluster_with(root, n, group, |_| Vec::new())
}

/// [`cluster`], node `i` also given the flags `extra(i)` (`--own garage`).
pub fn cluster_with(
    root: &Path,
    n: usize,
    group: &str,
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<Daemon> {
    let secret = secret_file(root, "secret.txt", SECRET);
    let ports = free_ports(2 * n);
    let groups: Vec<SocketAddr> = ports[..n].iter().map(|&p| loopback(p)).collect();
    (0..n)
        .map(|i| {
            let seeds = groups.iter().filter(|&&g| g != groups[i]).copied();
            let args = UpArgs {
                group,
                secret_file: Some(&secret),
                seeds: seeds.collect(),
                extra: ["--name".into(), format!("n{i}")]
                    .into_iter()
                    .chain(extra(i))
                    .collect(),
            };
            let data_dir = root.join(format!("node{i}"));
            Daemon::start_at(&data_dir, groups[i], loopback(ports[n + i]), args)
        })
        .collect()
}

/// The leader and term every one of `nodes` reports ([`Daemon::leader`]), if they all name the
/// same leader at the same term.
pub fn agreed_leader(nodes: &[&Daemon]) -> Option<(String, u64)> {
    let mut views = nodes.iter().map(|n| n.leader());
    let (leader, term) = views.next()??;
    let leader = leader?;
    views
        .all(|v| {
            v.as_ref()
                .is_some_and(|(l, t)| l.as_ref() == Some(&leader) && *t == term)
        })
        .then_some((leader, term))
}

/// A bare HTTP/1.1 GET on a fresh connection, with an optional bearer token: the status code
/// and the body.
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> io::Result<(u16, String)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    http_request(addr, "GET", path, auth.as_deref(), None)
}

/// A bare HTTP/1.1 request on a fresh connection: `method` on `path` (sent as is, so it may
/// hold any percent-encoding), an optional extra header line, an optional body of any bytes.
/// Returns the status code and the body (which must not be chunked).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    header: Option<&str>,
    body: Option<&[u8]>,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let header = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    let length = body
        .map(|b| format!("Content-Length: {}\r\n", b.len()))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{header}{length}Connection: close\r\n\r\n"
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    match (code, body) {
        (Some(code), Some(body)) => Ok((code, body)),
        _ => Err(io::Error::other(format!("not an HTTP response: {text:?}"))),
    }
}

/// `PUT path` with `body`: the status code and the body.
pub fn http_put(addr: SocketAddr, path: &str, body: &[u8]) -> io::Result<(u16, String)> {
    http_request(addr, "PUT", path, None, Some(body))
}

/// `DELETE path`: the status code and the body.
pub fn http_delete(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    http_request(addr, "DELETE", path, None, None)
}

/// `POST path` with `body`: the status code and the body.
pub fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> io::Result<(u16, String)> {
    http_request(addr, "POST", path, None, Some(body))
}

/// [`http_get`] for a `200 OK` JSON body, parsed.
pub fn http_get_json(addr: SocketAddr, path: &str, token: Option<&str>) -> io::Result<Value> {
    match http_get(addr, path, token)? {
        (200, body) => serde_json::from_str(&body).map_err(io::Error::other),
        (code, body) => Err(io::Error::other(format!("HTTP {code}: {body}"))),
    }
}

/// One HTTP/1.1 connection kept open across requests, for tests that send many (a fresh
/// connection per request costs more than the request). Answers must carry a
/// `Content-Length` (every JSON answer of the API does).
pub struct HttpConn {
    addr: SocketAddr,
    reader: io::BufReader<TcpStream>,
}

impl HttpConn {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            addr,
            reader: io::BufReader::new(stream),
        })
    }

    /// `method path` with an optional body on this connection: the status code and the body.
    /// After an error the connection is unusable.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> io::Result<(u16, String)> {
        use std::io::BufRead;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.reader.get_mut().write_all(&request)?;

        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before an answer",
            ));
        }
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP status line: {line:?}")))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the headers",
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or_else(|| io::Error::other("answer without Content-Length"))?;
        let mut answer = vec![0; length];
        self.reader.read_exact(&mut answer)?;
        Ok((code, String::from_utf8_lossy(&answer).into_owned()))
    }
}

/// A small seeded pseudo-random generator (SplitMix64), so that a run can be replayed.
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..high` (`high > low`).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low)
    }
}

/// The seed of a randomized test: `CONSORT_TEST_SEED` if set, else one from the clock. It is
/// printed, with how to run the test again with it.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("CONSORT_TEST_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CONSORT_TEST_SEED={text:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    println!("{test}: seed {seed} (replay with CONSORT_TEST_SEED={seed})");
    seed
}
