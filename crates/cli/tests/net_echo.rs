//! The `virtio-lm net-echo` binary (issue 5: "the peer that tests and the demo use; it echoes
//! frames back to whatever address last sent"): it prints its address, echoes to the last
//! sender, follows a sender that changes address, and stops by itself after `--seconds`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::assert_stdout_mentions;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_virtio-lm"))
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Starts `net-echo --listen 127.0.0.1:0` with `extra` arguments; returns it, its output and
/// the first line (`net-echo: listening on ADDR`).
fn spawn(extra: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let mut child = binary()
        .args(["net-echo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, out, line)
}

/// Waits (bounded) for the child to exit by itself; kills it otherwise.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn echoes_to_the_last_sender_and_stops_by_itself() {
    // Long enough that a loaded machine still gets both frames through before the stop.
    let (mut child, out, line) = spawn(&["--seconds", "8"]);
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("net-echo: listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let (a, b) = (socket(), socket());
    let mut buf = [0u8; 64];
    a.send_to(b"frame one", addr).unwrap();
    let (n, from) = a.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"frame one"[..], addr));
    b.send_to(b"frame two", addr).unwrap();
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"frame two", "the echo follows the new sender");

    let status = wait_exit(&mut child, Duration::from_secs(60)).expect("stopped after --seconds");
    assert!(status.success());
    let rest: Vec<String> = out.lines().map(Result::unwrap).collect();
    assert_eq!(
        rest[0],
        format!("net-echo: peer is now {}", a.local_addr().unwrap())
    );
    assert_eq!(
        rest[1],
        format!("net-echo: peer is now {}", b.local_addr().unwrap())
    );
    assert_eq!(
        rest.last().unwrap(),
        "net-echo: 2 datagrams echoed (18 bytes), 0 send errors, 2 peer changes"
    );
}

#[test]
fn help_explains_the_subcommand() {
    let help = [
        "UDP echo peer",
        "last sent",
        "--listen <HOST:PORT>",
        "SIGTERM",
        "--seconds <N>",
        "Ethernet frame",
    ];
    assert_stdout_mentions(
        binary().args(["net-echo", "--help"]).output().unwrap(),
        &help,
    );
    assert_stdout_mentions(binary().arg("--help").output().unwrap(), &["net-echo"]);
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = binary()
        .args(["net-echo", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("--listen"));
    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    let out = binary()
        .args(["net-echo", "--listen", &taken, "--seconds", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("cannot bind"));
}

/// Issue 16: "SIGINT and SIGTERM print the summary before exit". The handler is installed before
/// the socket is bound, so once the first line is out a signal ends the run cleanly.
#[test]
fn a_signal_prints_the_summary() {
    for signal in ["-INT", "-TERM"] {
        let (mut child, out, line) = spawn(&[]);
        assert!(line.starts_with("net-echo: listening on"), "{line:?}");
        // The shell's built-in `kill`: no procps needed.
        let sent = Command::new("sh")
            .args(["-c", &format!("kill {signal} {}", child.id())])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = wait_exit(&mut child, Duration::from_secs(60)).expect("exits on the signal");
        assert!(status.success(), "{signal}: {status:?}");
        let rest: Vec<String> = out.lines().map(Result::unwrap).collect();
        assert_eq!(
            rest.last().map(String::as_str),
            Some("net-echo: 0 datagrams echoed (0 bytes), 0 send errors, 0 peer changes"),
            "{signal}"
        );
    }
}
