//! `chunkheap demo`: the main job on an embedded default dataset, end to end.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use chunkheap::generate::{Dist, GenSpec};
use chunkheap::reduce::{Stats, stats_with_progress};
use chunkheap::storage::{Codec, WriteOptions};
use chunkheap::{DType, formats, memstat, pipeline};

use crate::progress::{ProgressMode, Reporter};
use crate::throughput_line;

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
pub fn run(size: &str, mode: ProgressMode) -> Result<()> {
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

    for (out, opts, label) in [
        (
            &zarr,
            WriteOptions {
                chunks: Some(vec![1 << 20]),
                codec: Codec::Zstd(1),
                column: None,
            },
            "series.zarr (zstd)",
        ),
        (&arrow, WriteOptions::default(), "series.arrow"),
    ] {
        let w = formats::create(out, DType::F64, &[n], &opts)?;
        let bar = Reporter::new(mode, n * 8, "convert");
        let ((), secs) = timed(|| Ok(pipeline::copy(src.as_ref(), w, &|b| bar.add(b))?))?;
        bar.finish();
        let stored = formats::open(out)?.info().stored_bytes;
        println!(
            "4. convert  -> {label:<28} {}  [{} on disk]",
            throughput_line(n * 8, secs),
            crate::human_bytes(stored)
        );
        let (s, secs) = stats_of(out, mode)?;
        println!("5. stats    {label:<32} {}", throughput_line(n * 8, secs));
        if !s.same_up_to_rounding(&s_npy, 1e-12) {
            bail!(
                "statistics of {label} differ from series.npy:\n{}\n{}",
                s.to_json(0),
                s_npy.to_json(0)
            );
        }
        println!("            identical to series.npy (sum, std, min, max, argmin, argmax)");
    }
    if let Some(m) = memstat::read() {
        println!(
            "\npeak RSS {} (data {}): chunks are mapped in windows and released when consumed",
            crate::human_bytes(m.peak_rss),
            crate::human_bytes(n * 8)
        );
    }
    println!("cleaning up {}", dir.path().display());
    Ok(())
}
