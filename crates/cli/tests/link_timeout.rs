//! Link timeouts (issue 13, "Faults and hostile input": "a stall with no bytes (timeouts on
//! every read and write; `--timeout`)"): `vm --incoming --link-timeout SECS` bounds every read
//! and write of the destination's migration link. A source that connects and then sends
//! nothing fails the incoming migration, named in the destination's status (the read that
//! failed and the section it waited for), and the destination waits for the next source.
//! Only the failure and its name are asserted, never how long it took.

use std::net::TcpStream;

use serde_json::Value;

mod common;
use common::control::Control;
use common::{temp_path, Proc, SMALL_GUEST};

fn last_result(status: &Value) -> Option<&str> {
    status["last_migration"]["result"].as_str()
}

/// A stall with no bytes at all: the destination's first read times out; the migration fails
/// naming the read in section 0, nothing is applied (the destination is `incoming` again).
#[test]
fn a_stall_with_no_bytes_fails_the_incoming_migration_by_name() {
    let dir = temp_path("link-timeout");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("dst.sock");
    let mut args = vec![
        "vm",
        "--control",
        sock.to_str().unwrap(),
        "--incoming",
        "tcp:127.0.0.1:0",
        "--link-timeout",
        "1",
    ];
    args.extend_from_slice(&SMALL_GUEST);
    let dst = Proc::spawn(&args, &dir.join("dst.log"));
    let to = dst.wait_line("vm: incoming on tcp:");
    let mut control = Control::connect(&sock);
    assert_eq!(last_result(&control.status()), None);

    // Connected, silent: held open until the destination has given up on it.
    let silent = TcpStream::connect(to.as_str()).unwrap();
    let s = control.wait("the stalled migration to fail", |s| {
        last_result(s).is_some()
    });
    let result = last_result(&s).unwrap();
    assert!(
        result.starts_with("failed: ") && result.contains("read failed in section 0"),
        "{result}"
    );
    assert_eq!(s["state"], "incoming", "{s:#}");
    drop(silent);
    control.execute(serde_json::json!({"execute": "quit"}));
    drop(dst);
    let _ = std::fs::remove_dir_all(&dir);
}
