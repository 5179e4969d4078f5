//! Statistics of any source in one parallel pass.
//!
//! `cargo run --release --example stats -- PATH[#COLUMN]` (without an argument it generates a
//! small demo file first).

use chunkheap::generate::{Dist, GenSpec, generate};
use chunkheap::reduce::stats;
use chunkheap::{DType, formats};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let src = match std::env::args().nth(1) {
        Some(s) => s,
        None => {
            let p = dir.path().join("demo.npy").to_string_lossy().into_owned();
            let spec = GenSpec {
                shape: vec![1000, 1000],
                dtype: DType::F32,
                dist: Dist::NORMAL,
                seed: 7,
                options: Default::default(),
            };
            generate(&p, &spec)?;
            p
        }
    };
    let source = formats::open(&src)?;
    let info = source.info();
    println!(
        "{}: {} {:?} in {}",
        info.name,
        info.dtype,
        info.shape,
        info.layout.describe()
    );
    let s = stats(source.as_ref())?;
    println!("{}", s.to_json(0));
    println!("sample std (ddof=1): {:?}", s.std(1));
    Ok(())
}
