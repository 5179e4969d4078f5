//! Criterion benchmarks of the managed heap, each beside a baseline run in the same process:
//! handle clone + drop against `Arc` clone + drop (on one thread, and on two at once), and a
//! full collection of 1 million tracked containers in rings of 10 (compare with
//! `benches/cpython_gc.py`, which times the same in CPython).
//!
//! `cargo bench --bench heap` and `python3 benches/cpython_gc.py`

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chunkheap::heap::{Handle, Heap};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// 1 million lists linked in rings of 10, with no outside handles: all garbage for the
/// collector.
fn rings(heap: &Heap, objects: usize) {
    for _ in 0..objects / 10 {
        let ring: Vec<Handle> = (0..10).map(|_| heap.list(&[])).collect();
        for i in 0..10 {
            heap.list_append(&ring[i], &ring[(i + 1) % 10]).unwrap();
        }
    }
}

/// Two threads each clone and drop their value `iters` times at the same moment; the wall time
/// of the slower one.
fn both<T: Clone + Sync>(iters: u64, x: &T, y: &T) -> Duration {
    let start = Barrier::new(2);
    let run = |v: &T| {
        start.wait();
        let t = Instant::now();
        for _ in 0..iters {
            drop(black_box(v.clone()));
        }
        t.elapsed()
    };
    std::thread::scope(|s| {
        let other = s.spawn(|| run(y));
        let mine = run(x);
        mine.max(other.join().unwrap())
    })
}

fn bench(c: &mut Criterion) {
    let heap = Heap::new().unwrap();
    heap.disable();
    let h = heap.int(1);
    let arc = Arc::new(1u64);
    let mut g = c.benchmark_group("handles");
    g.bench_function("baseline: Arc clone + drop", |b| {
        b.iter(|| drop(black_box(arc.clone())))
    });
    g.bench_function("heap Handle clone + drop", |b| {
        b.iter(|| drop(black_box(h.clone())))
    });
    // Two threads at once, each timing its own loop: on one object (its count's cache line
    // bounces between the cores) and on one object each (they share only the heap).
    let h2 = heap.int(2);
    let arc2 = Arc::new(2u64);
    g.bench_function("baseline: 2 threads, Arc clone + drop, one Arc", |b| {
        b.iter_custom(|iters| both(iters, &arc, &arc))
    });
    g.bench_function("heap: 2 threads, Handle clone + drop, one object", |b| {
        b.iter_custom(|iters| both(iters, &h, &h))
    });
    g.bench_function("baseline: 2 threads, Arc clone + drop, an Arc each", |b| {
        b.iter_custom(|iters| both(iters, &arc, &arc2))
    });
    g.bench_function(
        "heap: 2 threads, Handle clone + drop, an object each",
        |b| b.iter_custom(|iters| both(iters, &h, &h2)),
    );
    g.finish();

    let mut g = c.benchmark_group("collect");
    g.sample_size(10);
    g.bench_function("full collection, 1M tracked objects in rings of 10", |b| {
        b.iter_batched(
            || {
                let heap = Heap::new().unwrap();
                heap.disable();
                rings(&heap, 1_000_000);
                heap
            },
            |heap| {
                let n = heap.collect(2).unwrap();
                assert_eq!(n, 1_000_000);
                heap
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("baseline: allocate the same 1M objects in rings", |b| {
        b.iter_batched(
            || {
                let heap = Heap::new().unwrap();
                heap.disable();
                heap
            },
            |heap| {
                rings(&heap, 1_000_000);
                heap
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
