//! What the binary's tests share.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

pub mod control;

/// A small guest so a debug build migrates it quickly.
pub const SMALL_GUEST: [&str; 6] = [
    "--memory",
    "32M",
    "--working-set",
    "8",
    "--dirty-rate",
    "10",
];

/// The run succeeded and its standard output mentions every one of `needles`.
pub fn assert_stdout_mentions(out: Output, needles: &[&str]) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let missing: Vec<_> = needles.iter().filter(|n| !text.contains(*n)).collect();
    assert!(missing.is_empty(), "{missing:?} missing from:\n{text}");
}

/// The run succeeded (else panics naming `what`, with both outputs) and its standard output
/// is one JSON value: a `--json` report.
pub fn json_output(out: Output, what: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Each of `cases` (the arguments, and what the message names) is a usage error: exit status
/// 2, the message on stderr.
pub fn assert_usage_errors(cases: &[(&[&str], &str)]) {
    for (args, needle) in cases {
        let out = binary().args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// A zeroed 8 MiB blk image, `disk.img` in `dir`.
pub fn disk_image(dir: &Path) -> PathBuf {
    let image = dir.join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    image
}

/// The arguments of a small-guest `vm` on the control socket `control`, with blk on `image`
/// and the net tunnel `net` (`LOCAL,REMOTE`), then `extra`.
pub fn vm_args<'a>(
    control: &'a Path,
    image: &'a Path,
    net: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "vm",
        "--control",
        control.to_str().unwrap(),
        "--blk",
        image.to_str().unwrap(),
        "--net",
        net,
    ];
    args.extend_from_slice(&SMALL_GUEST);
    args.extend_from_slice(extra);
    args
}

/// The binary under test.
pub fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_virtio-lm"))
}

/// A unique path in the temp dir for this test process (`tag`, pid and a sequence number).
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("virtio-lm-cli-{tag}-{}-{n}", std::process::id()))
}

/// A child process of the binary, killed when dropped.
pub struct Proc {
    pub child: std::process::Child,
    /// Its stdout lines, read on a thread.
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// Starts the binary with `args` (stderr to `log`).
    pub fn spawn(args: &[&str], log: &std::path::Path) -> Self {
        Self::spawn_command(binary(), args, log)
    }

    /// Starts the binary with `args` inside the network namespace `netns` (`ip netns exec`,
    /// which execs the binary: the child is the binary itself).
    pub fn spawn_in(netns: &str, args: &[&str], log: &std::path::Path) -> Self {
        let mut command = std::process::Command::new("ip");
        command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_virtio-lm")]);
        Self::spawn_command(command, args, log)
    }

    fn spawn_command(
        mut command: std::process::Command,
        args: &[&str],
        log: &std::path::Path,
    ) -> Self {
        use std::io::BufRead;
        let mut child = command
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// The rest of the first stdout line starting with `prefix` (waits up to 60 s).
    pub fn wait_line(&self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
