//! `--tls-cert`, `--tls-key`, `--tls-ca`: the migration stream over mutual TLS
//! (spec-decisions §20). `vm` takes them for both roles (a destination accepts only a source
//! whose certificate the CA signed; a source presents its own and checks the destination's);
//! `migrate` passes them to the source VM for one migration; `demo` gives them to both VMs.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use virtio_lm_migration::TlsFiles;

use crate::UsageError;

/// The three TLS files of one side; all or none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct TlsArgs {
    /// This side's certificate (PEM) for the migration stream's mutual TLS; needs --tls-key
    /// and --tls-ca. Without TLS the stream is checked for corruption (crc32c) but not
    /// authenticated.
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// This side's private key (PEM).
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The CA that must have signed the peer's certificate (PEM).
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, if TLS was asked for; a usage error if only some were given.
    pub fn files(&self) -> Result<Option<TlsFiles>, UsageError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            _ => Err(UsageError(
                "--tls-cert, --tls-key and --tls-ca go together: give all three or none".into(),
            )),
        }
    }

    /// The same flags as arguments of a child `vm` process.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        for (flag, path) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ] {
            if let Some(path) = path {
                out.push(flag.into());
                out.push(path.clone().into_os_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All three files or none (issue 13: "`--tls-cert`, `--tls-key`, `--tls-ca` on both
    /// sides").
    #[test]
    fn tls_flags_go_together() {
        assert_eq!(TlsArgs::default().files().unwrap(), None);
        let some = |p: &str| Some(PathBuf::from(p));
        let all = TlsArgs {
            tls_cert: some("c.pem"),
            tls_key: some("k.pem"),
            tls_ca: some("ca.pem"),
        };
        let files = all.files().unwrap().unwrap();
        assert_eq!(files.ca, PathBuf::from("ca.pem"));
        assert_eq!(all.to_args().len(), 6);
        let partial = TlsArgs {
            tls_ca: None,
            ..all
        };
        assert!(partial.files().is_err());
    }
}
