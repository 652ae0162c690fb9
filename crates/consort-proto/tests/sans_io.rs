//! The core stays sans-IO: no async runtime in its dependency tree, no socket, clock, file or
//! thread call in its source. Fails the build the day someone adds one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that mean an async runtime or direct socket I/O.
const FORBIDDEN_CRATES: &[&str] = &["tokio", "mio", "socket2", "async-std", "async-io", "smol"];

/// Source patterns that read the clock, touch the network or the disk, or block.
const FORBIDDEN_CALLS: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "std::fs",
    "std::thread",
    "tokio",
    "thread_rng",
    "rand::rng(",
    "OsRng",
];

#[test]
fn dependency_tree_has_no_runtime_or_socket_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "consort-proto",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(
        tree.contains("foca"),
        "unexpected cargo tree output:\n{tree}"
    );
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !FORBIDDEN_CRATES.contains(&name),
            "consort-proto depends on {name}: the core must stay sans-IO"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn source_reads_no_clock_and_opens_no_socket() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() >= 5, "found only {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests at the bottom of a file may use the clock to build instants.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap();
            for call in FORBIDDEN_CALLS {
                if line.contains(call) {
                    offences.push(format!("{}:{}: {call}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "I/O in consort-proto:\n{}",
        offences.join("\n")
    );
}
