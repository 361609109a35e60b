//! The stream over mutual TLS (`--tls-cert`, `--tls-key`, `--tls-ca`; spec-decisions §20):
//! rustls over a std `TcpStream`, blocking like the rest of the engine. Each side presents its
//! own certificate and accepts the peer's only if the CA signed it; the destination refuses a
//! source it cannot verify before a single section is read.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls::{StreamOwned, SupportedProtocolVersion};

use super::Link;

/// Only TLS 1.3: both ends are this program, and 1.3 has no weaker modes to negotiate.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The three files of one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate chain (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that must have signed the peer's certificate (PEM; every certificate in the
    /// file is trusted).
    pub ca: PathBuf,
}

/// Loaded and checked TLS settings of one side, for either role.
#[derive(Clone, Debug)]
pub struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

// rustls marks its ring provider deprecated for lacking post-quantum key exchange; the
// alternative (aws-lc-rs) needs cmake and a C toolchain to build, which a fresh machine lacks.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} {}: {e}", path.display()),
    )
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Tls {
    /// Reads the files and builds both roles' configurations; any unreadable or invalid file
    /// is an error naming it (found at start-up, not at the first migration).
    pub fn load(files: &TlsFiles) -> io::Result<Tls> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| bad(&files.cert, "certificate", e))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&files.cert, "certificate", e))?;
        if certs.is_empty() {
            return Err(bad(
                &files.cert,
                "certificate",
                "no certificate in the file",
            ));
        }
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, "key", e))?;
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&files.ca).map_err(|e| bad(&files.ca, "CA", e))?;
        for ca in cas {
            let ca = ca.map_err(|e| bad(&files.ca, "CA", e))?;
            roots.add(ca).map_err(|e| bad(&files.ca, "CA", e))?;
        }
        if roots.is_empty() {
            return Err(bad(&files.ca, "CA", "no certificate in the file"));
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(other)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(other)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| bad(&files.key, "key", e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(other)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad(&files.key, "key", e))?;
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The destination's side: the handshake runs here, within `timeout`, and fails unless
    /// the source presents a certificate the CA signed.
    pub fn accept(&self, tcp: TcpStream, timeout: Duration) -> io::Result<TlsLink> {
        let conn = ServerConnection::new(self.server.clone()).map_err(other)?;
        handshake(Session::Server(StreamOwned::new(conn, tcp)), timeout)
    }

    /// The source's side: `host` is the name or address the destination's certificate must
    /// carry (the host of `--to`).
    pub fn connect(&self, tcp: TcpStream, host: &str, timeout: Duration) -> io::Result<TlsLink> {
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string()).map_err(other)?,
        };
        let conn = ClientConnection::new(self.client.clone(), name).map_err(other)?;
        handshake(Session::Client(StreamOwned::new(conn, tcp)), timeout)
    }
}

fn handshake(mut session: Session, timeout: Duration) -> io::Result<TlsLink> {
    session.tcp().set_read_timeout(Some(timeout))?;
    session.tcp().set_write_timeout(Some(timeout))?;
    let done = match &mut session {
        Session::Client(s) => s.conn.complete_io(&mut s.sock).map(drop),
        Session::Server(s) => s.conn.complete_io(&mut s.sock).map(drop),
    };
    if let Err(e) = done {
        // The peer learns why from the alert rustls queued; the handshake error is ours.
        let _ = session.flush();
        let _ = session.tcp().shutdown(std::net::Shutdown::Both);
        return Err(io::Error::new(
            e.kind(),
            format!("TLS handshake failed: {e}"),
        ));
    }
    Ok(TlsLink { session })
}

enum Session {
    Client(StreamOwned<ClientConnection, TcpStream>),
    Server(StreamOwned<ServerConnection, TcpStream>),
}

impl Session {
    fn tcp(&self) -> &TcpStream {
        match self {
            Session::Client(s) => &s.sock,
            Session::Server(s) => &s.sock,
        }
    }
}

impl Read for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Session::Client(s) => s.read(buf),
            Session::Server(s) => s.read(buf),
        }
    }
}

impl Write for Session {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Session::Client(s) => s.write(buf),
            Session::Server(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Session::Client(s) => s.flush(),
            Session::Server(s) => s.flush(),
        }
    }
}

/// A migration link over mutual TLS, authenticated both ways.
pub struct TlsLink {
    session: Session,
}

impl std::fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLink")
            .field("peer", &self.peer())
            .finish_non_exhaustive()
    }
}

impl Read for TlsLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.session.read(buf)
    }
}

impl Write for TlsLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.session.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.session.flush()
    }
}

impl Link for TlsLink {
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.session.tcp().set_timeouts(timeout)
    }

    fn low_latency(&self) -> io::Result<()> {
        self.session.tcp().low_latency()
    }

    fn close(&self) {
        // No close_notify (it needs the session mutably, and `close` may race a blocked
        // read); the peer sees the TCP end, and every section carries its own length and crc.
        self.session.tcp().close();
    }

    fn peer(&self) -> String {
        format!("{} (TLS)", self.session.tcp().peer())
    }
}
