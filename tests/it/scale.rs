//! Scale tests: 4 GiB inputs (and 8192² matmul operands) under a 256 MiB budget, each checked
//! against a reference that reads the files with plain `std::io`. Slow (they write up to 16 GiB),
//! so ignored by default; run them with
//!
//! ```sh
//! cargo test --release --test it scale -- --ignored --nocapture
//! ```
//!
//! Data goes to `CHUNKHEAP_SCALE_DIR` (default: the system temp dir) and is removed afterwards.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chunkheap::heap::{Heap, HeapConfig};
use chunkheap::memory::MemoryBudget;
use chunkheap::memstat;

use crate::util::{parse_py_json, run, scale_dir};

const LIMIT: u64 = 256 << 20;
const SLACK: u64 = 64 << 20;

#[test]
#[ignore = "writes 4 GiB; run with --ignored"]
fn stats_of_4gib_stays_under_a_256mib_budget() {
    let dir = scale_dir();
    let f = dir.path().join("big.npy");
    let f = f.to_str().unwrap();
    let n: u64 = 1 << 29; // 4 GiB of f64
    let out = run(&[
        "--memory-limit",
        "256MiB",
        "gen",
        f,
        "--shape",
        &n.to_string(),
        "--dist",
        "arange",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for threads in ["1", "2"] {
        let out = run(&[
            "--threads",
            threads,
            "--memory-limit",
            "256MiB",
            "--stats=json",
            "stats",
            "--json",
            f,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let mem = parse_py_json(err.lines().last().unwrap());
        let s = parse_py_json(&String::from_utf8_lossy(&out.stdout));
        // The chunked reference: 0, 1, ..., n-1.
        assert_eq!(s["count"].as_u64(), Some(n));
        assert_eq!(s["argmax"].as_u64(), Some(n - 1));
        assert_eq!(s["min"].to_string().parse::<f64>().unwrap(), 0.0);
        let sum: f64 = s["sum"].to_string().parse().unwrap();
        let want = (n as f64) * (n as f64 - 1.0) / 2.0;
        assert!((sum - want).abs() <= 1e-12 * want, "{sum} vs {want}");
        let peak = mem["peak_rss"].as_u64().unwrap();
        eprintln!(
            "threads {threads}: peak RSS {} MiB, budget peak {} MiB, {:.2} s",
            peak >> 20,
            mem["budget_peak"].as_u64().unwrap() >> 20,
            mem["elapsed_s"]
        );
        assert!(
            peak <= LIMIT + SLACK,
            "peak RSS {peak} over {LIMIT} + {SLACK}"
        );
        assert!(mem["budget_peak"].as_u64().unwrap() <= LIMIT);
    }
}

#[test]
#[ignore = "moves 1 GiB through spill files; run with --ignored"]
fn dirty_chunks_beyond_the_budget_spill_and_clean_up() {
    let dir = scale_dir();
    let budget = MemoryBudget::new(LIMIT);
    let heap = Heap::with_config(&HeapConfig {
        budget: Some(budget.clone()),
        temp_dir: Some(dir.path().to_path_buf()),
    })
    .unwrap();
    let base = memstat::read().unwrap().rss;
    memstat::reset_peak();
    let chunk = 8 << 20;
    let n = (1u64 << 30) / chunk as u64; // 1 GiB of intermediates, 4x the budget
    let mut chunks = Vec::new();
    for i in 0..n {
        let mut b = heap.alloc_buffer(chunk).unwrap();
        b.as_mut_slice::<u64>()
            .iter_mut()
            .enumerate()
            .for_each(|(k, v)| *v = i * 1_000_000 + k as u64);
        chunks.push(heap.chunk(b, true).unwrap());
        assert!(budget.used() <= LIMIT);
    }
    let s = heap.stats();
    eprintln!(
        "resident {} MiB, spilled {} MiB in {} files",
        s.chunk_bytes_resident >> 20,
        s.chunk_bytes_spilled >> 20,
        s.spill_files
    );
    assert!(s.chunk_bytes_spilled >= (1 << 30) - LIMIT);
    for (i, c) in chunks.iter().enumerate() {
        let ok = heap
            .with_chunk(c, |b| {
                b.as_slice::<u64>()
                    .iter()
                    .enumerate()
                    .all(|(k, &v)| v == i as u64 * 1_000_000 + k as u64)
            })
            .unwrap();
        assert!(ok, "chunk {i} came back wrong");
    }
    let peak = memstat::read().unwrap().peak_rss;
    eprintln!(
        "peak RSS growth {} MiB (budget {} MiB)",
        peak.saturating_sub(base) >> 20,
        LIMIT >> 20
    );
    assert!(peak.saturating_sub(base) <= LIMIT + SLACK);
    drop(chunks);
    assert_eq!(budget.used(), 0);
    assert_eq!(
        std::fs::read_dir(heap.spill_dir()).unwrap().count(),
        0,
        "spill files removed"
    );
}

// ------------------------------------------------------------------------------------------------
// The execution issue's scale checks: a fused expression, axis reductions, a quantile, a sort and
// a matmul, each on inputs larger than the 256 MiB budget, each checked against a reference that
// reads the files chunk by chunk with plain `std::io` (independent of chunkheap's readers).
// ------------------------------------------------------------------------------------------------

/// Runs the binary under the 256 MiB budget with `--stats=json`; returns stdout and the peak RSS,
/// after checking the peak against limit + slack and the budget's own peak against the limit.
#[track_caller]
fn run_budgeted(label: &str, args: &[&str]) -> String {
    let mut all = vec!["--memory-limit", "256MiB", "--stats=json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{label}: {all:?} failed:\n{err}");
    let mem = parse_py_json(err.lines().last().expect("stats line"));
    let peak = mem["peak_rss"].as_u64().unwrap();
    let budget_peak = mem["budget_peak"].as_u64().unwrap();
    eprintln!(
        "{label}: {:.2} s, peak RSS {} MiB, budget peak {} MiB",
        mem["elapsed_s"].as_f64().unwrap(),
        peak >> 20,
        budget_peak >> 20
    );
    assert!(
        peak <= LIMIT + SLACK,
        "{label}: peak RSS {} MiB over {} MiB + {} MiB",
        peak >> 20,
        LIMIT >> 20,
        SLACK >> 20
    );
    assert!(budget_peak <= LIMIT, "{label}: budget peak {budget_peak}");
    String::from_utf8(out.stdout).unwrap()
}

#[track_caller]
fn gen_normal(path: &Path, shape: &str, seed: u32) {
    let p = path.to_str().unwrap();
    let out = run(&[
        "--memory-limit",
        "256MiB",
        "gen",
        p,
        "--shape",
        shape,
        "--dist",
        "normal",
        "--seed",
        &seed.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain little-endian f64 `.npy` reader (v1/v2 headers, C order) yielding blocks of values.
struct NpyBlocks {
    r: BufReader<std::fs::File>,
    left: u64,
}

impl NpyBlocks {
    fn open(path: &Path) -> NpyBlocks {
        let mut f = std::fs::File::open(path).unwrap();
        let mut pre = [0u8; 12];
        f.read_exact(&mut pre).unwrap();
        assert_eq!(&pre[..6], b"\x93NUMPY");
        let (hlen, start) = if pre[6] == 1 {
            (u16::from_le_bytes([pre[8], pre[9]]) as u64, 10)
        } else {
            (
                u32::from_le_bytes(pre[8..12].try_into().unwrap()) as u64,
                12,
            )
        };
        let mut header = vec![0u8; hlen as usize];
        f.seek(SeekFrom::Start(start)).unwrap();
        f.read_exact(&mut header).unwrap();
        let header = String::from_utf8(header).unwrap();
        assert!(header.contains("'<f8'"), "{header}");
        assert!(header.contains("'fortran_order': False"), "{header}");
        let data = f.metadata().unwrap().len() - start - hlen;
        NpyBlocks {
            r: BufReader::with_capacity(8 << 20, f),
            left: data / 8,
        }
    }

    /// The next block of up to `n` values, or None at the end.
    fn next(&mut self, n: usize) -> Option<Vec<f64>> {
        if self.left == 0 {
            return None;
        }
        let k = (n as u64).min(self.left) as usize;
        let mut bytes = vec![0u8; k * 8];
        self.r.read_exact(&mut bytes).unwrap();
        self.left -= k as u64;
        Some(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        )
    }
}

/// Neumaier-compensated running sum, and the sum of magnitudes for error bounds.
#[derive(Default)]
struct Acc {
    sum: f64,
    comp: f64,
    abs: f64,
}

impl Acc {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
        self.abs += x.abs();
    }
    fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

/// An order-independent fingerprint of a multiset of f64 bit patterns (splitmix64 of each).
fn fingerprint(values: &[f64], acc: &mut (u64, u64)) {
    for v in values {
        let mut z = v.to_bits().wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        acc.0 = acc.0.wrapping_add(z);
        acc.1 = acc.1.wrapping_add(z.rotate_left(17) ^ 0x5555);
    }
}

fn scalar_of(stdout: &str) -> f64 {
    let v = parse_py_json(stdout.trim());
    crate::util::as_f64(&v["value"]).unwrap_or_else(|| panic!("no value in {stdout}"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Fused expression, axis reductions (along both axes), quantiles and a sort, all over 4 GiB
/// `.npy` inputs under a 256 MiB budget. One test so the inputs are generated once.
#[test]
#[ignore = "writes ~16 GiB and runs for minutes; run with --ignored"]
fn kernels_on_4gib_inputs_stay_under_a_256mib_budget() {
    let dir = scale_dir();
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    let n: u64 = 1 << 29; // 4 GiB of f64 each
    gen_normal(&a, &n.to_string(), 1);
    gen_normal(&b, &n.to_string(), 2);
    let arg_a = format!("a={}", p(&a));
    let arg_b = format!("b={}", p(&b));

    // The chunked reference: one pass over both files.
    let cols = 1024usize;
    let rows = (n / cols as u64) as usize;
    let mut fused = Acc::default();
    let mut row_means = Vec::with_capacity(rows);
    let mut col_sums: Vec<Acc> = (0..cols).map(|_| Acc::default()).collect();
    let mut fp_a = (0u64, 0u64);
    {
        let (mut ra, mut rb) = (NpyBlocks::open(&a), NpyBlocks::open(&b));
        while let (Some(xa), Some(xb)) = (ra.next(cols * 1024), rb.next(cols * 1024)) {
            for (x, y) in xa.iter().zip(&xb) {
                fused.add(x * 2.0 + y);
            }
            for row in xa.chunks_exact(cols) {
                let mut s = Acc::default();
                row.iter().for_each(|&v| s.add(v));
                row_means.push(s.value() / cols as f64);
                for (c, &v) in col_sums.iter_mut().zip(row) {
                    c.add(v);
                }
            }
            fingerprint(&xa, &mut fp_a);
        }
    }

    // 1. Fused: sum(a*2+b) reads a and b once, no full-size temporaries.
    let got = scalar_of(&run_budgeted(
        "sum(a*2+b)",
        &["eval", "sum(a*2+b)", &arg_a, &arg_b, "--json"],
    ));
    let tol = 1e-13 * fused.abs;
    assert!(
        (got - fused.value()).abs() <= tol,
        "sum(a*2+b) = {got}, reference {} (tolerance {tol})",
        fused.value()
    );

    // 2. Axis reductions of a as (N/1024, 1024): along rows (output 4 MiB) and down columns.
    let rm = dir.path().join("row_means.npy");
    run_budgeted(
        "mean(axis=1)",
        &[
            "eval",
            "mean(a.reshape(-1, 1024), axis=1)",
            &arg_a,
            "-o",
            p(&rm),
        ],
    );
    let mut got = Vec::new();
    let mut r = NpyBlocks::open(&rm);
    while let Some(v) = r.next(1 << 20) {
        got.extend(v);
    }
    assert_eq!(got.len(), rows);
    for (i, (g, w)) in got.iter().zip(&row_means).enumerate() {
        assert!((g - w).abs() <= 1e-12, "row {i}: {g} vs {w}");
    }
    let cs = dir.path().join("col_sums.npy");
    run_budgeted(
        "sum(axis=0)",
        &[
            "eval",
            "sum(a.reshape(-1, 1024), axis=0)",
            &arg_a,
            "-o",
            p(&cs),
        ],
    );
    let got = NpyBlocks::open(&cs).next(cols).unwrap();
    assert_eq!(got.len(), cols);
    for (j, (g, w)) in got.iter().zip(&col_sums).enumerate() {
        assert!(
            (g - w.value()).abs() <= 1e-13 * w.abs,
            "column {j}: {g} vs {}",
            w.value()
        );
    }

    // 3. Exact quantiles: the reference sorts a copy in the test process (memory is not
    // constrained here; only the child's is measured).
    let out = run_budgeted(
        "quantile",
        &[
            "quantile",
            p(&a),
            "0",
            "0.001",
            "0.5",
            "0.999",
            "1",
            "--json",
        ],
    );
    let q = parse_py_json(out.trim());
    let got: Vec<f64> = q["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| crate::util::as_f64(v).unwrap())
        .collect();
    assert!(q["passes"].as_u64().unwrap() <= 3, "{out}");
    {
        let mut all = Vec::with_capacity(n as usize);
        let mut r = NpyBlocks::open(&a);
        while let Some(v) = r.next(1 << 20) {
            all.extend(v);
        }
        all.sort_unstable_by(f64::total_cmp);
        for (&qq, &g) in [0.0, 0.001, 0.5, 0.999, 1.0].iter().zip(&got) {
            // NumPy's default 'linear' method.
            let pos = qq * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            let frac = pos - lo as f64;
            let want = all[lo] + (all[hi] - all[lo]) * frac;
            assert!(
                (g - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
                "quantile {qq}: {g} vs {want}"
            );
            if lo == hi {
                assert_eq!(g, want, "quantile {qq} is an element");
            }
        }
    }

    // 4. Sort of the 4 GiB array: the output is ordered and the same multiset (fingerprint).
    let sorted = dir.path().join("sorted.npy");
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    run_budgeted(
        "sort",
        &["--temp-dir", p(&spill), "sort", p(&a), "-o", p(&sorted)],
    );
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "runs removed"
    );
    let mut fp = (0u64, 0u64);
    let mut prev = f64::NEG_INFINITY;
    let mut count = 0u64;
    let mut r = NpyBlocks::open(&sorted);
    while let Some(v) = r.next(1 << 20) {
        for &x in &v {
            assert!(
                prev.total_cmp(&x).is_le(),
                "out of order at {count}: {prev} > {x}"
            );
            prev = x;
            count += 1;
        }
        fingerprint(&v, &mut fp);
    }
    assert_eq!(count, n);
    assert_eq!(fp, fp_a, "sorted output is not a permutation of the input");
}

/// Matmul of two 8192 x 8192 f64 matrices (512 MiB each, both over the 256 MiB budget), checked
/// by Freivalds' test (z r = x (y r) for a random r, streamed) and by four full rows.
#[test]
#[ignore = "1.1 TFLOP and 1.5 GiB of files; run with --ignored"]
fn matmul_of_operands_over_the_budget_stays_under_it() {
    let dir = scale_dir();
    let k = 8192usize;
    let (x, y, z) = (
        dir.path().join("x.npy"),
        dir.path().join("y.npy"),
        dir.path().join("z.npy"),
    );
    let shape = format!("{k},{k}");
    gen_normal(&x, &shape, 3);
    gen_normal(&y, &shape, 4);
    run_budgeted(
        "x @ y",
        &[
            "eval",
            "x @ y",
            &format!("x={}", p(&x)),
            &format!("y={}", p(&y)),
            "-o",
            p(&z),
        ],
    );
    let r: Vec<f64> = (0..k)
        .map(|i| ((i * 2_654_435_761) % 1000) as f64 / 500.0 - 1.0)
        .collect();
    let mat_vec = |path: &PathBuf, v: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let mut out = Vec::with_capacity(k);
        let mut mag = Vec::with_capacity(k);
        let mut rd = NpyBlocks::open(path);
        while let Some(row) = rd.next(k) {
            assert_eq!(row.len(), k);
            let mut s = Acc::default();
            row.iter().zip(v).for_each(|(a, b)| s.add(a * b));
            out.push(s.value());
            mag.push(s.abs);
        }
        assert_eq!(out.len(), k);
        (out, mag)
    };
    let (yr, _) = mat_vec(&y, &r);
    let (xyr, xyr_mag) = mat_vec(&x, &yr);
    let (zr, _) = mat_vec(&z, &r);
    for i in 0..k {
        // Each z[i,j] carries rounding of order k * eps * sum|x y|; bound it generously.
        assert!(
            (zr[i] - xyr[i]).abs() <= 1e-9 * xyr_mag[i].max(1.0),
            "Freivalds row {i}: {} vs {}",
            zr[i],
            xyr[i]
        );
    }
    // Four full rows against a streamed reference: z[i,:] = sum_k x[i,k] y[k,:].
    let picks = [0usize, 1, 4097, k - 1];
    let mut xrows = vec![Vec::new(); picks.len()];
    {
        let mut rd = NpyBlocks::open(&x);
        let mut i = 0;
        while let Some(row) = rd.next(k) {
            if let Some(pi) = picks.iter().position(|&p| p == i) {
                xrows[pi] = row;
            }
            i += 1;
        }
    }
    let mut want: Vec<Vec<Acc>> = picks
        .iter()
        .map(|_| (0..k).map(|_| Acc::default()).collect())
        .collect();
    {
        let mut rd = NpyBlocks::open(&y);
        let mut kk = 0;
        while let Some(yrow) = rd.next(k) {
            for (pi, w) in want.iter_mut().enumerate() {
                let a = xrows[pi][kk];
                for (acc, &b) in w.iter_mut().zip(&yrow) {
                    acc.add(a * b);
                }
            }
            kk += 1;
        }
    }
    let mut rd = NpyBlocks::open(&z);
    let mut i = 0;
    while let Some(row) = rd.next(k) {
        if let Some(pi) = picks.iter().position(|&p| p == i) {
            for (j, (g, w)) in row.iter().zip(&want[pi]).enumerate() {
                assert!(
                    (g - w.value()).abs() <= 64.0 * k as f64 * f64::EPSILON * w.abs,
                    "z[{i},{j}] = {g}, reference {}",
                    w.value()
                );
            }
        }
        i += 1;
    }
}
