//! Convert between formats, streamed chunk by chunk: `.npy` -> Zarr v3 (zstd) -> Arrow IPC.
//!
//! `cargo run --release --example convert`

use chunkheap::generate::{Dist, GenSpec, generate};
use chunkheap::reduce::stats;
use chunkheap::storage::{Codec, WriteOptions};
use chunkheap::{DType, formats, pipeline};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let spec = GenSpec {
        shape: vec![2_000_000],
        dtype: DType::I32,
        dist: Dist::Uniform {
            low: Some(-1000.0),
            high: Some(1000.0),
        },
        seed: 1,
        options: Default::default(),
    };
    generate(&p("a.npy"), &spec)?;

    let src = formats::open(&p("a.npy"))?;
    let zarr_opts = WriteOptions {
        chunks: Some(vec![250_000]),
        codec: Codec::Zstd(3),
        column: None,
        ..Default::default()
    };
    pipeline::copy(
        src.as_ref(),
        formats::create(&p("a.zarr"), DType::I32, &[2_000_000], &zarr_opts)?,
        &pipeline::no_progress,
    )?;
    let z = formats::open(&p("a.zarr"))?;
    pipeline::copy(
        z.as_ref(),
        formats::create(
            &p("a.arrow#ticks"),
            DType::I32,
            &[2_000_000],
            &WriteOptions::default(),
        )?,
        &pipeline::no_progress,
    )?;

    for name in ["a.npy", "a.zarr", "a.arrow#ticks"] {
        let s = formats::open(&p(name))?;
        let st = stats(s.as_ref())?;
        println!(
            "{name:<14} stored {:>9} bytes  sum {}  argmax {:?}",
            s.info().stored_bytes,
            st.sum,
            st.argmax
        );
    }
    Ok(())
}
