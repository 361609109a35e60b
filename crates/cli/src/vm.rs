//! `virtio-lm vm`: runs a simulated VM (crates/vm's `Machine`: blk and net functions of an
//! SR-IOV owner, guest workloads, a memory dirtier) steered through a control socket, as a
//! migration source, or with `--incoming` as a destination waiting for one.
//!
//! Lifecycle of the process: it prints `vm: control socket PATH` once the socket accepts
//! requests (and `vm: incoming on tcp:ADDR` for a destination, with the bound port), serves
//! requests until `quit`, and exits 0. A destination after Commit runs the guest on as any VM;
//! a source after Commit stays paused (`completed`) until `quit`.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tracing::{error, info, info_span, warn};
use virtio_lm_migration::{
    incoming_with_timeout, migrate, Inflight as EngineInflight, MigrateOptions, MigrationControl,
    MigrationReport, MigrationState, Outcome, Tls,
};
use virtio_lm_vm::{Machine, MachineOptions, MachineReport, NetEndpoints, MIB};

use crate::args::{parse_profile, parse_size, parse_tcp, strategy, Inflight, Ring};
use crate::control::{
    ControlError, ControlServer, GuestProgress, Handler, MigrateRequest, Request, Status,
};
use crate::migrate::MAX_LINK_TIMEOUT;
use crate::tls::TlsArgs;
use crate::UsageError;

/// `--help` text.
pub const LONG_ABOUT: &str = "\
Runs a simulated VM: a guest with a virtio-blk and a virtio-net function (members of an SR-IOV
owner whose admin queue migrates them: seed 004's commands, or with --profile v1.4 virtio 1.4's
device parts), workloads that verify every request, and a thread dirtying guest memory at
--dirty-rate over --working-set.

It is steered through --control SOCKET: JSON lines as QMP, e.g. {\"execute\":\"status\"},
{\"execute\":\"migrate\",\"arguments\":{\"to\":\"tcp:127.0.0.1:4444\"}}, {\"execute\":\"cancel\"},
{\"execute\":\"quit\"}. `virtio-lm migrate` is the friendly client.

With --incoming tcp:ADDR it is a destination: the same devices, frozen, waiting for a source;
after Commit it runs the guest on (with its own --net LOCAL address; the echo peer follows).
Logs go to stderr (RUST_LOG=debug for more).";

/// Arguments of `vm`.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// Guest RAM (e.g. 256M, 1G).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub memory: u64,
    /// The blk function's image file (two VMs may share one, as hosts share storage).
    #[arg(long, value_name = "IMAGE")]
    pub blk: Option<PathBuf>,
    /// The net function's UDP tunnel: its own address and the echo peer's.
    #[arg(long, value_name = "LOCAL,REMOTE", value_parser = parse_net)]
    pub net: Option<NetEndpoints>,
    /// Virtqueue format.
    #[arg(long, value_enum, default_value_t)]
    pub ring: Ring,
    /// Numbering profile of the devices, the owner and the guest drivers: `seeds` (the
    /// proposals: seed-004 admin commands, DEVICE_STOP and QUEUE_STATE) or `v1.4` (the
    /// published specification: device parts, SUSPEND on bit 43). Both ends of a migration
    /// must use the same.
    #[arg(long, default_value = "seeds", value_parser = parse_profile)]
    pub profile: virtio_lm_spec::Profile,
    /// Request queues (blk) and queue pairs (net).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub queues: u16,
    /// MiB/s the dirtying thread writes (0: idle).
    #[arg(long, value_name = "MIB_S", default_value_t = 0)]
    pub dirty_rate: u64,
    /// MiB the dirtying thread writes over.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub working_set: u64,
    /// Seed of the workloads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fill the RAM the guest does not use with random bytes at boot, so a migration carries
    /// incompressible data pages instead of zero-page markers (for stream benchmarks).
    #[arg(long)]
    pub fill_random: bool,
    /// The control socket (a Unix socket path).
    #[arg(long, value_name = "SOCKET")]
    pub control: PathBuf,
    /// Wait for an incoming migration on tcp:ADDR (port 0: any, printed).
    #[arg(long, value_name = "tcp:ADDR", value_parser = parse_tcp)]
    pub incoming: Option<SocketAddr>,
    /// Mutual TLS on the migration stream, both roles.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// With --incoming: longest wait of one read or write on the migration link, 1 to 86400 s;
    /// a source that stalls sending nothing fails the incoming migration after this long.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=MAX_LINK_TIMEOUT))]
    pub link_timeout: u64,
}

fn parse_net(text: &str) -> Result<NetEndpoints, String> {
    let (local, remote) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?} is not LOCAL,REMOTE"))?;
    let addr = |s: &str| {
        s.trim()
            .parse::<SocketAddr>()
            .map_err(|e| format!("{s:?}: {e}"))
    };
    Ok(NetEndpoints {
        local: addr(local)?,
        remote: addr(remote)?,
    })
}

impl VmArgs {
    /// The machine these arguments describe; checked (a usage error if inconsistent).
    pub fn machine_options(&self) -> anyhow::Result<MachineOptions> {
        let options = MachineOptions {
            memory: self.memory,
            blk: self.blk.clone(),
            net: self.net,
            ring: self.ring.into(),
            profile: self.profile,
            queues: self.queues,
            dirty_rate_mib: self.dirty_rate,
            working_set_mib: self.working_set,
            seed: self.seed,
            fill_random: self.fill_random,
            ..MachineOptions::default()
        };
        options
            .layout()
            .map_err(|e| UsageError(format!("--memory/--working-set/--queues: {e}")))?;
        if let Some(blk) = &self.blk {
            if !blk.is_file() {
                return Err(UsageError(format!("--blk {}: no such file", blk.display())).into());
            }
        }
        Ok(options)
    }
}

/// Installs the tracing subscriber (stderr; `RUST_LOG` filters, default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests, the demo in-process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Longest TLS handshake before the peer is given up.
const TLS_HANDSHAKE: Duration = Duration::from_secs(30);

/// The report of a migration that failed before its stream began (the source never paused).
fn not_started(options: &MigrateOptions, why: String) -> MigrationReport {
    let outcome = Outcome::Failed(why);
    MigrationReport {
        strategy: options.strategy.name(),
        result: outcome.result(),
        outcome,
        ..MigrationReport::default()
    }
}

/// Where the VM stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VmState {
    /// A destination with no guest yet.
    Incoming,
    /// The guest runs here.
    Running,
    /// A migration out is in progress.
    Migrating,
    /// The guest moved; it stays paused here.
    Completed,
    /// The link was lost after Commit.
    Unknown,
}

struct Inner {
    state: VmState,
    machine: Option<Arc<Machine>>,
    migration: Option<JoinHandle<()>>,
    last_migration: Option<Value>,
}

/// The VM process's shared state.
struct Vm {
    role: &'static str,
    /// `--tls-*`, loaded: the stream is mutual TLS in both roles.
    tls: Option<Tls>,
    options: MachineOptions,
    link_timeout: Duration,
    control: MigrationControl,
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `vm` until `quit`.
pub fn run(args: &VmArgs) -> anyhow::Result<()> {
    init_logging();
    let options = args.machine_options()?;
    let tls = match args.tls.files()? {
        Some(files) => Some(Tls::load(&files).context("--tls-*")?),
        None => None,
    };
    let role = if args.incoming.is_some() {
        "destination"
    } else {
        "source"
    };
    let vm = Arc::new(Vm {
        role,
        tls,
        options: options.clone(),
        link_timeout: Duration::from_secs(args.link_timeout),
        control: MigrationControl::new(),
        inner: Mutex::new(Inner {
            state: VmState::Incoming,
            machine: None,
            migration: None,
            last_migration: None,
        }),
    });
    let listener = match args.incoming {
        Some(addr) => {
            let l = TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
            Some(l)
        }
        None => {
            let machine = Machine::start(options).context("cannot start the VM")?;
            vm.install(machine)?;
            info!(memory_mib = args.memory / MIB, "guest running");
            None
        }
    };
    let handler: Handler = {
        let vm = vm.clone();
        Arc::new(move |request| vm.handle(request))
    };
    let (server, quit) = ControlServer::start(&args.control, role, handler)?;
    println!("vm: control socket {}", args.control.display());
    if let Some(listener) = listener {
        println!("vm: incoming on tcp:{}", listener.local_addr()?);
        let vm = vm.clone();
        std::thread::Builder::new()
            .name("incoming".into())
            .spawn(move || vm.accept(listener))?;
    }
    // Sent once the answer to `quit` (the guest finished and verified) is written.
    quit.recv().ok();
    drop(server);
    Ok(())
}

impl Vm {
    fn install(&self, machine: Machine) -> anyhow::Result<()> {
        let mut inner = lock(&self.inner);
        inner.machine = Some(Arc::new(machine));
        inner.state = VmState::Running;
        Ok(())
    }

    /// The destination's accept loop: one migration at a time; a failed one is discarded
    /// and the next connection tried, until one commits.
    fn accept(&self, listener: TcpListener) {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    warn!("accept: {e}");
                    continue;
                }
            };
            let span = info_span!("incoming", peer = ?stream.peer_addr().ok());
            let _entered = span.enter();
            self.control.reset();
            let result = match &self.tls {
                None => incoming_with_timeout(
                    stream,
                    self.options.clone(),
                    &self.control,
                    self.link_timeout,
                ),
                Some(tls) => match tls.accept(stream, TLS_HANDSHAKE) {
                    Ok(link) => incoming_with_timeout(
                        link,
                        self.options.clone(),
                        &self.control,
                        self.link_timeout,
                    ),
                    // A source the CA did not sign gets nothing: not a single section read.
                    Err(e) => {
                        warn!("incoming connection refused: {e}");
                        continue;
                    }
                },
            };
            match result {
                Ok(done) => {
                    info!(restore_ms = done.report.restore_ms, "guest running here");
                    lock(&self.inner).last_migration = serde_json::to_value(&done.report).ok();
                    if let Err(e) = self.install(done.machine) {
                        error!("cannot watch the guest: {e:#}");
                    }
                    return;
                }
                Err(e) => {
                    warn!("incoming migration discarded: {e}");
                    lock(&self.inner).last_migration =
                        Some(json!({ "result": format!("failed: {e}") }));
                }
            }
        }
    }

    fn handle(self: &Arc<Self>, request: Request) -> Result<Value, ControlError> {
        match request {
            Request::Status => serde_json::to_value(self.status())
                .map_err(|e| ControlError::generic(e.to_string())),
            Request::Migrate(m) => self.start_migration(m),
            Request::Cancel => {
                if lock(&self.inner).state != VmState::Migrating {
                    return Err(ControlError::state("no migration in progress"));
                }
                self.control.cancel();
                Ok(json!({}))
            }
            Request::Quit => Ok(self.quit()),
        }
    }

    fn status(&self) -> Status {
        let inner = lock(&self.inner);
        let report = inner
            .machine
            .as_ref()
            .map(|m| m.report())
            .unwrap_or_default();
        let p = self.control.progress();
        let migrating = inner.state == VmState::Migrating;
        let state = match inner.state {
            VmState::Incoming if p.state != MigrationState::Idle && !p.state.is_final() => {
                "migrating"
            }
            VmState::Incoming => "incoming",
            VmState::Running => "running",
            VmState::Migrating => "migrating",
            VmState::Completed => "completed",
            VmState::Unknown => "unknown",
        };
        Status {
            state: state.into(),
            role: self.role.into(),
            phase: (migrating || state == "migrating").then(|| {
                serde_json::to_value(p.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            }),
            round: p.round.into(),
            bytes_sent: p.bytes_sent,
            bytes_remaining: p.bytes_remaining,
            dirty_rate: p.dirty_rate as f64 / MIB as f64,
            expected_downtime_ms: p.expected_downtime_ms,
            memory_bytes: self.options.memory,
            guest: GuestProgress {
                blk_completed: report.blk.map_or(0, |b| b.completed),
                net_verified: report.net.map_or(0, |n| n.verified),
                pages_stamped: report.dirtier.stamped,
                announce_acks: report.announce_acks,
            },
            last_migration: inner.last_migration.clone(),
        }
    }

    fn start_migration(self: &Arc<Self>, request: MigrateRequest) -> Result<Value, ControlError> {
        let to = parse_tcp(&request.to).map_err(ControlError::generic)?;
        let inflight = request.inflight.unwrap_or_default();
        let strategy = strategy(
            request.strategy.unwrap_or_default(),
            request.status_bit,
            inflight,
        )
        .map_err(ControlError::generic)?;
        let mut inner = lock(&self.inner);
        if inner.state != VmState::Running {
            return Err(ControlError::state(format!(
                "the VM is not running here ({:?})",
                inner.state
            )));
        }
        let machine = inner
            .machine
            .clone()
            .ok_or_else(|| ControlError::state("no guest"))?;
        let tls = match request.tls.as_ref().map(TlsArgs::files).transpose() {
            Ok(Some(Some(files))) => {
                Some(Tls::load(&files).map_err(|e| ControlError::generic(format!("TLS: {e}")))?)
            }
            Ok(_) => self.tls.clone(),
            Err(e) => return Err(ControlError::generic(e.to_string())),
        };
        let host = request
            .to
            .strip_prefix("tcp:")
            .unwrap_or(&request.to)
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
            .unwrap_or_default();
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(10))
            .map_err(|e| ControlError::generic(format!("cannot connect to {to}: {e}")))?;
        // The previous migration's thread has ended (the state was Running again).
        if let Some(t) = inner.migration.take() {
            let _ = t.join();
        }
        let defaults = MigrateOptions::default();
        let options = MigrateOptions {
            strategy,
            inflight: match inflight {
                Inflight::Drain => EngineInflight::Drain,
                Inflight::Transfer => EngineInflight::Transfer,
            },
            downtime_ms: request.downtime_ms.unwrap_or(defaults.downtime_ms),
            max_bandwidth: request.max_bandwidth.filter(|&b| b > 0).map(|b| b * MIB),
            force: request.force.unwrap_or(false),
            timeout: request
                .timeout_s
                .map_or(defaults.timeout, Duration::from_secs),
            link_timeout: request
                .link_timeout_s
                .filter(|&s| s > 0)
                .map_or(defaults.link_timeout, Duration::from_secs),
        };
        self.control.reset();
        inner.state = VmState::Migrating;
        let vm = self.clone();
        let thread = std::thread::Builder::new()
            .name("migration".into())
            .spawn(move || {
                let span = info_span!("migrate", to = %to);
                let _entered = span.enter();
                let report = match tls {
                    None => migrate(&machine, stream, &options, &vm.control),
                    Some(tls) => match tls.connect(stream, &host, TLS_HANDSHAKE) {
                        Ok(link) => migrate(&machine, link, &options, &vm.control),
                        Err(e) => not_started(&options, format!("{e}")),
                    },
                };
                vm.finished(report);
            })
            .map_err(|e| ControlError::generic(e.to_string()))?;
        inner.migration = Some(thread);
        Ok(json!({}))
    }

    /// Records a migration's end: the report and the state its outcome leaves the VM in.
    fn finished(&self, report: MigrationReport) {
        let mut inner = lock(&self.inner);
        info!(result = %report.result, downtime_ms = report.downtime_ms, "migration ended");
        inner.state = match report.outcome {
            Outcome::Completed => VmState::Completed,
            Outcome::Cancelled(_) | Outcome::Failed(_) => VmState::Running,
            Outcome::Unknown => VmState::Unknown,
        };
        inner.last_migration = Some(serde_json::to_value(&report).unwrap_or(Value::Null));
    }

    /// Ends the VM: a migration in progress is cancelled; a guest running here stops, lets
    /// its requests complete and verifies (the answer carries the counts).
    fn quit(&self) -> Value {
        self.control.cancel();
        let thread = lock(&self.inner).migration.take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        let mut inner = lock(&self.inner);
        let Some(machine) = inner.machine.take() else {
            return json!({});
        };
        if inner.state != VmState::Running {
            // The guest moved (or may have): nothing of it is verified here.
            return json!({});
        }
        let verification = match Arc::try_unwrap(machine) {
            Ok(machine) => match machine.finish(Duration::from_secs(10)) {
                Ok(report) => workloads_json(&report),
                Err(e) => json!({ "error": e.to_string() }),
            },
            Err(_) => json!({ "error": "the machine is still in use" }),
        };
        json!({ "verification": verification })
    }
}

/// The guest workloads' final counts under the report's field names (counted as the engine's
/// `MigrationReport::add_workloads` counts them), and each workload's own counters.
pub fn workloads_json(report: &MachineReport) -> Value {
    let mut counts = MigrationReport::default();
    counts.add_workloads(report);
    let blk = report.blk.unwrap_or_default();
    let net = report.net.unwrap_or_default();
    json!({
        "requests_completed": counts.requests_completed,
        "requests_verified": counts.requests_verified,
        "lost": counts.lost,
        "duplicated": counts.duplicated,
        "corrupted": counts.corrupted,
        "frames_lost_on_wire": counts.frames_lost_on_wire,
        "guest_stall_ms": counts.guest_stall_ms,
        "blk": { "completed": blk.completed, "verified": blk.verified, "lost": blk.lost,
                 "duplicated": blk.duplicated, "corrupted": blk.corrupted, "failed": blk.failed },
        "net": { "sent": net.sent, "verified": net.verified, "lost": net.lost, "late": net.late,
                 "duplicated": net.duplicated, "corrupted": net.corrupted },
        "pages_stamped": report.dirtier.stamped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_takes_local_then_remote() {
        let net = parse_net("127.0.0.1:0,127.0.0.1:5555").unwrap();
        assert_eq!((net.local.port(), net.remote.port()), (0, 5555));
        assert!(parse_net("127.0.0.1:5555").is_err());
        assert!(parse_net("127.0.0.1:0,echo").is_err());
    }
}
