//! `virtio-lm migrate`: asks a running `virtio-lm vm` (through its control socket) to migrate
//! its guest to a destination waiting with `--incoming`, follows the migration with `status`
//! requests — progress bars on a terminal, plain lines otherwise — and prints a summary (or
//! the report as JSON). Exits 0 when the migration completed, 1 otherwise.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use virtio_lm_migration::MigrateOptions;

use crate::args::{parse_tcp, strategy, Inflight, StatusBitArg, StrategyArg};
use crate::control::{ControlClient, MigrateRequest, Request, Status};
use crate::summary::{mib, render};
use crate::timeline;
use crate::tls::TlsArgs;
use crate::UsageError;

/// `--help` text.
pub const LONG_ABOUT: &str = "\
Migrates the guest of a running `virtio-lm vm` (reached through its --control socket) to a
destination VM waiting with `--incoming tcp:ADDR`.

Pre-copy sends all RAM, then the pages dirtied meanwhile, round after round, until the expected
downtime fits --downtime-ms; then the source pauses its vCPUs, stops and freezes its devices
(seed 004 admin commands), sends the last pages, the device contexts and the vCPU state, and
commits once the destination is ready. Before Commit a failure or a cancel leaves the source
running. With --strategy status (--status-bit stopped|suspend) no owner device takes part: each
device is stopped through its own status register, read through its transport and
re-initialised on the destination as a driver would (in-flight requests always drain). Shows progress (bars on a terminal) and ends with a summary, or the report as JSON.
Exits 0 if the migration completed, 1 otherwise.";

/// Arguments of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The source VM's control socket.
    #[arg(long, value_name = "SOCKET")]
    pub control: PathBuf,
    /// The destination, tcp:HOST:PORT.
    #[arg(long, value_name = "tcp:HOST:PORT", value_parser = check_tcp)]
    pub to: String,
    /// How to migrate.
    #[command(flatten)]
    pub migration: MigrationFlags,
    /// What to print.
    #[command(flatten)]
    pub output: ReportFlags,
    /// Mutual TLS files the source VM uses for this migration (default: its own --tls-*).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The options of one migration (`migrate` and `demo`).
#[derive(Debug, Args)]
pub struct MigrationFlags {
    /// How the devices move: the owner's admin queue (seed 004), or in-band through each
    /// device's own status register and transport (seeds 000/001/003).
    #[arg(long, value_enum, default_value_t)]
    pub strategy: StrategyArg,
    /// With --strategy status: stop the devices with DEVICE_STOPPED (seed 000) or SUSPEND
    /// (seed 003) [default: stopped].
    #[arg(long, value_enum)]
    pub status_bit: Option<StatusBitArg>,
    /// Drain requests in flight before stopping, or transfer them in the device context
    /// (admin strategy only).
    #[arg(long, value_enum, default_value_t)]
    pub inflight: Inflight,
    /// Downtime the pre-copy converges to, in ms.
    #[arg(long, value_name = "N", default_value_t = MigrateOptions::DEFAULT_DOWNTIME_MS)]
    pub downtime_ms: u64,
    /// Bandwidth limit of the stream, MiB/s (default: none).
    #[arg(long, value_name = "MIB_S")]
    pub max_bandwidth: Option<u64>,
    /// Longest pre-copy in seconds; then the migration is cancelled (or, with --force,
    /// switched over whatever the expected downtime).
    #[arg(long, value_name = "SECS", default_value_t = MigrateOptions::DEFAULT_TIMEOUT_S)]
    pub timeout: u64,
    /// At the timeout, switch over instead of cancelling.
    #[arg(long)]
    pub force: bool,
    /// Longest wait of one read or write on the migration link, 1 to 86400 s: a destination
    /// that stops answering fails the migration after this long.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=MAX_LINK_TIMEOUT))]
    pub link_timeout: u64,
}

/// Largest `--link-timeout`: a day.
pub const MAX_LINK_TIMEOUT: u64 = 24 * 60 * 60;

impl MigrationFlags {
    /// The control socket request migrating to `to`; a usage error for flags that do not go
    /// together (`--inflight transfer` with `--strategy status`, `--status-bit` with admin).
    pub fn request(&self, to: &str) -> Result<MigrateRequest, UsageError> {
        self.check()?;
        Ok(MigrateRequest {
            to: to.to_string(),
            strategy: Some(self.strategy),
            status_bit: self.status_bit,
            inflight: Some(self.inflight),
            downtime_ms: Some(self.downtime_ms),
            max_bandwidth: self.max_bandwidth,
            timeout_s: Some(self.timeout),
            force: Some(self.force),
            tls: None,
            link_timeout_s: Some(self.link_timeout),
        })
    }

    /// Refuses flags that do not go together (a usage error, exit status 2).
    pub fn check(&self) -> Result<(), UsageError> {
        strategy(self.strategy, self.status_bit, self.inflight)
            .map(|_| ())
            .map_err(UsageError)
    }

    /// The strategy's name as the report spells it (`admin`, `status-stopped`, …).
    pub fn strategy_name(&self) -> String {
        strategy(self.strategy, self.status_bit, self.inflight).map_or_else(|e| e, |s| s.name())
    }
}

/// How the report is shown (`migrate` and `demo`).
#[derive(Debug, Args)]
pub struct ReportFlags {
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Draw the pre-copy rounds and the downtime phases into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<PathBuf>,
}

fn check_tcp(text: &str) -> Result<String, String> {
    parse_tcp(text).map(|_| text.to_string())
}

/// How long one control request may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the migration's status is read.
const POLL: Duration = Duration::from_millis(50);
/// A migration that has not ended after this long is abandoned (cancelled).
const MIGRATION_LIMIT: Duration = Duration::from_secs(600);

/// Runs `migrate`.
pub fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let mut request = args.migration.request(&args.to)?;
    if args.tls.files()?.is_some() {
        // The VM process opens them: its working directory need not be ours.
        let absolute = |p: &Option<PathBuf>| -> anyhow::Result<Option<PathBuf>> {
            p.as_ref()
                .map(|p| std::fs::canonicalize(p).with_context(|| format!("{}", p.display())))
                .transpose()
        };
        request.tls = Some(TlsArgs {
            tls_cert: absolute(&args.tls.tls_cert)?,
            tls_key: absolute(&args.tls.tls_key)?,
            tls_ca: absolute(&args.tls.tls_ca)?,
        });
    }
    let report = migrate_and_watch(&args.control, request, !args.output.json)?;
    if let Some(path) = &args.output.timeline {
        timeline::write(path, &report)?;
    }
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, false));
    }
    if report["result"] != "ok" {
        bail!("migration did not complete: {}", report["result"]);
    }
    Ok(())
}

/// Starts the migration through the control socket at `control`, follows it (showing
/// progress on stderr if `show`), and returns its report.
pub fn migrate_and_watch(
    control: &Path,
    request: MigrateRequest,
    show: bool,
) -> anyhow::Result<Value> {
    let mut client = ControlClient::connect(control, ANSWER_TIMEOUT)?;
    let before = client.status()?.last_migration;
    client
        .execute(&Request::Migrate(request))
        .context("the VM refused to migrate")?;
    let mut view = ProgressView::new(show);
    let start = Instant::now();
    loop {
        let status = client.status()?;
        if status.state != "migrating" && status.last_migration != before {
            view.finish();
            return status
                .last_migration
                .context("the migration ended without a report");
        }
        view.update(&status);
        if start.elapsed() > MIGRATION_LIMIT {
            let _ = client.execute(&Request::Cancel);
            bail!("the migration did not end within {MIGRATION_LIMIT:?}; cancelled");
        }
        std::thread::sleep(POLL);
    }
}

/// Progress on stderr: indicatif bars on a terminal, a plain line per change otherwise.
struct ProgressView {
    show: bool,
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
    last_line: String,
}

impl ProgressView {
    fn new(show: bool) -> Self {
        let bars = (show && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bytes = multi.add(ProgressBar::new(0));
            bytes.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bytes.set_prefix("round 0");
            let line = multi.add(ProgressBar::new_spinner());
            line.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            (multi, bytes, line)
        });
        Self {
            show,
            bars,
            last_line: String::new(),
        }
    }

    fn update(&mut self, s: &Status) {
        if !self.show {
            return;
        }
        let phase = s.phase.as_deref().unwrap_or("setup");
        let line = format!(
            "{phase}: round {}, sent {}, remaining {}, dirty rate {:.1} MiB/s, expected downtime {:.2} ms",
            s.round,
            mib(s.bytes_sent as f64),
            mib(s.bytes_remaining as f64),
            s.dirty_rate,
            s.expected_downtime_ms
        );
        match &self.bars {
            Some((_, bytes, spinner)) => {
                // The bar of a round: what it sent so far against what it had to send.
                bytes.set_length(s.bytes_sent + s.bytes_remaining);
                bytes.set_position(s.bytes_sent);
                bytes.set_prefix(format!("round {}", s.round));
                spinner.set_message(line);
                spinner.tick();
            }
            None => {
                // Plain lines only when something other than the byte count moved, so a
                // log stays readable.
                let key = format!("{phase} {}", s.round);
                if key != self.last_line {
                    eprintln!("migrate: {line}");
                    self.last_line = key;
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some((multi, bytes, spinner)) = self.bars.take() {
            bytes.finish_and_clear();
            spinner.finish_and_clear();
            let _ = multi.clear();
        }
    }
}
