//! Argument types the migration subcommands (`vm`, `migrate`, `demo`) share: sizes like `256M`,
//! `tcp:HOST:PORT` addresses, the ring format and the in-flight policy.

use std::net::{SocketAddr, ToSocketAddrs};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use virtio_lm_device::QuiesceMode;
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
    fn tcp_addresses() {
        assert_eq!(
            parse_tcp("tcp:127.0.0.1:4444"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 4444)))
        );
        assert_eq!(parse_tcp("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_tcp("tcp:nowhere").is_err());
    }
}
