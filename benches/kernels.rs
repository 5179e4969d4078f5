//! Criterion micro-benchmarks of the kernels, each group with a baseline run in the same process
//! so results read as ratios:
//!
//! | group | chunkheap | baseline |
//! |---|---|---|
//! | `read_limit` | — | `pread` of the file into reused 8 MiB buffers by 2 threads; in-memory slice sum |
//! | `reductions` | `sum`, `stats`, `mean`+`std`, `min`, `max`, `argmax` | in-memory slice sum |
//! | `sum_axis1` | `sum(a.reshape(-1, 1024), axis=1)` | nested loop over an in-memory `Vec` |
//! | `fused` | `sum(a)`, `sum(a*2+b)` | in-memory loop `sum(a*2+b)` |
//! | `elementwise_to_disk` | `(a*2+b).save(..)` | `std::fs::write` of a reused buffer |
//! | `scan` | `cumsum(a)` saved to `.npy` | in-memory prefix-sum loop |
//! | `histogram` | 100 bins, range given / auto | in-memory bin-count loop |
//! | `sort` | in budget / small budget (key-range rescans) / tiny runs (spills) | `sort_unstable_by(f64::total_cmp)` |
//! | `sort_keys_4M` | `sort_keys`, `par_sort_keys` on 4 Mi random `u64` | `sort_unstable`, rayon `par_sort_unstable` |
//! | `matmul_1024` | `matmul_to_buffer` of two 1024² `.npy` | `ndarray` `.dot` in memory |
//!
//! Inputs are seeded `.npy` files of `CHUNKHEAP_BENCH_MIB` MiB each (default 128) in a tempdir,
//! read from the page cache. Throughput is in bytes of input read (so `sum(a*2+b)` counts both
//! `a` and `b`), except `matmul_1024`, whose "elements" are floating-point operations (Gelem/s =
//! GFLOP/s). At the end the bench times `read_limit`, `sum(a)` and `sum(a*2+b)` once more by hand
//! (best of 10) and prints the derived ratios to stderr. To read the fused ratio from criterion's
//! own output instead: divide the time of `fused_*/2 sum(a*2+b)` by that of `fused_*/1 sum(a)`;
//! at most 2 means the fused pass costs no more than the extra bytes it reads.
//!
//! `cargo bench --bench kernels` (quicker: `-- --warm-up-time 1 --measurement-time 3`)

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chunkheap::DType;
use chunkheap::expr::{Array, ScanOp, Session, SessionConfig};
use chunkheap::formats;
use chunkheap::generate::{Dist, GenSpec, generate};
use chunkheap::kernels::histogram::histogram;
use chunkheap::kernels::matmul::{MatmulOptions, matmul_to_buffer};
use chunkheap::kernels::sort::{SortOptions, par_sort_keys, sort, sort_keys};
use chunkheap::memory::MemoryBudget;
use chunkheap::reduce::stats;
use chunkheap::shape::Region;
use chunkheap::storage::WriteOptions;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Bytes of one read buffer in the read-limit baseline.
const READ_BUF: usize = 8 << 20;

fn no_progress(_: u64) {}

/// MiB per input array: `CHUNKHEAP_BENCH_MIB` or 128.
fn bench_mib() -> u64 {
    std::env::var("CHUNKHEAP_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&m| m >= 1)
        .unwrap_or(128)
}

fn gen_f64(path: &Path, shape: Vec<u64>, seed: u64) -> String {
    let p = path.to_string_lossy().into_owned();
    generate(
        &p,
        &GenSpec {
            shape,
            dtype: DType::F64,
            dist: Dist::UNIFORM,
            seed,
            options: WriteOptions::default(),
        },
    )
    .unwrap();
    p
}

fn load(path: &str) -> Vec<f64> {
    let src = formats::open(path).unwrap();
    let b = src.read_region(&Region::full(&src.info().shape)).unwrap();
    b.as_slice::<f64>().to_vec()
}

/// Reads `path` whole with 2 threads, each its half through `pread` into its own reused buffer.
fn pread_2_threads(path: &str, bufs: &mut [Vec<u8>; 2]) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let half = len / 2;
    let [b0, b1] = bufs;
    let read = |buf: &mut Vec<u8>, mut at: u64, end: u64| {
        let mut total = 0u64;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let k = f.read_at(&mut buf[..want], at).unwrap();
            assert!(k > 0, "unexpected end of {path}");
            at += k as u64;
            total += k as u64;
        }
        total
    };
    std::thread::scope(|s| {
        let t = s.spawn(|| read(b1, half, len));
        read(b0, 0, half) + t.join().unwrap()
    })
}

/// The fastest of `reps` runs of `f`, in seconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

struct Inputs {
    _dir: tempfile::TempDir,
    out_dir: PathBuf,
    a_path: String,
    b_path: String,
    sort_path: String,
    m1_path: String,
    m2_path: String,
    n: u64,
    a: Vec<f64>,
    b: Vec<f64>,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let n = bench_mib() * (1 << 20) / 8;
    let a_path = gen_f64(&dir.path().join("a.npy"), vec![n], 1);
    let b_path = gen_f64(&dir.path().join("b.npy"), vec![n], 2);
    let sort_path = gen_f64(&dir.path().join("s.npy"), vec![(n / 2).max(1)], 3);
    let m1_path = gen_f64(&dir.path().join("m1.npy"), vec![1024, 1024], 4);
    let m2_path = gen_f64(&dir.path().join("m2.npy"), vec![1024, 1024], 5);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let a = load(&a_path);
    let b = load(&b_path);
    Inputs {
        _dir: dir,
        out_dir,
        a_path,
        b_path,
        sort_path,
        m1_path,
        m2_path,
        n,
        a,
        b,
    }
}

fn fused(a: &Array, b: &Array) -> Array {
    ((a * 2.0).unwrap() + b).unwrap()
}

fn bench(c: &mut Criterion) {
    let inp = inputs();
    let n = inp.n;
    let bytes = n * 8;
    let mib = bench_mib();
    let session = Session::new(SessionConfig::default()).unwrap();
    let a = session.open(&inp.a_path).unwrap();
    let b = session.open(&inp.b_path).unwrap();
    let mut bufs = [vec![0u8; READ_BUF], vec![0u8; READ_BUF]];
    // Warm the page cache for every input.
    for p in [&inp.a_path, &inp.b_path, &inp.sort_path] {
        pread_2_threads(p, &mut bufs);
    }

    // -- read limit ---------------------------------------------------------------------------
    let mut g = c.benchmark_group(format!("read_limit_{mib}MiB"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("pread a into reused 8 MiB buffers (2 threads)", |bch| {
        bch.iter(|| pread_2_threads(&inp.a_path, &mut bufs))
    });
    g.bench_function("in-memory slice sum of a (1 thread)", |bch| {
        bch.iter(|| black_box(&inp.a).iter().sum::<f64>())
    });
    g.finish();

    // -- reductions ---------------------------------------------------------------------------
    let mut g = c.benchmark_group(format!("reductions_{mib}MiB_f64"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("baseline: in-memory slice sum (1 thread)", |bch| {
        bch.iter(|| black_box(&inp.a).iter().sum::<f64>())
    });
    g.bench_function("sum(a)", |bch| bch.iter(|| a.sum().unwrap()));
    g.bench_function(
        "stats(a): count/sum/mean/std/min/max/argmin/argmax",
        |bch| {
            bch.iter(|| {
                let src = formats::open(&inp.a_path).unwrap();
                session.install(|| stats(src.as_ref()).unwrap())
            })
        },
    );
    g.bench_function("mean(a) + std(a)", |bch| {
        bch.iter(|| (a.mean().unwrap(), a.std(0).unwrap()))
    });
    g.bench_function("min(a)", |bch| bch.iter(|| a.min().unwrap()));
    g.bench_function("max(a)", |bch| bch.iter(|| a.max().unwrap()));
    g.bench_function("argmax(a)", |bch| bch.iter(|| a.argmax().unwrap()));
    g.finish();

    // -- sum along axis 1 ---------------------------------------------------------------------
    let rows = n / 1024;
    if rows > 0 {
        let mut g = c.benchmark_group(format!("sum_axis1_{rows}x1024_f64"));
        g.sample_size(10);
        g.throughput(Throughput::Bytes(rows * 1024 * 8));
        let a2 = a
            .slice(&[chunkheap::expr::Index::Range(
                None,
                Some((rows * 1024) as i64),
                None,
            )])
            .unwrap()
            .reshape(&[-1, 1024])
            .unwrap();
        let sum = chunkheap::expr::Reduction::from_name("sum").unwrap();
        g.bench_function("baseline: nested loop over an in-memory Vec", |bch| {
            bch.iter(|| {
                black_box(&inp.a)[..(rows * 1024) as usize]
                    .chunks_exact(1024)
                    .map(|r| r.iter().sum::<f64>())
                    .collect::<Vec<f64>>()
            })
        });
        g.bench_function("sum(a.reshape(-1, 1024), axis=1)", |bch| {
            bch.iter(|| a2.reduce_axis(&sum, 1).unwrap().to_vec::<f64>().unwrap())
        });
        g.finish();
    }

    // -- fused --------------------------------------------------------------------------------
    let e = fused(&a, &b);
    let mut g = c.benchmark_group(format!("fused_{mib}MiB_f64"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("1 sum(a) [reads 1x]", |bch| bch.iter(|| a.sum().unwrap()));
    g.throughput(Throughput::Bytes(2 * bytes));
    g.bench_function("2 sum(a*2+b) [reads 2x]", |bch| {
        bch.iter(|| e.sum().unwrap())
    });
    g.bench_function(
        "3 baseline: in-memory loop sum(a*2+b) (1 thread) [reads 2x]",
        |bch| {
            bch.iter(|| {
                black_box(&inp.a)
                    .iter()
                    .zip(black_box(&inp.b))
                    .map(|(x, y)| x * 2.0 + y)
                    .sum::<f64>()
            })
        },
    );
    g.finish();

    // -- element-wise to disk -----------------------------------------------------------------
    let out = inp.out_dir.join("e.npy").to_string_lossy().into_owned();
    let raw = inp.out_dir.join("raw.bin");
    let mut g = c.benchmark_group(format!("elementwise_to_disk_{mib}MiB_f64"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    let out_buf: Vec<u8> = inp.a.iter().flat_map(|x| x.to_ne_bytes()).collect();
    g.bench_function("baseline: std::fs::write of a reused buffer", |bch| {
        bch.iter(|| std::fs::write(&raw, &out_buf).unwrap())
    });
    g.bench_function("(a*2+b).save(e.npy)", |bch| {
        bch.iter(|| {
            e.save(&out, &WriteOptions::default(), &no_progress)
                .unwrap()
        })
    });
    g.finish();
    drop(out_buf);
    let _ = std::fs::remove_file(&raw);

    // -- scans --------------------------------------------------------------------------------
    let cs = a.scan(ScanOp::CumSum, None).unwrap();
    let mut g = c.benchmark_group(format!("scan_{mib}MiB_f64"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    let mut prefix = vec![0f64; n as usize];
    g.bench_function(
        "baseline: in-memory prefix-sum loop into a reused Vec",
        |bch| {
            bch.iter(|| {
                let mut acc = 0.0;
                for (o, x) in prefix.iter_mut().zip(black_box(&inp.a)) {
                    acc += x;
                    *o = acc;
                }
                black_box(&prefix);
            })
        },
    );
    g.bench_function("cumsum(a).save(c.npy)", |bch| {
        bch.iter(|| {
            cs.save(&out, &WriteOptions::default(), &no_progress)
                .unwrap()
        })
    });
    g.finish();
    drop(prefix);

    // -- histogram ----------------------------------------------------------------------------
    let mut g = c.benchmark_group(format!("histogram_100_bins_{mib}MiB_f64"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(
        "baseline: in-memory bin-count loop, range (0,1) (1 thread)",
        |bch| {
            bch.iter(|| {
                let mut counts = [0u64; 100];
                for &x in black_box(&inp.a) {
                    if (0.0..=1.0).contains(&x) {
                        counts[((x * 100.0) as usize).min(99)] += 1;
                    }
                }
                counts
            })
        },
    );
    let src = formats::open(&inp.a_path).unwrap();
    g.bench_function("histogram, range (0,1)", |bch| {
        bch.iter(|| {
            session.install(|| histogram(src.as_ref(), 100, Some((0.0, 1.0)), &no_progress))
        })
    });
    g.bench_function("histogram, auto range (2 passes)", |bch| {
        bch.iter(|| session.install(|| histogram(src.as_ref(), 100, None, &no_progress)))
    });
    g.finish();

    // -- sort ---------------------------------------------------------------------------------
    let sort_vec = load(&inp.sort_path);
    let sort_bytes = sort_vec.len() as u64 * 8;
    let sort_mib = sort_bytes >> 20;
    let sort_src = formats::open(&inp.sort_path).unwrap();
    let sort_out = inp
        .out_dir
        .join("sorted.npy")
        .to_string_lossy()
        .into_owned();
    let spill_dir = inp.out_dir.join("spill");
    std::fs::create_dir(&spill_dir).unwrap();
    let small = SortOptions {
        temp_dir: Some(spill_dir.clone()),
        budget: Some(MemoryBudget::new((sort_bytes / 2).max(48 << 20))),
        // Wave buffers of a quarter of the input whatever the budget allows: the key-range groups
        // are gathered in several scans of the input, nothing spills.
        run_bytes: Some((sort_bytes / 2).max(1 << 20)),
        ..Default::default()
    };
    let tiny = SortOptions {
        // Runs of 1/32 of the input: more than the grouped path rescans for, so it spills.
        run_bytes: Some((sort_bytes / 32).max(1 << 20)),
        ..small.clone()
    };
    let in_budget = SortOptions {
        temp_dir: Some(spill_dir.clone()),
        ..Default::default()
    };
    let run_sort = |opts: &SortOptions| {
        let w = formats::create(
            &sort_out,
            DType::F64,
            &[sort_vec.len() as u64],
            &WriteOptions::default(),
        )
        .unwrap();
        session
            .install(|| sort(sort_src.as_ref(), w, opts, &no_progress))
            .unwrap()
    };
    eprintln!("sort in budget:    {}", run_sort(&in_budget));
    let r = run_sort(&small);
    eprintln!("sort small budget: {r}");
    assert!(
        r.groups > 0 && !r.spilled(),
        "the small-budget sort should rescan, not spill: {r}"
    );
    let r = run_sort(&tiny);
    eprintln!("sort tiny runs:    {r}");
    assert!(r.spilled(), "the tiny-run sort should spill: {r}");
    let mut g = c.benchmark_group(format!("sort_{sort_mib}MiB_f64"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(sort_bytes));
    g.bench_function(
        "baseline: slice::sort_unstable_by(f64::total_cmp) on a copy (1 thread)",
        |bch| {
            bch.iter_batched_ref(
                || sort_vec.clone(),
                |v| v.sort_unstable_by(f64::total_cmp),
                BatchSize::PerIteration,
            )
        },
    );
    g.bench_function("sort to .npy, in budget", |bch| {
        bch.iter(|| run_sort(&in_budget))
    });
    g.bench_function("sort to .npy, small budget (rescans)", |bch| {
        bch.iter(|| run_sort(&small))
    });
    g.bench_function("sort to .npy, tiny runs (spills)", |bch| {
        bch.iter(|| run_sort(&tiny))
    });
    g.finish();
    drop(sort_vec);

    // -- in-memory key sort -------------------------------------------------------------------
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let keys: Vec<u64> = (0..1usize << 22)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    let mut g = c.benchmark_group("sort_keys_4M");
    g.sample_size(10);
    g.throughput(Throughput::Elements(keys.len() as u64));
    let mut case = |name: &str, f: fn(&mut Vec<u64>)| {
        g.bench_function(name, |bch| {
            bch.iter_batched_ref(|| keys.clone(), f, BatchSize::PerIteration)
        });
    };
    case("baseline: slice::sort_unstable (1 thread)", |v| {
        v.sort_unstable()
    });
    case("sort_keys (1 thread)", |v| sort_keys(v));
    case("baseline: rayon par_sort_unstable", |v| {
        use rayon::prelude::*;
        v.par_sort_unstable()
    });
    case("par_sort_keys", |v| par_sort_keys(v));
    g.finish();

    // -- matmul -------------------------------------------------------------------------------
    let m1 = formats::open(&inp.m1_path).unwrap();
    let m2 = formats::open(&inp.m2_path).unwrap();
    let nd = |src: &dyn chunkheap::storage::ChunkSource| {
        let v = load(&src.info().path.to_string_lossy());
        ndarray::Array2::from_shape_vec((1024, 1024), v).unwrap()
    };
    let (x, y) = (nd(m1.as_ref()), nd(m2.as_ref()));
    let mut g = c.benchmark_group("matmul_1024x1024_f64");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * 1024 * 1024 * 1024));
    g.bench_function("baseline: ndarray .dot in memory (1 thread)", |bch| {
        bch.iter(|| black_box(&x).dot(black_box(&y)))
    });
    g.bench_function("matmul_to_buffer of two .npy files", |bch| {
        bch.iter(|| {
            session
                .install(|| matmul_to_buffer(m1.as_ref(), m2.as_ref(), &MatmulOptions::default()))
                .unwrap()
        })
    });
    g.finish();

    // -- derived ratios -----------------------------------------------------------------------
    let gb = bytes as f64 / 1e9;
    let t_read = best_of(10, || {
        pread_2_threads(&inp.a_path, &mut bufs);
    });
    let t_sum = best_of(10, || {
        black_box(a.sum().unwrap());
    });
    let t_fused = best_of(10, || {
        black_box(e.sum().unwrap());
    });
    let t_mem = best_of(10, || {
        black_box(inp.a.iter().sum::<f64>());
    });
    eprintln!("\n== derived (best of 10, {mib} MiB per input, page cache warm) ==");
    eprintln!("read limit (pread, 2 threads):  {:6.2} GB/s", gb / t_read);
    eprintln!("in-memory slice sum (1 thread): {:6.2} GB/s", gb / t_mem);
    eprintln!(
        "sum(a):                         {:6.2} GB/s = {:.2} of the read limit",
        gb / t_sum,
        t_read / t_sum
    );
    eprintln!(
        "sum(a*2+b):                     {:6.2} GB/s of input = {:.2} of the read limit",
        2.0 * gb / t_fused,
        2.0 * t_read / t_fused
    );
    eprintln!(
        "time sum(a*2+b) / sum(a):       {:6.2}x for 2x the bytes ({})",
        t_fused / t_sum,
        if t_fused / t_sum <= 2.0 * 1.1 {
            "within the extra bytes read"
        } else {
            "SLOWER than the extra bytes read explain"
        }
    );
    drop(inp);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
