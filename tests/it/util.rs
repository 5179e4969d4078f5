//! Shared helpers: paths, running the binary, reading NumPy's answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The committed fixtures folder.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// `data/<rel>` as a source name string.
pub fn data(rel: &str) -> String {
    data_dir().join(rel).to_string_lossy().into_owned()
}

/// Runs the `chunkheap` binary with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chunkheap"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running chunkheap")
}

/// Runs the binary and returns stdout, panicking with both streams if it failed.
#[track_caller]
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "chunkheap {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Parses JSON that may contain Python's `NaN` / `Infinity` tokens (as Python's json writes them);
/// they become the strings "NaN", "Infinity", "-Infinity".
pub fn parse_py_json(text: &str) -> serde_json::Value {
    let mut out = String::with_capacity(text.len() + 64);
    let mut in_str = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if let Some(tok) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(tok);
            out.push('"');
            rest = &rest[tok.len()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out).expect("valid JSON")
}

/// A JSON value as f64, understanding the NaN/Infinity strings.
pub fn as_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        serde_json::Value::Number(n) => n.to_string().parse().ok(),
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// True when `a` and `b` agree to a relative tolerance (NaNs equal, infinities exact).
pub fn close(a: f64, b: f64, rel: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-300
}

/// A temp dir for large test data under `CHUNKHEAP_SCALE_DIR` (default: the system temp dir),
/// removed when dropped.
pub fn scale_dir() -> tempfile::TempDir {
    let base = std::env::var_os("CHUNKHEAP_SCALE_DIR").map_or_else(std::env::temp_dir, Into::into);
    tempfile::tempdir_in(base).unwrap()
}
