//! The batch-script language and the engine commands end to end through the real binary:
//! `eval`, `run`, `sort`, `hist`, `quantile` — results against NumPy's answers or exact
//! arithmetic, stdout/stderr discipline, exit codes, error positions, and the managed heap
//! (cycles holding arrays collected, spill files released).

use std::path::Path;

use crate::util::{data, parse_py_json, run, run_ok};

fn make(dir: &Path, name: &str, shape: &str, extra: &[&str]) -> String {
    let p = dir.join(name).to_string_lossy().into_owned();
    let mut args = vec!["gen", p.as_str(), "--shape", shape];
    args.extend(extra);
    run_ok(&args);
    p
}

#[test]
fn eval_scalars_tuples_json_and_files() {
    let dir = tempfile::tempdir().unwrap();
    // arange: sum(a*2+b) with a = b = 0..n-1 is 3 n(n-1)/2.
    let a = make(dir.path(), "a.npy", "100000", &["--dist", "arange"]);
    let b = make(
        dir.path(),
        "b.zarr",
        "100000",
        &["--dist", "arange", "--chunks", "777"],
    );
    let (ba, bb) = (format!("a={a}"), format!("b={b}"));
    let out = run_ok(&["eval", "sum(a*2+b)", &ba, &bb]);
    assert_eq!(out.trim(), "14999850000.0");
    let j = parse_py_json(&run_ok(&[
        "eval",
        "--json",
        "min(a), max(b), argmax(a*2-b)",
        &ba,
        &bb,
    ]));
    assert_eq!(j["value"], serde_json::json!([0.0, 99999.0, 99999]));
    // Identical output for any thread count.
    let one = run_ok(&["--threads", "1", "eval", "std(a*0.5+b, ddof=1)", &ba, &bb]);
    let seven = run_ok(&["--threads", "7", "eval", "std(a*0.5+b, ddof=1)", &ba, &bb]);
    assert_eq!(one, seven);
    // An array result goes to a file, atomically; then reads back.
    let c = dir.path().join("c.npy");
    let r = run(&["eval", "a*2+b", &ba, &bb, "-o", c.to_str().unwrap()]);
    assert!(r.status.success() && r.stdout.is_empty(), "{r:?}");
    let back = run_ok(&["eval", "c[99999], len(c)", &format!("c={}", c.display())]);
    assert_eq!(
        back.split_whitespace().collect::<Vec<_>>(),
        ["299997.0", "100000"]
    );
    // Without -o, a large array is refused with a hint; nothing on stdout.
    let r = run(&["eval", "a*2", &ba]);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stdout.is_empty());
    assert!(String::from_utf8_lossy(&r.stderr).contains("-o"));
}

#[test]
fn eval_errors_name_the_position() {
    let a = format!("x={}", data("expr/xf64.npy"));
    let r = run(&["eval", "sum(x +* 2)", &a]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("<expr>:1:8: SyntaxError"), "{err}");
    assert!(
        err.contains("sum(x +* 2)") && err.contains("       ^"),
        "{err}"
    );
    let r = run(&["eval", "x + y", &a]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("NameError: name 'y' is not defined"));
    let r = run(&["eval", "x + load('/nonexistent.npy')", &a]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nonexistent.npy"));
    let r = run(&["eval", "x", "nonsense"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("NAME=SOURCE"));
    let m = format!("m={}", data("expr/row.npy"));
    let r = run(&["eval", "x + m", &a, &m]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("ValueError") && err.contains("(16,) (4,)"),
        "{err}"
    );
}

#[test]
fn scripts_build_cycles_that_gc_collects_with_their_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let a = make(dir.path(), "a.npy", "300000", &["--dist", "normal"]);
    let script = dir.path().join("cycles.chs");
    std::fs::write(
        &script,
        r#"
a = load(sys.argv[1])
def objs():
    # Containers, arrays, expressions and chunks (interned constants like strings aside).
    k = heap.stats()["by_kind"]
    out = []
    for name in ["list", "dict", "tuple", "array", "expr", "chunk"]:
        out.append(k.get(name, 0))
    return out
# Every global the test uses exists (as None) before the baseline is taken.
l = None
ring = None
d = None
during = None
n = None
now = None
base_objects = None
gc.collect()
base_objects = objs()
# A self-referencing list, and a ring of dicts each holding a persisted (heap) array.
l = []
l.append(l)
ring = []
for i in range(4):
    d = {"data": persist(a * (i + 1)), "i": i}
    ring.append(d)
for i in range(4):
    ring[i]["next"] = ring[(i + 1) % 4]
during = heap.stats()
assert during["bytes"] + during["spilled"] >= 4 * 300000 * 8
during = None
l = None
ring = None
d = None
n = gc.collect()
now = objs()
now[0] = now[0] - 1  # the list `base_objects` itself
print("collected", n, "objects back", now == base_objects)
after = heap.stats()
print("chunk bytes", after["bytes"], after["spilled"], "spill files", after["spill_files"])
"#,
    )
    .unwrap();
    // A budget smaller than the persisted arrays forces spills.
    let out = run_ok(&[
        "--memory-limit",
        "8MiB",
        "--temp-dir",
        spill.to_str().unwrap(),
        "run",
        script.to_str().unwrap(),
        &a,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let n: u64 = lines[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n >= 1 + 4 + 4, "{out}");
    assert!(lines[0].ends_with("objects back True"), "{out}");
    assert_eq!(lines[1], "chunk bytes 0 0 spill files 0", "{out}");
    // The heap's spill directory is gone with the process.
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
}

#[test]
fn script_errors_have_traceback_and_leave_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.npy");
    let script = dir.path().join("bad.chs");
    std::fs::write(
        &script,
        format!(
            "def f(x):\n    return x + undefined_name\n\na = arange(10)\nsave(a * 2, {:?})\nf(a)\n",
            out.to_str().unwrap()
        ),
    )
    .unwrap();
    let r = run(&["run", script.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("bad.chs:2:"), "{err}");
    assert!(err.contains("NameError"), "{err}");
    assert!(err.contains("in f"), "{err}");
    // The save before the error completed (whole file); no partial temporaries remain.
    assert!(out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Standard input.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chunkheap"))
        .args(["run", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"print(sum(arange(5)), 7 // 2, -7 % 3)\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "10 3 2\n");
}

#[test]
fn sort_hist_and_quantile_commands_match_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let x = data("expr/xf64.npy");
    let sorted = dir.path().join("s.npy");
    run_ok(&["sort", &x, "-o", sorted.to_str().unwrap()]);
    let v = run_ok(&["eval", "s", &format!("s={}", sorted.display())]);
    // NumPy's SIMD sort writes -0.0 for both zeros; ours keeps the input's 0.0 (equal values).
    assert_eq!(
        v.trim(),
        "array([-inf, -3.5, -2.0, -1.0, -0.0, 0.0, 0.25, 0.5, 1.0, 2.5, 3.0, 7.0, 100.0, 1e+300, inf, nan])"
    );
    let c = data("expr/clean.npy");
    // np.histogram(clean, bins=4) and np.quantile(clean, [0.1, 0.5, 0.9]) from NumPy 2.4.
    let h = parse_py_json(&run_ok(&["hist", &c, "--bins", "4", "--json"]));
    assert_eq!(h["counts"], serde_json::json!([15, 0, 0, 1]));
    let h = parse_py_json(&run_ok(&[
        "hist", &c, "--bins", "3", "--range", "-5,5", "--json",
    ]));
    assert_eq!(h["counts"], serde_json::json!([2, 6, 2]));
    let q = parse_py_json(&run_ok(&["quantile", &c, "0.1", "0.5", "0.9", "--json"]));
    let want = [-2.85, 1.0, 200.1];
    for (g, w) in q["values"].as_array().unwrap().iter().zip(want) {
        assert!(
            (g.as_f64().unwrap() - w).abs() < 1e-9 * w.abs().max(1.0),
            "{q}"
        );
    }
    let r = run(&["quantile", &c, "1.5"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("1.5"));
}

#[test]
fn hist_and_plot_write_pngs_of_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let x = make(dir.path(), "x.npy", "200000", &["--dist", "normal"]);
    let png = dir.path().join("h.png");
    let svg = dir.path().join("h.svg");
    let out = run(&[
        "hist",
        &x,
        "--bins",
        "30",
        "--png",
        png.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    // The counts table is on stdout; the paths written on stderr.
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 31, "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("h.png"));
    let env = dir.path().join("e.png");
    run_ok(&["plot", &x, "-o", env.to_str().unwrap(), "--width", "500"]);
    for p in [&png, &env] {
        let b = std::fs::read(p).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{p:?}");
        let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
        assert_eq!((w, h), (1024, 640));
        assert!(
            b.len() > 10_000,
            "a plot, not a blank image: {} bytes",
            b.len()
        );
    }
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let bad = run(&["plot", &x, "-o", dir.path().join("e.gif").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".png or .svg"));
}

#[test]
fn matmul_and_transpose_in_expressions_match_numpy() {
    // np.load('mi32.npy'): (m @ m.T).sum() == 15201, (m @ m.T)[1, 2] == -1574;
    // mf32: (f.T @ f).sum() == 720.0 (NumPy 2.4).
    let m = format!("m={}", data("expr/mi32.npy"));
    let f = format!("f={}", data("expr/mf32.npy"));
    let out = run_ok(&[
        "eval",
        "sum(m @ m.T), (m @ m.T)[1, 2], sum(f.T @ f)",
        &m,
        &f,
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["15201", "-1574", "720.0"]
    );
    let r = run(&["eval", "m @ f", &m, &f]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("mismatch"));
}

/// `x @ y` saved straight from `eval -o` (computed into the file), saved from a script before
/// and after other uses, and under a budget that sends it through a temporary store: the same
/// bytes every time, and elements equal to a fused dot product of a row and a column.
#[test]
fn matrix_products_save_the_same_bytes_whichever_way() {
    let dir = tempfile::tempdir().unwrap();
    let x = make(
        dir.path(),
        "x.npy",
        "200,100",
        &["--dist", "normal", "--seed", "1"],
    );
    let y = make(
        dir.path(),
        "y.npy",
        "100,530",
        &["--dist", "normal", "--seed", "2"],
    );
    let (bx, by) = (format!("x={x}"), format!("y={y}"));
    let out = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    run_ok(&["eval", "x @ y", &bx, &by, "-o", &out("c1.npy")]);
    let script = dir.path().join("s.py");
    std::fs::write(
        &script,
        format!(
            "c = load({x:?}) @ load({y:?})\nsave(c, {:?})\nt = sum(c)\nsave(c, {:?})\nprint(t)\n",
            out("c2.npy"),
            out("c3.npy")
        ),
    )
    .unwrap();
    run_ok(&["run", script.to_str().unwrap()]);
    // 848 KB of product, over an eighth of 4 MiB: computed into a temporary store first.
    run_ok(&["--memory-limit", "4MiB", "run", script.to_str().unwrap()]);
    let c1 = std::fs::read(out("c1.npy")).unwrap();
    assert!(c1.len() > 200 * 530 * 8);
    for n in ["c2.npy", "c3.npy"] {
        assert!(
            std::fs::read(out(n)).unwrap() == c1,
            "{n} differs from eval -o"
        );
    }
    let bc = format!("c={}", out("c1.npy"));
    let got = run_ok(&[
        "eval",
        "c[3, 7], c[199, 529], sum(x[3] * y[:, 7]), sum(x[199] * y[:, 529])",
        &bc,
        &bx,
        &by,
    ]);
    let v: Vec<f64> = got
        .split_whitespace()
        .map(|s| {
            s.trim_matches(|c| c == '(' || c == ')' || c == ',')
                .parse()
                .unwrap()
        })
        .collect();
    for (c, dot) in [(v[0], v[2]), (v[1], v[3])] {
        assert!(
            (c - dot).abs() <= 1e-12 * 100.0 * dot.abs().max(1.0),
            "{got}"
        );
    }
}

/// `x @ y` saved by `eval -o` to a `.npy` under budgets too small for the kernel to write it in
/// spans, so the product (7.6 MiB, over an eighth of each budget) is computed into a temporary
/// store of tiles and copied out: the copy holds an output chunk and two tiles per chunk in flight,
/// as many as the budget holds, where it used to hold a second chunk-sized buffer per chunk,
/// uncounted, and waited for memory it held itself until the budget's 10 s stall timeout
/// failed it ("chunk buffer asked for 7.6 MiB with 7.6 MiB in use"). Where not even one
/// chunk's copy fits, the kernel computes straight into the file; below what that needs, the
/// plan refuses at once, naming the limit. The same bytes as without a budget every time.
#[test]
fn matrix_products_copied_out_of_tiles_fit_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let x = make(
        dir.path(),
        "x.npy",
        "1000,64",
        &["--dist", "normal", "--seed", "1"],
    );
    let y = make(
        dir.path(),
        "y.npy",
        "64,1000",
        &["--dist", "normal", "--seed", "2"],
    );
    let (bx, by) = (format!("x={x}"), format!("y={y}"));
    let out = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    run_ok(&["eval", "x @ y", &bx, &by, "-o", &out("want.npy")]);
    let want = std::fs::read(out("want.npy")).unwrap();
    assert!(want.len() > 1000 * 1000 * 8);
    // 10 MiB: straight into the file; 16 and 20 MiB: one chunk copied at a time; 32 MiB: two.
    for limit in ["10MiB", "16MiB", "20MiB", "32MiB"] {
        let name = format!("c{limit}.npy");
        let t = std::time::Instant::now();
        let args = ["--memory-limit", limit, "--threads", "2", "eval", "x @ y"];
        run_ok(&[&args[..], &[&bx, &by, "-o", &out(&name)]].concat());
        let secs = t.elapsed().as_secs_f64();
        assert!(secs < 5.0, "{limit}: {secs:.1} s, waited on the budget");
        assert!(
            std::fs::read(out(&name)).unwrap() == want,
            "{limit}: differs from the product without a budget"
        );
    }
    let t = std::time::Instant::now();
    let r = run(&[
        "--memory-limit",
        "6MiB",
        "--threads",
        "2",
        "eval",
        "x @ y",
        &bx,
        &by,
        "-o",
        &out("small.npy"),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("6.0 MiB") && err.contains("too little"),
        "{err}"
    );
    assert!(t.elapsed().as_secs_f64() < 5.0, "refused late: {err}");
    assert!(!Path::new(&out("small.npy")).exists());
}

#[test]
fn example_scripts_run_and_match_numpy_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let ex = |n: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/scripts")
            .join(n)
            .to_string_lossy()
            .into_owned()
    };
    let x = make(
        dir.path(),
        "x.npy",
        "50000",
        &["--dist", "normal", "--seed", "3"],
    );
    let z = dir.path().join("z.zarr");
    run_ok(&["run", &ex("zscore.chs"), &x, z.to_str().unwrap()]);
    let j = parse_py_json(&run_ok(&[
        "eval",
        "--json",
        "mean(z), std(z)",
        &format!("z={}", z.display()),
    ]));
    let v = j["value"].as_array().unwrap();
    assert!(v[0].as_f64().unwrap().abs() < 1e-12 && (v[1].as_f64().unwrap() - 1.0).abs() < 1e-12);
    // Daily means: arange data makes every day's mean known exactly.
    let s = make(dir.path(), "s.npy", "3,72", &["--dist", "arange"]);
    let d = dir.path().join("d.npy");
    let out = run_ok(&["run", &ex("daily_mean.chs"), &s, d.to_str().unwrap()]);
    assert!(out.contains("sensors 3 days 3"), "{out}");
    let got = run_ok(&["eval", "d", &format!("d={}", d.display())]);
    // Sensor r, day k covers r*72 + 24k .. +23: mean r*72 + 24k + 11.5.
    assert_eq!(
        got.trim(),
        "array([[11.5, 35.5, 59.5], [83.5, 107.5, 131.5], [155.5, 179.5, 203.5]])"
    );
    let rep = run_ok(&["run", &ex("report.chs"), &x, "5"]);
    assert!(
        rep.contains("values: 50000  NaN: 0") && rep.contains("q 0.5 ="),
        "{rep}"
    );
    for name in ["basics.chs", "gc_tour.chs", "word_report.chs"] {
        run_ok(&["run", &ex(name)]);
    }
}

/// A script's `histogram(a)` after `max(a)` takes its range from the pass `max` made: the same
/// counts and edges as without it, for floats and integers; and a NaN still gives NumPy's error.
/// (The kernel's unit test `histogram_with_stats_is_the_histogram` covers every dtype; changing
/// the bins on the cached path alone makes this test fail, so the cached path is the one run.)
#[test]
fn histogram_after_a_reduction_reuses_its_extremes() {
    let dir = tempfile::tempdir().unwrap();
    let x = make(dir.path(), "x.npy", "300000", &["--dist", "normal"]);
    let i = make(
        dir.path(),
        "i.npy",
        "100000",
        &["--dtype", "i64", "--range", "-1000,1000"],
    );
    let script = dir.path().join("h.py");
    std::fs::write(
        &script,
        format!(
            "for p in [{x:?}, {i:?}]:\n    a = load(p)\n    print(histogram(a, 30))\n    \
             print(max(a), min(a))\n    print(histogram(a, 30))\n    print(histogram(a, 7))\n"
        ),
    )
    .unwrap();
    let out = run_ok(&["run", script.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    for k in [0, 4] {
        assert!(lines[k].contains("array("), "{out}");
        assert_eq!(lines[k], lines[k + 2], "{out}");
    }
    let fresh = dir.path().join("h7.py");
    std::fs::write(
        &fresh,
        format!("for p in [{x:?}, {i:?}]:\n    print(histogram(load(p), 7))\n"),
    )
    .unwrap();
    let want = run_ok(&["run", fresh.to_str().unwrap()]);
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(want, [lines[3], lines[7]], "{out}");
    // NaN: the error NumPy gives, whether or not the range comes from an earlier pass.
    let n = dir.path().join("n.npy");
    let nan = dir.path().join("nan.py");
    std::fs::write(
        &nan,
        format!(
            "a = load({x:?})\nsave(where(a > 3, float('nan'), a), {:?})\nb = load({:?})\nm = max(b)\n\
             print(histogram(b, 5))\n",
            n.to_str().unwrap(),
            n.to_str().unwrap()
        ),
    )
    .unwrap();
    let r = run(&["run", nan.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("not finite"), "{err}");
}
