//! The curl examples of the docs, run verbatim against real daemons.
//!
//! Every line that starts with `curl` in a ```` ```sh ```` or ```` ```bash ```` block of
//! `README.md` and `docs/*.md` is an example (a line ending in `\` goes on with the next). The
//! docs' convention is that examples address the daemon as `$CONSORT_API`, so this test starts
//! a group and runs each example, exactly as written, with `sh -c` and `CONSORT_API` set to one
//! of its daemons. Each must exit 0.
//!
//! A block tagged ```` ```json output ```` or ```` ```text output ```` right after a `sh` block
//! (only blank lines between) is the expected output of that block's last curl line:
//! - `json output`: the output must be that JSON, where the string `"..."` stands for any value,
//!   a string containing `...` for any string of that shape, and a key `"..."` in an object
//!   allows keys the doc does not show;
//! - `text output`: line by line, where `...` in a line stands for any text and a line that is
//!   only `...` for any number of lines.
//!
//! The files run in order (README first, then docs by name), each example in the order written,
//! all against the same group: two nodes, `kitchen` (priority 1, so it leads; `CONSORT_API`) and
//! `hall` (owns the prefix `garage`), and a provider of the service `scene` on `hall` that
//! answers each request with the request itself (`consort serve scene --exec cat`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get_json, poll, Daemon, UpArgs};
use serde_json::Value;

/// How long one example may run.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(30);

/// How long the group may take to form, elect `kitchen` and learn of the `scene` provider.
const SETTLE: Duration = Duration::from_secs(15);

/// The variable every example addresses the daemon with.
const API_VAR: &str = "$CONSORT_API";

/// One curl line of the docs and what it must print, if the docs say.
#[derive(Debug)]
struct Example {
    /// `file:line`, for messages.
    place: String,
    /// The command, as written.
    command: String,
    /// The output block that follows it, if any.
    expected: Option<Expected>,
}

#[derive(Debug)]
enum Expected {
    Json(String),
    Text(String),
}

/// A fenced block of a Markdown file.
struct Block {
    /// The info string (`sh`, `json output`).
    info: String,
    /// Line number of the opening fence (1-based).
    line: usize,
    /// The lines inside.
    lines: Vec<String>,
    /// Whether only blank lines separate it from the block before.
    follows_block: bool,
}

/// The fenced blocks of `text`.
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut only_blank_since_block = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(block) = open.as_mut() {
            if trimmed.trim_end() == "```" {
                out.push(open.take().expect("open"));
                only_blank_since_block = true;
            } else {
                block.lines.push(line.to_string());
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            open = Some(Block {
                info: info.trim().to_string(),
                line: i + 1,
                lines: Vec::new(),
                follows_block: only_blank_since_block,
            });
        } else if !trimmed.is_empty() {
            only_blank_since_block = false;
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    out
}

/// The curl examples of one Markdown file, with their expected outputs.
fn examples_in(path: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned();
    let name = if path.parent().is_some_and(|p| p.ends_with("docs")) {
        format!("docs/{name}")
    } else {
        name
    };
    let mut examples: Vec<Example> = Vec::new();
    // Index in `examples` of the last curl line of the previous block, if it was a shell block.
    let mut last_curl: Option<usize> = None;
    for block in blocks(&text) {
        let first_word = block.info.split_whitespace().next().unwrap_or("");
        let is_output = block.info.split_whitespace().nth(1) == Some("output");
        if is_output {
            let place = format!("{name}:{}", block.line);
            let target = last_curl
                .filter(|_| block.follows_block)
                .unwrap_or_else(|| panic!("{place}: an output block must follow a sh block that ends with a curl line"));
            let body = block.lines.join("\n");
            examples[target].expected = Some(match first_word {
                "json" => Expected::Json(body),
                "text" => Expected::Text(body),
                other => panic!("{place}: output blocks are json or text, not {other:?}"),
            });
            last_curl = None;
            continue;
        }
        last_curl = None;
        if first_word != "sh" && first_word != "bash" {
            continue;
        }
        let mut lines = block.lines.iter().enumerate();
        while let Some((i, line)) = lines.next() {
            if !line.trim_start().starts_with("curl ") {
                continue;
            }
            let mut command = line.trim().to_string();
            while command.ends_with('\\') {
                let Some((_, next)) = lines.next() else { break };
                command.push('\n');
                command.push_str(next);
            }
            examples.push(Example {
                place: format!("{name}:{}", block.line + 1 + i),
                command,
                expected: None,
            });
            last_curl = Some(examples.len() - 1);
        }
    }
    examples
}

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md, then docs/*.md by name.
fn doc_files() -> Vec<PathBuf> {
    let root = repo();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("the docs folder")
        .map(|e| e.expect("a docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    std::iter::once(root.join("README.md"))
        .chain(docs)
        .collect()
}

/// Whether `text` has the shape of `pattern`, where `...` stands for any text.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    let [first, middle @ .., last] = &parts[..] else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `actual` lines match `expected` lines (see the module docs).
fn text_matches(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| text_matches(rest, &actual[skip..])),
        Some((line, rest)) => {
            actual.first().is_some_and(|a| glob(line, a)) && text_matches(rest, &actual[1..])
        }
    }
}

/// Checks `actual` against the JSON a doc shows (see the module docs); the error names where
/// they differ.
fn json_matches(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    let differ = || Err(format!("at {at}: expected {expected}, got {actual}"));
    match (expected, actual) {
        (Value::String(e), _) if e == "..." => Ok(()),
        (Value::String(e), Value::String(a)) if e.contains("...") => {
            if glob(e, a) {
                Ok(())
            } else {
                differ()
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e.iter().filter(|(k, _)| *k != "...") {
                let Some(got) = a.get(key) else {
                    return Err(format!("at {at}: no key {key:?} in {actual}"));
                };
                json_matches(value, got, &format!("{at}.{key}"))?;
            }
            let extra: Vec<&String> = a.keys().filter(|k| !e.contains_key(*k)).collect();
            if !extra.is_empty() && !e.contains_key("...") {
                return Err(format!("at {at}: keys {extra:?} are not in the docs"));
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .try_for_each(|(i, (e, a))| json_matches(e, a, &format!("{at}[{i}]"))),
        _ if expected == actual => Ok(()),
        _ => differ(),
    }
}

/// A process group that is killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` with `sh -c` in `dir`, `CONSORT_API` set to `api`: exit code, stdout, stderr.
fn run_example(command: &str, api: &str, dir: &Path) -> (Option<i32>, String, String) {
    let mut sh = Command::new("sh");
    sh.args(["-c", command]).current_dir(dir);
    run_limited(sh, api)
}

/// Runs `command` in its own process group with `CONSORT_API` set to `api` and no other
/// `CONSORT_*` variable, for at most [`EXAMPLE_LIMIT`]: exit code, stdout, stderr.
fn run_limited(mut command: Command, api: &str) -> (Option<i32>, String, String) {
    use std::os::unix::process::CommandExt;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("CONSORT_") {
            command.env_remove(var);
        }
    }
    let mut running = Running(command.env("CONSORT_API", api).spawn().expect("it runs"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(running.0.stdout.take().expect("piped")));
    let stderr = read(Box::new(running.0.stderr.take().expect("piped")));
    let deadline = Instant::now() + EXAMPLE_LIMIT;
    let code = loop {
        if let Some(status) = running.0.try_wait().expect("process polled") {
            break status.code();
        }
        if Instant::now() > deadline {
            drop(running);
            panic!("{command:?}\nran for more than {EXAMPLE_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(running);
    let out = stdout.join().expect("stdout read");
    let err = stderr.join().expect("stderr read");
    (code, out, err)
}

/// Checks one example's outcome; the error says what went wrong.
fn check(example: &Example, code: Option<i32>, out: &str) -> Result<(), String> {
    if code != Some(0) {
        return Err(format!("exited with {code:?}"));
    }
    match &example.expected {
        None => Ok(()),
        Some(Expected::Json(doc)) => {
            let expected: Value = serde_json::from_str(doc)
                .map_err(|e| format!("the doc's JSON is not JSON: {e}"))?;
            let actual: Value =
                serde_json::from_str(out).map_err(|e| format!("the output is not JSON ({e})"))?;
            json_matches(&expected, &actual, "$")
        }
        Some(Expected::Text(doc)) => {
            let expected: Vec<&str> = doc.trim_end().lines().collect();
            let actual: Vec<&str> = out.trim_end().lines().collect();
            if text_matches(&expected, &actual) {
                Ok(())
            } else {
                Err(format!("the output does not match the doc's:\n{doc}"))
            }
        }
    }
}

/// A `consort serve` process, killed when dropped.
struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The group the examples run against: `kitchen` leads, `hall` owns `garage` and serves
/// `scene` through a `consort serve` process.
fn start_group() -> (Daemon, Daemon, Provider) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let secret = common::secret_file(tmp.path(), "secret", common::SECRET);
    let group = common::unique_group("docs");
    let kitchen = Daemon::start(UpArgs {
        group: &group,
        secret_file: Some(&secret),
        seeds: Vec::new(),
        extra: ["--name", "kitchen", "--priority", "1"]
            .map(String::from)
            .to_vec(),
    });
    let hall = Daemon::start(UpArgs {
        group: &group,
        secret_file: Some(&secret),
        seeds: vec![kitchen.group_addr()],
        extra: ["--name", "hall", "--own", "garage"]
            .map(String::from)
            .to_vec(),
    });
    let hall_api = format!("http://{}", hall.api_addr());
    let provider = common::consort()
        .args(["serve", "scene", "--exec", "cat", "--api", &hall_api])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("consort serve starts");
    let provider = Provider(provider);
    let (a, b) = (kitchen.api_addr(), hall.api_addr());
    let settled = poll(SETTLE, || {
        let leader = |addr| http_get_json(addr, "/v1/leader", None).ok();
        let (seen_by_a, seen_by_b) = (leader(a)?, leader(b)?);
        let services = http_get_json(a, "/v1/services", None).ok()?;
        let peers = http_get_json(a, "/v1/peers", None).ok()?;
        let alive = peers.as_array()?.iter().filter(|p| p["state"] == "alive");
        (seen_by_a["is_self"] == true
            && seen_by_b["leader"]["id"] == seen_by_a["leader"]["id"]
            && services["scene"].as_array().is_some_and(|p| p.len() == 1)
            && alive.count() == 2)
            .then_some(())
    });
    assert!(
        settled.is_some(),
        "the group did not settle within {SETTLE:?}"
    );
    (kitchen, hall, provider)
}

/// Whether curl can run here; without it the test is skipped, unless CI requires it.
fn curl_available() -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CONSORT_REQUIRE_CURL").as_deref() != Ok("1"),
            "curl is required (CONSORT_REQUIRE_CURL=1) but not installed"
        );
        println!("skipped: curl is not installed (apt-get install curl)");
    }
    found
}

#[test]
fn every_curl_example_in_the_docs_runs_as_written() {
    let examples: Vec<Example> = doc_files().iter().flat_map(|f| examples_in(f)).collect();
    assert!(
        examples.len() >= 20,
        "only {} curl examples found",
        examples.len()
    );
    for example in &examples {
        assert!(
            example.command.contains(API_VAR),
            "{}: curl examples address the daemon as {API_VAR}: {}",
            example.place,
            example.command
        );
    }
    if !curl_available() {
        return;
    }
    let (kitchen, _hall, _provider) = start_group();
    let api = format!("http://{}", kitchen.api_addr());
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for example in &examples {
        let (code, out, err) = run_example(&example.command, &api, scratch.path());
        if let Err(why) = check(example, code, &out) {
            failures.push(format!(
                "{}: {}\n  {why}\n  stdout: {out}\n  stderr: {err}",
                example.place, example.command
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples failed:\n\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n\n")
    );
    println!("{} curl examples ran as the docs show", examples.len());
}

/// The first block of the README tagged `lang`, each line ending in a newline.
fn readme_block(lang: &str) -> String {
    let text = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let block = blocks(&text).into_iter().find(|b| b.info == lang);
    let block = block.unwrap_or_else(|| panic!("README.md has no {lang} block"));
    block.lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn the_readme_rust_example_is_the_one_ci_compiles() {
    let path = repo().join("crates/consort/examples/readme.rs");
    let file = std::fs::read_to_string(&path).expect("crates/consort/examples/readme.rs");
    let code: String = file
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        readme_block("rust"),
        code,
        "README.md's Rust example differs from {}",
        path.display()
    );
}

#[test]
fn the_readme_python_example_prints_what_it_says() {
    let src = repo().join("clients/python/src");
    let probe = Command::new("python3")
        .args(["-c", "import websocket, consort"])
        .env("PYTHONPATH", &src)
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CONSORT_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "python3 with websocket-client is required (CONSORT_REQUIRE_PYTHON=1) but missing"
        );
        println!("skipped: no python3 with websocket-client (pip install ./clients/python)");
        return;
    }
    let daemon = Daemon::start(UpArgs {
        group: &common::unique_group("readme-py"),
        secret_file: None,
        seeds: Vec::new(),
        extra: Vec::new(),
    });
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut python = Command::new("python3");
    python
        .args(["-c", &readme_block("python")])
        .env("PYTHONPATH", &src)
        .current_dir(scratch.path());
    let (code, out, err) = run_limited(python, &format!("http://{}", daemon.api_addr()));
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "True\nHELLO\n", "stderr: {err}");
}

#[test]
fn output_patterns_match_what_they_should() {
    assert!(glob("a...c", "abbc") && glob("...", "") && glob("x", "x"));
    assert!(!glob("a...c", "abcd") && !glob("ab...ba", "aba"));
    let lines = |s: &'static str| s.lines().collect::<Vec<_>>();
    assert!(text_matches(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
    assert!(text_matches(&lines("a\n...\nd"), &lines("a\nd")));
    assert!(!text_matches(&lines("a\nd"), &lines("a\nb\nd")));
    let doc = serde_json::json!({"id": "...", "n": 1, "v": "...-x", "...": "..."});
    let ok = serde_json::json!({"id": 7, "n": 1, "v": "12-x", "more": true});
    assert_eq!(json_matches(&doc, &ok, "$"), Ok(()));
    let wrong = serde_json::json!({"id": 7, "n": 2, "v": "12-x"});
    assert!(json_matches(&doc, &wrong, "$").unwrap_err().contains("$.n"));
    let strict = serde_json::json!({"n": 1});
    assert!(json_matches(&strict, &ok, "$")
        .unwrap_err()
        .contains("not in the docs"));
    let list = serde_json::json!([{"state": "alive", "...": "..."}]);
    let two = serde_json::json!([{"state": "alive"}, {"state": "alive"}]);
    assert!(json_matches(&list, &two, "$").is_err());
}

#[test]
fn examples_and_their_outputs_are_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("page.md");
    let text = "Text.\n\n```sh\nexport X=1\ncurl -fsS \"$CONSORT_API/a\" \\\n  -d '1'\n\
                curl -fsS \"$CONSORT_API/b\"\n```\n\n```json output\n{\"a\": 1}\n```\n\n\
                ```bash\ncurl -fsS \"$CONSORT_API/c\"\n```\n\nProse.\n\n```json\n{}\n```\n";
    std::fs::write(&file, text).expect("written");
    let examples = examples_in(&file);
    let commands: Vec<&str> = examples.iter().map(|e| e.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "curl -fsS \"$CONSORT_API/a\" \\\n  -d '1'",
            "curl -fsS \"$CONSORT_API/b\"",
            "curl -fsS \"$CONSORT_API/c\""
        ]
    );
    assert!(matches!(&examples[1].expected, Some(Expected::Json(j)) if j == "{\"a\": 1}"));
    assert!(examples[0].expected.is_none() && examples[2].expected.is_none());
    assert_eq!(examples[1].place, "page.md:7");
}
