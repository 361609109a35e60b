//! `virtio-lm demo`: the whole live-migration story on loopback, with this same binary as
//! every process — an echo peer (`net-echo`), a destination (`vm --incoming`) and a source
//! (`vm`) — the guest workloads running, a migration, the guest running on at the
//! destination, and the verification there: every request completed exactly once and intact.
//! Children are killed on every path out (the guard's `Drop`), errors included.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use virtio_lm_migration::MigrationReport;
use virtio_lm_spec::Profile;

use crate::args::{parse_profile, parse_size, Ring, StatusBitArg, StrategyArg};
use crate::control::{ControlClient, Request, Status};
use crate::migrate::{migrate_and_watch, MigrationFlags, ReportFlags};
use crate::summary::render;
use crate::timeline;
use crate::tls::TlsArgs;
use crate::UsageError;

/// `--help` text.
pub const LONG_ABOUT: &str = "\
Runs the whole live-migration story on loopback and prints a report.

It starts, as child processes of this binary: a UDP echo peer for the guest's virtio-net device,
a destination VM waiting for a migration, and a source VM whose guest runs a verifying virtio-blk
workload, a verifying virtio-net workload and a memory-dirtying thread. After --run-ms it migrates
the guest (pre-copy, then the seed 004 admin commands Stop/Freeze and the device contexts; or
with --strategy status each device's own status register and transport), lets it
run on at the destination for --run-ms, stops it there and verifies every request: lost,
duplicated and corrupted must be 0. The children are stopped on every path out.

--json prints the report as JSON (fields: strategy, ring, inflight, memory_bytes, total_ms,
downtime_ms, device_downtime_ms, guest_stall_ms, stop_ms, final_memory_ms, device_state_ms,
restore_ms, precopy_rounds, bytes_sent, device_context_bytes, requests_completed,
requests_verified, lost, duplicated, corrupted, frames_lost_on_wire, result). Exits 0 when the
migration completed and verified, 1 otherwise.";

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Virtqueue format.
    #[arg(long, value_enum, default_value_t)]
    pub ring: Ring,
    /// Numbering profile of both VMs (`vm --profile`): `seeds` or `v1.4`.
    #[arg(long, default_value = "seeds", value_parser = parse_profile)]
    pub profile: Profile,
    /// Guest RAM (e.g. 256M, 1G).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub memory: u64,
    /// How to migrate.
    #[command(flatten)]
    pub migration: MigrationFlags,
    /// What to print.
    #[command(flatten)]
    pub output: ReportFlags,
    /// MiB/s the guest's dirtying thread writes.
    #[arg(long, value_name = "MIB_S", default_value_t = 10)]
    pub dirty_rate: u64,
    /// MiB the dirtying thread writes over.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub working_set: u64,
    /// Request queues (blk) and queue pairs (net).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub queues: u16,
    /// Fill the source guest's unused RAM with random bytes, so the migration carries
    /// incompressible data pages (what `scripts/bench-migration` measures the stream with).
    #[arg(long)]
    pub fill_random: bool,
    /// How long the workloads run before the migration, and again after it at the
    /// destination, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub run_ms: u64,
    /// `--stress N [--seed S]`: the stress run instead of the demo.
    #[command(flatten)]
    pub stress: crate::stress::StressFlags,
    /// Where the disk image, the control sockets and the children's logs go (default: a new
    /// directory under the system's temp dir, removed after a successful run).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Mutual TLS on the migration stream: both VMs get these files (the certificate must
    /// name 127.0.0.1, and serve as client and server certificate).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Bytes of the demo's disk image (the blk workload uses up to 1024 blocks of 4 KiB).
const IMAGE_LEN: u64 = 8 << 20;
/// Longest wait for a child to come up, or for the guest to make progress.
const DEADLINE: Duration = Duration::from_secs(60);

/// The children, killed (and reaped) when dropped unless they exited already.
#[derive(Default)]
struct Children {
    list: Vec<(&'static str, Child)>,
}

impl Children {
    /// Waits up to `limit` for each child to exit by itself (after `quit`); kills the rest.
    fn wait_all(&mut self, limit: Duration) -> Vec<(&'static str, ExitStatus)> {
        let deadline = Instant::now() + limit;
        let mut done = Vec::new();
        for (name, child) in &mut self.list {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        done.push((*name, status));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => {
                        let _ = child.kill();
                        if let Ok(status) = child.wait() {
                            done.push((*name, status));
                        }
                        break;
                    }
                }
            }
        }
        self.list.clear();
        done
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.list {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory for this run: image, sockets, logs.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn new(dir: Option<&Path>) -> anyhow::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let base = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let name = format!(
            "virtio-lm-demo-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = base.join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, remove: true })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Starts `args` of this binary as a child (stderr to `log`), and waits for the stdout line
/// starting with `ready`; returns the rest of that line.
fn spawn(
    children: &mut Children,
    name: &'static str,
    args: &[String],
    log: &Path,
    ready: &str,
) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let stderr = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start the {name}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    children.list.push((name, child));
    let lines = read_lines(stdout);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(ready) {
                    // The reader thread drains the pipe on (sends then fail, harmlessly).
                    return Ok(rest.trim().to_string());
                }
            }
            Err(_) => bail!(
                "the {name} did not start (log: {}):\n{}",
                log.display(),
                tail(log)
            ),
        }
    }
}

/// A thread forwarding `stdout`'s lines; it keeps reading (so the child never blocks on a
/// full pipe) until the child closes it.
fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // Nobody listening any more: keep draining.
            let _ = tx.send(line);
        }
    });
    rx
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn say(json: bool, line: &str) {
    // With --json the report owns stdout.
    if json {
        eprintln!("demo: {line}");
    } else {
        println!("demo: {line}");
    }
}

/// Waits until the guest behind `control` has moved past `from` (both workloads) and at
/// least `run` has passed; returns the progress then.
/// The guest's workload counters as the story tells them.
fn workloads(status: &Status) -> String {
    format!(
        "{} blk requests, {} net echoes verified",
        status.guest.blk_completed, status.guest.net_verified
    )
}

fn run_guest(client: &mut ControlClient, from: &Status, run: Duration) -> anyhow::Result<Status> {
    let start = Instant::now();
    loop {
        let s = client.status()?;
        let moved = s.guest.blk_completed > from.guest.blk_completed
            && s.guest.net_verified > from.guest.net_verified;
        if moved && start.elapsed() >= run {
            return Ok(s);
        }
        if start.elapsed() > run + DEADLINE {
            bail!("the guest made no progress in {DEADLINE:?} ({:?})", s.guest);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if let Some(count) = args.stress.stress {
        if args.profile != Profile::Seeds {
            return Err(UsageError(
                "--stress draws each guest's profile (seeds or v1.4): leave out --profile".into(),
            )
            .into());
        }
        return crate::stress::run(count, args.stress.seed, args.output.json);
    }
    // Flags that do not go together are refused before any child starts.
    args.migration.check()?;
    if args.profile == Profile::V1_4 && args.migration.inflight == crate::args::Inflight::Transfer {
        return Err(UsageError(
            "--inflight transfer is not possible under the v1.4 profile: no virtio 1.4 device \
             part carries in-flight buffers; use --inflight drain"
                .into(),
        )
        .into());
    }
    check_status_bit(args)?;
    let mut dir = WorkDir::new(args.dir.as_deref())?;
    let mut children = Children::default();
    let result = story(args, &dir.path, &mut children);
    let statuses = children.wait_all(Duration::from_secs(10));
    match result {
        Ok(report) => {
            let failed: Vec<_> = statuses.iter().filter(|(_, s)| !s.success()).collect();
            if !failed.is_empty() {
                dir.remove = false;
                bail!(
                    "children failed: {failed:?} (logs in {})",
                    dir.path.display()
                );
            }
            if report["result"] != "ok" {
                dir.remove = false;
                bail!(
                    "{} (logs in {})",
                    report["result"].as_str().unwrap_or("failed"),
                    dir.path.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            dir.remove = false;
            Err(e.context(format!("logs in {}", dir.path.display())))
        }
    }
}

/// The status strategy's stop bit must exist in the VMs' profile: virtio 1.4 numbers no
/// DEVICE_STOPPED, the default `--status-bit` (spec-decisions §38).
fn check_status_bit(args: &DemoArgs) -> Result<(), UsageError> {
    let status = args.migration.strategy == StrategyArg::Status;
    let suspend = args.migration.status_bit == Some(StatusBitArg::Suspend);
    if args.profile == Profile::V1_4 && status && !suspend {
        return Err(UsageError(
            "--profile v1.4 with --strategy status needs --status-bit suspend: virtio 1.4 has \
             no DEVICE_STOPPED (the default --status-bit stopped)"
                .into(),
        ));
    }
    Ok(())
}

/// The story; returns the report it printed (`result` "ok" only if verified).
fn story(args: &DemoArgs, dir: &Path, children: &mut Children) -> anyhow::Result<Value> {
    let json = args.output.json;
    let image = dir.join("disk.img");
    File::create(&image)
        .and_then(|f| f.set_len(IMAGE_LEN))
        .with_context(|| format!("cannot create {}", image.display()))?;

    let echo = spawn(
        children,
        "net-echo",
        &["net-echo".into(), "--listen".into(), "127.0.0.1:0".into()],
        &dir.join("net-echo.log"),
        "net-echo: listening on ",
    )?;
    say(
        json,
        &format!("echo peer for the guest's virtio-net on udp:{echo}"),
    );

    let tls: Vec<String> = args
        .tls
        .to_args()
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let vm_args = |control: &Path| -> Vec<String> {
        let mut list: Vec<String> = vec![
            "vm".into(),
            "--control".into(),
            control.display().to_string(),
            "--memory".into(),
            args.memory.to_string(),
            "--blk".into(),
            image.display().to_string(),
            "--net".into(),
            format!("127.0.0.1:0,{echo}"),
            "--ring".into(),
            args.ring.name().into(),
            "--profile".into(),
            args.profile.name().into(),
            "--queues".into(),
            args.queues.to_string(),
            "--dirty-rate".into(),
            args.dirty_rate.to_string(),
            "--working-set".into(),
            args.working_set.to_string(),
        ];
        list.extend(tls.iter().cloned());
        list
    };
    let dst_control = dir.join("destination.sock");
    let mut dst_args = vm_args(&dst_control);
    dst_args.extend(["--incoming".into(), "tcp:127.0.0.1:0".into()]);
    let incoming = spawn(
        children,
        "destination",
        &dst_args,
        &dir.join("destination.log"),
        "vm: incoming on ",
    )?;
    say(json, &format!("destination VM waiting on {incoming}"));

    let src_control = dir.join("source.sock");
    let mut src_args = vm_args(&src_control);
    if args.fill_random {
        src_args.push("--fill-random".into());
    }
    spawn(
        children,
        "source",
        &src_args,
        &dir.join("source.log"),
        "vm: control socket ",
    )?;
    let mut src = ControlClient::connect(&src_control, DEADLINE)?;
    say(
        json,
        &format!(
            "source VM running: {} MiB RAM, {} rings, virtio-blk on {}, virtio-net to the echo, \
             dirtying {} MiB/s over {} MiB",
            args.memory >> 20,
            args.ring.name(),
            image.display(),
            args.dirty_rate,
            args.working_set
        ),
    );
    let run = Duration::from_millis(args.run_ms);
    let zero = Status::default();
    let before = run_guest(&mut src, &zero, run)?;
    say(
        json,
        &format!("guest workloads at the source: {}", workloads(&before)),
    );

    say(
        json,
        &format!(
            "migrating to {incoming} (strategy {}, in-flight requests: {})",
            args.migration.strategy_name(),
            args.migration.inflight.name()
        ),
    );
    let request = args.migration.request(&incoming)?;
    let mut report = migrate_and_watch(&src_control, request, !json)?;

    let mut dst = ControlClient::connect(&dst_control, DEADLINE)?;
    if report["result"] == "ok" {
        let at_commit = dst.status()?;
        let after = run_guest(&mut dst, &at_commit, run)?;
        say(
            json,
            &format!(
                "the guest runs on at the destination: {} so far",
                workloads(&after)
            ),
        );
    }
    let dst_end = dst.execute(&Request::Quit)?;
    let src_end = src.execute(&Request::Quit)?;
    children.list.retain_mut(|(name, child)| {
        if *name == "net-echo" {
            let _ = child.kill();
            let _ = child.wait();
            false
        } else {
            true
        }
    });
    drop(src_end);

    if report["result"] == "ok" {
        verify(&mut report, &dst_end);
        say(
            json,
            &format!(
                "the guest saw no completion for {:.2} ms at most (its own clock, carried \
                 across the hand-over in the vCPU state)",
                report["guest_stall_ms"].as_f64().unwrap_or(0.0),
            ),
        );
    }
    if let Some(path) = &args.output.timeline {
        timeline::write(path, &report)?;
        say(json, &format!("timeline written to {}", path.display()));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, true));
    }
    Ok(report)
}

/// Fills the report's workload fields from the destination's verification; `result` becomes
/// an error if anything was lost, duplicated or corrupted, or the guest failed.
/// `guest_stall_ms` is the guest's own measure: its clock travels in the vCPU state.
fn verify(report: &mut Value, dst_end: &Value) {
    let v = &dst_end["verification"];
    if let Some(e) = v.get("error") {
        report["result"] = json!(format!("verification failed: {e}"));
        return;
    }
    for field in MigrationReport::WORKLOAD_FIELDS {
        report[field] = v[field].clone();
    }
    report["guest_stall_ms"] = v["guest_stall_ms"].clone();
    let bad: u64 = ["lost", "duplicated", "corrupted"]
        .iter()
        .map(|f| report[*f].as_u64().unwrap_or(u64::MAX))
        .sum();
    if bad != 0 {
        report["result"] = json!(format!(
            "verification failed: lost {}, duplicated {}, corrupted {}",
            report["lost"], report["duplicated"], report["corrupted"]
        ));
    }
}
