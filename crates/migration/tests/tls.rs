//! The stream over mutual TLS (issue 13, "Security of the stream": "mutual TLS with rustls …
//! and the destination refuses a peer whose certificate the CA did not sign; tests generate
//! their certificates at run time (rcgen)"; spec-decisions §20).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use virtio_lm_migration::testing::{assert_clean, assert_completed, test_options};
use virtio_lm_migration::{incoming, migrate, MigrationControl, Tls, TlsFiles};
use virtio_lm_vm::testing::{localhost, run_for, start_machine};
use virtio_lm_vm::RingFormat;

/// Only a hang reaches it.
const HANDSHAKE: Duration = Duration::from_secs(60);

/// A directory of its own for one test's files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("virtio-lm-tls-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA: its certificate written to `dir/name-ca.pem`, and the issuer to sign with.
fn ca(dir: &Path, name: &str) -> (CertifiedIssuer<'static, KeyPair>, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&path, issuer.pem()).unwrap();
    (issuer, path)
}

/// A certificate for 127.0.0.1 signed by `issuer` (used as client and server certificate),
/// its files, with `trust` as the CA the peer must be signed by.
fn identity(
    dir: &Path,
    name: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    trust: &Path,
) -> TlsFiles {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: trust.to_path_buf(),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// A guest migrates over mutual TLS, both sides presenting certificates the shared CA signed:
/// it completes and verifies as over plain TCP.
#[test]
fn migration_over_mutual_tls() {
    let dir = Dir::new("ok");
    let (issuer, ca_pem) = ca(&dir.0, "shared");
    let dst_tls = Tls::load(&identity(&dir.0, "dst", &issuer, &ca_pem)).unwrap();
    let src_tls = Tls::load(&identity(&dir.0, "src", &issuer, &ca_pem)).unwrap();

    let (_image, _echo, options, source) = start_machine("mig-tls", "ok", RingFormat::Split, 1);
    run_for(&source, 50);
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let destination = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let link = dst_tls.accept(stream, HANDSHAKE).unwrap();
        incoming(link, options, &MigrationControl::new())
    });
    let link = src_tls
        .connect(TcpStream::connect(addr).unwrap(), "127.0.0.1", HANDSHAKE)
        .unwrap();
    let report = migrate(&source, link, &test_options(), &MigrationControl::new());
    assert_completed(&report, "tls");
    drop(source);
    let running = destination.join().unwrap().unwrap().machine;
    run_for(&running, 50);
    let after = running.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, "tls");
}

/// The destination refuses a source whose certificate its CA did not sign: the handshake
/// fails on the destination's side, so not a section of the stream is read.
#[test]
fn destination_refuses_a_source_the_ca_did_not_sign() {
    let dir = Dir::new("rogue");
    let (issuer, ca_pem) = ca(&dir.0, "shared");
    let (rogue_issuer, _) = ca(&dir.0, "rogue");
    let dst_tls = Tls::load(&identity(&dir.0, "dst", &issuer, &ca_pem)).unwrap();
    // It trusts the destination's CA, but its own certificate comes from another CA.
    let rogue = Tls::load(&identity(&dir.0, "rogue", &rogue_issuer, &ca_pem)).unwrap();

    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let destination = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        dst_tls.accept(stream, HANDSHAKE).map(drop)
    });
    // TLS 1.3 lets the client finish before the server has judged its certificate; either
    // way it gets no further than the handshake.
    let _ = rogue.connect(TcpStream::connect(addr).unwrap(), "127.0.0.1", HANDSHAKE);
    let err = destination.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    assert!(err.to_string().to_lowercase().contains("cert"), "{err}");
}

/// A missing or unreadable file is refused when the settings are loaded, naming the file.
#[test]
fn bad_files_are_refused_at_load() {
    let dir = Dir::new("files");
    let (issuer, ca_pem) = ca(&dir.0, "shared");
    let good = identity(&dir.0, "side", &issuer, &ca_pem);
    let missing = TlsFiles {
        key: dir.0.join("nowhere.pem"),
        ..good.clone()
    };
    let err = Tls::load(&missing).unwrap_err();
    assert!(err.to_string().contains("nowhere.pem"), "{err}");
    let swapped = TlsFiles {
        cert: good.key.clone(),
        ..good
    };
    assert!(Tls::load(&swapped).is_err());
}
