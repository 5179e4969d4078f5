//! Lazy fused expressions: `sum(a*2+b)` in one streaming pass, with the plan and its predicted
//! memory, timed against `sum(a)` on the same files.
//!
//! `cargo run --release --example fused -- [MiB per array, default 256] [DIR]`

use std::time::Instant;

use chunkheap::DType;
use chunkheap::expr::{Session, SessionConfig};
use chunkheap::generate::{Dist, GenSpec, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args().nth(1).map_or(Ok(256), |s| s.parse())?;
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(2)
        .map_or(tmp.path().to_path_buf(), Into::into);
    let n = mib * 1024 * 1024 / 8;
    let mut paths = Vec::new();
    for (name, seed) in [("a.npy", 1), ("b.npy", 2)] {
        let p = dir.join(name).to_string_lossy().into_owned();
        if !std::path::Path::new(&p).exists() {
            generate(
                &p,
                &GenSpec {
                    shape: vec![n],
                    dtype: DType::F64,
                    dist: Dist::UNIFORM,
                    seed,
                    options: Default::default(),
                },
            )?;
        }
        paths.push(p);
    }
    let s = Session::new(SessionConfig::default())?;
    let a = s.open(&paths[0])?;
    let b = s.open(&paths[1])?;
    let e = ((&a * 2.0)? + &b)?;
    println!("{}", e.explain());
    // Touch the files so both timings see a warm page cache.
    a.sum()?;
    b.sum()?;
    let t = Instant::now();
    let sa = a.sum()?;
    let ta = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let se = e.sum()?;
    let te = t.elapsed().as_secs_f64();
    let gb = (n * 8) as f64 / 1e9;
    println!(
        "sum(a)      = {:<22} {ta:.3} s  {:.2} GB/s",
        sa.to_json(),
        gb / ta
    );
    println!(
        "sum(a*2+b)  = {:<22} {te:.3} s  {:.2} GB/s of input ({:.2}x the time of sum(a) for 2x the bytes)",
        se.to_json(),
        2.0 * gb / te,
        te / ta
    );
    Ok(())
}
