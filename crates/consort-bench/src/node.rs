//! Consort nodes as real processes on loopback: started with `consort up`, asked over their
//! HTTP API, paused, killed and restarted as the same node.

use std::ffi::OsString;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::http::Api;
use crate::wait;

/// The group secret every benchmark node shares.
pub const SECRET: &str = "consort-bench group secret 0123456789abcdef";

/// How long a node may take to answer its first status request.
const STARTUP: Duration = Duration::from_secs(10);

/// How long a cluster may take until every node sees every other alive.
const MEMBERSHIP: Duration = Duration::from_secs(20);

/// Variables besides `CONSORT_*` that would change what the binary does.
const OTHER_ENV: [&str; 2] = ["XDG_DATA_HOME", "RUST_LOG"];

/// A `consort up` process, killed when dropped. It keeps its arguments, so it can be killed and
/// started again as the same node (same data dir, same ports).
pub struct Node {
    binary: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    log: PathBuf,
    id: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its group port (UDP datagrams, TCP streams).
    pub group_addr: SocketAddr,
    /// Its HTTP API.
    pub api: Api,
}

/// What a node is started with besides its ports and data dir.
pub struct Launch<'a> {
    /// The `consort` binary.
    pub binary: &'a Path,
    /// The group name.
    pub group: &'a str,
    /// The file holding the group secret.
    pub secret_file: &'a Path,
    /// Group ports to join through.
    pub seeds: &'a [SocketAddr],
    /// Its name in the group.
    pub name: &'a str,
}

impl Node {
    /// Starts `consort up` on `data_dir` and the given loopback ports; does not wait for it.
    pub fn spawn(
        launch: &Launch<'_>,
        data_dir: PathBuf,
        group_addr: SocketAddr,
        api_addr: SocketAddr,
    ) -> anyhow::Result<Node> {
        let mut args: Vec<OsString> = ["up", "--no-mdns", "--group", launch.group, "--name"]
            .map(OsString::from)
            .to_vec();
        args.push(launch.name.into());
        args.extend(["--data-dir".into(), data_dir.clone().into_os_string()]);
        args.extend(["--secret-file".into(), launch.secret_file.into()]);
        args.extend(["--bind".into(), group_addr.to_string().into()]);
        args.extend(["--api".into(), api_addr.to_string().into()]);
        for seed in launch.seeds {
            args.extend(["--seed".into(), seed.to_string().into()]);
        }
        let log = data_dir.with_extension("log");
        let mut node = Node {
            binary: launch.binary.to_path_buf(),
            args,
            child: None,
            log,
            id: String::new(),
            data_dir,
            group_addr,
            api: Api::new(api_addr),
        };
        node.spawn_child()?;
        Ok(node)
    }

    /// Runs the process with its arguments, its output appended to its log.
    fn spawn_child(&mut self) -> anyhow::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(&self.binary);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("CONSORT_") {
                command.env_remove(var);
            }
        }
        for var in OTHER_ENV {
            command.env_remove(var);
        }
        let child = command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `/v1/status` until the node answers, and records its id.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let api = self.api.clone();
        let child = self.child.as_mut().context("the node is not running")?;
        let status = wait::until(STARTUP, || {
            if let Ok(Some(exit)) = child.try_wait() {
                return Some(Err(exit));
            }
            api.get_json("/v1/status").ok().map(Ok)
        });
        match status {
            Some(Ok(status)) => {
                self.id = status["node"]["id"].as_str().unwrap_or("").to_string();
                Ok(())
            }
            Some(Err(exit)) => bail!("consort up exited with {exit}: {}", self.log_tail()),
            None => bail!(
                "consort up did not answer within {STARTUP:?}: {}",
                self.log_tail()
            ),
        }
    }

    /// Its node id, as its API gave it when it became ready.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process in its tracks (SIGSTOP): to its peers, a node cut off.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    /// Asks the node to leave the group (SIGTERM) and waits until it exits.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.signal("TERM")?;
        if let Some(mut child) = self.child.take() {
            let exited = wait::until(Duration::from_secs(10), || child.try_wait().ok()?);
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        Ok(())
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the node is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{name} {pid} failed");
        }
        Ok(())
    }

    /// Starts the process again with the same arguments and waits until it answers.
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn_child()?;
        self.wait_ready()
    }

    /// The end of its log, to explain a failure.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A paused process must run again to die of anything but SIGKILL; SIGKILL is enough.
        self.kill9();
    }
}

/// Nodes of one group on loopback, each seeded with all the others.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    binary: PathBuf,
    group: String,
    secret_file: PathBuf,
    joined: usize,
    /// Data dirs, logs and the secret file.
    dir: TempDir,
}

impl Cluster {
    /// Starts `n` nodes and waits until each sees every other alive.
    pub fn start(binary: &Path, n: usize, tag: &str) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("consort-bench-{tag}-"))
            .tempdir()?;
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, format!("{SECRET}\n"))?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            binary: binary.to_path_buf(),
            group: format!("bench-{tag}-{}", std::process::id()),
            secret_file,
            joined: 0,
            dir,
        };
        let ports = free_ports(2 * n)?;
        let groups: Vec<SocketAddr> = ports[..n].iter().map(|&p| loopback(p)).collect();
        for i in 0..n {
            let seeds: Vec<SocketAddr> =
                groups.iter().copied().filter(|&g| g != groups[i]).collect();
            let node = cluster.spawn_node(&format!("n{i}"), &seeds, groups[i], ports[n + i])?;
            cluster.nodes.push(node);
        }
        for node in &mut cluster.nodes {
            node.wait_ready()?;
        }
        cluster.wait_all_alive()?;
        Ok(cluster)
    }

    fn spawn_node(
        &self,
        name: &str,
        seeds: &[SocketAddr],
        group_addr: SocketAddr,
        api_port: u16,
    ) -> anyhow::Result<Node> {
        let launch = Launch {
            binary: &self.binary,
            group: &self.group,
            secret_file: &self.secret_file,
            seeds,
            name,
        };
        let data_dir = self.dir.path().join(name);
        Node::spawn(&launch, data_dir, group_addr, loopback(api_port))
    }

    /// Starts a blank node seeded with the first node, without waiting for it; it is not added
    /// to [`Cluster::nodes`].
    pub fn spawn_blank(&mut self) -> anyhow::Result<Node> {
        self.joined += 1;
        let ports = free_ports(2)?;
        let seeds = [self.nodes[0].group_addr];
        let name = format!("blank{}", self.joined);
        self.spawn_node(&name, &seeds, loopback(ports[0]), ports[1])
    }

    /// Waits until every node lists every node of [`Cluster::nodes`] as alive.
    pub fn wait_all_alive(&self) -> anyhow::Result<()> {
        let ids: Vec<&str> = self.nodes.iter().map(Node::id).collect();
        let sees_all = |node: &Node| {
            let peers = node.api.peers().unwrap_or_default();
            ids.iter().all(|id| {
                peers
                    .iter()
                    .any(|p| p["id"] == *id && p["state"] == "alive")
            })
        };
        let all_alive = wait::until(MEMBERSHIP, || self.nodes.iter().all(sees_all).then_some(()));
        all_alive.with_context(|| {
            format!(
                "the {} nodes did not all see each other alive within {MEMBERSHIP:?}",
                ids.len()
            )
        })
    }

    /// Process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `n` distinct loopback ports, each free for both UDP and TCP when chosen.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::new();
    while held.len() < n {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if let Ok(tcp) = TcpListener::bind(loopback(port)) {
            held.push((port, udp, tcp));
        }
    }
    Ok(held.into_iter().map(|(port, ..)| port).collect())
}
