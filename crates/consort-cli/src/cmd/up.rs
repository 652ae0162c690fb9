//! `consort up`: run a node and its HTTP API until SIGINT or SIGTERM, then leave the group.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use consort::{DataDir, Identity, Node, NodeConfig, Ports};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::{self, ApiState};
use crate::cmd::shutdown::Shutdown;
use crate::config::{Listen, Secrets, Settings};
use crate::logging::{self, LogFormat};

/// How long the API may take to finish open requests after the node left.
const API_DRAIN: Duration = Duration::from_secs(2);

/// Run a node: join the group, serve the HTTP API, leave gracefully on SIGINT or SIGTERM.
#[derive(Debug, Args)]
pub struct Up {
    /// TOML file with the same settings as these flags (flags win)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the node keeps its identity [default: $CONSORT_DATA_DIR, $XDG_DATA_HOME/consort or
    /// ~/.local/share/consort]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Group name [default: default]
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// File holding the group secret (first line), then other accepted secrets (one per line)
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Group port (UDP); port 0 picks a free one [default: 0.0.0.0:7470, a free port if busy]
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Option<String>,
    /// HTTP API address; beyond loopback it needs --api-token [default: 127.0.0.1:7471]
    #[arg(long, value_name = "IP:PORT")]
    pub api: Option<String>,
    /// A node to join through (repeatable)
    #[arg(long, value_name = "HOST:PORT")]
    pub seed: Vec<String>,
    /// Do not advertise or discover nodes over mDNS
    #[arg(long)]
    pub no_mdns: bool,
    /// Human-readable node name [default: <hostname>-<id prefix>]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Election priority; higher leads [default: 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// How the leader is chosen: ranked (highest priority, a returning better node takes over)
    /// or sticky (the leader stays while alive) [default: ranked]
    #[arg(long, value_name = "MODE")]
    pub election: Option<consort_proto::election::Mode>,
    /// No leader unless at least N members (this node included) are live
    #[arg(long, value_name = "N")]
    pub quorum: Option<u32>,
    /// A key prefix this node owns: only it applies writes under it, others forward them
    /// (repeatable)
    #[arg(long = "own", value_name = "PREFIX")]
    pub own: Vec<String>,
    /// A service this node provides (repeatable); requests are answered by the clients that
    /// attach with `consort serve` or the WebSocket API
    #[arg(long = "service", value_name = "NAME")]
    pub service: Vec<String>,
    /// Largest value accepted, in bytes of compact JSON [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub max_value: Option<usize>,
    /// How long deletes are remembered, so that they win over older writes [default: 86400]
    #[arg(long, value_name = "SECS")]
    pub tombstone_ttl: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` on every API request
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// Log format [default: human]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl Up {
    /// Resolves the settings, then runs the node until a signal stops it.
    pub fn run(self) -> anyhow::Result<()> {
        let env_secret = std::env::var("CONSORT_SECRET").ok();
        let settings = Settings::resolve(&self, env_secret)?;
        logging::init(settings.log_format);
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime.block_on(run_node(settings))
    }
}

/// Starts the node and the API, waits for a signal, and leaves the group.
async fn run_node(settings: Settings) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let (secrets, created) = group_secrets(&settings)?;
    let listener = bind_api(settings.api).await?;
    let api_addr = listener.local_addr().context("API socket")?;
    let node = Node::start(node_config(&settings, secrets))
        .await
        .context("cannot start the node")?;
    let node = Arc::new(node);
    let me = node
        .status()
        .await
        .map(|s| s.identity)
        .context("the node stopped while starting")?;
    node.data_dir()
        .write_ports(&Ports {
            group: node.local_addr().port(),
            api: Some(api_addr.port()),
        })
        .context("cannot record the ports")?;
    announce(&settings, &me, api_addr);
    if created {
        print_join_hint(node.data_dir(), &settings.group, me.addr);
    }
    let state = ApiState::new(node.clone(), settings.group.clone(), settings.api_token);
    for service in &settings.services {
        state
            .advertise(service)
            .await
            .map_err(|e| anyhow::anyhow!("cannot advertise service {service:?}: {e}"))?;
    }
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(api::serve(listener, state, async {
        let _ = api_stopped.await;
    }));
    tokio::select! {
        signal = shutdown.wait() => tracing::info!("{signal}: leaving the group"),
        served = &mut server => {
            node.leave().await;
            return Err(match served {
                Ok(Err(e)) => anyhow::Error::new(e).context("the API server failed"),
                _ => anyhow::anyhow!("the API server stopped"),
            });
        }
    }
    node.leave().await;
    let _ = stop_api.send(());
    let _ = tokio::time::timeout(API_DRAIN, server).await;
    Ok(())
}

/// The secrets to start with, and whether the primary was just created in the data dir.
fn group_secrets(settings: &Settings) -> anyhow::Result<(Vec<String>, bool)> {
    match &settings.secrets {
        Secrets::Given(secrets) => Ok((secrets.clone(), false)),
        Secrets::DataDir(accepted) => {
            // Opened only for the secret: the lock is released before the node opens it again.
            let dir = DataDir::open(&settings.data_dir)?;
            let (secret, created) = dir.secret_or_create()?;
            let mut secrets = vec![secret];
            secrets.extend(accepted.iter().cloned());
            Ok((secrets, created))
        }
    }
}

/// The library's configuration for these settings.
fn node_config(settings: &Settings, secrets: Vec<String>) -> NodeConfig {
    let mut config = NodeConfig::new(&settings.data_dir, &settings.group, "");
    config.secrets = secrets;
    config.bind = settings.bind.addr;
    config.any_port_if_busy = settings.bind.is_default;
    config.seeds = settings.seeds.clone();
    config.mdns = settings.mdns;
    config.name = settings.name.clone();
    config.priority = settings.priority;
    config.election.mode = settings.election;
    config.election.quorum = settings.quorum.map(|q| q as usize);
    config.replica.owned = settings.own.clone();
    config.replica.max_value = settings.max_value;
    config.replica.tombstone_ttl = settings.tombstone_ttl;
    config
}

/// Binds the API; a busy default port is swapped for a free one, a busy chosen port is an error.
async fn bind_api(api: Listen) -> anyhow::Result<TcpListener> {
    let bound = match TcpListener::bind(api.addr).await {
        Err(e) if api.is_default && e.kind() == std::io::ErrorKind::AddrInUse => {
            TcpListener::bind(SocketAddr::new(api.addr.ip(), 0)).await
        }
        other => other,
    };
    bound.with_context(|| format!("cannot listen for the API on {}", api.addr))
}

/// Tells where the node runs: a plain line for people, a structured event for JSON logs.
fn announce(settings: &Settings, me: &Identity, api: SocketAddr) {
    let line = format!(
        "consort: node {} ({}) in group {}, group port {}, API http://{api}",
        me.id, me.name, settings.group, me.addr
    );
    match settings.log_format {
        LogFormat::Human => eprintln!("{line}"),
        LogFormat::Json => tracing::info!(
            node = %me.id, name = %me.name, group = %settings.group, addr = %me.addr,
            api = %api, "{line}"
        ),
    }
}

/// Prints, on stdout, how another device joins with the secret just created.
fn print_join_hint(dir: &DataDir, group: &str, addr: SocketAddr) {
    let secret = dir.path().join("secret");
    let secret = std::fs::canonicalize(&secret).unwrap_or(secret);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "consort: created a new group secret in {}\n\
         consort: to add another device, copy that file to it and run there:\n  \
         consort up --group {group} --secret-file <path-to-the-copy> --seed {addr}",
        secret.display()
    );
    let _ = out.flush();
}
