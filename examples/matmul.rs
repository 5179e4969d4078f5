//! Multiply two matrices stored in `.npy` files into a third, streamed: `a @ b` goes straight
//! into the output file's writer, whatever the operands' size against the memory budget.
//!
//! `cargo run --release --example matmul` multiplies two small generated matrices;
//! `cargo run --release --example matmul -- A.npy B.npy OUT.npy [LIMIT_BYTES]` multiplies yours.

use chunkheap::generate::{Dist, GenSpec, generate};
use chunkheap::kernels::matmul::{MatmulOptions, matmul, result_dtype, result_shape};
use chunkheap::storage::WriteOptions;
use chunkheap::{DType, formats, memory, pipeline};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let (a, b, out) = if args.len() >= 3 {
        (args[0].clone(), args[1].clone(), args[2].clone())
    } else {
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        for (name, seed) in [("a.npy", 1), ("b.npy", 2)] {
            let spec = GenSpec {
                shape: vec![1000, 1000],
                dtype: DType::F64,
                dist: Dist::NORMAL,
                seed,
                options: Default::default(),
            };
            generate(&p(name), &spec)?;
        }
        (p("a.npy"), p("b.npy"), p("c.npy"))
    };
    if let Some(limit) = args.get(3) {
        memory::global().set_limit(limit.parse()?);
    }
    let (sa, sb) = (formats::open(&a)?, formats::open(&b)?);
    let shape = result_shape(&sa.info().shape, &sb.info().shape)?;
    let dtype = result_dtype(sa.info().dtype, sb.info().dtype);
    let writer = formats::create(&out, dtype, &shape, &WriteOptions::default())?;
    let t = std::time::Instant::now();
    let report = matmul(
        sa.as_ref(),
        sb.as_ref(),
        writer,
        &MatmulOptions::default(),
        &pipeline::no_progress,
    )?;
    println!(
        "{out}: {:?} {:?} in {:.3} s, tile {:?}",
        report.dtype,
        report.shape,
        t.elapsed().as_secs_f64(),
        report.tile
    );
    Ok(())
}
