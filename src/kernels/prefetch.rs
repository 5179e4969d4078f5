//! Software prefetch for streaming loops.
//!
//! On the machines we measure on (VMs), the hardware prefetchers barely help a loop that does
//! real work per element: a kernel with ~30 vector instructions per 32 bytes fills the reorder
//! buffer with only a few cache-line misses in flight, and its throughput collapses to what the
//! memory latency allows (in a scratch benchmark on the AVX-512 Xeon VM, a histogram count
//! loop ran at ~7 ns per `f64` from memory against 1.25 ns from L1; sum, sum of squares, min
//! and max together at 7.1 ns against 1.6 ns with prefetch). [`pieces`] cuts a slice into pieces of [`PIECE_BYTES`] and, before yielding each
//! one, asks the CPU to fetch the bytes [`DISTANCE`] further on, so the kernel's loads hit the
//! cache while the fetches overlap the work.
//!
//! **Invariant:** prefetching is a hint. It never faults, never changes memory and never changes a
//! result; on targets without a prefetch instruction [`pieces`] just cuts the slice.

/// Bytes per piece: 8 cache lines, so the fetches are spread through the work instead of queueing
/// behind each other (histogram and median on 4 GiB, 2 threads: 512 B pieces were fastest, measured
/// fetching 4 KiB ahead; 1 KiB pieces 3-5 % slower, 2 KiB 10-20 %; in a scratch benchmark, one
/// fetch per 32 KiB made a plain sum slower than no prefetch at all).
pub(crate) const PIECE_BYTES: usize = 512;

/// Most elements a piece holds (one-byte elements): kernels size their per-piece scratch by it.
pub(crate) const MAX_PIECE_ELEMS: usize = PIECE_BYTES;

/// How far ahead of the bytes being processed [`ahead`] fetches: far enough to cover a miss's
/// latency at the rate our kernels consume bytes. On the AVX-512 Xeon VM, a histogram over
/// 4 GiB with an explicit range (2 threads) took 0.37-0.41 s fetching 2 KiB ahead, 0.37 s at
/// 1 KiB, 0.40 s at 3 KiB, 0.48-0.52 s at 4 KiB and 0.48-0.49 s at 6 KiB; the median 0.73 s at
/// 2 KiB and 0.87-0.91 s at 4 KiB. (Why 4 KiB does badly is not known; a prefetch exactly
/// 4 KiB ahead maps to the same L1 set as the loads it runs among.)
pub(crate) const DISTANCE: usize = 2 << 10;

/// Asks the CPU to bring into the cache the lines that lie [`DISTANCE`] bytes after those of
/// `piece`: the part of the array a loop that has just reached `piece` will read a little later.
/// Those bytes need not belong to `piece`'s slice (past the end of an array nothing is fetched,
/// or a line of some other data is, harmlessly), so a kernel calls this on each piece it is about
/// to process, without knowing what follows.
#[inline(always)]
pub(crate) fn ahead<T: bytemuck::Pod>(piece: &[T]) {
    fetch::<false>(
        piece.as_ptr().cast::<u8>().wrapping_add(DISTANCE),
        size_of_val(piece),
    );
}

/// How far ahead [`pieces_to_l2`] fetches.
pub(crate) const L2_DISTANCE: usize = 8 << 10;

/// Like [`ahead`], but fetches the lines [`L2_DISTANCE`] bytes on into the L2 cache only, leaving
/// the L1 to the kernel's own tables (the L1's stream prefetcher brings the lines on from L2).
/// On the Zen 4 VM, a 100-bin histogram with an explicit range over 4 GiB (2 threads, its
/// counters a 41 KiB table) took 0.17-0.23 s this way against 0.21-0.27 s with [`ahead`] (two
/// alternating batches); in a scratch benchmark on one thread over 1 GiB, binning ran at
/// 13.4-14 GB/s fetching 6-32 KiB ahead into L2 (T1 or T2 hints alike) against 9.3-10 GB/s
/// fetching 1-16 KiB ahead into L1 (or with the non-temporal hint), and 7.5 GB/s with no
/// prefetch (17 GB/s with the data in L2).
#[inline(always)]
pub(crate) fn ahead_to_l2<T: bytemuck::Pod>(piece: &[T]) {
    fetch::<true>(
        piece.as_ptr().cast::<u8>().wrapping_add(L2_DISTANCE),
        size_of_val(piece),
    );
}

/// Like [`pieces`], with each piece's lines [`L2_DISTANCE`] on fetched by [`ahead_to_l2`]: for
/// kernels whose own working set fills the L1.
#[inline(always)]
pub(crate) fn pieces_to_l2<T: bytemuck::Pod>(data: &[T]) -> impl Iterator<Item = &[T]> {
    cut(data).inspect(|p| ahead_to_l2(p))
}

/// Asks the CPU to bring the lines of `data` itself into the cache: for data a kernel will read
/// only after a long stretch of work (a GEMM micro-kernel's output tile, say).
#[inline(always)]
pub(crate) fn lines<T: bytemuck::Pod>(data: &[T]) {
    fetch::<false>(data.as_ptr().cast(), size_of_val(data));
}

/// Prefetches the cache lines of the `len` bytes from `start` (any address: nothing is read)
/// into every level (`L2`: into L2 and below only).
#[inline(always)]
fn fetch<const L2: bool>(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        use core::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
        let p = start.wrapping_add(off).cast();
        // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has. A prefetch is only a
        // hint: it reads nothing into the program, cannot fault (the CPU drops it for an
        // unmapped address) and changes no memory, so any address is allowed.
        unsafe {
            if L2 {
                _mm_prefetch::<_MM_HINT_T1>(p)
            } else {
                _mm_prefetch::<_MM_HINT_T0>(p)
            }
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// `data` cut into pieces of about [`PIECE_BYTES`] (whole elements, at most
/// [`MAX_PIECE_ELEMS`]), each yielded after [`ahead`] has been called on it. The pieces
/// concatenate to `data`; pieces of elements of up to 8 bytes hold a multiple of 8 elements,
/// except the last.
#[inline(always)]
pub(crate) fn pieces<T: bytemuck::Pod>(data: &[T]) -> impl Iterator<Item = &[T]> {
    cut(data).inspect(|p| ahead(p))
}

/// `data` cut into pieces of about [`PIECE_BYTES`] (whole elements).
#[inline(always)]
fn cut<T: bytemuck::Pod>(data: &[T]) -> std::slice::Chunks<'_, T> {
    data.chunks((PIECE_BYTES / size_of::<T>().max(1)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_slice() {
        for n in [0usize, 1, 255, 256, 257, 1000, 4096 + 3] {
            let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let got: Vec<f64> = pieces(&v).flatten().copied().collect();
            assert_eq!(got, v, "n = {n}");
            let got: Vec<f64> = pieces_to_l2(&v).flatten().copied().collect();
            assert_eq!(got, v, "n = {n}");
            assert!(pieces(&v).all(|p| p.len() * 8 <= PIECE_BYTES && !p.is_empty()));
            let b: Vec<u8> = (0..n).map(|i| i as u8).collect();
            assert_eq!(pieces(&b).flatten().copied().collect::<Vec<u8>>(), b);
            assert!(pieces(&b).all(|p| p.len() <= MAX_PIECE_ELEMS));
        }
    }
}
