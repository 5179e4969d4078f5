//! Page-cache read limit of a file with N threads: fresh map windows of 8 MiB (one u64 read per
//! 512 bytes) and `pread` into reused 8 MiB buffers (one u64 per 512 bytes summed).
//!
//! `cargo run --release --example readprobe -- FILE [THREADS]` prints GB/s for both.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chunkheap::storage::mmap::MmapWindow;

const BLOCK: u64 = 8 << 20;

fn run(path: &Path, threads: usize, mmap: bool) -> (f64, u64) {
    let file = File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let n = size.div_ceil(BLOCK);
    let next = AtomicU64::new(0);
    let t0 = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![0u8; BLOCK as usize];
                    let mut acc = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return acc;
                        }
                        let off = i * BLOCK;
                        let len = BLOCK.min(size - off) as usize;
                        let touch = |b: &[u8]| -> u64 {
                            b.chunks(512)
                                .map(|c| {
                                    u64::from_le_bytes(
                                        c[..8.min(c.len())].try_into().unwrap_or([0; 8]),
                                    )
                                })
                                .fold(0u64, u64::wrapping_add)
                        };
                        if mmap {
                            let w = MmapWindow::map(&file, path, off, len).unwrap();
                            acc = acc.wrapping_add(touch(w.bytes()));
                        } else {
                            file.read_exact_at(&mut buf[..len], off).unwrap();
                            acc = acc.wrapping_add(touch(&buf[..len]));
                        }
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold(0, u64::wrapping_add)
    });
    (size as f64 / t0.elapsed().as_secs_f64() / 1e9, total)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = Path::new(&args[1]);
    let threads: usize = args.get(2).map_or(2, |t| t.parse().unwrap());
    for mmap in [true, false] {
        let (gbs, check) = run(path, threads, mmap);
        println!(
            "{} {threads} threads: {gbs:.2} GB/s (check {check:x})",
            if mmap { "mmap windows" } else { "pread 8 MiB" }
        );
    }
}
