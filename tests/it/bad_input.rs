//! Bad input gets a clear error naming the file and what is wrong — from the library as a typed
//! error, and from the CLI as exit code 1 with the message on stderr and nothing on stdout.

use chunkheap::formats;
use chunkheap::reduce::stats;

use crate::util::{data, data_dir, parse_py_json, run};

fn bad_cases() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(data_dir().join("answers.json")).unwrap();
    let v = parse_py_json(&text);
    v["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["source"].as_str().unwrap().to_string(),
                b["expect"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The error for a bad source, from opening it or from reading all of it.
fn library_error(src: &str) -> String {
    match formats::open(src).and_then(|s| stats(s.as_ref())) {
        Ok(s) => panic!("{src}: expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn file_part(rel: &str) -> &str {
    let path = rel.split('#').next().unwrap();
    path.rsplit('/').next().unwrap()
}

#[test]
fn every_bad_fixture_fails_with_a_message_naming_file_and_problem() {
    let cases = bad_cases();
    assert!(cases.len() >= 10);
    let mut bad = Vec::new();
    for (rel, expect) in cases {
        let msg = library_error(&data(&rel));
        if !msg.to_lowercase().contains(&expect.to_lowercase()) || !msg.contains(file_part(&rel)) {
            bad.push(format!(
                "{rel}: message {msg:?} should name {:?} and contain {expect:?}",
                file_part(&rel)
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn cli_exits_1_on_every_bad_fixture() {
    for (rel, expect) in bad_cases() {
        for cmd in ["stats", "info"] {
            let out = run(&[cmd, &data(&rel)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            // `info` only reads metadata, so data-level damage (a short chunk) is found by `stats`.
            if cmd == "info" && out.status.success() {
                continue;
            }
            assert_eq!(out.status.code(), Some(1), "{cmd} {rel}: {stderr}");
            assert!(out.stdout.is_empty(), "{cmd} {rel}: stdout should be empty");
            assert!(
                stderr.starts_with("chunkheap: error: "),
                "{cmd} {rel}: {stderr}"
            );
            assert!(stderr.contains(file_part(&rel)), "{cmd} {rel}: {stderr}");
            assert!(!stderr.contains("panicked"), "{cmd} {rel}: {stderr}");
            if cmd == "stats" {
                assert!(
                    stderr.to_lowercase().contains(&expect.to_lowercase()),
                    "{rel}: {stderr}"
                );
            }
        }
    }
}

#[test]
fn missing_file_unknown_format_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.npy");
    let out = run(&["stats", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.npy"));

    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    let out = run(&["info", txt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("notes.txt") && err.contains("unknown format"),
        "{err}"
    );

    let out = run(&[
        "gen",
        dir.path().join("x.npy").to_str().unwrap(),
        "--shape",
        "10",
        "--dtype",
        "f16",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("unknown dtype \"f16\""), "{err}");

    let out = run(&[
        "gen",
        dir.path().join("x.csv").to_str().unwrap(),
        "--shape",
        "10",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("x.csv") && err.contains("extension"), "{err}");

    // A column on a format without columns.
    let out = run(&["stats", &format!("{}#x", data("npy/f64.npy"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("f64.npy") && err.contains("column"), "{err}");
}

#[test]
fn failed_convert_leaves_no_output_and_input_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // A Zarr source whose second chunk is short: the conversion fails midway.
    let src = data("bad/short_chunk.zarr");
    let before = snapshot(std::path::Path::new(&src));
    for out in ["out.npy", "out.zarr"] {
        let target = dir.path().join(out);
        let res = run(&["convert", &src, target.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{err}");
        assert!(err.contains("short_chunk.zarr"), "{err}");
        assert!(
            !target.exists(),
            "{out} should not exist after a failed convert"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    assert_eq!(
        before,
        snapshot(std::path::Path::new(&src)),
        "input was modified"
    );

    // Converting onto the input itself is refused.
    let f = data("npy/f64.npy");
    let res = run(&["convert", &f, &f]);
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).contains("replace the input"));
}

/// Every file under `p` with its bytes.
fn snapshot(p: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            out.push((d.clone(), std::fs::read(&d).unwrap()));
        }
    }
    out.sort();
    out
}
