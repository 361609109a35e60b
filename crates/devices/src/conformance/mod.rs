//! Normative checks run live against a device built in-process (`virtio-lm conform`): each
//! check is a function over the driver side — the owner's [`AdminClient`](virtio_lm_pci::admin::AdminClient) and a
//! member's [`PciDriver`](virtio_lm_pci::PciDriver), both over the [`PciTransport`](virtio_lm_pci::PciTransport) trait — and
//! yields one [`Row`]: the seed or spec section, the statement, the result and what was
//! observed. The test suite calls the same functions (`tests/conformance.rs`), including on
//! deliberately broken owners ([`Defects`]) whose rows must fail.

mod seeds;
mod target;
mod v14;

use std::fmt;

use virtio_lm_pci::admin::AdminCommand;
pub use virtio_lm_pci::admin::Defects;
use virtio_lm_spec::admin::group_type;
use virtio_lm_spec::admin::opcode::LIST_QUERY;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};

pub use target::{DeviceKind, Target};

/// A check's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The device did what the statement requires.
    Pass,
    /// It did not; [`Row::observed`] says what happened.
    Fail,
    /// The statement does not apply to this device or profile.
    NotApplicable,
}

impl Outcome {
    /// `"pass"`, `"fail"` or `"n/a"`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::NotApplicable => "n/a",
        }
    }
}

/// One checked statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The seed (`"003"`) or virtio 1.4 section (`"1.4 device parts"`).
    pub section: &'static str,
    /// The statement, in short.
    pub statement: &'static str,
    /// Pass, fail or n/a.
    pub result: Outcome,
    /// What was observed (empty on a pass).
    pub observed: String,
}

impl Row {
    fn of(section: &'static str, statement: &'static str, result: Result<(), String>) -> Self {
        let (result, observed) = match result {
            Ok(()) => (Outcome::Pass, String::new()),
            Err(observed) => (Outcome::Fail, observed),
        };
        Self {
            section,
            statement,
            result,
            observed,
        }
    }

    fn not_applicable(section: &'static str, statement: &'static str, why: &str) -> Self {
        Self {
            section,
            statement,
            result: Outcome::NotApplicable,
            observed: why.to_owned(),
        }
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {:<22} {}",
            self.result.name(),
            self.section,
            self.statement
        )?;
        if !self.observed.is_empty() {
            write!(f, " [{}]", self.observed)?;
        }
        Ok(())
    }
}

/// Every check of `profile` against a fresh `kind` target (with `defects` injected into its
/// owner; [`Defects::default`] for a correct device).
pub fn run(profile: Profile, kind: DeviceKind, defects: Defects) -> Result<Vec<Row>, String> {
    let mut target = Target::build(profile, kind)?;
    target.owner.inject_defects(defects);
    Ok(match profile {
        Profile::Seeds => seeds::checks(&mut target),
        Profile::V1_4 => v14::checks(&mut target),
    })
}

/// A check's failure text from any error.
fn observed(e: impl fmt::Display) -> String {
    e.to_string()
}

/// A check's outcome: `Err` holds what was observed.
type Check = Result<(), String>;

fn expect(what: &str, ok: bool) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

/// SUSPEND (seed 003, merged in 1.4): presented as SUSPEND=1, DRIVER_OK=0; DRIVER_OK resumes.
fn suspend(t: &mut Target) -> Check {
    let mut driver = t.guest(1, &[Feature::Suspend]).map_err(observed)?;
    driver.suspend().map_err(observed)?;
    let s = driver.status();
    let presented = s.contains(DeviceStatus::SUSPEND) && !s.contains(DeviceStatus::DRIVER_OK);
    expect("SUSPEND=1, DRIVER_OK=0 not presented", presented)?;
    driver.resume_from_suspend().map_err(observed)?;
    let s = driver.status();
    expect(
        "not resumed",
        !s.contains(DeviceStatus::SUSPEND) && s.contains(DeviceStatus::DRIVER_OK),
    )
}

/// The SR-IOV group's LIST_QUERY bitmap (first word).
fn sriov_list(t: &mut Target) -> Result<u64, String> {
    let cmd = AdminCommand::new(LIST_QUERY, group_type::SRIOV, 0, Vec::new());
    let r = t.client.command(&cmd, 8).map_err(observed)?;
    let word = r.result.get(..8).ok_or("short LIST_QUERY")?;
    Ok(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])))
}
