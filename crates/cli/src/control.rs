//! The control socket of `virtio-lm vm` (`--control SOCKET`): JSON lines over a Unix stream
//! socket, modelled on QMP. The server greets each connection with one line
//! (`{"virtio-lm":{"version":…,"role":…}}`); then every request is one line
//! `{"execute":"status"}`, `{"execute":"migrate","arguments":{"to":"tcp:HOST:PORT",…}}`,
//! `{"execute":"cancel"}` or `{"execute":"quit"}`, answered by one line `{"return":…}` or
//! `{"error":{"class":…,"desc":…}}`. As QMP's `migrate`, `migrate` answers at once and the
//! migration runs on; `status` (QMP's `query-migrate`) follows it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::args::{Inflight, StatusBitArg, StrategyArg};
use crate::tls::TlsArgs;

/// Longest line a request may be: a request is a few hundred bytes, so anything longer is
/// refused rather than buffered.
const MAX_LINE: u64 = 64 * 1024;

/// A control request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "execute", content = "arguments", rename_all = "kebab-case")]
pub enum Request {
    /// Where the VM and its migration stand ([`Status`]).
    Status,
    /// Starts migrating the guest to a destination waiting with `--incoming`.
    Migrate(MigrateRequest),
    /// Cancels the migration in progress (before Commit the source runs on).
    Cancel,
    /// Stops the VM; the answer carries the guest workloads' verification.
    Quit,
}

/// The arguments of [`Request::Migrate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination, `tcp:HOST:PORT`.
    pub to: String,
    /// `admin` or `status` (default: admin).
    #[serde(default)]
    pub strategy: Option<StrategyArg>,
    /// With `status`: `stopped` or `suspend` (default: stopped).
    #[serde(default)]
    pub status_bit: Option<StatusBitArg>,
    /// Drain in-flight requests or transfer them (default: drain).
    #[serde(default)]
    pub inflight: Option<Inflight>,
    /// The downtime the pre-copy converges to, in ms (default: 10).
    #[serde(default)]
    pub downtime_ms: Option<u64>,
    /// The stream's bandwidth limit in MiB/s (default: none).
    #[serde(default)]
    pub max_bandwidth: Option<u64>,
    /// Longest pre-copy in seconds (default: 60); then the migration is cancelled, or with
    /// `force` switched over whatever the expected downtime.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Switch over at the timeout instead of cancelling.
    #[serde(default)]
    pub force: Option<bool>,
    /// Mutual TLS files for this migration (default: the VM's own `--tls-*`, if any).
    #[serde(default)]
    pub tls: Option<TlsArgs>,
    /// Longest wait of one read or write on the migration link, seconds (default 60).
    #[serde(default)]
    pub link_timeout_s: Option<u64>,
}

/// The answer to [`Request::Status`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `running`, `incoming` (a destination waiting), `migrating`, `completed` (the guest
    /// runs at the destination now; this VM stays paused), `unknown` (the link was lost
    /// after Commit: the operator decides) or `paused`.
    pub state: String,
    /// `source` or `destination` (a VM started with `--incoming`).
    pub role: String,
    /// The migration phase while migrating (`precopy`, `stop`, `commit`, …).
    #[serde(default)]
    pub phase: Option<String>,
    /// The pre-copy round (0: all of RAM).
    pub round: u64,
    /// Stream bytes sent so far.
    pub bytes_sent: u64,
    /// Dirty bytes still to send.
    pub bytes_remaining: u64,
    /// The guest's dirty rate, MiB/s.
    pub dirty_rate: f64,
    /// The downtime expected if the guest stopped now, ms.
    pub expected_downtime_ms: f64,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// The guest workloads' progress: blk requests completed, net echoes verified, pages the
    /// dirtier stamped.
    pub guest: GuestProgress,
    /// The last migration's outcome: its report (`result` is "ok" or the error).
    #[serde(default)]
    pub last_migration: Option<Value>,
}

/// The guest workloads' counters as `status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestProgress {
    /// blk requests completed.
    pub blk_completed: u64,
    /// net echoes verified.
    pub net_verified: u64,
    /// Pages the dirtier stamped.
    pub pages_stamped: u64,
    /// VIRTIO_NET_CTRL_ANNOUNCE_ACKs the guest's net driver sent after moves and the device
    /// accepted (docs/spec-decisions.md §31).
    #[serde(default)]
    pub announce_acks: u64,
}

/// Why a request failed, as QMP's error classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlError {
    /// `GenericError`, `CommandNotFound` (unknown or malformed request) or `DeviceNotActive`
    /// (a request that does not fit the VM's state).
    pub class: &'static str,
    /// What went wrong.
    pub desc: String,
}

impl ControlError {
    /// A request that does not fit the VM's state.
    pub fn state(desc: impl Into<String>) -> Self {
        Self {
            class: "DeviceNotActive",
            desc: desc.into(),
        }
    }

    /// Any other failure.
    pub fn generic(desc: impl Into<String>) -> Self {
        Self {
            class: "GenericError",
            desc: desc.into(),
        }
    }
}

/// What serves the requests.
pub type Handler = Arc<dyn Fn(Request) -> Result<Value, ControlError> + Send + Sync>;

/// The listening side. Connections are served one thread each, for as long as the process
/// lives.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` and serves every connection with `handler`, greeting as `role`. A stale
    /// socket file nobody listens on is replaced; a live one is an error. The receiver gets a
    /// message once the answer to a successful `quit` has been written, so the process can
    /// end without cutting it off.
    pub fn start(
        path: &Path,
        role: &'static str,
        handler: Handler,
    ) -> anyhow::Result<(Self, mpsc::Receiver<()>)> {
        let (quit_tx, quit_rx) = mpsc::channel();
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!("{} is in use by another VM", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale {}", path.display()))?;
        }
        let listener = bind_private(path)?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (handler, quit_tx) = (handler.clone(), quit_tx.clone());
                    // A connection that cannot get a thread is dropped; the client sees EOF.
                    let _ = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || serve(stream, role, &handler, &quit_tx));
                }
            })?;
        let server = Self {
            path: path.to_path_buf(),
        };
        Ok((server, quit_rx))
    }
}

/// Binds the control socket with owner-only permissions (issue 13: whoever can connect can
/// migrate or quit the VM). The socket is bound under a temporary name, restricted, and only
/// then renamed into place, so there is no moment when others could connect to `path`.
fn bind_private(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(name);
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)
        .with_context(|| format!("cannot bind control socket {}", temporary.display()))?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("cannot set up control socket {}", path.display()));
    }
    Ok(listener)
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The greeting line.
fn greeting(role: &str) -> Value {
    json!({ "virtio-lm": { "version": env!("CARGO_PKG_VERSION"), "role": role } })
}

/// The answer line to one request line, and whether it was a successful `quit`.
pub fn answer(line: &str, handler: &Handler) -> (Value, bool) {
    let (reply, quit) = match serde_json::from_str::<Request>(line) {
        Ok(request) => {
            let quit = request == Request::Quit;
            (handler(request), quit)
        }
        Err(e) => {
            let e = ControlError {
                class: "CommandNotFound",
                desc: format!("not a request: {e}"),
            };
            (Err(e), false)
        }
    };
    match reply {
        Ok(value) => (json!({ "return": value }), quit),
        Err(e) => (
            json!({ "error": { "class": e.class, "desc": e.desc } }),
            false,
        ),
    }
}

fn serve(stream: UnixStream, role: &str, handler: &Handler, quit_tx: &mpsc::Sender<()>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    if writeln!(out, "{}", greeting(role)).is_err() {
        return;
    }
    let mut input = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut input).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE => {
                let e = json!({ "error": { "class": "GenericError", "desc": "request too long" } });
                let _ = writeln!(out, "{e}");
                return;
            }
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let (reply, quit) = answer(line.trim(), handler);
        let written = writeln!(out, "{reply}").and_then(|()| out.flush());
        if quit {
            let _ = quit_tx.send(());
        }
        if written.is_err() {
            return;
        }
    }
}

/// A connection to a VM's control socket.
pub struct ControlClient {
    input: BufReader<UnixStream>,
    output: UnixStream,
    /// The role the VM greeted with (`source` or `destination`).
    pub role: String,
}

impl ControlClient {
    /// Connects and reads the greeting; each answer is waited for at most `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("cannot connect to control socket {}", path.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        let output = stream.try_clone()?;
        let mut client = Self {
            input: BufReader::new(stream),
            output,
            role: String::new(),
        };
        let hello = client.read_line()?;
        client.role = hello["virtio-lm"]["role"]
            .as_str()
            .context("the control socket did not greet as virtio-lm")?
            .to_string();
        Ok(client)
    }

    fn read_line(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if (&mut self.input)
            .take(MAX_LINE)
            .read_line(&mut line)
            .context("control socket")?
            == 0
        {
            bail!("the VM closed the control socket");
        }
        serde_json::from_str(&line).context("control socket answer")
    }

    /// Sends `request`; its `return` value, or its error as an error.
    pub fn execute(&mut self, request: &Request) -> anyhow::Result<Value> {
        let line = serde_json::to_string(request)?;
        writeln!(self.output, "{line}").context("control socket")?;
        let mut reply = self.read_line()?;
        if let Some(e) = reply.get("error") {
            bail!(
                "{}",
                e["desc"].as_str().unwrap_or("the VM refused the request")
            );
        }
        Ok(reply["return"].take())
    }

    /// The VM's [`Status`].
    pub fn status(&mut self) -> anyhow::Result<Status> {
        let value = self.execute(&Request::Status)?;
        serde_json::from_value(value).context("status answer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_qmp_shaped() {
        let parse = |s: &str| serde_json::from_str::<Request>(s);
        assert_eq!(parse(r#"{"execute":"status"}"#).unwrap(), Request::Status);
        assert_eq!(parse(r#"{"execute":"quit"}"#).unwrap(), Request::Quit);
        let m = parse(r#"{"execute":"migrate","arguments":{"to":"tcp:127.0.0.1:1","inflight":"transfer","downtime_ms":5}}"#).unwrap();
        assert_eq!(
            m,
            Request::Migrate(MigrateRequest {
                to: "tcp:127.0.0.1:1".into(),
                inflight: Some(Inflight::Transfer),
                downtime_ms: Some(5),
                ..MigrateRequest::default()
            })
        );
        let m = parse(r#"{"execute":"migrate","arguments":{"to":"x","strategy":"status","status_bit":"suspend"}}"#).unwrap();
        let Request::Migrate(m) = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            (m.strategy, m.status_bit),
            (Some(StrategyArg::Status), Some(StatusBitArg::Suspend))
        );
        assert!(parse(r#"{"execute":"migrate"}"#).is_err());
        assert!(parse(r#"{"execute":"migrate","arguments":{"to":"x","speed":1}}"#).is_err());
        assert!(parse(r#"{"execute":"reboot"}"#).is_err());
    }

    /// The control socket is created with owner-only permissions (issue 13: "The control
    /// socket is created with owner-only permissions"), and still answers its owner.
    #[test]
    fn control_socket_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("virtio-lm-ctl-perm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vm.sock");
        let handler: Handler = Arc::new(|_| Ok(json!({})));
        let (server, _quit) = ControlServer::start(&path, "source", handler).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let mut client = ControlClient::connect(&path, Duration::from_secs(60)).unwrap();
        client.execute(&Request::Status).unwrap();
        drop(client);
        drop(server);
        assert!(!path.exists());
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 0, "temporary socket left behind");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn answers_carry_return_or_error() {
        let handler: Handler = Arc::new(|r| match r {
            Request::Status => Ok(json!({"state": "running"})),
            _ => Err(ControlError::state("no migration")),
        });
        assert_eq!(
            answer(r#"{"execute":"status"}"#, &handler).0,
            json!({"return": {"state": "running"}})
        );
        assert_eq!(
            answer(r#"{"execute":"cancel"}"#, &handler).0["error"]["class"],
            "DeviceNotActive"
        );
        assert_eq!(
            answer("nonsense", &handler).0["error"]["class"],
            "CommandNotFound"
        );
    }
}
