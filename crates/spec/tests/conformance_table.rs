//! Keeps docs/conformance.md honest: every row must name a test function that exists in the
//! workspace and whose doc comment (or whose file's module doc) cites the row's seed.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module path of a source file as `cargo test` prints it: `src/a/b.rs` and `src/a/b/mod.rs`
/// are `a::b`, `tests/x.rs` is `x`.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?.to_str()?.replace('\\', "/");
    let rest = rel.strip_prefix("crates/")?;
    let (_, inner) = rest.split_once('/')?;
    let inner = inner
        .strip_prefix("src/")
        .or_else(|| inner.strip_prefix("tests/"))?;
    let inner = inner
        .strip_suffix("/mod.rs")
        .or_else(|| inner.strip_suffix(".rs"))?;
    Some(inner.replace('/', "::"))
}

/// Whether `source` defines test `name` and it, or the file, cites `seed` ("seed 003", or
/// "1.4" for a statement of the published virtio 1.4).
fn cites(source: &str, name: &str, seed: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    let wanted = if seed == "1.4" {
        seed.to_owned()
    } else {
        format!("seed {seed}")
    };
    let file_doc_cites = lines
        .iter()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .any(|l| l.to_lowercase().contains(&wanted));
    lines.iter().enumerate().any(|(i, line)| {
        let is_fn = line.trim_start().starts_with(&format!("fn {name}("));
        let doc_cites = lines[..i]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with("///") || t.starts_with("#[")
            })
            .any(|l| l.to_lowercase().contains(&wanted));
        is_fn && (doc_cites || file_doc_cites)
    })
}

/// docs/conformance.md: each row's test exists and cites the row's seed; statuses are `pass`,
/// or `n/a: <reason>` for what the project does not model.
#[test]
fn every_conformance_row_names_a_citing_test() {
    let root = workspace_root();
    let table = fs::read_to_string(root.join("docs/conformance.md")).expect("docs/conformance.md");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| Some((module_of(&root, f)?, fs::read_to_string(f).ok()?)))
        .collect();

    let mut rows = 0;
    for line in table
        .lines()
        .filter(|l| l.starts_with("| 0") || l.starts_with("| 1.4 "))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (seed, test, status) = (cells[1], cells[3].trim_matches('`'), cells[4]);
        assert!(
            matches!(seed, "000" | "001" | "002" | "003" | "004" | "1.4"),
            "bad seed in: {line}"
        );
        // `n/a: why` marks a statement about something the project does not model; its test
        // checks that it stays unmodelled (so the row cannot silently become wrong).
        let not_modelled = status
            .strip_prefix("n/a:")
            .is_some_and(|why| !why.trim().is_empty());
        assert!(
            status == "pass" || not_modelled,
            "row neither passing nor `n/a: <reason>`: {line}"
        );
        let (module, name) = test.rsplit_once("::").unwrap_or(("", test));
        let found = sources.iter().any(|(file_module, source)| {
            // The test's module is the file's module or a `mod tests` inside it.
            (module == file_module || module.starts_with(&format!("{file_module}::")))
                && cites(source, name, seed)
        });
        assert!(found, "no test `{test}` citing seed {seed} (row: {line})");
        rows += 1;
    }
    assert!(rows > 0, "no rows parsed from docs/conformance.md");
}
