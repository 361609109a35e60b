//! What the binary's tests share.

use std::process::Output;

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
