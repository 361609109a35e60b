//! Every subcommand of the binary against hostile arguments and files (issue 16: "no panic on any
//! argument or input; usage errors exit 2, runtime errors 1, with a message that names the
//! problem").

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_lm_cli::inspect::MAX_INPUT_LEN;

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtio-lm"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The command may refuse before reading everything: a broken pipe is its right.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

fn run(args: &[&str]) -> Output {
    run_with_stdin(args, &[])
}

/// Exits with `code`, says nothing about a panic, and its standard error mentions `needle`.
fn assert_fails(args: &[&str], out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: {needle:?} missing from: {err}"
    );
}

/// A temporary file unique to this process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(bytes: &[u8]) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "virtio-lm-hostile-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A field header: type, flags, length (spec-decisions §5).
fn header(field_type: u16, flags: u16, length: u32) -> Vec<u8> {
    let mut h = field_type.to_le_bytes().to_vec();
    h.extend(flags.to_le_bytes());
    h.extend(length.to_le_bytes());
    h
}

/// A real context (the blk sample) as bytes.
fn sample() -> Vec<u8> {
    let out = run(&["inspect", "--sample", "blk", "--output", "-"]);
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// `inspect`: wrong arguments exit 2; unreadable, empty, oversized, truncated, trailing and
/// unknown-field inputs exit 1 naming the problem (byte offsets, hex field types).
#[test]
fn inspect_refuses_hostile_arguments_and_files() {
    let usage: &[(&[&str], &str)] = &[
        (&["inspect"], "required"),
        (&["inspect", "--sample", "scsi"], "--sample"),
        (&["inspect", "--profile", "v2", "-"], "--profile"),
        (
            &["inspect", "--sample", "blk", "some-file"],
            "cannot be used",
        ),
        (&["inspect", "--output", "x", "-"], "--output"),
        (&["inspect", "--packed", "-"], "--packed"),
        (&["inspect", "--no-such-flag", "-"], "--no-such-flag"),
    ];
    for (args, needle) in usage {
        assert_fails(args, &run(args), 2, needle);
    }

    let good = sample();
    let mut trailing = good.clone();
    trailing.extend([0xde, 0xad]);
    let mut unknown = header(0x0000, 0, 0); // START_MARKER
    unknown.extend(header(0x0420, 0, 0));
    unknown.extend(header(0xffff, 0, 0));
    let mut oversized_field = header(0x0000, 0, 0);
    oversized_field.extend(header(0x0001, 0, u32::MAX));
    let noise: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let files: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "empty"),
        (good[..good.len() - 3].to_vec(), "byte"),
        (trailing, "2 trailing byte(s) after END_MARKER"),
        (unknown, "0x0420"),
        (oversized_field, "exceeds the limit"),
        (noise, "byte"),
    ];
    for (bytes, needle) in &files {
        let file = TempFile::new(bytes);
        let args = ["inspect", file.arg()];
        let out = run(&args);
        assert_fails(&args, &out, 1, needle);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("FieldType("));
        let from_stdin = run_with_stdin(&["inspect", "--json", "-"], bytes);
        assert_fails(&args, &from_stdin, 1, needle);
    }

    let dir = std::env::temp_dir();
    let runtime: &[(&[&str], &str)] = &[
        (&["inspect", "/nonexistent/virtio-lm/ctx"], "cannot open"),
        (&["inspect", dir.to_str().unwrap()], "directory"),
        (&["inspect", "/dev/zero"], "larger than"),
    ];
    for (args, needle) in runtime {
        assert_fails(args, &run(args), 1, needle);
    }
    // More than the bound on standard input is refused as well (it is not read to the end).
    let too_big = vec![0u8; usize::try_from(MAX_INPUT_LEN).unwrap() + 1];
    let args = ["inspect", "-"];
    assert_fails(&args, &run_with_stdin(&args, &too_big), 1, "larger than");
    let args = [
        "inspect",
        "--sample",
        "blk",
        "--output",
        "/nonexistent/dir/x.ctx",
    ];
    assert_fails(&args, &run(&args), 1, "writing /nonexistent/dir/x.ctx");
}

/// `net-echo`: out-of-range, malformed and unresolvable arguments exit 2; an address it cannot
/// bind exits 1; a host name resolves.
#[test]
fn net_echo_refuses_hostile_arguments() {
    let usage: &[(&[&str], &str)] = &[
        (&["net-echo"], "--listen"),
        (&["net-echo", "--listen"], "--listen"),
        (&["net-echo", "--listen", "127.0.0.1:99999"], "--listen"),
        (
            &["net-echo", "--listen", "no-such-host.invalid:9"],
            "--listen",
        ),
        (
            &["net-echo", "--listen", "127.0.0.1:0", "--seconds", "-1"],
            "'-1'",
        ),
        (
            &["net-echo", "--listen", "127.0.0.1:0", "--seconds", "x"],
            "--seconds",
        ),
        (
            &[
                "net-echo",
                "--listen",
                "127.0.0.1:0",
                "--seconds",
                "18446744073709551615",
            ],
            "not in 0..=31536000",
        ),
        (
            &[
                "net-echo",
                "--listen",
                "127.0.0.1:0",
                "--seconds",
                "99999999999999999999999",
            ],
            "--seconds",
        ),
    ];
    for (args, needle) in usage {
        assert_fails(args, &run(args), 2, needle);
    }
    // TEST-NET-1 (RFC 5737) is never a local address.
    let args = ["net-echo", "--listen", "192.0.2.1:9", "--seconds", "0"];
    assert_fails(&args, &run(&args), 1, "cannot bind 192.0.2.1:9");

    let out = run(&["net-echo", "--listen", "localhost:0", "--seconds", "0"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("net-echo: listening on 127.0.0.1:") && text.contains("datagrams echoed"),
        "{text}"
    );
}

/// The top level: no subcommand, an unknown one, or none of the arguments clap knows exit 2;
/// `--help` and `--version` succeed.
#[test]
fn top_level_arguments() {
    for args in [&[][..], &["no-such-command"][..], &["--frobnicate"][..]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
    for args in [["--help"], ["--version"]] {
        assert!(run(&args).status.success(), "{args:?}");
    }
}

/// Runs `scripts/NAME` with `args` under bash.
fn script(name: &str, args: &[&str]) -> Output {
    let path = format!("{}/../../scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    Command::new("bash").arg(path).args(args).output().unwrap()
}

/// `scripts/bench-queue`: a missing or malformed `--runs` is a usage error (exit 2, message
/// naming `--runs`) before anything is built; `--help` says how long a run takes.
#[test]
fn bench_queue_refuses_bad_runs() {
    let bench = |args: &[&str]| script("bench-queue", args);
    for args in [
        &["--runs"][..],
        &["--runs", "x"],
        &["--runs", "0"],
        &["--runs", "-2"],
        &["--runs", "101"],
        &["--runs", "99999999999999999999999"],
        &["--runs=1e3"],
        &["--quick", "--runs", ""],
    ] {
        let out = bench(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--runs"), "{args:?}: {err}");
        assert!(!err.contains("Traceback"), "{args:?}: {err}");
    }
    let help = bench(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("How long: one run"));
}

/// `scripts/mutants`: a missing `-C` directory, an unknown option or group is a usage error
/// (exit 2) before cargo-mutants is looked for or anything is mutated.
#[test]
fn mutants_refuses_bad_arguments() {
    for (args, needle) in [
        (&["-C"][..], "-C"),
        (&["-C", "/nonexistent/virtio-lm"], "-C"),
        (&["--bogus"], "--bogus"),
        (&["status", "no-such-group"], "no-such-group"),
    ] {
        let out = script("mutants", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(script("mutants", &["--help"]).status.success());
}

/// `conform` and `vhost-user-blk`: values outside what the options allow are usage errors
/// (exit 2) naming the option; an image that cannot be opened is a runtime error (exit 1).
#[test]
fn conform_and_vhost_user_blk_refuse_hostile_arguments() {
    let socket =
        std::env::temp_dir().join(format!("virtio-lm-hostile-{}.sock", std::process::id()));
    let socket = socket.to_str().unwrap();
    // `vhost-user-blk` on `socket` serving `image`, with `extra` options.
    let serve = |image: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["vhost-user-blk", "--socket", socket, "--image", image];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    let cases = [
        (
            vec!["conform".into(), "--profile".into(), "bogus".into()],
            2,
            "--profile",
        ),
        (
            vec!["conform".into(), "--device".into(), "disk".into()],
            2,
            "--device",
        ),
        (serve("x", &["--num-queues", "0"]), 2, "--num-queues"),
        (serve("x", &["--num-queues", "65"]), 2, "--num-queues"),
        (serve("x", &["--queue-size", "1"]), 2, "--queue-size"),
        (serve("x", &["--io-threads", "0"]), 2, "--io-threads"),
        (serve("x", &["--io-threads", "17"]), 2, "--io-threads"),
        (
            serve("/nonexistent/virtio-lm.img", &[]),
            1,
            "/nonexistent/virtio-lm.img",
        ),
    ];
    for (args, code, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_fails(&args, &out, code, needle);
    }
    let missing_image = ["vhost-user-blk", "--socket", socket];
    assert_fails(&missing_image, &run(&missing_image), 2, "--image");
    let _ = std::fs::remove_file(socket);
}

/// `bench-vhost-user-blk` and `scripts/bench-vhost-user`: values outside what the options allow
/// are usage errors (exit 2) naming the option, checked before anything connects or builds; a
/// socket nobody listens on, or a peer that hangs up instead of speaking vhost-user, is a
/// runtime error (exit 1) naming the socket, never a panic.
#[test]
fn bench_vhost_user_blk_refuses_hostile_arguments_and_peers() {
    let dir = TempFile::new(b"");
    let socket = format!("{}.sock", dir.arg());
    let bench = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["bench-vhost-user-blk", "--socket", &socket];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    for (extra, needle) in [
        (&["--qd", "0"][..], "--qd"),
        (&["--qd", "65"], "--qd"),
        (&["--bs", "4097"], "--bs"),
        (&["--bs", "128k"], "--bs"),
        (&["--bs", "k"], "--bs"),
        (&["--seconds", "0"], "--seconds"),
        (&["--ring", "twisted"], "--ring"),
        (&["--rw", "seqread"], "--rw"),
    ] {
        let args = bench(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_fails(&args, &run(&args), 2, needle);
    }
    let no_socket = ["bench-vhost-user-blk"];
    assert_fails(&no_socket, &run(&no_socket), 2, "--socket");
    // Nobody listens yet.
    let args = bench(&["--seconds", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_fails(&args, &run(&args), 1, &socket);
    // A peer that accepts and hangs up at once.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let peer = std::thread::spawn(move || drop(listener.accept()));
    assert_fails(&args, &run(&args), 1, &socket);
    peer.join().unwrap();
    let _ = std::fs::remove_file(&socket);

    for args in [
        &["--runs", "0"][..],
        &["--seconds", "601"],
        &["--ring"],
        &["--bogus"],
    ] {
        let out = script("bench-vhost-user", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
    let help = script("bench-vhost-user", &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("vhost_user_blk_vs_qsd_qd32"));
}
