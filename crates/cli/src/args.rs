//! Argument types the migration subcommands (`vm`, `migrate`, `demo`) share: sizes like `256M`,
//! `tcp:HOST:PORT` addresses, the ring format, the in-flight policy and the device strategy.

use std::net::{SocketAddr, ToSocketAddrs};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use virtio_lm_device::QuiesceMode;
use virtio_lm_migration::{StatusBit, Strategy};
use virtio_lm_spec::Profile;
use virtio_lm_vm::RingFormat;

/// Parses a byte size: a number with an optional binary suffix `K`, `M`, `G` (also `KiB`,
/// `MiB`, `GiB`), e.g. `256M`, `1G`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 256M, 1G)"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown size suffix {suffix:?} (K, M, G)"
            ))
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses `tcp:HOST:PORT` (the `tcp:` prefix as QEMU's `-incoming` writes it; a bare
/// `HOST:PORT` is accepted too) into the first address it resolves to.
pub fn parse_tcp(text: &str) -> Result<SocketAddr, String> {
    let rest = text.strip_prefix("tcp:").unwrap_or(text);
    rest.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not tcp:HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Parses a numbering profile (`--profile seeds|v1.4`, spec-decisions §1).
pub fn parse_profile(text: &str) -> Result<Profile, String> {
    text.parse()
        .map_err(|e: virtio_lm_spec::ProfileError| e.to_string())
}

/// `--ring`: the virtqueue format the guest drivers ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ring {
    /// Split virtqueues.
    #[default]
    Split,
    /// Packed virtqueues.
    Packed,
}

impl From<Ring> for RingFormat {
    fn from(ring: Ring) -> Self {
        match ring {
            Ring::Split => RingFormat::Split,
            Ring::Packed => RingFormat::Packed,
        }
    }
}

impl Ring {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Ring::Split => "split",
            Ring::Packed => "packed",
        }
    }
}

/// `--inflight`: what happens to requests the devices are processing when they stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Inflight {
    /// Complete them before Stop is acknowledged.
    #[default]
    Drain,
    /// Carry them in the device context; the destination completes each exactly once.
    Transfer,
}

impl From<Inflight> for QuiesceMode {
    fn from(inflight: Inflight) -> Self {
        match inflight {
            Inflight::Drain => QuiesceMode::Drain,
            Inflight::Transfer => QuiesceMode::RecordInflight,
        }
    }
}

impl Inflight {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Inflight::Drain => "drain",
            Inflight::Transfer => "transfer",
        }
    }
}

/// `--strategy`: how the devices are moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyArg {
    /// Seed 004: the owner's admin queue stops, freezes and reads each member.
    #[default]
    Admin,
    /// Seeds 000/001/003: each device stopped through its own status register and its state
    /// read through the transport (spec-decisions §15); in-flight requests always drain.
    Status,
}

/// `--status-bit`: which status bit stops the devices under `--strategy status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusBitArg {
    /// Seed 000: DEVICE_STOPPED (VIRTIO_F_DEVICE_STOP).
    #[default]
    Stopped,
    /// Seed 003, merged form: SUSPEND (VIRTIO_F_SUSPEND).
    Suspend,
}

impl From<StatusBitArg> for StatusBit {
    fn from(bit: StatusBitArg) -> Self {
        match bit {
            StatusBitArg::Stopped => StatusBit::Stopped,
            StatusBitArg::Suspend => StatusBit::Suspend,
        }
    }
}

/// The engine's strategy for `--strategy` and `--status-bit`, refusing the combinations that
/// cannot work: `--status-bit` without `--strategy status`, and `--inflight transfer` with it
/// (the status strategy's stop always drains: the transport has no in-band path for in-flight
/// chains, spec-decisions §15).
pub fn strategy(
    strategy: StrategyArg,
    bit: Option<StatusBitArg>,
    inflight: Inflight,
) -> Result<Strategy, String> {
    match (strategy, bit) {
        (StrategyArg::Admin, Some(_)) => {
            Err("--status-bit needs --strategy status (the admin strategy stops devices through the owner's admin queue)".into())
        }
        (StrategyArg::Admin, None) => Ok(Strategy::Admin),
        (StrategyArg::Status, _) if inflight == Inflight::Transfer => Err(
            "--inflight transfer needs --strategy admin: the status strategy has no in-band \
             path for in-flight chains (its stop always drains them)"
                .into(),
        ),
        (StrategyArg::Status, bit) => Ok(Strategy::Status(bit.unwrap_or_default().into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn strategies() {
        use StrategyArg::{Admin, Status};
        assert_eq!(
            strategy(Admin, None, Inflight::Transfer),
            Ok(Strategy::Admin)
        );
        assert_eq!(
            strategy(Status, None, Inflight::Drain),
            Ok(Strategy::Status(StatusBit::Stopped))
        );
        assert_eq!(
            strategy(Status, Some(StatusBitArg::Suspend), Inflight::Drain),
            Ok(Strategy::Status(StatusBit::Suspend))
        );
        let refused = strategy(Status, None, Inflight::Transfer).unwrap_err();
        assert!(refused.contains("--inflight transfer"), "{refused}");
        let refused = strategy(Admin, Some(StatusBitArg::Stopped), Inflight::Drain).unwrap_err();
        assert!(refused.contains("--status-bit"), "{refused}");
    }

    #[test]
    fn tcp_addresses() {
        assert_eq!(
            parse_tcp("tcp:127.0.0.1:4444"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 4444)))
        );
        assert_eq!(parse_tcp("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_tcp("tcp:nowhere").is_err());
    }
}
