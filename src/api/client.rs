//! `vfio-vmm remote --api-socket PATH COMMAND [ARG]`, like cloud-hypervisor's
//! `ch-remote`: one request, the JSON answer printed on stdout, the server's
//! error message on stderr; the exit status is 0 only for a 2xx answer.

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{Map, Value};

use super::http::{send_with_fds, Conn, HttpError, Limits, Response};
use super::routes::PREFIX;

/// Why a command could not be sent or understood.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not a command this client knows, or a bad argument.
    #[error("{0}")]
    Usage(String),
    /// The socket cannot be reached.
    #[error("cannot connect to {path}: {err} (is vfio-vmm running with --api-socket?)")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The exchange failed.
    #[error("API request failed: {0}")]
    Http(#[from] HttpError),
    /// A file named in the command cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
}

/// The commands and what they send: (command, method, endpoint).
const COMMANDS: &[(&str, &str, &str)] = &[
    ("ping", "GET", "vmm.ping"),
    ("info", "GET", "vm.info"),
    ("counters", "GET", "vm.counters"),
    ("create", "PUT", "vm.create"),
    ("boot", "PUT", "vm.boot"),
    ("shutdown", "PUT", "vm.shutdown"),
    ("reboot", "PUT", "vm.reboot"),
    ("delete", "PUT", "vm.delete"),
    ("pause", "PUT", "vm.pause"),
    ("resume", "PUT", "vm.resume"),
    ("power-button", "PUT", "vm.power-button"),
    ("shutdown-vmm", "PUT", "vmm.shutdown"),
    ("add-device", "PUT", "vm.add-device"),
    ("add-disk", "PUT", "vm.add-disk"),
    ("add-net", "PUT", "vm.add-net"),
    ("add-vsock", "PUT", "vm.add-vsock"),
    ("remove-device", "PUT", "vm.remove-device"),
];

/// Keys whose values are numbers, and keys whose values are on/off.
const NUMBERS: &[&str] = &["cid", "num_queues", "queue_size"];
const SWITCHES: &[&str] = &["readonly", "direct", "iommu", "rombar"];

/// A request ready to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Call {
    /// `GET` or `PUT`.
    pub method: &'static str,
    /// The endpoint, e.g. `vm.boot`.
    pub endpoint: &'static str,
    /// The JSON body.
    pub body: Option<String>,
    /// Descriptors to pass with SCM_RIGHTS.
    pub fds: Vec<RawFd>,
}

/// Turns `COMMAND [ARG]` into a request.
pub fn parse(command: &[String]) -> Result<Call, ClientError> {
    let usage = || {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.0).collect();
        ClientError::Usage(format!(
            "usage: remote --api-socket PATH COMMAND [ARG]; commands: {}",
            names.join(", ")
        ))
    };
    let (name, args) = command.split_first().ok_or_else(usage)?;
    let &(_, method, endpoint) = COMMANDS.iter().find(|c| c.0 == name).ok_or_else(usage)?;
    let arg = match args {
        [] => None,
        [one] => Some(one.as_str()),
        _ => return Err(ClientError::Usage(format!("{name} takes one argument"))),
    };
    let needs_arg =
        matches!(endpoint, "vm.create" | "vm.remove-device") || endpoint.starts_with("vm.add-");
    if needs_arg != arg.is_some() {
        let want = if needs_arg {
            "needs an argument"
        } else {
            "takes no argument"
        };
        return Err(ClientError::Usage(format!("{name} {want}")));
    }
    let mut call = Call {
        method,
        endpoint,
        body: None,
        fds: Vec::new(),
    };
    let Some(arg) = arg else { return Ok(call) };
    call.body = Some(match endpoint {
        "vm.create" => {
            std::fs::read_to_string(arg).map_err(|e| ClientError::Read(arg.into(), e))?
        }
        "vm.remove-device" => serde_json::json!({ "id": arg }).to_string(),
        _ => {
            let (object, fds) = key_values(arg)?;
            call.fds = fds;
            Value::Object(object).to_string()
        }
    });
    Ok(call)
}

/// `key=value,...` as a JSON object; `fd=N` (repeatable) becomes `fds`.
fn key_values(text: &str) -> Result<(Map<String, Value>, Vec<RawFd>), ClientError> {
    let mut object = Map::new();
    let mut fds = Vec::new();
    for item in text.split(',') {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| ClientError::Usage(format!("{item:?} is not key=value")))?;
        let bad = || ClientError::Usage(format!("bad value for {key}: {value:?}"));
        let value = if key == "fd" {
            fds.push(value.parse().map_err(|_| bad())?);
            continue;
        } else if NUMBERS.contains(&key) {
            Value::from(value.parse::<u64>().map_err(|_| bad())?)
        } else if SWITCHES.contains(&key) {
            Value::Bool(crate::config::parse_on_off(value).ok_or_else(bad)?)
        } else {
            Value::String(value.to_string())
        };
        object.insert(key.to_string(), value);
    }
    if !fds.is_empty() {
        object.insert("fds".into(), Value::from(fds.clone()));
    }
    Ok((object, fds))
}

/// Sends `call` on `socket` and reads the answer.
pub fn send(socket: &Path, call: &Call) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|err| ClientError::Connect {
        path: socket.display().to_string(),
        err,
    })?;
    let body = call.body.as_deref().unwrap_or("");
    let mut head = format!(
        "{} {PREFIX}{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
        call.method, call.endpoint
    );
    if call.body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    let bytes = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    send_with_fds(&stream, bytes.as_bytes(), &call.fds).map_err(HttpError::Io)?;
    let mut conn = Conn::new(stream);
    let limits = Limits {
        message: std::time::Duration::from_secs(60),
        idle: std::time::Duration::from_secs(60),
        ..Limits::default()
    };
    Ok(conn.read_response(&limits)?)
}

/// Runs `remote`: prints the answer; 0 only for a 2xx.
pub fn run(socket: &Path, command: &[String]) -> i32 {
    let answer = parse(command).and_then(|call| send(socket, &call));
    match answer {
        Ok(resp) if (200..300).contains(&resp.status) => {
            if let Some(body) = resp.body {
                println!("{}", pretty(&body));
            }
            0
        }
        Ok(resp) => {
            let body = resp.body.unwrap_or_default();
            let message = match serde_json::from_str::<Vec<String>>(&body) {
                Ok(messages) => messages.join(": "),
                Err(_) => body,
            };
            eprintln!("vfio-vmm remote: error {}: {message}", resp.status);
            1
        }
        Err(e) => {
            eprintln!("vfio-vmm remote: {e}");
            1
        }
    }
}

fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_string())
}
