//! Durable storage of the replicated state: one redb file, `state.redb`, in the data dir.
//!
//! The driver loads every entry at start, so a restarted node serves its state at once, and
//! commits the writes that arrived during one turn of its loop together, in one durable write
//! transaction (group commit: one fsync for the whole batch). A write is acknowledged only after
//! the commit of its batch returns. The store applies last-writer-wins itself, so a late or
//! replayed batch never regresses a key.
//!
//! Layout: table `entries` maps a key's UTF-8 bytes to a record (format at `encode_record`); table
//! `meta` maps a name to a `u64` (the tombstone collection horizon, for one). Both hold plain
//! bytes as far as redb is concerned and are decoded here, so a damaged record comes back as
//! [`StorageError::Corrupt`], never as a panic.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use consort_proto::replica::{Commit, Entry, Hlc, Key, Meta, Value, Version};
use consort_proto::NodeId;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// File name of the state store inside the data dir.
pub const FILE_NAME: &str = "state.redb";

/// Memory redb may use to cache pages. The whole state is loaded into the engine at start, so
/// the cache serves only the version checks of [`Storage::commit`]; redb's default is 1 GiB.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

/// Record kind: a tombstone (no value follows the version).
const KIND_TOMBSTONE: u8 = 0;
/// Record kind: a value (compact JSON text follows the version).
const KIND_VALUE: u8 = 1;
/// Bytes before the JSON text: kind, HLC, origin.
const HEADER_LEN: usize = 1 + 8 + 8;
/// Metadata names written by [`Storage::apply`].
const META_SEQ: &str = "seq";
const META_HORIZON: &str = "horizon";
const META_LAST_CONTACT: &str = "last_contact_ms";

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Creating the folder or opening the file failed at the system level.
    #[error("state store {path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another process, or another [`Storage`] in this one, has the file open.
    #[error("state store {0} is in use by another process")]
    InUse(PathBuf),
    /// The file is not a state store, or one that was damaged outside Consort.
    #[error("state store {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key or meta name when one record is at fault.
        reason: String,
    },
    /// redb failed to open, read or commit (I/O error, disk full, version mismatch).
    ///
    /// A failed commit leaves the store as it was before it: nothing of the batch is applied.
    #[error("state store {path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// The error redb reported.
        source: Box<redb::Error>,
    },
}

/// The replicated state on disk. Cheap to share by reference between threads.
pub struct Storage {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.path).finish()
    }
}

impl Storage {
    /// Opens `<dir>/state.redb`, creating the folder and the file on first use.
    ///
    /// Every page's checksum is verified on open, so a file damaged outside Consort is refused
    /// with [`StorageError::Corrupt`] instead of being trusted. After a crash redb also rolls back
    /// to the last complete commit here.
    pub fn open(dir: &Path) -> Result<Storage, StorageError> {
        fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| open_error(&path, e))?;
        let storage = Storage { db, path };
        // Create both tables now, so readers never meet a missing one.
        storage.write(|txn| {
            txn.open_table(ENTRIES)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        Ok(storage)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored entry, tombstones included, in key order.
    pub fn load(&self) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| self.db_error(e))?;
        let len = table.len().map_err(|e| self.db_error(e))?;
        let mut entries = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for item in table.iter().map_err(|e| self.db_error(e))? {
            let (key, record) = item.map_err(|e| self.db_error(e))?;
            let entry = decode_entry(key.value(), record.value()).map_err(|e| self.corrupt(e))?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Durably writes a batch in one transaction (one fsync): the group commit.
    ///
    /// Each entry replaces the stored one for its key only if its version is newer (last writer
    /// wins, as in the store model), so the order in which batches arrive does not matter. When
    /// nothing in the batch is newer, nothing is written and no fsync is paid. Either the whole
    /// batch is applied or, on error, none of it.
    pub fn commit(&self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        let applied = {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.db_error(e))?;
            self.put_newer(&mut table, entries)?
        };
        if applied == 0 {
            return txn.abort().map_err(|e| self.db_error(e));
        }
        txn.commit().map_err(|e| self.db_error(e))
    }

    /// Makes one group commit of the engine durable in one transaction: collected keys are
    /// removed, entries stored (newer versions only), and the replication metadata written.
    pub fn apply(&self, commit: &Commit) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.db_error(e))?;
            for key in &commit.removed {
                table
                    .remove(key.as_str().as_bytes())
                    .map_err(|e| self.db_error(e))?;
            }
            self.put_newer(&mut table, &commit.entries)?;
            let mut meta = txn.open_table(META).map_err(|e| self.db_error(e))?;
            let Meta {
                seq,
                horizon,
                last_contact_ms,
            } = commit.meta;
            for (name, value) in [
                (META_SEQ, seq),
                (META_HORIZON, horizon.0),
                (META_LAST_CONTACT, last_contact_ms),
            ] {
                meta.insert(name.as_bytes(), value.to_le_bytes().as_slice())
                    .map_err(|e| self.db_error(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_error(e))
    }

    /// The replication metadata the last [`Storage::apply`] wrote (zeros for a new store).
    pub fn meta(&self) -> Result<Meta, StorageError> {
        Ok(Meta {
            seq: self.get_meta(META_SEQ)?.unwrap_or(0),
            horizon: Hlc(self.get_meta(META_HORIZON)?.unwrap_or(0)),
            last_contact_ms: self.get_meta(META_LAST_CONTACT)?.unwrap_or(0),
        })
    }

    /// Stores each entry that is newer than the stored one; returns how many were.
    fn put_newer(
        &self,
        table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        entries: &[Entry],
    ) -> Result<usize, StorageError> {
        let mut applied = 0;
        for entry in entries {
            let key = entry.key.as_str().as_bytes();
            let stored = match table.get(key).map_err(|e| self.db_error(e))? {
                Some(record) => Some(
                    decode_version(record.value())
                        .map_err(|e| self.corrupt(format!("key {:?}: {e}", entry.key.as_str())))?,
                ),
                None => None,
            };
            if stored.is_some_and(|version| version >= entry.version) {
                continue;
            }
            table
                .insert(key, encode_record(entry).as_slice())
                .map_err(|e| self.db_error(e))?;
            applied += 1;
        }
        Ok(applied)
    }

    /// Durably deletes `keys` in one transaction: tombstone garbage collection.
    ///
    /// Unconditional: the caller passes only keys whose stored entry is a tombstone it has
    /// decided to collect (no newer write for them has been committed since). Absent keys are
    /// ignored.
    pub fn remove(&self, keys: &[Key]) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut table = txn.open_table(ENTRIES)?;
            for key in keys {
                table.remove(key.as_str().as_bytes())?;
            }
            Ok(())
        })
    }

    /// The metadata value stored under `name`, if any.
    pub fn get_meta(&self, name: &str) -> Result<Option<u64>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = txn.open_table(META).map_err(|e| self.db_error(e))?;
        let Some(bytes) = table.get(name.as_bytes()).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = bytes.value().try_into().map_err(|_| {
            self.corrupt(format!(
                "meta {name:?} is {} bytes, not 8",
                bytes.value().len()
            ))
        })?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    /// Durably stores `value` under `name`, replacing any earlier value.
    pub fn set_meta(&self, name: &str, value: u64) -> Result<(), StorageError> {
        self.write(|txn| {
            let mut table = txn.open_table(META)?;
            table.insert(name.as_bytes(), value.to_le_bytes().as_slice())?;
            Ok(())
        })
    }

    /// Runs `body` in one durable write transaction and commits it.
    fn write(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        body(&txn).map_err(|e| self.db_error(e))?;
        txn.commit().map_err(|e| self.db_error(e))
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> StorageError {
        match e.into() {
            redb::Error::Corrupted(reason) => self.corrupt(reason),
            source => StorageError::Database {
                path: self.path.clone(),
                source: Box::new(source),
            },
        }
    }

    fn corrupt(&self, reason: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Maps a failure to open to the variant that says what the user should look at.
fn open_error(path: &Path, e: redb::DatabaseError) -> StorageError {
    let path = path.to_path_buf();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StorageError::InUse(path),
        // redb reports a file that is not a redb database as invalid data.
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() == io::ErrorKind::InvalidData =>
        {
            StorageError::Corrupt {
                path,
                reason: source.to_string(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => {
            StorageError::Io { path, source }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            StorageError::Corrupt { path, reason }
        }
        other => StorageError::Database {
            path,
            source: Box::new(other.into()),
        },
    }
}

/// The stored form of an entry, without its key: `[kind][hlc: u64 LE][origin: u64 LE][json]`.
///
/// Kind 0 is a tombstone and ends after the version; kind 1 carries the compact JSON text.
/// Other kinds are reserved for later formats. 17 bytes plus the JSON.
fn encode_record(entry: &Entry) -> Vec<u8> {
    let json = entry.value.as_ref().map_or("", Value::as_str);
    let mut record = Vec::with_capacity(HEADER_LEN + json.len());
    record.push(match entry.value {
        Some(_) => KIND_VALUE,
        None => KIND_TOMBSTONE,
    });
    record.extend_from_slice(&entry.version.hlc.0.to_le_bytes());
    record.extend_from_slice(&entry.version.origin.0.to_le_bytes());
    record.extend_from_slice(json.as_bytes());
    record
}

/// The version in a record, without decoding the value.
fn decode_version(record: &[u8]) -> Result<Version, String> {
    let header = record
        .get(..HEADER_LEN)
        .ok_or_else(|| format!("record is {} bytes, shorter than its header", record.len()))?;
    let word = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    Ok(Version {
        hlc: Hlc(word(1)),
        origin: NodeId(word(9)),
    })
}

/// Rebuilds an entry from its stored key and record, checking both.
fn decode_entry(key: &[u8], record: &[u8]) -> Result<Entry, String> {
    let text = std::str::from_utf8(key).map_err(|e| format!("key is not UTF-8: {e}"))?;
    let key = Key::new(text).map_err(|e| format!("key {text:?}: {e}"))?;
    let version = decode_version(record).map_err(|e| format!("key {text:?}: {e}"))?;
    let body = &record[HEADER_LEN..];
    let value = match record[0] {
        KIND_TOMBSTONE if body.is_empty() => None,
        KIND_TOMBSTONE => return Err(format!("key {text:?}: tombstone with a value")),
        KIND_VALUE => {
            let json = std::str::from_utf8(body)
                .map_err(|e| format!("key {text:?}: value is not UTF-8: {e}"))?;
            Some(Value::parse(json).map_err(|e| format!("key {text:?}: {e}"))?)
        }
        kind => return Err(format!("key {text:?}: unknown record kind {kind}")),
    };
    Ok(Entry {
        key,
        value,
        version,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn entry(key: &str, value: Option<&str>, hlc: u64, origin: u64) -> Entry {
        Entry {
            key: Key::new(key).unwrap(),
            value: value.map(|v| Value::parse(v).unwrap()),
            version: Version {
                hlc: Hlc(hlc),
                origin: NodeId(origin),
            },
        }
    }

    #[test]
    fn entries_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let written = vec![
            entry("kitchen/light/on", Some("true"), 10, 1),
            entry("hall/temp", Some(r#"{"c":21.5,"unit":"C"}"#), 11, 2),
            entry("gone", None, 12, 3),
        ];
        {
            let storage = Storage::open(tmp.path()).unwrap();
            assert!(storage.load().unwrap().is_empty());
            storage.commit(&written).unwrap();
        }
        let storage = Storage::open(tmp.path()).unwrap();
        let mut loaded = storage.load().unwrap();
        let mut expected = written;
        loaded.sort_by(|a, b| a.key.cmp(&b.key));
        expected.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(loaded, expected);
    }

    #[test]
    fn commit_keeps_the_newest_version() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::open(tmp.path()).unwrap();
        storage.commit(&[entry("k", Some("2"), 20, 1)]).unwrap();
        // Older, and equal HLC with a lower origin: both lose.
        storage
            .commit(&[entry("k", Some("1"), 10, 9), entry("k", Some("0"), 20, 0)])
            .unwrap();
        assert_eq!(storage.load().unwrap(), [entry("k", Some("2"), 20, 1)]);
        // Newer wins, even a tombstone; within a batch the newest wins whatever the order.
        storage
            .commit(&[entry("k", None, 40, 1), entry("k", Some("3"), 30, 1)])
            .unwrap();
        assert_eq!(storage.load().unwrap(), [entry("k", None, 40, 1)]);
        storage.commit(&[entry("k", Some("4"), 40, 2)]).unwrap();
        assert_eq!(storage.load().unwrap(), [entry("k", Some("4"), 40, 2)]);
    }

    #[test]
    fn remove_collects_tombstones() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::open(tmp.path()).unwrap();
        storage
            .commit(&[entry("a", None, 1, 1), entry("b", Some("1"), 1, 1)])
            .unwrap();
        storage
            .remove(&[Key::new("a").unwrap(), Key::new("absent").unwrap()])
            .unwrap();
        assert_eq!(storage.load().unwrap(), [entry("b", Some("1"), 1, 1)]);
    }

    #[test]
    fn meta_values_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(tmp.path()).unwrap();
            assert_eq!(storage.get_meta("gc_horizon").unwrap(), None);
            storage.set_meta("gc_horizon", 7).unwrap();
            storage.set_meta("gc_horizon", u64::MAX).unwrap();
        }
        let storage = Storage::open(tmp.path()).unwrap();
        assert_eq!(storage.get_meta("gc_horizon").unwrap(), Some(u64::MAX));
        assert_eq!(storage.get_meta("other").unwrap(), None);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let good = encode_record(&entry("k", Some("[1]"), 5, 6));
        let cases: Vec<(&[u8], Vec<u8>)> = vec![
            (b"k", Vec::new()),
            (b"k", good[..HEADER_LEN - 1].to_vec()),
            (b"k", [&good[..HEADER_LEN], b"{nope"].concat()),
            (b"k", [&good[..HEADER_LEN], &[0xff, 0xfe][..]].concat()),
            (b"k", [&[KIND_TOMBSTONE][..], &good[1..]].concat()),
            (b"k", [&[7][..], &good[1..]].concat()),
            (b"a//b", good.clone()),
            (&[0xc3, 0x28], good.clone()),
        ];
        for (key, record) in &cases {
            assert!(decode_entry(key, record).is_err(), "{key:?} {record:?}");
        }
        assert_eq!(
            decode_entry(b"k", &good).unwrap(),
            entry("k", Some("[1]"), 5, 6)
        );

        // The same through the store: a bad record makes load and commit fail, with the path.
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::open(tmp.path()).unwrap();
        let txn = storage.db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert(b"k".as_slice(), b"\x01short".as_slice())
            .unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(b"m".as_slice(), b"123".as_slice())
            .unwrap();
        txn.commit().unwrap();
        let err = storage.load().unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("state.redb"), "{err}");
        let err = storage.commit(&[entry("k", Some("1"), 1, 1)]).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        let err = storage.get_meta("m").unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn damaged_files_are_refused_with_their_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(FILE_NAME);
        fs::write(
            &path,
            b"this is not a redb file, not at all; padding padding",
        )
        .unwrap();
        let err = Storage::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");

        // A real store with bytes flipped inside its pages.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(FILE_NAME);
        {
            let storage = Storage::open(tmp.path()).unwrap();
            let batch: Vec<Entry> = (0..2000)
                .map(|i| entry(&format!("k/{i}"), Some("\"some value\""), i, 1))
                .collect();
            storage.commit(&batch).unwrap();
        }
        let mut bytes = fs::read(&path).unwrap();
        let len = bytes.len();
        for at in (len / 4..len).step_by(997) {
            bytes[at] ^= 0x5a;
        }
        fs::write(&path, &bytes).unwrap();
        match Storage::open(tmp.path()).and_then(|s| s.load()) {
            Err(StorageError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected a corrupt store, got {other:?}"),
        }
    }

    #[test]
    fn storage_can_move_to_a_blocking_thread() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Storage>();
        send_sync::<StorageError>();
    }

    #[test]
    fn a_store_in_use_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = Storage::open(tmp.path()).unwrap();
        assert!(matches!(
            Storage::open(tmp.path()),
            Err(StorageError::InUse(_))
        ));
    }

    /// Figures for the driver design, printed; the bounds only catch gross regressions.
    #[test]
    fn bulk_commit_and_load_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::open(tmp.path()).unwrap();
        let all: Vec<Entry> = (0..100_000u64)
            .map(|i| {
                let value = format!(r#"{{"on":{},"level":{i}}}"#, i % 2 == 0);
                entry(&format!("room/{}/device/{i}", i % 97), Some(&value), i, 1)
            })
            .collect();
        let started = Instant::now();
        for batch in all.chunks(1000) {
            storage.commit(batch).unwrap();
        }
        let commit_time = started.elapsed();
        drop(storage);

        let started = Instant::now();
        let storage = Storage::open(tmp.path()).unwrap();
        let open_time = started.elapsed();
        let started = Instant::now();
        let loaded = storage.load().unwrap();
        let load_time = started.elapsed();
        let size = fs::metadata(storage.path()).unwrap().len();
        println!(
            "100k entries: commit in 100 batches of 1000 {commit_time:?}, reopen (integrity \
             check) {open_time:?}, load {load_time:?}, file {:.1} MiB",
            size as f64 / (1024.0 * 1024.0)
        );
        assert_eq!(loaded.len(), all.len());
        assert!(load_time.as_secs_f64() < 5.0, "load took {load_time:?}");
    }

    /// What group commit saves: one fsync per commit dominates.
    #[test]
    fn group_commit_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::open(tmp.path()).unwrap();
        let batch: Vec<Entry> = (0..1000u64)
            .map(|i| entry(&format!("single/{i}"), Some("1"), i, 1))
            .collect();
        let started = Instant::now();
        for one in batch.chunks(1) {
            storage.commit(one).unwrap();
        }
        let singles = started.elapsed();
        let batch: Vec<Entry> = (0..1000u64)
            .map(|i| entry(&format!("batched/{i}"), Some("1"), i, 1))
            .collect();
        let started = Instant::now();
        storage.commit(&batch).unwrap();
        let grouped = started.elapsed();
        println!(
            "1000 entries: 1000 single-entry commits {singles:?} ({:?} each), one commit of 1000 \
             {grouped:?}",
            singles / 1000
        );
        assert_eq!(storage.load().unwrap().len(), 2000);
        assert!(grouped < singles, "{grouped:?} vs {singles:?}");
    }
}
