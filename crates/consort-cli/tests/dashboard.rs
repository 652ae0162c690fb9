//! `consort demo` and the web dashboard, end to end: the demo's three nodes, devices, service
//! and playlist over HTTP; then the dashboard in headless Chromium, driven over the DevTools
//! protocol (`dashboard/cdp.rs`): three peers and a leader on node A's page, a light toggled
//! there by a mouse click, the change arriving on node B's page, and a screenshot written to
//! `target/dashboard-screenshot.png`.
//!
//! Without Chromium the browser test says it is skipped, unless `CONSORT_REQUIRE_CHROMIUM=1`
//! (set by `.ci/run`) makes that a failure.

#[path = "dashboard/cdp.rs"]
mod cdp;
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{consort, http_get, http_get_json, http_post, poll, Daemon, UpArgs};

/// How long the demo may take to print its dashboards.
const DEMO_START: Duration = Duration::from_secs(20);
/// How long the demo's nodes may take to find each other and agree on a leader.
const CONVERGE: Duration = Duration::from_secs(15);

/// A running `consort demo`: stopped with SIGINT by the tests, killed if a test fails first.
struct Demo {
    child: Child,
    /// Every line it printed on stdout so far.
    stdout: Arc<Mutex<Vec<String>>>,
    /// Its stderr, once it exited.
    stderr: mpsc::Receiver<String>,
    /// The dashboards' addresses, node A, B, C.
    apis: Vec<SocketAddr>,
    /// The data dir it announced.
    data_dir: PathBuf,
}

impl Demo {
    /// Starts `consort demo` and waits for its three dashboard lines.
    fn start() -> Demo {
        let mut child = consort()
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("consort demo starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let seen = stdout.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line.clone());
                let _ = lines_tx.send(line);
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = err_tx.send(text);
        });
        let mut demo = Demo {
            child,
            stdout,
            stderr,
            apis: Vec::new(),
            data_dir: PathBuf::new(),
        };
        while demo.apis.len() < 3 {
            let Ok(line) = lines.recv_timeout(DEMO_START) else {
                panic!("consort demo printed {:?}", demo.printed());
            };
            if let Some(dir) = line.split("(data in ").nth(1) {
                demo.data_dir = PathBuf::from(dir.trim_end_matches(')'));
            }
            if let Some(url) = line.split("dashboard: ").nth(1) {
                demo.apis.push(dashboard_addr(url));
            }
        }
        demo
    }

    /// Node A's, B's or C's dashboard URL.
    fn url(&self, node: usize) -> String {
        format!("http://{}/", self.apis[node])
    }

    fn printed(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends SIGINT and waits for the exit; returns the exit code and stderr.
    fn interrupt(&mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = poll(Duration::from_secs(15), || {
            self.child.try_wait().expect("demo polled")
        });
        let exit = exit.unwrap_or_else(|| panic!("consort demo did not stop on SIGINT"));
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        (exit.code(), stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if self.data_dir.starts_with(std::env::temp_dir()) {
                let _ = std::fs::remove_dir_all(&self.data_dir);
            }
        }
    }
}

/// `http://127.0.0.1:PORT/` as an address.
fn dashboard_addr(url: &str) -> SocketAddr {
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not a dashboard URL: {url:?}"));
    let addr: SocketAddr = addr.parse().expect("an IP:PORT");
    assert!(addr.ip().is_loopback(), "{url}");
    addr
}

/// Live members each node shows, and the leader they agree on (id and name), once all three see
/// the same three live members and the same leader.
fn agreed_cluster(apis: &[SocketAddr]) -> Option<(String, String)> {
    let mut leaders = Vec::new();
    for api in apis {
        let peers = http_get_json(*api, "/v1/peers", None).ok()?;
        let peers = peers.as_array()?;
        let alive = peers.iter().filter(|p| p["state"] == "alive").count();
        let leader: Vec<&Value> = peers.iter().filter(|p| p["is_leader"] == true).collect();
        if alive != 3 || leader.len() != 1 {
            return None;
        }
        leaders.push((
            leader[0]["id"].as_str()?.to_string(),
            leader[0]["name"].as_str()?.to_string(),
        ));
    }
    leaders.dedup();
    (leaders.len() == 1).then(|| leaders.remove(0))
}

/// The value at `key` on the node at `api`, if any.
fn value_at(api: SocketAddr, key: &str) -> Option<Value> {
    let entry = http_get_json(api, &format!("/v1/kv/{key}"), None).ok()?;
    entry.get("value").cloned()
}

#[test]
fn demo_runs_three_nodes_with_devices_and_stops_on_sigint() {
    let mut demo = Demo::start();
    let mut ports: Vec<u16> = demo.apis.iter().map(SocketAddr::port).collect();
    ports.dedup();
    assert_eq!(ports.len(), 3, "three distinct dashboards: {:?}", demo.apis);
    assert!(demo.data_dir.is_dir(), "{:?}", demo.printed());

    let (leader, leader_name) = poll(CONVERGE, || agreed_cluster(&demo.apis))
        .unwrap_or_else(|| panic!("the demo's nodes did not converge: {:?}", demo.printed()));
    assert!(leader_name.starts_with("node-"), "{leader_name}");
    let (a, b, c) = (demo.apis[0], demo.apis[1], demo.apis[2]);

    // The dashboard is served by every node.
    for api in &demo.apis {
        let (code, page) = http_get(*api, "/", None).expect("the dashboard answers");
        assert_eq!(code, 200);
        assert!(page.contains("<title>Consort</title>"), "{page}");
        let (code, script) = http_get(*api, "/dashboard/app.js", None).expect("the script");
        assert_eq!(code, 200);
        assert!(script.contains("/v1/ws"));
    }

    // node-a's lights and node-b's thermostat reach node-c; node-c provides "scene".
    let light = poll(CONVERGE, || value_at(c, "lights/kitchen/on"));
    assert_eq!(light, Some(json!(false)));
    let target = poll(CONVERGE, || value_at(a, "climate/thermostat/target"));
    assert_eq!(target, Some(json!(21.0)));
    let status_c = http_get_json(c, "/v1/status", None).expect("status");
    let services = http_get_json(a, "/v1/services", None).expect("services");
    assert_eq!(services, json!({ "scene": [status_c["node"]["id"]] }));

    // A scene called through node-a is applied by node-c, its writes forwarded to the owners.
    let call = json!({ "body": { "scene": "movie" }, "timeout_ms": 5000 });
    let (code, reply) = http_post(a, "/v1/services/scene/call", call.to_string().as_bytes())
        .expect("the call answers");
    assert_eq!(code, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).expect("JSON reply");
    assert_eq!(reply["body"]["scene"], "movie", "{reply}");
    assert_eq!(reply["from"], status_c["node"]["id"]);
    let movie = poll(CONVERGE, || {
        let dim = value_at(b, "lights/living-room/brightness")? == json!(10);
        let dark = value_at(b, "lights/kitchen/on")? == json!(false);
        (dim && dark).then_some(())
    });
    assert!(movie.is_some(), "the movie scene did not reach node-b");

    // The leader plays the playlist.
    let playing = poll(CONVERGE, || value_at(b, "playlist/now_playing"));
    let playing = playing.expect("a track is playing");
    assert!(playing["title"].is_string(), "{playing}");
    let announced = poll(Duration::from_secs(5), || {
        let lines = demo.printed();
        let line = format!("consort demo: {leader_name} leads (term");
        lines.iter().any(|l| l.starts_with(&line)).then_some(())
    });
    assert!(
        announced.is_some(),
        "{:?} (leader {leader})",
        demo.printed()
    );

    let (code, stderr) = demo.interrupt();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        demo.printed().last().unwrap().contains("stopped"),
        "{:?}",
        demo.printed()
    );
    assert!(
        !demo.data_dir.exists(),
        "{} is left",
        demo.data_dir.display()
    );
}

#[test]
fn the_api_token_may_come_in_the_query_and_the_dashboard_needs_none() {
    let token = "query-token-0123";
    let mut node = Daemon::spawn(UpArgs {
        group: &common::unique_group("dash-token"),
        secret_file: None,
        seeds: vec![],
        extra: ["--api-token", token].map(String::from).to_vec(),
    });
    node.wait_ready_with(Some(token));
    let api = node.api_addr();
    let get = |path: &str| http_get(api, path, None).expect("API answers");
    assert_eq!(get(&format!("/v1/status?token={token}")).0, 200);
    assert_eq!(get("/v1/status?token=wrong").0, 401);
    assert_eq!(get("/v1/status").0, 401);
    // The page and its files hold no data: served without the token.
    let (code, page) = get("/");
    assert_eq!(code, 200);
    assert!(page.contains("token"), "the page asks for the token");
    assert_eq!(get("/dashboard/app.css").0, 200);
    assert_eq!(get("/dashboard/nothing.js").0, 401);
}

/// The browser to use, or `None` (the test is skipped) when there is none and none is required.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = cdp::find_chromium();
    if found.is_none() {
        if std::env::var_os("CONSORT_REQUIRE_CHROMIUM").is_some_and(|v| v == "1") {
            panic!("CONSORT_REQUIRE_CHROMIUM=1 but no chromium on the PATH (or CONSORT_CHROMIUM)");
        }
        eprintln!("skipped: no chromium on the PATH (install Debian's `chromium`)");
    }
    found
}

/// Where the screenshot goes: `target/dashboard-screenshot.png`.
fn screenshot_path() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .expect("the target dir")
        .join("dashboard-screenshot.png")
}

/// What the page shows of the peers: live rows, the leaders' names, the header's leader.
const PEERS_SHOWN: &str = "(() => {
    const rows = [...document.querySelectorAll('#peers tbody tr[data-peer]')];
    return {
        live: document.querySelector('#conn').dataset.state === 'live',
        alive: rows.filter(r => r.dataset.state === 'alive').length,
        leaders: rows.filter(r => r.dataset.leader === 'true').map(r => r.dataset.name),
        header: document.querySelector('#leader-name').textContent,
    };
})()";

/// Waits until the page shows three live peers, one of them leader and named in the header,
/// and the nodes' APIs agree on that leader; returns its name.
fn wait_three_peers_and_a_leader(
    browser: &mut cdp::Browser,
    page: &cdp::Page,
    apis: &[SocketAddr],
) -> String {
    let check = format!(
        "(() => {{ const s = {PEERS_SHOWN}; \
         return s.live && s.alive === 3 && s.leaders.length === 1 && s.header === s.leaders[0] \
         ? s.leaders[0] : null; }})()"
    );
    let deadline = Instant::now() + CONVERGE;
    loop {
        let shown = browser.eval(page, &check).unwrap_or_else(|e| panic!("{e}"));
        // Asked after the page, so a leadership that moved in between is caught next round.
        let agreed = agreed_cluster(apis).map(|(_, name)| name);
        if let (Some(shown), Some(agreed)) = (shown.as_str(), agreed) {
            if shown == agreed {
                return agreed;
            }
        }
        if Instant::now() > deadline {
            let shown = browser.eval(page, PEERS_SHOWN);
            let agreed = agreed_cluster(apis);
            panic!("the page shows {shown:?}; the APIs agree on {agreed:?}")
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value the page shows for `key` (its JSON text), or null while the key is not shown.
fn shown_value(key: &str) -> String {
    format!(
        "(() => {{ const leaf = document.querySelector('.leaf[data-key={}]'); \
         return leaf ? leaf.dataset.value : null; }})()",
        json!(key)
    )
}

#[test]
fn the_dashboard_shows_the_group_and_carries_a_toggle_to_another_node() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let token = "browser-token-0123";
    let mut guarded = Daemon::spawn(UpArgs {
        group: &common::unique_group("dash-browser"),
        secret_file: None,
        seeds: vec![],
        extra: ["--api-token", token].map(String::from).to_vec(),
    });
    let mut demo = Demo::start();
    let mut browser = cdp::Browser::launch(&chromium).unwrap_or_else(|e| panic!("{e}"));
    let fail = |browser: &cdp::Browser, e: String| -> ! {
        panic!("{e}\nchromium said: {}", browser.log())
    };

    // Node A's page: three peers and a leader, as the API says.
    let page_a = browser
        .open(&demo.url(0))
        .unwrap_or_else(|e| fail(&browser, e));
    wait_three_peers_and_a_leader(&mut browser, &page_a, &demo.apis);

    // Node B's page, and the kitchen light as both pages show it.
    let page_b = browser
        .open(&demo.url(1))
        .unwrap_or_else(|e| fail(&browser, e));
    wait_three_peers_and_a_leader(&mut browser, &page_b, &demo.apis);
    let key = "lights/kitchen/on";
    let before = browser
        .wait_for(&page_a, &shown_value(key), CONVERGE)
        .unwrap_or_else(|e| fail(&browser, e));
    let on_b = browser
        .wait_for(&page_b, &shown_value(key), CONVERGE)
        .unwrap_or_else(|e| fail(&browser, e));
    assert_eq!(before, on_b);
    let after = match before.as_str() {
        Some("false") => "true",
        Some("true") => "false",
        other => panic!("{key} shows {other:?}, not a boolean"),
    };

    // A click on node A's switch; the new value arrives on node B's page and in its log.
    let switch = format!(".leaf[data-key=\"{key}\"] .switch input");
    browser
        .click(&page_a, &switch)
        .unwrap_or_else(|e| fail(&browser, e));
    let arrived = format!("{} === {}", shown_value(key), json!(after));
    browser
        .wait_for(&page_b, &arrived, CONVERGE)
        .unwrap_or_else(|e| fail(&browser, e));
    browser
        .wait_for(&page_a, &arrived, CONVERGE)
        .unwrap_or_else(|e| fail(&browser, e));
    let logged = format!(
        "document.querySelector('#log li[data-type=\"change\"][data-key=\"{key}\"]') !== null"
    );
    browser
        .wait_for(&page_b, &logged, CONVERGE)
        .unwrap_or_else(|e| fail(&browser, e));
    assert_eq!(
        value_at(demo.apis[2], key).map(|v| v.to_string()),
        Some(after.to_string()),
        "node C's API agrees"
    );

    // The leader's playlist shows in the log as broadcasts.
    let broadcast = "document.querySelector('#log li[data-type=\"broadcast\"]') !== null";
    browser
        .wait_for(&page_b, broadcast, CONVERGE)
        .unwrap_or_else(|e| fail(&browser, e));

    for page in [&page_a, &page_b] {
        let errors = browser.errors(page).unwrap_or_else(|e| fail(&browser, e));
        assert!(errors.is_empty(), "the page failed: {errors:?}");
    }

    let path = screenshot_path();
    browser
        .screenshot(&page_b, &path)
        .unwrap_or_else(|e| fail(&browser, e));
    let png = std::fs::read(&path).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", path.display());

    // A node with an API token: the page takes it from `?token=`, drops it from the address
    // bar, and goes live.
    guarded.wait_ready_with(Some(token));
    let url = format!("http://{}/?token={token}", guarded.api_addr());
    let page = browser.open(&url).unwrap_or_else(|e| fail(&browser, e));
    let check = format!(
        "(() => {{ const s = {PEERS_SHOWN}; \
         return s.live && s.alive === 1 && !location.href.includes('token'); }})()"
    );
    browser
        .wait_for(&page, &check, CONVERGE)
        .unwrap_or_else(|e| fail(&browser, e));
    let errors = browser.errors(&page).unwrap_or_else(|e| fail(&browser, e));
    assert!(errors.is_empty(), "the page failed: {errors:?}");

    drop(browser);
    let (code, stderr) = demo.interrupt();
    assert_eq!(code, Some(0), "stderr: {stderr}");
}
