//! Settings of `consort up`: the TOML config file, flags over it, defaults under both.
//!
//! Every key of the file has a flag of the same meaning; a flag wins over the file. Relative
//! paths in the file are taken from the file's folder, so a config can sit beside its secret.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use consort::{Key, ReplicaConfig, DEFAULT_GROUP_PORT};
use consort_proto::election::Mode;
use consort_proto::replica::RESERVED_PREFIX;
use serde::Deserialize;

use crate::cmd::Up;
use crate::logging::LogFormat;

/// The default HTTP API port, on 127.0.0.1.
pub const DEFAULT_API_PORT: u16 = 7471;

/// The group joined when none is named.
pub const DEFAULT_GROUP: &str = "default";

/// The largest `max_value` allowed: a value must fit a stream frame with room to spare, and a
/// request body within the API's 2 MB limit.
pub const MAX_VALUE_LIMIT: usize = 1 << 20;

/// Why the settings of `consort up` cannot be used. All are the user's to fix (exit 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A quorum of 0 members means nothing.
    #[error("the quorum must be at least 1 member")]
    Quorum,
    /// A file named in the settings cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings (unknown key, wrong type).
    #[error("config {path}, line {line}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The line of the offending key or value (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An address setting is not `IP:PORT`.
    #[error("{key} {value:?} is not an IP:PORT address")]
    Addr {
        /// The setting (`bind`, `api`).
        key: &'static str,
        /// The value given.
        value: String,
    },
    /// A seed is not `host:port`, or the host does not resolve.
    #[error("seed {seed:?} does not resolve: {reason}")]
    Seed {
        /// The seed as given.
        seed: String,
        /// Why.
        reason: String,
    },
    /// A secret file holds no secret.
    #[error("secret file {0} holds no secret")]
    EmptySecretFile(PathBuf),
    /// The config file sets both `secret` and `secret_file`.
    #[error("config {0} sets both secret and secret_file; keep one")]
    TwoSecrets(PathBuf),
    /// No data dir was given and there is no home folder to put one in.
    #[error("no data dir: pass --data-dir or set CONSORT_DATA_DIR")]
    NoDataDir,
    /// The API would listen beyond loopback without a token.
    #[error("the API address {0} is reachable from other hosts; set --api-token to allow it")]
    ApiNeedsToken(SocketAddr),
    /// The API token is empty.
    #[error("the API token is empty")]
    EmptyToken,
    /// An owned prefix is not a valid key, or is reserved.
    #[error("owned prefix {prefix:?}: {reason}")]
    Own {
        /// The prefix as given.
        prefix: String,
        /// Why it is refused.
        reason: String,
    },
    /// A service name is not valid.
    #[error("service name {0:?} is not valid: 1 to 64 bytes of letters, digits and -_.:/")]
    Service(String),
    /// `max_value` is out of range.
    #[error("max_value {0} is out of range: 1 to {MAX_VALUE_LIMIT} bytes")]
    MaxValue(usize),
    /// `tombstone_ttl_secs` is zero.
    #[error("tombstone_ttl_secs must be at least 1")]
    TombstoneTtl,
}

/// The config file, as written. Every key is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    group: Option<String>,
    secret_file: Option<PathBuf>,
    secret: Option<String>,
    #[serde(default)]
    accept_secrets: Vec<String>,
    bind: Option<String>,
    api: Option<String>,
    #[serde(default)]
    seeds: Vec<String>,
    mdns: Option<bool>,
    name: Option<String>,
    priority: Option<i32>,
    election: Option<Mode>,
    quorum: Option<u32>,
    api_token: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    own: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    max_value: Option<usize>,
    tombstone_ttl_secs: Option<u64>,
}

impl FileConfig {
    /// Reads and parses `path`; relative paths inside are made relative to its folder.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.span().map_or(1, |s| line_of(&text, s.start)),
            message: e.message().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = config.data_dir.map(|p| base.join(p));
        config.secret_file = config.secret_file.map(|p| base.join(p));
        Ok(config)
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Where the group secrets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secrets {
    /// Given: the primary first, then the other accepted secrets.
    Given(Vec<String>),
    /// None given: use (or create) the one in the data dir, plus these accepted secrets.
    DataDir(Vec<String>),
}

/// An address setting and whether it came from the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Taken from the default, so a busy port may be swapped for a free one.
    pub is_default: bool,
}

/// Everything `consort up` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The node's data dir.
    pub data_dir: PathBuf,
    /// The group name.
    pub group: String,
    /// The group secrets.
    pub secrets: Secrets,
    /// The group port.
    pub bind: Listen,
    /// The HTTP API address.
    pub api: Listen,
    /// Addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// mDNS discovery on.
    pub mdns: bool,
    /// The node's name, if set.
    pub name: Option<String>,
    /// Election priority.
    pub priority: i32,
    /// How the leader is elected.
    pub election: Mode,
    /// No leader unless this many members are live.
    pub quorum: Option<u32>,
    /// Bearer token the API requires, if any.
    pub api_token: Option<String>,
    /// How logs are written.
    pub log_format: LogFormat,
    /// Key prefixes this node owns, without a trailing `/`.
    pub own: Vec<String>,
    /// Services this node advertises from the start.
    pub services: Vec<String>,
    /// Largest value, in bytes of compact JSON.
    pub max_value: usize,
    /// How long tombstones are kept.
    pub tombstone_ttl: Duration,
}

impl Settings {
    /// Merges `flags` over the config file they name (if any) over the defaults.
    ///
    /// `env_secret` is the value of `CONSORT_SECRET`, passed in so tests need no environment.
    pub fn resolve(flags: &Up, env_secret: Option<String>) -> Result<Settings, ConfigError> {
        let file = match &flags.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let secrets = secrets(flags, &file, env_secret)?;
        let bind = listen(
            "bind",
            flags.bind.as_ref().or(file.bind.as_ref()),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_GROUP_PORT)),
        )?;
        let api = listen(
            "api",
            flags.api.as_ref().or(file.api.as_ref()),
            SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_API_PORT)),
        )?;
        let seed_texts = if flags.seed.is_empty() {
            &file.seeds
        } else {
            &flags.seed
        };
        let seeds = seed_texts
            .iter()
            .map(|s| resolve_seed(s, bind.addr.ip()))
            .collect::<Result<Vec<_>, _>>()?;
        let own = owned_prefixes(if flags.own.is_empty() {
            &file.own
        } else {
            &flags.own
        })?;
        let services = if flags.service.is_empty() {
            file.services
        } else {
            flags.service.clone()
        };
        if let Some(bad) = services
            .iter()
            .find(|s| !consort_proto::messaging::valid_service_name(s))
        {
            return Err(ConfigError::Service(bad.clone()));
        }
        let defaults = ReplicaConfig::default();
        let max_value = flags
            .max_value
            .or(file.max_value)
            .unwrap_or(defaults.max_value);
        if !(1..=MAX_VALUE_LIMIT).contains(&max_value) {
            return Err(ConfigError::MaxValue(max_value));
        }
        let tombstone_ttl = match flags.tombstone_ttl.or(file.tombstone_ttl_secs) {
            None => defaults.tombstone_ttl,
            Some(0) => return Err(ConfigError::TombstoneTtl),
            Some(secs) => Duration::from_secs(secs),
        };
        let api_token = flags.api_token.clone().or(file.api_token);
        check_api_access(api.addr, api_token.as_deref())?;
        let data_dir = match flags.data_dir.clone().or(file.data_dir) {
            Some(dir) => dir,
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        Ok(Settings {
            data_dir,
            group: flags
                .group
                .clone()
                .or(file.group)
                .unwrap_or_else(|| DEFAULT_GROUP.to_string()),
            secrets,
            bind,
            api,
            seeds,
            mdns: !flags.no_mdns && file.mdns.unwrap_or(true),
            name: flags.name.clone().or(file.name),
            priority: flags.priority.or(file.priority).unwrap_or(0),
            election: flags.election.or(file.election).unwrap_or_default(),
            quorum: match flags.quorum.or(file.quorum) {
                Some(0) => return Err(ConfigError::Quorum),
                quorum => quorum,
            },
            api_token,
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            own,
            services,
            max_value,
            tombstone_ttl,
        })
    }
}

/// Checks owned prefixes (each must be a valid key outside `@consort/`) and drops trailing `/`.
fn owned_prefixes(given: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut prefixes = Vec::new();
    for text in given {
        let refused = |reason: String| ConfigError::Own {
            prefix: text.clone(),
            reason,
        };
        let trimmed = text.trim().trim_end_matches('/');
        let key = Key::new(trimmed).map_err(|e| refused(e.to_string()))?;
        if key.is_under(RESERVED_PREFIX) {
            return Err(refused(format!(
                "{RESERVED_PREFIX}/ is reserved for consort"
            )));
        }
        if !prefixes.iter().any(|p| p == trimmed) {
            prefixes.push(trimmed.to_string());
        }
    }
    Ok(prefixes)
}

/// The secrets, from the first of: `--secret-file`, `CONSORT_SECRET`, the config file, the data dir.
/// The config's `accept_secrets` are accepted whichever source gives the primary.
fn secrets(
    flags: &Up,
    file: &FileConfig,
    env_secret: Option<String>,
) -> Result<Secrets, ConfigError> {
    let mut given = if let Some(path) = &flags.secret_file {
        read_secret_file(path)?
    } else if let Some(secret) = env_secret.filter(|s| !s.trim().is_empty()) {
        vec![secret.trim().to_string()]
    } else {
        match (&file.secret, &file.secret_file, &flags.config) {
            (Some(_), Some(_), Some(config)) => {
                return Err(ConfigError::TwoSecrets(config.clone()))
            }
            (Some(secret), _, _) => vec![secret.trim().to_string()],
            (None, Some(path), _) => read_secret_file(path)?,
            (None, None, _) => Vec::new(),
        }
    };
    let extra = file.accept_secrets.iter().map(|s| s.trim().to_string());
    if given.is_empty() {
        return Ok(Secrets::DataDir(extra.collect()));
    }
    for secret in extra {
        if !given.contains(&secret) {
            given.push(secret);
        }
    }
    Ok(Secrets::Given(given))
}

/// Reads a secret file: the first non-empty line is the primary, the others are accepted too.
pub fn read_secret_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let secrets = secret_lines(&text);
    if secrets.is_empty() {
        return Err(ConfigError::EmptySecretFile(path.to_path_buf()));
    }
    Ok(secrets)
}

/// The trimmed non-empty lines of a secret file.
fn secret_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses an address setting, or takes the default.
fn listen(
    key: &'static str,
    given: Option<&String>,
    default: SocketAddr,
) -> Result<Listen, ConfigError> {
    match given {
        None => Ok(Listen {
            addr: default,
            is_default: true,
        }),
        Some(text) => text
            .trim()
            .parse()
            .map(|addr| Listen {
                addr,
                is_default: false,
            })
            .map_err(|_| ConfigError::Addr {
                key,
                value: text.clone(),
            }),
    }
}

/// Resolves a `host:port` seed, preferring an address of the same family as `bind_ip`.
pub fn resolve_seed(seed: &str, bind_ip: IpAddr) -> Result<SocketAddr, ConfigError> {
    let failed = |reason: String| ConfigError::Seed {
        seed: seed.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = seed
        .trim()
        .to_socket_addrs()
        .map_err(|e| failed(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() == bind_ip.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| failed("no address found".to_string()))
}

/// Refuses an API reachable from other hosts unless a (non-empty) token guards it.
fn check_api_access(api: SocketAddr, token: Option<&str>) -> Result<(), ConfigError> {
    match token {
        Some(t) if t.trim().is_empty() => Err(ConfigError::EmptyToken),
        None if !api.ip().is_loopback() => Err(ConfigError::ApiNeedsToken(api)),
        _ => Ok(()),
    }
}

/// `$CONSORT_DATA_DIR`, else `$XDG_DATA_HOME/consort`, else `$HOME/.local/share/consort`.
pub fn default_data_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("CONSORT_DATA_DIR")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("consort")))
        .or_else(|| var("HOME").map(|h| h.join(".local/share/consort")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Parses `consort up ARGS` into its flags.
    fn flags(args: &[&str]) -> Up {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            up: Up,
        }
        Wrapper::parse_from(std::iter::once("up").chain(args.iter().copied())).up
    }

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("consort.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s = Settings::resolve(&flags(&["--data-dir", "/tmp/x"]), None).unwrap();
        assert_eq!(s.group, "default");
        assert_eq!(s.bind.addr, "0.0.0.0:7470".parse().unwrap());
        assert!(s.bind.is_default && s.api.is_default);
        assert_eq!(s.api.addr, "127.0.0.1:7471".parse().unwrap());
        assert_eq!(s.secrets, Secrets::DataDir(vec![]));
        assert!(s.mdns);
        assert!(s.own.is_empty());
        assert_eq!(s.max_value, ReplicaConfig::default().max_value);
        assert_eq!(s.tombstone_ttl, ReplicaConfig::default().tombstone_ttl);
    }

    #[test]
    fn replication_settings_come_from_flags_over_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_config(
            tmp.path(),
            "own = [\"garage\", \"porch/\"]\nmax_value = 1000\ntombstone_ttl_secs = 60\n",
        );
        let config = path.to_str().unwrap();
        let s = Settings::resolve(&flags(&["--config", config]), None).unwrap();
        assert_eq!(s.own, ["garage", "porch"]);
        assert_eq!(s.max_value, 1000);
        assert_eq!(s.tombstone_ttl, Duration::from_secs(60));
        let s = Settings::resolve(
            &flags(&["--config", config, "--own", "attic", "--max-value", "10"]),
            None,
        )
        .unwrap();
        assert_eq!(s.own, ["attic"]);
        assert_eq!(s.max_value, 10);
        for bad in [
            &["--own", "a//b"][..],
            &["--own", "@consort/x"],
            &["--max-value", "0"],
            &["--tombstone-ttl", "0"],
        ] {
            let args: Vec<&str> = ["--data-dir", "/tmp/x"]
                .iter()
                .chain(bad)
                .copied()
                .collect();
            assert!(Settings::resolve(&flags(&args), None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_config(
            tmp.path(),
            "group = \"home\"\nbind = \"127.0.0.1:9000\"\nsecret = \"0123456789abcdef\"\n\
             accept_secrets = [\"fedcba9876543210\"]\nmdns = false\npriority = 3\n",
        );
        let config = path.to_str().unwrap();
        let s = Settings::resolve(&flags(&["--config", config, "--group", "lab"]), None).unwrap();
        assert_eq!(s.group, "lab");
        assert_eq!(s.bind.addr, "127.0.0.1:9000".parse().unwrap());
        assert!(!s.bind.is_default);
        assert!(!s.mdns);
        assert_eq!(s.priority, 3);
        assert_eq!(
            s.secrets,
            Secrets::Given(vec!["0123456789abcdef".into(), "fedcba9876543210".into()])
        );
        let env = Some("from the environment!".to_string());
        let s = Settings::resolve(&flags(&["--config", config]), env).unwrap();
        assert_eq!(
            s.secrets,
            Secrets::Given(vec![
                "from the environment!".into(),
                "fedcba9876543210".into()
            ])
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_config(tmp.path(), "group = \"g\"\nsecrte = \"x\"\n");
        let err = FileConfig::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("secrte") && text.contains("line 2"), "{text}");
    }

    #[test]
    fn secret_file_lines_are_primary_then_accepted() {
        assert_eq!(
            secret_lines("\n  first  \n\nsecond\n"),
            vec!["first", "second"]
        );
        assert!(secret_lines(" \n\n").is_empty());
    }

    #[test]
    fn api_beyond_loopback_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(matches!(
            check_api_access(any, None),
            Err(ConfigError::ApiNeedsToken(_))
        ));
        assert!(check_api_access(any, Some("t0ken")).is_ok());
        assert!(check_api_access("[::1]:7471".parse().unwrap(), None).is_ok());
        assert!(matches!(
            check_api_access(any, Some(" ")),
            Err(ConfigError::EmptyToken)
        ));
    }

    #[test]
    fn seeds_resolve_or_fail_clearly() {
        let v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            resolve_seed("127.0.0.1:7470", v4).unwrap(),
            "127.0.0.1:7470".parse().unwrap()
        );
        assert!(resolve_seed("localhost:7470", v4).unwrap().is_ipv4());
        assert!(matches!(
            resolve_seed("no-port", v4),
            Err(ConfigError::Seed { .. })
        ));
    }
}
