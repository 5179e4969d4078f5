//! `chunkheap demo`: the main job on an embedded default dataset, end to end.

use std::time::Instant;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chunkheap::ChunkSource;
use chunkheap::generate::{Dist, GenSpec};
use chunkheap::heap::{Heap, HeapConfig};
use chunkheap::memory::MemoryBudget;
use chunkheap::reduce::{Stats, stats_with_progress};
use chunkheap::storage::{Codec, WriteOptions};
use chunkheap::{DType, formats, memstat, pipeline};

use crate::progress::{ProgressMode, Reporter};
use crate::{Globals, throughput_line};

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

fn stats_of(path: &str, mode: ProgressMode) -> Result<(Stats, f64)> {
    let src = formats::open(path)?;
    let bar = Reporter::new(mode, src.info().nbytes(), "stats");
    let r = timed(|| Ok(stats_with_progress(src.as_ref(), &|n| bar.add(n))?))?;
    bar.finish();
    Ok(r)
}

/// Runs the demo on a dataset of `size` (e.g. `512MiB`).
pub fn run(size: &str, globals: &Globals) -> Result<()> {
    let mode = globals.progress;
    let bytes = size
        .parse::<bytesize::ByteSize>()
        .map_err(|e| anyhow::anyhow!("bad --size {size:?}: {e}"))?
        .as_u64();
    if bytes < 8 {
        bail!("--size must be at least 8 bytes");
    }
    let n = bytes / 8;
    let dir = tempfile::Builder::new()
        .prefix("chunkheap-demo-")
        .tempdir()
        .context("creating a temp dir")?;
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (npy, zarr, arrow) = (p("series.npy"), p("series.zarr"), p("series.arrow"));
    println!(
        "chunkheap demo: {n} float64 values ({}) in {}",
        crate::human_bytes(n * 8),
        dir.path().display()
    );
    println!("threads: {}\n", rayon::current_num_threads());

    let spec = GenSpec {
        shape: vec![n],
        dtype: DType::F64,
        dist: Dist::Normal {
            mean: 10.0,
            std: 2.0,
        },
        seed: 42,
        options: WriteOptions::default(),
    };
    let bar = Reporter::new(mode, n * 8, "gen");
    let ((), secs) = timed(|| {
        Ok(chunkheap::generate::generate_with_progress(
            &npy,
            &spec,
            &|b| bar.add(b),
        )?)
    })?;
    bar.finish();
    println!(
        "1. gen      normal(10, 2) -> series.npy      {}",
        throughput_line(n * 8, secs)
    );

    let src = formats::open(&npy)?;
    let i = src.info();
    println!(
        "2. info     {} {} {:?}, {}",
        i.format.name(),
        i.dtype,
        i.shape,
        i.layout.describe()
    );

    let (s_npy, secs) = stats_of(&npy, mode)?;
    println!(
        "3. stats    series.npy                       {}",
        throughput_line(n * 8, secs)
    );
    println!("            {}", s_npy.to_json(0));

    for (step, (out, opts, label)) in [
        (
            &zarr,
            WriteOptions {
                chunks: Some(vec![1 << 20]),
                codec: Codec::Zstd(1),
                column: None,
                ..Default::default()
            },
            "series.zarr (zstd)",
        ),
        (&arrow, WriteOptions::default(), "series.arrow"),
    ]
    .into_iter()
    .enumerate()
    {
        let step = 4 + 2 * step;
        let w = formats::create(out, DType::F64, &[n], &opts)?;
        let bar = Reporter::new(mode, n * 8, "convert");
        let ((), secs) = timed(|| Ok(pipeline::copy(src.as_ref(), w, &|b| bar.add(b))?))?;
        bar.finish();
        let stored = formats::open(out)?.info().stored_bytes;
        println!(
            "{step}. convert  -> {label:<28} {}  [{} on disk]",
            throughput_line(n * 8, secs),
            crate::human_bytes(stored)
        );
        let (s, secs) = stats_of(out, mode)?;
        println!(
            "{}. stats    {label:<32} {}",
            step + 1,
            throughput_line(n * 8, secs)
        );
        if !s.same_up_to_rounding(&s_npy, 1e-12) {
            bail!(
                "statistics of {label} differ from series.npy:\n{}\n{}",
                s.to_json(0),
                s_npy.to_json(0)
            );
        }
        println!("            identical to series.npy (sum, std, min, max, argmin, argmax)");
    }
    heap_tour(&npy, n * 8, globals)?;
    engine_tour(&npy, n, globals)?;
    if let Some(m) = memstat::read() {
        println!(
            "\npeak RSS {} for {} of data; {} still reserved in the budget at exit (recycled buffers)",
            crate::human_bytes(m.peak_rss),
            crate::human_bytes(n * 8),
            crate::human_bytes(chunkheap::memory::global().used())
        );
    }
    println!("cleaning up {}", dir.path().display());
    Ok(())
}

/// Steps 8 and 9: the managed heap — chunks as objects under a budget a quarter of the data, a cycle,
/// and the collector.
fn heap_tour(npy: &str, bytes: u64, globals: &Globals) -> Result<()> {
    let budget = MemoryBudget::new((bytes / 4).max(32 << 20));
    let heap = Heap::with_config(&HeapConfig {
        budget: Some(budget.clone()),
        temp_dir: globals.temp_dir.clone(),
    })?;
    let src: Arc<dyn ChunkSource> = Arc::from(formats::open(npy)?);
    let n = src.info().layout.num_chunks();
    let t = Instant::now();
    // Every chunk becomes a heap object; half of them are modified (dirty: they must be spilled,
    // the clean ones can simply be evicted and re-read).
    let mut chunks = Vec::with_capacity(n);
    for i in 0..n {
        let c = heap.chunk_from_source(src.clone(), i)?;
        if i % 2 == 1 {
            heap.with_chunk_mut(&c, |b| {
                b.as_mut_slice::<f64>().iter_mut().for_each(|v| *v = -*v)
            })?;
        }
        chunks.push(c);
    }
    let s = heap.stats();
    println!(
        "8. heap     {n} chunk objects ({}) under a {} budget: {} resident, {} spilled to {} files, {} evicted  [{:.2} s]",
        crate::human_bytes(bytes),
        crate::human_bytes(budget.limit()),
        crate::human_bytes(s.chunk_bytes_resident),
        crate::human_bytes(s.chunk_bytes_spilled),
        s.spill_files,
        s.chunks_evicted,
        t.elapsed().as_secs_f64()
    );
    // Read everything back (reloading and un-spilling as needed) and check it against the file.
    let mut ours = 0.0;
    let mut want = 0.0;
    for (i, c) in chunks.iter().enumerate() {
        ours += heap.with_chunk(c, |b| b.as_slice::<f64>().iter().sum::<f64>())?;
        let s: f64 = src.read_chunk(i)?.as_slice::<f64>().iter().sum();
        want += if i % 2 == 1 { -s } else { s };
    }
    if ours != want {
        bail!("chunks read back through the heap sum to {ours}, the file says {want}");
    }
    println!(
        "            read back through evictions and spills: every chunk intact (alternating sum {ours:.6e})"
    );
    // A cycle holding all chunks: unreachable once the handles go, reclaimed by the collector.
    let list = heap.list(&chunks.iter().collect::<Vec<_>>());
    let d = heap.dict(&[("chunks", &list)]);
    heap.list_append(&list, &d)?;
    drop(chunks);
    drop((list, d));
    let before = heap.stats();
    let t = Instant::now();
    let collected = heap.collect(2)?;
    let after = heap.stats();
    let g = &heap.get_stats()[2];
    println!(
        "9. gc       cycle of list <-> dict holding every chunk: collect(2) found {collected} unreachable containers, freed {} objects, {} of memory, {} spill files removed in {:.1} ms",
        before.objects - after.objects,
        crate::human_bytes(g.bytes_freed),
        before.spill_files - after.spill_files,
        t.elapsed().as_secs_f64() * 1e3
    );
    if after.objects != 0 || budget.used() != 0 || std::fs::read_dir(heap.spill_dir())?.count() != 0
    {
        bail!(
            "the heap did not return to empty: {after:?}, budget {}",
            budget.used()
        );
    }
    println!("            heap empty, budget back to 0, spill directory empty");
    Ok(())
}

/// The batch script of step 10: lazy fused expressions, an exact median under a small budget,
/// cycles holding arrays, and the collector.
const TOUR: &str = r#"
a = load(sys.argv[1])
b = random(a.shape, dist="normal", seed=7)
e = (a - 10) * 2 + b            # lazy: an expression graph on the heap, nothing computed yet
print("    plan:", explain(e).replace("\n", "\n          "))
print("    sum, mean, std of e:", sum(e), mean(e), std(e))
z = (a - mean(a)) / std(a)
print("    z-scores: mean", abs(float(mean(z))) < 1e-9, " std", std(z))
print("    exact median of a:", median(a), "  99th percentile:", percentile(a, 99))
# Cycles: a list that contains itself, and a ring of dicts holding arrays.
l = [a, e]
l.append(l)
ring = []
for k in range(3):
    ring.append({"x": e * k, "k": k})
for k in range(3):
    ring[k]["next"] = ring[(k + 1) % 3]
before = heap.stats()["by_kind"]
del l, ring
print("    cycles: list <-> itself, 3 dicts in a ring holding arrays; after del, gc.collect() freed", gc.collect(), "objects")
s = gc.get_stats()
print("    gc: collections per generation", s[0]["collections"], s[1]["collections"], s[2]["collections"], "| heap objects by kind:", heap.stats()["by_kind"])
"#;

/// Step 10: the engine and the managed heap through a batch script, under a small budget, then
/// a histogram plot.
fn engine_tour(npy: &str, n: u64, globals: &Globals) -> Result<()> {
    let budget = chunkheap::memory::global();
    let old = budget.limit();
    let small = (64u64 << 20).min(old);
    budget.set_limit(small);
    budget.reset_peak();
    println!(
        "\n10. script  fused expressions, exact quantiles and cycles on the managed heap, budget {} for {} of data",
        crate::human_bytes(small),
        crate::human_bytes(n * 8)
    );
    let t = std::time::Instant::now();
    let r = crate::script_cmd::run_source(TOUR, "<demo tour>", &[npy.to_string()], globals);
    budget.set_limit(old);
    r?;
    println!(
        "            script ran in {:.2} s; budget peak {}",
        t.elapsed().as_secs_f64(),
        crate::human_bytes(budget.peak())
    );
    let src = formats::open(npy)?;
    let h = chunkheap::kernels::histogram::histogram(src.as_ref(), 60, None, &|_| {})?;
    let png = std::env::temp_dir().join("chunkheap-demo-histogram.png");
    crate::plot::histogram(&png, &h.counts, &h.edges, "chunkheap demo: normal(10, 2)")?;
    println!("11. plot     histogram of series.npy -> {}", png.display());
    Ok(())
}
