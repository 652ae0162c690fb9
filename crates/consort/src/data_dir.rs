//! The data dir: what makes a node the same node across restarts.
//!
//! It holds the node id (`node_id`), the saved protocol state (`state.json`: counter reservation
//! and identity generation), the group secret when Consort generated it (`secret`), and the ports
//! the running node chose (`ports.json`). A lock file keeps two processes from sharing one
//! identity, which would reuse nonces.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use consort_proto::{NodeId, SavedState};
use serde::{Deserialize, Serialize};

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// Creating, reading or writing a file failed.
    #[error("data dir {path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error("data dir {0} is in use by another consort process (one data dir per node)")]
    Locked(PathBuf),
    /// A file holds something that is not what Consort wrote.
    #[error("data dir file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The ports a running node listens on, written for clients to find it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// UDP (and later TCP) port of the group protocol.
    pub group: u16,
    /// HTTP API port, when the API runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<u16>,
}

/// An open, locked data dir.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DataDir {
    /// Opens (creating if needed) and locks the data dir.
    pub fn open(path: impl Into<PathBuf>) -> Result<DataDir, DataDirError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(io_err(&path))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(DataDirError::Locked(path)),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        Ok(DataDir { path, _lock: lock })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node id, created at random on first use.
    pub fn node_id(&self) -> Result<NodeId, DataDirError> {
        let file = self.path.join("node_id");
        match fs::read_to_string(&file) {
            Ok(text) => text.trim().parse().map_err(|e| DataDirError::Corrupt {
                path: file,
                reason: format!("{e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = NodeId::random(&mut rand::rng());
                write_atomic(&file, format!("{id}\n").as_bytes())?;
                Ok(id)
            }
            Err(e) => Err(io_err(&file)(e)),
        }
    }

    /// The state saved by the previous run (default for a new node).
    pub fn saved_state(&self) -> Result<SavedState, DataDirError> {
        let file = self.path.join("state.json");
        match fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DataDirError::Corrupt {
                path: file,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SavedState::default()),
            Err(e) => Err(io_err(&file)(e)),
        }
    }

    /// Makes `state` durable (write, fsync, rename, fsync the folder).
    pub fn save_state(&self, state: &SavedState) -> Result<(), DataDirError> {
        let bytes = serde_json::to_vec(state).expect("SavedState serializes");
        write_atomic(&self.path.join("state.json"), &bytes)
    }

    /// The group secret Consort generated here earlier, or a new one (saved with mode 0600).
    ///
    /// Returns the secret and whether it was just created.
    pub fn secret_or_create(&self) -> Result<(String, bool), DataDirError> {
        let file = self.path.join("secret");
        match fs::read_to_string(&file) {
            Ok(text) => Ok((text.trim().to_string(), false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let secret = generate_secret();
                write_atomic(&file, format!("{secret}\n").as_bytes())?;
                set_private(&file)?;
                Ok((secret, true))
            }
            Err(e) => Err(io_err(&file)(e)),
        }
    }

    /// Records the ports this node listens on.
    pub fn write_ports(&self, ports: &Ports) -> Result<(), DataDirError> {
        let bytes = serde_json::to_vec(ports).expect("Ports serializes");
        write_atomic(&self.path.join("ports.json"), &bytes)
    }

    /// Reads the ports a node running on `path` recorded, without locking it.
    pub fn read_ports(path: &Path) -> Result<Ports, DataDirError> {
        let file = path.join("ports.json");
        let bytes = fs::read(&file).map_err(io_err(&file))?;
        serde_json::from_slice(&bytes).map_err(|e| DataDirError::Corrupt {
            path: file,
            reason: e.to_string(),
        })
    }
}

/// A new random group secret: 32 bytes as 64 hex digits.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn set_private(file: &Path) -> Result<(), DataDirError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(file, fs::Permissions::from_mode(0o600)).map_err(io_err(file))
}

#[cfg(not(unix))]
fn set_private(_file: &Path) -> Result<(), DataDirError> {
    Ok(())
}

/// Replaces `file` with `bytes` so that a crash leaves either the old or the new content.
fn write_atomic(file: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = file.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, file).map_err(io_err(file))?;
    if let Some(dir) = file.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_state_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, state) = {
            let dir = DataDir::open(tmp.path()).unwrap();
            let id = dir.node_id().unwrap();
            assert_eq!(dir.saved_state().unwrap(), SavedState::default());
            let state = SavedState {
                counter_limit: 1 << 21,
                generation: 3,
            };
            dir.save_state(&state).unwrap();
            (id, state)
        };
        let dir = DataDir::open(tmp.path()).unwrap();
        assert_eq!(dir.node_id().unwrap(), id);
        assert_eq!(dir.saved_state().unwrap(), state);
    }

    #[test]
    fn a_locked_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::open(tmp.path()).unwrap();
        assert!(matches!(
            DataDir::open(tmp.path()),
            Err(DataDirError::Locked(_))
        ));
    }

    #[test]
    fn corrupt_files_are_reported_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("node_id"), "not hex").unwrap();
        fs::write(tmp.path().join("state.json"), "{").unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        assert!(matches!(dir.node_id(), Err(DataDirError::Corrupt { .. })));
        assert!(matches!(
            dir.saved_state(),
            Err(DataDirError::Corrupt { .. })
        ));
        assert_eq!(
            fs::read_to_string(tmp.path().join("node_id")).unwrap(),
            "not hex"
        );
    }

    #[test]
    fn secret_is_created_once_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let (s1, created) = dir.secret_or_create().unwrap();
        assert!(created);
        assert_eq!(s1.len(), 64);
        let (s2, created) = dir.secret_or_create().unwrap();
        assert!(!created);
        assert_eq!(s1, s2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(tmp.path().join("secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
