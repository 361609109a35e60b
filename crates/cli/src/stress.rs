//! `virtio-lm demo --stress N [--seed S]` (issue 13, "Stress"): N migrations of one guest back
//! and forth between machines in this process, at random points of its seeded workload, each
//! with a random strategy and in-flight mode, and every few an injected fault or a cancel. The
//! ring format is drawn per migration too: a guest negotiated its ring once, so drawing the other
//! one finishes (and verifies) the guest and starts a fresh one with it, under a numbering
//! profile (seeds or v1.4) drawn for that guest (spec-decisions §27, §39).
//!
//! Every migration must end as its fault says: Completed without one (the guest then runs on
//! the destination only), Cancelled or Failed with one (the source runs again, the destination
//! has nothing). At the end every guest's whole history is verified: the totals give lost,
//! duplicated and corrupted requests, which must be 0 (spec-decisions §27).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use virtio_lm_devices::blk::workload::Xorshift64;
use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_migration::{
    incoming, migrate, Incoming, Inflight, Link, MigrateOptions, MigrationControl, MigrationError,
    MigrationReport, MigrationState, Outcome, StatusBit, Strategy,
};
use virtio_lm_spec::Profile;
use virtio_lm_vm::{Machine, MachineOptions, NetEndpoints, RingFormat, MIB};

/// `demo --stress` and `--seed`.
#[derive(Debug, Args)]
pub struct StressFlags {
    /// Instead of the demo: N migrations of a small guest back and forth inside this process,
    /// at random points, with random strategies, rings and in-flight modes, every few with an
    /// injected fault or cancel; prints the totals (with --json, as one object).
    #[arg(long, value_name = "N")]
    pub stress: Option<u32>,
    /// The stress run's seed (workload steps, choices and faults follow from it).
    #[arg(long, value_name = "S", default_value_t = 1, requires = "stress")]
    pub seed: u64,
}

/// The stress run's totals (`--json` prints this object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Migrations that completed (the guest moved).
    pub migrations_ok: u64,
    /// Migrations cancelled (the source ran on).
    pub cancelled: u64,
    /// Migrations an injected fault failed (the source ran on).
    pub faults_survived: u64,
    /// Requests the guests' workloads completed (blk requests and net echoes).
    pub requests_completed: u64,
    /// Of them, verified.
    pub requests_verified: u64,
    /// blk requests lost.
    pub lost: u64,
    /// Requests completed twice.
    pub duplicated: u64,
    /// Requests whose data came back wrong.
    pub corrupted: u64,
}

impl Totals {
    /// The totals line.
    pub fn line(&self) -> String {
        format!(
            "stress: {} migrations ok, {} cancelled, {} faults survived; requests completed {}, \
             verified {}; lost {}, duplicated {}, corrupted {}",
            self.migrations_ok,
            self.cancelled,
            self.faults_survived,
            self.requests_completed,
            self.requests_verified,
            self.lost,
            self.duplicated,
            self.corrupted
        )
    }

    fn add_guest(&mut self, after: &virtio_lm_vm::MachineReport) {
        let mut r = MigrationReport::default();
        r.add_workloads(after);
        self.requests_completed += r.requests_completed;
        self.requests_verified += r.requests_verified;
        self.lost += r.lost;
        self.duplicated += r.duplicated;
        self.corrupted += r.corrupted;
    }

    /// Whether every request verified: nothing lost, duplicated or corrupted.
    pub fn clean(&self) -> bool {
        (self.lost, self.duplicated, self.corrupted) == (0, 0, 0)
    }
}

/// The run's seeded choices.
struct Rng(Xorshift64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one migration is made to go through.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// The operator cancels once the source reaches this state.
    Cancel(MigrationState),
    /// The source's link breaks after this many bytes (inside round 0).
    CutLink(u64),
    /// The destination gives up as pre-copy begins (its process gone).
    DestinationGone,
}

/// How long the workloads may take to move on between migrations (only a hang takes it).
const PROGRESS_LIMIT: Duration = Duration::from_secs(60);

/// Runs the stress; prints the totals (a line, or JSON with `json`). Fails on any lost,
/// duplicated or corrupted request, or a migration that ended otherwise than its fault says.
pub fn run(count: u32, seed: u64, json: bool) -> anyhow::Result<()> {
    let totals = stress(count, seed)?;
    if json {
        println!("{}", serde_json::to_string(&totals)?);
    } else {
        println!("{}", totals.line());
    }
    if !totals.clean() {
        bail!("requests lost, duplicated or corrupted: {}", totals.line());
    }
    Ok(())
}

/// The run itself (what [`run`] prints).
pub fn stress(count: u32, seed: u64) -> anyhow::Result<Totals> {
    let dir = TempDir::new()?;
    let echo = EchoPeer::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let mut rng = Rng(Xorshift64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1));
    let mut totals = Totals::default();
    let mut guest: Option<(Machine, MachineOptions)> = None;
    for i in 0..count {
        let ring = if rng.below(2) == 0 {
            RingFormat::Split
        } else {
            RingFormat::Packed
        };
        let (machine, options) = match guest.take() {
            Some((m, o)) if o.ring == ring => (m, o),
            other => {
                if let Some((m, _)) = other {
                    totals.add_guest(&m.finish(Duration::from_secs(10))?);
                }
                let options = MachineOptions {
                    profile: Profile::ALL[rng.below(2) as usize],
                    ..small_guest(&dir, &echo, ring, rng.next(), i)?
                };
                (Machine::start(options.clone())?, options)
            }
        };
        let steps = rng.below(25);
        if steps > 0 && !machine.wait_progress(steps, PROGRESS_LIMIT) {
            bail!(
                "migration {i}: the guest made no progress: {:?}",
                machine.report()
            );
        }
        let profile = options.profile;
        let (strategy, inflight) = draw_strategy(&mut rng, profile);
        let fault = if i % 4 == 3 {
            match rng.below(3) {
                0 => Fault::Cancel(
                    [
                        MigrationState::Setup,
                        MigrationState::PreCopy,
                        MigrationState::Stopped,
                        MigrationState::AwaitingReady,
                    ][rng.below(4) as usize],
                ),
                1 => {
                    // Inside round 0: it sends at least every page written so far.
                    let written = machine.memory().data_ranges()?;
                    let round_0 = virtio_lm_vm::dirty::total_bytes(&written).clamp(2, 1 << 20);
                    Fault::CutLink(rng.below(round_0 / 2))
                }
                _ => Fault::DestinationGone,
            }
        } else {
            Fault::None
        };
        // Now and then the guest's blk driver resets its device first and holds after a seeded
        // step of its initialisation until the migration has ended (spec-decisions §40).
        let held = if rng.below(5) == 0 && machine.blk_reinit_state().is_none() {
            Some(hold_in_initialisation(&machine, &mut rng, i)?)
        } else {
            None
        };
        let what = format!(
            "migration {i} ({profile}, {}, {inflight:?}, {ring:?}, {fault:?}, held after init step {held:?})",
            strategy.name()
        );
        let migrate_options = MigrateOptions {
            strategy,
            inflight,
            timeout: Duration::from_secs(20),
            force: true,
            ..MigrateOptions::default()
        };
        let (report, arrived) = migrate_once(&machine, &options, &migrate_options, fault)?;
        match (fault, &report.outcome, arrived) {
            (Fault::None, Outcome::Completed, Ok(incoming)) => {
                totals.migrations_ok += 1;
                release(&incoming.machine, held, &what)?;
                drop(machine);
                guest = Some((incoming.machine, options));
            }
            (Fault::Cancel(_), Outcome::Cancelled(_), Err(_)) => {
                totals.cancelled += 1;
                release(&machine, held, &what)?;
                running_again(&machine, &what)?;
                guest = Some((machine, options));
            }
            (Fault::CutLink(_) | Fault::DestinationGone, Outcome::Failed(_), Err(_)) => {
                totals.faults_survived += 1;
                release(&machine, held, &what)?;
                running_again(&machine, &what)?;
                guest = Some((machine, options));
            }
            (_, outcome, arrived) => bail!(
                "{what}: the source says {outcome:?}, the destination {:?}",
                arrived.map(|i| i.report)
            ),
        }
    }
    if let Some((m, _)) = guest {
        totals.add_guest(&m.finish(Duration::from_secs(10))?);
    }
    Ok(totals)
}

/// Has the guest's blk driver reset its device and hold after a seeded step of its
/// initialisation (from status 0 to the last queue enabled, before DRIVER_OK), and waits until
/// it holds there. Returns the step.
fn hold_in_initialisation(machine: &Machine, rng: &mut Rng, i: u32) -> anyhow::Result<usize> {
    let steps = machine.blk_init_steps()? as u64;
    let at = 1 + rng.below(steps - 1) as usize;
    machine
        .blk_hold_in_initialisation(at, PROGRESS_LIMIT)
        .with_context(|| format!("migration {i}"))?;
    Ok(at)
}

/// Where the guest is after a migration that found it held at `held`: still there (the
/// destination reproduced the device's registers and the driver continues from them), then let
/// go.
fn release(machine: &Machine, held: Option<usize>, what: &str) -> anyhow::Result<()> {
    let Some(at) = held else {
        return Ok(());
    };
    let state = machine.blk_reinit_state();
    if !state.is_some_and(|r| r.held() && r.done == at) {
        bail!("{what}: the guest's initialisation is at {state:?}");
    }
    machine.release_blk_reinit()?;
    Ok(())
}

/// A migration's strategy and in-flight mode under `profile`. The seeds profile has admin,
/// DEVICE_STOPPED and SUSPEND; v1.4 has admin (device parts) and SUSPEND only, no DEVICE_STOPPED.
/// The status strategy always drains (spec-decisions §15), and so does every v1.4 migration:
/// 1.4 carries no in-flight buffers (spec-decisions §39).
fn draw_strategy(rng: &mut Rng, profile: Profile) -> (Strategy, Inflight) {
    let strategy = match (profile, rng.below(3)) {
        (_, 0) => Strategy::Admin,
        (Profile::Seeds, 1) => Strategy::Status(StatusBit::Stopped),
        _ => Strategy::Status(StatusBit::Suspend),
    };
    let inflight = match (profile, strategy, rng.below(2)) {
        (Profile::Seeds, Strategy::Admin, 1) => Inflight::Transfer,
        _ => Inflight::Drain,
    };
    (strategy, inflight)
}

/// After an abandoned migration the source must run: vCPUs resumed, logging stopped, and its
/// workloads moving on.
fn running_again(machine: &Machine, what: &str) -> anyhow::Result<()> {
    if machine.all_parked() || machine.memory().is_logging() {
        bail!("{what}: the source did not run again");
    }
    if !machine.wait_progress(1, PROGRESS_LIMIT) {
        bail!("{what}: the source made no progress after the rollback");
    }
    Ok(())
}

/// A small guest (17 MiB of RAM, 1 MiB working set) with blk on an image of its own in `dir`
/// and net to `echo`.
fn small_guest(
    dir: &TempDir,
    echo: &EchoPeer,
    ring: RingFormat,
    seed: u64,
    n: u32,
) -> anyhow::Result<MachineOptions> {
    let image = dir.path.join(format!("guest-{n}.img"));
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(4 << 20))
        .with_context(|| format!("creating {}", image.display()))?;
    Ok(MachineOptions {
        memory: 17 * MIB,
        blk: Some(image),
        net: Some(NetEndpoints {
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            remote: echo.addr(),
        }),
        ring,
        queues: 2,
        dirty_rate_mib: 8,
        working_set_mib: 1,
        seed,
        ..MachineOptions::default()
    })
}

/// One migration of `machine` to a fresh destination in a thread of this process, through
/// `fault`.
fn migrate_once(
    machine: &Machine,
    options: &MachineOptions,
    migrate_options: &MigrateOptions,
    fault: Fault,
) -> anyhow::Result<(MigrationReport, Result<Incoming, MigrationError>)> {
    let dst_control = MigrationControl::new();
    if let Fault::DestinationGone = fault {
        let theirs = dst_control.clone();
        dst_control.set_observer(move |p| {
            if p.state == MigrationState::PreCopy {
                theirs.cancel();
            }
        });
    }
    let destination = spawn_destination(options.clone(), dst_control)?;
    let control = MigrationControl::new();
    if let Fault::Cancel(at) = fault {
        let canceller = control.clone();
        control.set_observer(move |p| {
            if p.state == at {
                canceller.cancel();
            }
        });
    }
    let stream = TcpStream::connect(destination.0)?;
    let report = match fault {
        Fault::CutLink(after) => migrate(
            machine,
            CutLink {
                stream,
                left: after,
            },
            migrate_options,
            &control,
        ),
        _ => migrate(machine, stream, migrate_options, &control),
    };
    let arrived = destination
        .1
        .join()
        .map_err(|_| anyhow::anyhow!("the destination thread panicked"))?;
    Ok((report, arrived))
}

type DestinationThread = JoinHandle<Result<Incoming, MigrationError>>;

fn spawn_destination(
    options: MachineOptions,
    control: MigrationControl,
) -> io::Result<(SocketAddr, DestinationThread)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let thread = std::thread::Builder::new()
        .name("destination".into())
        .spawn(move || {
            let (stream, _) = listener.accept()?;
            incoming(stream, options, &control)
        })?;
    Ok((addr, thread))
}

/// A link that breaks after `left` more bytes written: both directions shut down, as when
/// the network between the hosts goes.
struct CutLink {
    stream: TcpStream,
    left: u64,
}

impl Read for CutLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for CutLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            let _ = self.stream.shutdown(Shutdown::Both);
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "link cut (injected)",
            ));
        }
        let n = buf.len().min(self.left as usize);
        let n = self.stream.write(&buf[..n])?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Link for CutLink {
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_timeouts(timeout)
    }

    fn low_latency(&self) -> io::Result<()> {
        self.stream.low_latency()
    }

    fn close(&self) {
        self.stream.close();
    }

    fn peer(&self) -> String {
        self.stream.peer()
    }
}

/// The run's directory (blk images), removed at the end.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> io::Result<Self> {
        let path = crate::unique_temp_path("virtio-lm-stress");
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
