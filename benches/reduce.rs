//! Criterion benchmarks of the streaming reduction, each beside a baseline run in the same
//! process so results read as ratios: `stats` over a page-cached `.npy` versus a plain sequential
//! sum over the same bytes already in memory, and versus reading the file into a reused buffer.
//!
//! `cargo bench --bench reduce`

use std::io::Read;

use chunkheap::formats;
use chunkheap::generate::{Dist, GenSpec, generate};
use chunkheap::reduce::stats;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let path = path.to_str().unwrap();
    let n: u64 = 16 << 20; // 128 MiB of f64
    let spec = GenSpec {
        shape: vec![n],
        dtype: chunkheap::DType::F64,
        dist: Dist::NORMAL,
        seed: 1,
        options: Default::default(),
    };
    generate(path, &spec).unwrap();
    let bytes = n * 8;

    let mut g = c.benchmark_group("reduce_128MiB_f64");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);

    let in_memory: Vec<f64> = {
        let src = formats::open(path).unwrap();
        let b = src
            .read_region(&chunkheap::shape::Region::full(&[n]))
            .unwrap();
        b.as_slice::<f64>().to_vec()
    };
    g.bench_function("baseline: plain sum of an in-memory Vec (1 thread)", |b| {
        b.iter(|| in_memory.iter().sum::<f64>())
    });
    let mut buf = vec![0u8; 8 << 20];
    g.bench_function(
        "baseline: read() the file into a reused 8 MiB buffer (1 thread)",
        |b| {
            b.iter(|| {
                let mut f = std::fs::File::open(path).unwrap();
                let mut total = 0usize;
                loop {
                    let k = f.read(&mut buf).unwrap();
                    if k == 0 {
                        break total;
                    }
                    total += k;
                }
            })
        },
    );
    g.bench_function("chunkheap stats (all threads)", |b| {
        b.iter(|| {
            let src = formats::open(path).unwrap();
            stats(src.as_ref()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
