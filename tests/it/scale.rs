//! Scale tests: 4 GiB inputs under a 256 MiB budget. Slow (they write 4 GiB), so ignored by
//! default; run them with
//!
//! ```sh
//! cargo test --release --test it scale -- --ignored --nocapture
//! ```
//!
//! Data goes to `CHUNKHEAP_SCALE_DIR` (default: the system temp dir) and is removed afterwards.

use chunkheap::heap::{Heap, HeapConfig};
use chunkheap::memory::MemoryBudget;
use chunkheap::memstat;

use crate::util::{parse_py_json, run};

const LIMIT: u64 = 256 << 20;
const SLACK: u64 = 64 << 20;

fn scale_dir() -> tempfile::TempDir {
    let base = std::env::var_os("CHUNKHEAP_SCALE_DIR").map_or_else(std::env::temp_dir, Into::into);
    tempfile::tempdir_in(base).unwrap()
}

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
