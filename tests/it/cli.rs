//! The CLI end to end: gen, info, stats, convert and demo on generated data.

use std::path::Path;

use crate::util::{parse_py_json, run, run_ok};

fn tree_bytes(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if p.is_file() {
        return vec![(String::new(), std::fs::read(p).unwrap())];
    }
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                let rel = e.strip_prefix(p).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&e).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn gen_is_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    for (ext, extra) in [
        ("npy", vec![]),
        ("zarr", vec!["--chunks", "100,7", "--codec", "zstd"]),
        ("arrow", vec!["--chunks", "1000"]),
    ] {
        let shape = if ext == "arrow" { "30011" } else { "301,97" };
        let mut outs = Vec::new();
        for threads in ["1", "2", "7"] {
            let p = dir.path().join(format!("g{threads}.{ext}"));
            let mut args = vec![
                "--threads",
                threads,
                "gen",
                p.to_str().unwrap(),
                "--shape",
                shape,
                "--dist",
                "normal",
                "--seed",
                "9",
            ];
            args.extend(&extra);
            run_ok(&args);
            outs.push(tree_bytes(&p));
        }
        assert!(!outs[0].is_empty());
        assert_eq!(outs[0], outs[1], "{ext}: 1 vs 2 threads");
        assert_eq!(outs[0], outs[2], "{ext}: 1 vs 7 threads");
    }
}

#[test]
fn gen_values_do_not_depend_on_chunking_or_format() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.zarr");
    let c = dir.path().join("c.npy");
    run_ok(&[
        "gen",
        a.to_str().unwrap(),
        "--shape",
        "50,40",
        "--dtype",
        "i32",
        "--seed",
        "5",
        "--range",
        "-50,50",
    ]);
    run_ok(&[
        "gen",
        b.to_str().unwrap(),
        "--shape",
        "50,40",
        "--dtype",
        "i32",
        "--seed",
        "5",
        "--range",
        "-50,50",
        "--chunks",
        "7,9",
    ]);
    run_ok(&["convert", b.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    let s = parse_py_json(&run_ok(&["stats", "--json", a.to_str().unwrap()]));
    assert!(
        s["min"].as_i64().unwrap() >= -50 && s["max"].as_i64().unwrap() < 50,
        "{s}"
    );
}

#[test]
fn arange_stats_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.npy");
    let n: u64 = 1_000_003;
    run_ok(&[
        "gen",
        p.to_str().unwrap(),
        "--shape",
        &n.to_string(),
        "--dtype",
        "i64",
        "--dist",
        "arange",
    ]);
    let s = parse_py_json(&run_ok(&["stats", "--json", p.to_str().unwrap()]));
    assert_eq!(s["sum"].to_string(), (n * (n - 1) / 2).to_string());
    assert_eq!(s["argmax"].as_u64(), Some(n - 1));
    assert_eq!(s["argmin"].as_u64(), Some(0));
    // std of 0..n is sqrt((n^2 - 1) / 12).
    let want = (((n * n - 1) as f64) / 12.0).sqrt();
    let got = s["std"].to_string().parse::<f64>().unwrap();
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
}

#[test]
fn info_and_human_stats() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.zarr");
    run_ok(&[
        "gen",
        p.to_str().unwrap(),
        "--shape",
        "20,30",
        "--chunks",
        "8,8",
        "--codec",
        "zstd:5",
    ]);
    let info = run_ok(&["info", p.to_str().unwrap()]);
    for want in [
        "format      zarr",
        "dtype       f64",
        "shape       (20, 30)",
        "(8, 8)",
        "12 chunks",
        "bytes       4800",
        "byte order  little",
        "zstd",
    ] {
        assert!(info.contains(want), "missing {want:?} in\n{info}");
    }
    let out = run(&["stats", p.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in [
        "count      600",
        "nan_count  0",
        "sum",
        "mean",
        "std",
        "var",
        "min",
        "max",
        "at flat index",
    ] {
        assert!(stdout.contains(key), "missing {key:?} in\n{stdout}");
    }
    // Throughput goes to stderr, never mixed into the results on stdout.
    assert!(String::from_utf8_lossy(&out.stderr).contains("GB/s"));
    assert!(!stdout.contains("GB/s"));
}

#[test]
fn convert_round_trips_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.npy");
    run_ok(&[
        "gen",
        src.to_str().unwrap(),
        "--shape",
        "12345",
        "--dtype",
        "u16",
    ]);
    let z = dir.path().join("s.zarr");
    let a = dir.path().join("s.arrow");
    let back = dir.path().join("back.npy");
    run_ok(&[
        "convert",
        src.to_str().unwrap(),
        z.to_str().unwrap(),
        "--chunks",
        "1000",
        "--codec",
        "gzip",
    ]);
    run_ok(&[
        "convert",
        z.to_str().unwrap(),
        &format!("{}#u", a.display()),
        "--chunks",
        "999",
    ]);
    run_ok(&[
        "--fsync",
        "convert",
        &format!("{}#u", a.display()),
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&back).unwrap());
    let info = run_ok(&["info", a.to_str().unwrap()]);
    assert!(
        info.contains("record batches") && info.contains("13 chunks"),
        "{info}"
    );
}

#[test]
fn demo_runs_and_checks_itself() {
    // The demo's data goes to a temp dir it removes; its plot stays in the temp dir for the user
    // to open. Here that temp dir is ours, so the test leaves nothing behind.
    let tmp = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_chunkheap"))
        .args(["demo", "--size", "3MiB"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}");
    assert_eq!(out.matches("identical to series.npy").count(), 2, "{out}");
    assert!(out.contains("\"count\": 393216"), "{out}");
    assert!(out.contains("peak RSS"), "{out}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["chunkheap-demo-histogram.png"], "{out}");
}

#[test]
fn memory_limit_and_stats_flags() {
    let f = crate::util::data("npy/f64.npy");
    let out = run(&[
        "--memory-limit",
        "1.5G",
        "--stats=json",
        "stats",
        "--json",
        &f,
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let j = parse_py_json(err.lines().last().unwrap());
    assert_eq!(j["budget_limit"].as_u64(), Some(1610612736), "{err}");
    assert!(j["peak_rss"].as_u64().unwrap() > 0);
    assert!(
        j["budget_peak"].as_u64().unwrap() >= 8000,
        "the 8000-byte chunk was reserved: {err}"
    );
    // stdout holds only the result.
    parse_py_json(&String::from_utf8_lossy(&out.stdout));

    // A chunk that cannot fit the budget at all: a clear error naming the budget and the request.
    let out = run(&["--memory-limit", "1KiB", "stats", &f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("memory budget of 1.0 KiB exceeded")
            && err.contains("mapped chunk asked for 8.0 KiB")
            && err.contains("f64.npy"),
        "{err}"
    );

    for bad in ["12XB", "-5M", "0", "lots"] {
        let out = run(&[&format!("--memory-limit={bad}"), "info", &f]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad}: clap rejects bad sizes with usage errors"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad));
    }
}

/// An error still exits with status 1 when stderr cannot be written (a full disk under a log
/// file): writing the message must not panic (status 101).
#[test]
fn an_error_with_stderr_on_a_full_device_still_exits_1() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkheap"))
        .args(["stats", "/nonexistent/chunkheap-missing.npy"])
        .stderr(full)
        .output()
        .expect("running chunkheap");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
