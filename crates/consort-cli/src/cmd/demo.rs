//! `consort demo`: a whole group on one machine, to look at. Three nodes run on loopback, each
//! with its own HTTP API and dashboard; simulated home devices change state, and the leader plays
//! a playlist to everyone. Ctrl-C (or SIGTERM) makes every node leave, then exits 0.
//!
//! The nodes run in this one process through the library (`Node` and the daemon's own API
//! server) rather than as three `consort up` children: there is one process to stop and nothing
//! to find on disk, a crash leaves no orphan behind, and the devices and the `scene` service are
//! plain tasks on their nodes. Each node still has its own data dir, group port and API, and
//! they talk only through the group protocol, as separate machines would.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use consort::{Node, NodeConfig, NodeId, Ports, Service};
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::cmd::shutdown::Shutdown;

/// The demo's group name.
const GROUP: &str = "demo";
/// API ports tried first, one per node; a busy one is swapped for a free one.
const API_PORTS: [u16; 3] = [7471, 7472, 7473];
/// How often the porch light's motion sensor fires.
const PORCH_EVERY: Duration = Duration::from_secs(5);
/// How often the thermostat measures.
const CLIMATE_EVERY: Duration = Duration::from_secs(2);
/// How long each track of the playlist lasts.
const TRACK_EVERY: Duration = Duration::from_secs(4);
/// How often node-a's view of the leader is checked, to print changes.
const LEADER_POLL: Duration = Duration::from_millis(250);
/// How long the API servers may take to finish open requests once the nodes left.
const API_DRAIN: Duration = Duration::from_secs(2);

/// Three local nodes, simulated home devices and their dashboards, until Ctrl-C.
#[derive(Debug, Args)]
pub struct Demo {}

impl Demo {
    /// Runs the demo until a signal stops it.
    pub fn run(self) -> anyhow::Result<()> {
        init_logs();
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime.block_on(run_demo())
    }
}

/// Warnings and errors only, unless `RUST_LOG` says otherwise: the terminal shows the URLs.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// What one node of the demo is for.
struct Role {
    name: &'static str,
    owns: &'static [&'static str],
    summary: &'static str,
}

const ROLES: [Role; 3] = [
    Role {
        name: "node-a",
        owns: &["lights"],
        summary: "owns lights/ (kitchen, living room, porch)",
    },
    Role {
        name: "node-b",
        owns: &["climate"],
        summary: "owns climate/ (thermostat, outdoor sensor)",
    },
    Role {
        name: "node-c",
        owns: &[],
        summary: "serves \"scene\" (evening, morning, movie, off)",
    },
];

/// A running node of the demo and its API server.
struct DemoNode {
    name: &'static str,
    node: Arc<Node>,
    api: SocketAddr,
    stop_api: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

async fn run_demo() -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let scratch = Scratch::create()?;
    let secret = consort::data_dir::generate_secret();
    let mut nodes: Vec<DemoNode> = Vec::new();
    for (role, port) in ROLES.iter().zip(API_PORTS) {
        let seed = nodes.first().map(|first| first.node.local_addr());
        nodes.push(start_node(role, scratch.path(), &secret, seed, port).await?);
    }
    announce(&nodes, scratch.path());
    let tasks = start_devices(&nodes).await?;
    let failed = tokio::select! {
        signal = shutdown.wait() => {
            tracing::info!("{signal}: stopping the demo");
            false
        }
        _ = any_server_stopped(&mut nodes) => true,
    };
    stop(nodes, tasks).await;
    if failed {
        anyhow::bail!("an API server of the demo stopped");
    }
    say("consort demo: every node left the group; stopped");
    drop(scratch);
    Ok(())
}

/// Starts one node on loopback and its API, on `port` or a free port if that is busy.
async fn start_node(
    role: &Role,
    root: &Path,
    secret: &str,
    seed: Option<SocketAddr>,
    port: u16,
) -> anyhow::Result<DemoNode> {
    let mut config = NodeConfig::new(root.join(role.name), GROUP, secret);
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.mdns = false;
    config.seeds = seed.into_iter().collect();
    config.name = Some(role.name.to_string());
    config.replica.owned = role.owns.iter().map(|p| p.to_string()).collect();
    let node = Node::start(config)
        .await
        .with_context(|| format!("cannot start {}", role.name))?;
    let node = Arc::new(node);
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen for an API on 127.0.0.1")?,
    };
    let api = listener.local_addr().context("API socket")?;
    // Client commands find the node with `--data-dir` too.
    node.data_dir()
        .write_ports(&Ports {
            group: node.local_addr().port(),
            api: Some(api.port()),
        })
        .context("cannot record the ports")?;
    let (stop_api, stopped) = oneshot::channel::<()>();
    let state = ApiState::new(node.clone(), GROUP.to_string(), None);
    let server = tokio::spawn(api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Ok(DemoNode {
        name: role.name,
        node,
        api,
        stop_api,
        server,
    })
}

/// Prints the dashboards, one line per node, and how to try the CLI against them.
fn announce(nodes: &[DemoNode], root: &Path) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "consort demo: three nodes of group {GROUP:?} on loopback (data in {})",
        root.display()
    );
    for (node, role) in nodes.iter().zip(&ROLES) {
        let _ = writeln!(
            out,
            "  {:<7} {:<47} dashboard: http://{}/",
            node.name, role.summary, node.api
        );
    }
    let first = nodes[0].api;
    // The binary as it was run (`cargo run` leaves it in target/), so the line can be pasted.
    let me = std::env::current_exe().map_or_else(|_| "consort".into(), |p| p.display().to_string());
    let _ = writeln!(
        out,
        "try: {me} call scene '{{\"scene\":\"evening\"}}' --api http://{first}\n\
         open a dashboard in a browser; Ctrl-C stops the demo"
    );
    let _ = out.flush();
}

/// Prints a line on stdout; a closed stdout (`consort demo | head`) is not an error.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Starts the devices, the service, the playlist and the leader announcements.
async fn start_devices(nodes: &[DemoNode]) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let [a, b, c] = nodes else {
        unreachable!("the demo runs three nodes")
    };
    let scene = c
        .node
        .serve("scene")
        .await
        .context("cannot serve \"scene\"")?;
    let mut tasks = vec![
        tokio::spawn(lights(a.node.clone())),
        tokio::spawn(climate(b.node.clone())),
        tokio::spawn(scenes(c.node.clone(), scene)),
        tokio::spawn(print_leaders(a.node.clone(), names(nodes))),
    ];
    for node in nodes {
        tasks.push(tokio::spawn(disc_jockey(node.node.clone(), node.name)));
    }
    Ok(tasks)
}

fn names(nodes: &[DemoNode]) -> Vec<(NodeId, &'static str)> {
    nodes.iter().map(|n| (n.node.id(), n.name)).collect()
}

/// Resolves when one API server ends on its own.
async fn any_server_stopped(nodes: &mut [DemoNode]) {
    let [a, b, c] = nodes else {
        unreachable!("the demo runs three nodes")
    };
    tokio::select! {
        _ = &mut a.server => {}
        _ = &mut b.server => {}
        _ = &mut c.server => {}
    }
}

/// Stops the devices, makes every node leave, then stops the API servers.
async fn stop(nodes: Vec<DemoNode>, tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        task.abort();
    }
    let [a, b, c] = &nodes[..] else {
        unreachable!("the demo runs three nodes")
    };
    tokio::join!(a.node.leave(), b.node.leave(), c.node.leave());
    for node in nodes {
        let _ = node.stop_api.send(());
        if !node.server.is_finished() {
            let _ = tokio::time::timeout(API_DRAIN, node.server).await;
        }
    }
}

/// Writes `value` at `key`; a failure is logged, and the device tries again on its next turn.
async fn write(node: &Node, key: &str, value: &Json) {
    if let Err(e) = node.set(key, &value.to_string()).await {
        tracing::warn!("demo: cannot write {key}: {e}");
    }
}

/// The JSON value at `key`, if any.
async fn read(node: &Node, key: &str) -> Option<Json> {
    let entry = node.get(key).await.ok()??;
    entry.value.map(|v| v.to_json())
}

/// node-a's lights. The porch light follows a simulated motion sensor, which also pulses.
async fn lights(node: Arc<Node>) {
    let initial = [
        ("lights/kitchen/on", json!(false)),
        ("lights/kitchen/brightness", json!(80)),
        ("lights/living-room/on", json!(true)),
        ("lights/living-room/brightness", json!(40)),
        ("lights/porch/on", json!(false)),
    ];
    for (key, value) in &initial {
        write(&node, key, value).await;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PORCH_EVERY, PORCH_EVERY);
    loop {
        tick.tick().await;
        let on = read(&node, "lights/porch/on").await == Some(json!(true));
        if !on {
            let motion = json!({ "detected": true, "sensor": "porch" });
            let _ = node.pulse("lights/porch/motion", &motion.to_string()).await;
        }
        write(&node, "lights/porch/on", &json!(!on)).await;
    }
}

/// node-b's thermostat: the room warms while heating, cools otherwise, with some hysteresis;
/// the outdoor temperature drifts slowly. The target is whatever was last written there.
async fn climate(node: Arc<Node>) {
    let mut room = Thermostat {
        target: 21.0,
        current: 18.5,
        heating: true,
    };
    write(&node, "climate/thermostat/target", &json!(room.target)).await;
    write(&node, "climate/thermostat/mode", &json!("heat")).await;
    write(&node, "climate/thermostat/heating", &json!(room.heating)).await;
    let mut tick = tokio::time::interval(CLIMATE_EVERY);
    loop {
        tick.tick().await;
        if let Some(target) = read(&node, "climate/thermostat/target")
            .await
            .and_then(|t| t.as_f64())
        {
            room.target = target;
        }
        let outdoor = outdoor_temperature(unix_secs());
        let was_heating = room.heating;
        room.step(outdoor);
        write(
            &node,
            "climate/thermostat/current",
            &json!(tenths(room.current)),
        )
        .await;
        write(
            &node,
            "climate/outdoor/temperature",
            &json!(tenths(outdoor)),
        )
        .await;
        if room.heating != was_heating {
            write(&node, "climate/thermostat/heating", &json!(room.heating)).await;
        }
    }
}

/// A room with a heater.
struct Thermostat {
    target: f64,
    current: f64,
    heating: bool,
}

impl Thermostat {
    /// One measurement later: warmer while heating, drifting toward the outside otherwise.
    fn step(&mut self, outdoor: f64) {
        if self.heating {
            self.current += 0.3;
        } else {
            self.current -= 0.02 * (self.current - outdoor);
        }
        if self.current >= self.target + 0.3 {
            self.heating = false;
        } else if self.current <= self.target - 0.3 {
            self.heating = true;
        }
    }
}

/// A slow swing between 4 and 10 degrees over ten minutes.
fn outdoor_temperature(unix_secs: f64) -> f64 {
    7.0 + 3.0 * (unix_secs * std::f64::consts::TAU / 600.0).sin()
}

fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// node-c's `scene` service: sets several lights and the thermostat at once. The lights are
/// node-a's and the thermostat node-b's, so node-c's writes are forwarded to their owners.
async fn scenes(node: Arc<Node>, mut service: Service) {
    while let Some(request) = service.next().await {
        let node = node.clone();
        tokio::spawn(async move {
            let result = apply_scene(&node, request.body()).await;
            request.respond(result.map(|reply| reply.to_string().into_bytes()));
        });
    }
}

/// Applies the scene a request names (`{"scene": "evening"}` or `"evening"`).
async fn apply_scene(node: &Node, body: &[u8]) -> Result<Json, String> {
    let request: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    let name = request
        .get("scene")
        .unwrap_or(&request)
        .as_str()
        .unwrap_or_default()
        .to_string();
    let settings = scene(&name).ok_or_else(|| {
        format!("unknown scene {name:?}: send {{\"scene\": \"evening\"}} (or morning, movie, off)")
    })?;
    for (key, value) in &settings {
        node.set(key, &value.to_string())
            .await
            .map_err(|e| format!("cannot set {key}: {e}"))?;
    }
    let set: serde_json::Map<String, Json> = settings
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Ok(json!({ "scene": name, "set": set }))
}

/// The keys and values of a scene.
fn scene(name: &str) -> Option<Vec<(&'static str, Json)>> {
    let lights = |kitchen: Option<u32>, living: Option<u32>| {
        let mut keys = vec![
            ("lights/kitchen/on", json!(kitchen.is_some())),
            ("lights/living-room/on", json!(living.is_some())),
        ];
        keys.extend(kitchen.map(|b| ("lights/kitchen/brightness", json!(b))));
        keys.extend(living.map(|b| ("lights/living-room/brightness", json!(b))));
        keys
    };
    let (mut keys, target) = match name {
        "evening" => (lights(Some(60), Some(35)), 21.5),
        "morning" => (lights(Some(100), None), 20.5),
        "movie" => (lights(None, Some(10)), 21.0),
        "off" => (lights(None, None), 17.0),
        _ => return None,
    };
    keys.push(("climate/thermostat/target", json!(target)));
    Some(keys)
}

/// Pieces the leader plays, each for [`TRACK_EVERY`].
const PLAYLIST: [(&str, &str); 8] = [
    ("Clair de lune", "Claude Debussy"),
    ("Gymnopédie No. 1", "Erik Satie"),
    ("Spring (The Four Seasons)", "Antonio Vivaldi"),
    ("Cello Suite No. 1: Prélude", "J. S. Bach"),
    ("Nocturne Op. 9 No. 2", "Frédéric Chopin"),
    ("The Entertainer", "Scott Joplin"),
    ("Moonlight Sonata", "Ludwig van Beethoven"),
    ("Boléro", "Maurice Ravel"),
];

/// Runs on every node; only the leader plays. It broadcasts each track to the group and keeps
/// the position in `playlist/now_playing`, so that a new leader goes on with the next track.
async fn disc_jockey(node: Arc<Node>, name: &'static str) {
    let mut tick = tokio::time::interval(TRACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(status) = node.status().await else {
            return;
        };
        if status.leader != Some(node.id()) {
            continue;
        }
        let last = read(&node, "playlist/now_playing")
            .await
            .and_then(|now| now["track"].as_u64());
        let track = last.map_or(0, |t| (t as usize + 1) % PLAYLIST.len());
        let (title, artist) = PLAYLIST[track];
        let now = json!({
            "track": track, "title": title, "artist": artist, "dj": name, "term": status.term,
        });
        write(&node, "playlist/now_playing", &now).await;
        let announcement = json!({ "now_playing": title, "artist": artist, "dj": name });
        if let Err(e) = node.broadcast(announcement.to_string()).await {
            tracing::debug!("demo: no broadcast from {name}: {e}");
        }
    }
}

/// Prints a line each time the leadership changes, as node-a sees it.
async fn print_leaders(node: Arc<Node>, names: Vec<(NodeId, &'static str)>) {
    let mut shown = None;
    let mut tick = tokio::time::interval(LEADER_POLL);
    loop {
        tick.tick().await;
        let Some(status) = node.status().await else {
            return;
        };
        let (Some(leader), term) = (status.leader, status.term) else {
            continue;
        };
        if shown == Some((leader, term)) {
            continue;
        }
        shown = Some((leader, term));
        let name = names
            .iter()
            .find(|(id, _)| *id == leader)
            .map_or("another node", |(_, name)| name);
        say(&format!("consort demo: {name} leads (term {term})"));
    }
}

/// The demo's data dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// A new, empty directory under the system's temporary directory.
    fn create() -> anyhow::Result<Scratch> {
        let base = std::env::temp_dir();
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for attempt in 0..100u128 {
            let path = base.join(format!(
                "consort-demo-{}-{:x}",
                std::process::id(),
                stamp + attempt
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Scratch(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        anyhow::bail!("cannot create a directory in {}", base.display())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thermostat_heats_to_the_target_then_holds_it() {
        let mut room = Thermostat {
            target: 21.0,
            current: 18.5,
            heating: true,
        };
        let mut steps = 0;
        while room.heating {
            room.step(7.0);
            steps += 1;
            assert!(steps <= 10, "still heating at {}", room.current);
        }
        assert!(room.current >= 21.3, "{}", room.current);
        let mut switched_on = 0;
        for _ in 0..200 {
            let was = room.heating;
            room.step(7.0);
            switched_on += usize::from(room.heating && !was);
            assert!(
                room.current > 20.3 && room.current < 21.7,
                "{}",
                room.current
            );
        }
        assert!(switched_on > 10, "the heater cycles");
    }

    #[test]
    fn scenes_set_lights_and_the_target() {
        let evening = scene("evening").unwrap();
        assert!(evening.contains(&("lights/kitchen/on", json!(true))));
        assert!(evening.contains(&("climate/thermostat/target", json!(21.5))));
        let off = scene("off").unwrap();
        assert!(off.contains(&("lights/living-room/on", json!(false))));
        assert!(!off.iter().any(|(k, _)| k.ends_with("brightness")));
        assert!(scene("disco").is_none());
    }
}
