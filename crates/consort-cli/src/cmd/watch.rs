//! `consort watch [PREFIX]`: changes and pulses as they happen, one JSON object per line.

use std::io::{BufRead, ErrorKind, Write};

use anyhow::{anyhow, bail};
use clap::Args;
use serde_json::Value;

use crate::client::{query_value, ClientArgs, Daemon};

/// Print changes and pulses at or under PREFIX as NDJSON until interrupted; exit 1 if the daemon
/// goes away.
#[derive(Debug, Args)]
pub struct Watch {
    #[command(flatten)]
    client: ClientArgs,
    /// Only keys at or under this prefix (all when none)
    prefix: Option<String>,
    /// Resume after this sequence number (the `seq` of the last change seen)
    #[arg(long, value_name = "SEQ")]
    from: Option<u64>,
}

impl Watch {
    /// Opens the event stream and prints each event as it comes.
    pub fn run(self) -> anyhow::Result<()> {
        let daemon = Daemon::locate(&self.client)?;
        let prefix = self.prefix.unwrap_or_default();
        let mut path = format!("/v1/watch?prefix={}", query_value(&prefix));
        if let Some(seq) = self.from {
            path.push_str(&format!("&from={seq}"));
        }
        let mut stream = daemon.stream(&path)?;
        let mut out = std::io::stdout().lock();
        let mut parser = SseParser::default();
        let mut line = String::new();
        loop {
            line.clear();
            let read = stream.read_line(&mut line);
            let gone =
                |why: String| anyhow!("the daemon at {} ended the watch{why}", daemon.base());
            match read {
                Ok(0) => return Err(gone(String::new())),
                Ok(_) => {}
                Err(e) => return Err(gone(format!(": {e}"))),
            }
            let Some((event, data)) = parser.feed(&line) else {
                continue;
            };
            let written = writeln!(out, "{}", ndjson(&event, &data)).and_then(|()| out.flush());
            match written {
                Ok(()) => {}
                // Whoever read the output has stopped (`| head`): so do we, quietly.
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => bail!("cannot write the output: {e}"),
            }
        }
    }
}

/// Reads server-sent events line by line (the `event` and `data` fields; comments and `id` are
/// skipped, as the data carries the sequence number).
#[derive(Debug, Default)]
struct SseParser {
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// Takes one line; returns `(event name, data)` at the blank line that ends an event.
    fn feed(&mut self, line: &str) -> Option<(String, String)> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if self.data.is_empty() {
                self.event.clear();
                return None;
            }
            let name = std::mem::take(&mut self.event);
            let name = if name.is_empty() {
                "message".into()
            } else {
                name
            };
            return Some((name, std::mem::take(&mut self.data).join("\n")));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
        None
    }
}

/// One output line: the event's data object with `"event": NAME` added.
fn ndjson(event: &str, data: &str) -> String {
    let line = match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(mut object)) => {
            object.insert("event".into(), Value::String(event.into()));
            Value::Object(object)
        }
        Ok(other) => serde_json::json!({ "event": event, "data": other }),
        Err(_) => serde_json::json!({ "event": event, "data": data }),
    };
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_whole_and_comments_skipped() {
        let mut parser = SseParser::default();
        let stream = ": keep-alive\n\nevent: change\r\nid: 4\ndata: {\"seq\":4,\"key\":\"a\"}\n\n\
                      event: pulse\ndata: {\"key\":\"b\"}\n\n";
        let events: Vec<(String, String)> = stream
            .split_inclusive('\n')
            .filter_map(|l| parser.feed(l))
            .collect();
        assert_eq!(
            events,
            [
                ("change".into(), r#"{"seq":4,"key":"a"}"#.into()),
                ("pulse".into(), r#"{"key":"b"}"#.into())
            ]
        );
    }

    #[test]
    fn lines_carry_the_event_name() {
        let line = ndjson("change", r#"{"seq":4,"key":"a","value":true}"#);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["event"], "change");
        assert_eq!(parsed["value"], true);
        assert!(!line.contains('\n'));
    }
}
