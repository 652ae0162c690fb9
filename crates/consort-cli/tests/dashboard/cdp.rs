//! Just enough of the Chrome DevTools Protocol to drive headless Chromium from a test: open
//! pages in their own windows, run JavaScript in them, click like a mouse, take screenshots.
//!
//! One WebSocket to the browser carries every page's commands (flattened sessions); events are
//! read and dropped while waiting for a command's answer. The browser runs in its own process
//! group with a throwaway profile, and the whole group is killed when the [`Browser`] drops.

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long the browser may take to open its DevTools port.
const LAUNCH: Duration = Duration::from_secs(30);
/// How long one command may take.
const COMMAND: Duration = Duration::from_secs(20);
/// The size of every page, in CSS pixels.
pub const VIEWPORT: (u32, u32) = (1440, 1000);

/// Collects the page's uncaught errors and rejected promises in `window.pageErrors`.
const RECORD_ERRORS: &str = "window.pageErrors = []; \
    addEventListener('error', e => pageErrors.push(String(e.message))); \
    addEventListener('unhandledrejection', e => pageErrors.push(String(e.reason)));";

/// Names Chromium goes by on Linux distributions, tried in order.
const NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// A headless Chromium, killed (with everything it started) when dropped.
pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    dir: TempDir,
}

/// One page: a window of the browser and its DevTools session.
pub struct Page {
    session: String,
}

/// The browser to use: `$CONSORT_CHROMIUM`, or the first of [`NAMES`] on the `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CONSORT_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| NAMES.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts `binary` headless on a fresh profile and connects to it.
    pub fn launch(binary: &Path) -> Result<Browser, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let profile = dir.path().join("profile");
        let log = File::create(dir.path().join("chromium.log")).map_err(|e| e.to_string())?;
        let (width, height) = VIEWPORT;
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        match devtools_socket(&mut child, dir.path()) {
            Ok(socket) => Ok(Browser {
                child,
                socket,
                next_id: 1,
                dir,
            }),
            Err(e) => {
                kill_group(&mut child);
                Err(e)
            }
        }
    }

    /// What Chromium wrote on stderr, for failure messages.
    pub fn log(&self) -> String {
        chromium_log(self.dir.path())
    }

    /// Sends a command (to a page's session, or to the browser) and returns its result.
    pub fn call(
        &mut self,
        page: Option<&Page>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(page) = page {
            command["sessionId"] = json!(page.session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .map_err(|e| format!("{method}: {e}"))?;
        let deadline = Instant::now() + COMMAND;
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let answer: Value = serde_json::from_str(text.as_str())
                        .map_err(|e| format!("{method}: not JSON: {e}"))?;
                    if answer["id"] != json!(id) {
                        continue;
                    }
                    if let Some(error) = answer.get("error") {
                        return Err(format!("{method}: {error}"));
                    }
                    return Ok(answer["result"].clone());
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("{method}: {e}")),
            }
            if Instant::now() > deadline {
                return Err(format!("{method}: no answer within {COMMAND:?}"));
            }
        }
    }

    /// Opens `url` in a new window of [`VIEWPORT`] size and waits until it has loaded.
    pub fn open(&mut self, url: &str) -> Result<Page, String> {
        let params = json!({ "url": "about:blank", "newWindow": true });
        let target = self.call(None, "Target.createTarget", params)?["targetId"].clone();
        let params = json!({ "targetId": target, "flatten": true });
        let session = self.call(None, "Target.attachToTarget", params)?["sessionId"]
            .as_str()
            .ok_or("no session id")?
            .to_string();
        let page = Page { session };
        let (width, height) = VIEWPORT;
        let metrics = json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false,
        });
        self.call(Some(&page), "Emulation.setDeviceMetricsOverride", metrics)?;
        self.call(Some(&page), "Page.enable", json!({}))?;
        let params = json!({ "source": RECORD_ERRORS });
        self.call(Some(&page), "Page.addScriptToEvaluateOnNewDocument", params)?;
        self.call(Some(&page), "Page.navigate", json!({ "url": url }))?;
        self.wait_for(&page, "document.readyState === 'complete'", COMMAND)?;
        Ok(page)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON.
    pub fn eval(&mut self, page: &Page, expression: &str) -> Result<Value, String> {
        let params = json!({
            "expression": expression, "returnByValue": true, "awaitPromise": true,
        });
        let result = self.call(Some(page), "Runtime.evaluate", params)?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it is neither `false` nor `null`; returns that
    /// value, or the last one seen after `limit`.
    pub fn wait_for(
        &mut self,
        page: &Page,
        expression: &str,
        limit: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(page, expression)?;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(format!("{expression} still {value} after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page's uncaught errors and unhandled rejections so far.
    pub fn errors(&mut self, page: &Page) -> Result<Vec<String>, String> {
        let errors = self.eval(page, "window.pageErrors")?;
        serde_json::from_value(errors).map_err(|e| e.to_string())
    }

    /// Clicks the middle of the first element matching `selector`, as a mouse would, after
    /// scrolling it into view.
    pub fn click(&mut self, page: &Page, selector: &str) -> Result<(), String> {
        self.call(Some(page), "Page.bringToFront", json!({}))?;
        let locate = format!(
            "(() => {{ const e = document.querySelector({selector}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()",
            selector = json!(selector)
        );
        let at = self.eval(page, &locate)?;
        if at.is_null() {
            return Err(format!("nothing matches {selector}"));
        }
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let event = json!({
                "type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1,
            });
            self.call(Some(page), "Input.dispatchMouseEvent", event)?;
        }
        Ok(())
    }

    /// Writes a PNG of what the page shows to `path`.
    pub fn screenshot(&mut self, page: &Page, path: &Path) -> Result<(), String> {
        self.call(Some(page), "Page.bringToFront", json!({}))?;
        let shot = self.call(
            Some(page),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        )?;
        let data = shot["data"].as_str().ok_or("no screenshot data")?;
        let png = decode_base64(data).ok_or("the screenshot is not base64")?;
        std::fs::write(path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closed gracefully, the browser reaps its helpers; whatever is left is killed.
        if self.call(None, "Browser.close", json!({})).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_group(&mut self.child);
    }
}

/// Waits for the port Chromium writes into its profile, then opens the browser's socket.
fn devtools_socket(
    child: &mut Child,
    dir: &Path,
) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, String> {
    let file = dir.join("profile").join("DevToolsActivePort");
    let deadline = Instant::now() + LAUNCH;
    let (port, path) = loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break (port.to_string(), path.to_string());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "chromium exited with {status}: {}",
                chromium_log(dir)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "chromium did not open DevTools: {}",
                chromium_log(dir)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (socket, _) =
        tungstenite::connect(&url).map_err(|e| format!("cannot connect to {url}: {e}"))?;
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        // Reads time out so that a command's deadline is kept.
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
    }
    Ok(socket)
}

/// The last 2,000 characters Chromium wrote on stderr.
fn chromium_log(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default();
    let start = text.len().saturating_sub(2000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// Kills the browser and the helpers in its process group, and reaps it.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Standard base64, padded.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().take_while(|&c| c != b'=').collect();
        if data.len() < 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in data.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..data.len() - 1]);
    }
    Some(out)
}

#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
    assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
    assert!(decode_base64("a$==").is_none());
}
