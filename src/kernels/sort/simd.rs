//! In-memory sorting of `u64` keys with AVX-512: a vectorised quicksort.
//!
//! The sorts of the grouped path and of in-memory runs spend most of their time in
//! `sort_unstable` on `u64` keys (~18 ns per key on 4 M keys here). This kernel does the same job
//! with 8-lane vectors, the way vectorised sorts (x86-simd-sort, behind NumPy's `np.sort`) do:
//!
//! * **Partition** around a pivot by reading a block of 8 vectors (64 keys) at a time, from
//!   whichever end of the unread middle has less room free beside it. Each vector's lanes are
//!   permuted (one `vpermq` with an index from a 256-entry table, by the comparison mask) so
//!   that its keys below the pivot come first and the rest last, and the whole vector is
//!   stored twice: at the left write position, which keeps the low keys, and ending at the
//!   right one, which keeps the high keys; the other lanes of each store land in free room
//!   and are overwritten later. The first and last 8 vectors are held in registers until the
//!   end, which is what leaves room for every store; the last few stores are masked.
//! * **Small slices** (at most [`BASE`] keys, 32 vectors) are sorted by a bitonic network in
//!   registers: each vector sorted across its lanes, then merged pairwise, padded with
//!   `u64::MAX` (which sorts last and is cut off again by the masked stores).
//! * **Pivots** are the median of 16 keys spread over the slice. A key that is the slice's
//!   minimum splits nothing below it, so then the keys equal to it are split off instead (they
//!   are done): slices of few distinct keys finish fast. Past `2 (bits of n) + 4` partition
//!   levels a slice goes to `sort_unstable` instead, so the worst case stays `O(n log n)`.
//!
//! [`par_sort`] partitions the top levels once and sorts the two sides in parallel (rayon).
//!
//! The output is the sorted sequence of the input keys, the same as `sort_unstable`'s, so the
//! results do not depend on the CPU. Without AVX-512F (checked at run time; the standard
//! library caches the answer) both functions are `sort_unstable` / `par_sort_unstable`.
//!
//! **Invariant:** with `storage/mmap.rs` and `kernels/prefetch.rs`, one of the three files with
//! `unsafe`: the vector loads and stores, each given a slice and writing or reading only lanes
//! that lie inside it.

use rayon::prelude::*;

/// Keys below which [`par_sort`] sorts on one thread.
const PAR_MIN: usize = 1 << 16;

/// Largest slice sorted by the bitonic network (32 vectors of 8 keys; 128 keys was 3 % slower
/// on 4 Mi random keys).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const BASE: usize = 256;

/// Whether the vector kernel runs on this CPU.
#[inline]
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sorts `v` ascending on this thread.
pub(crate) fn sort(v: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512F is present (checked just above), which is all `avx512::quicksort`
        // needs.
        unsafe { avx512::quicksort(v, depth_budget(v.len())) };
        return;
    }
    v.sort_unstable();
}

/// Sorts `v` ascending with all of rayon's threads.
pub(crate) fn par_sort(v: &mut [u64]) {
    par_quicksort(v, depth_budget(v.len()));
}

/// Key types the sorts sort in memory: `u64` goes to the vector kernel, the others to the
/// standard library's sorts.
pub(crate) trait SortSlice: Ord + Send + Sized {
    /// Sorts `v` ascending on this thread.
    fn sort_slice(v: &mut [Self]) {
        v.sort_unstable();
    }
    /// Sorts `v` ascending with all of rayon's threads.
    fn par_sort_slice(v: &mut [Self]) {
        v.par_sort_unstable();
    }
}

impl SortSlice for u8 {}
impl SortSlice for u16 {}
impl SortSlice for u32 {}
impl SortSlice for u128 {}
impl SortSlice for u64 {
    fn sort_slice(v: &mut [u64]) {
        sort(v);
    }
    fn par_sort_slice(v: &mut [u64]) {
        par_sort(v);
    }
}

/// For each of `keys`, writes to `out` the index of the last bound in `padded` at most the key,
/// capped at `last`: the group of the key when `padded` holds the groups' lower bounds (the first
/// one 0) padded to a power of two with `u64::MAX`. A branchless binary search, 8 keys at a time
/// with AVX-512 (the bounds in two registers when there are at most 16, else gathered).
pub(crate) fn classify(padded: &[u64], last: u32, keys: &[u64], out: &mut [u32]) {
    assert!(padded.len().is_power_of_two() && padded.len() <= 1 << 31);
    assert_eq!(keys.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512F is present (checked just above).
        unsafe { avx512::classify(padded, last, keys, out) };
        return;
    }
    for (o, &k) in out.iter_mut().zip(keys) {
        *o = classify_one(padded, last, k);
    }
}

/// [`classify`] of one key.
#[inline]
pub(crate) fn classify_one(padded: &[u64], last: u32, k: u64) -> u32 {
    let mut base = 0;
    let mut half = padded.len() / 2;
    while half > 0 {
        base = std::hint::select_unpredictable(padded[base + half] <= k, base + half, base);
        half /= 2;
    }
    (base as u32).min(last)
}

/// Partition levels allowed before a slice of `n` keys falls back to `sort_unstable`.
fn depth_budget(n: usize) -> u32 {
    2 * (usize::BITS - n.leading_zeros()) + 4
}

/// Splits `v` around a pivot on this thread and sorts the sides in parallel, down to slices of
/// [`PAR_MIN`] keys, with `budget` partition levels left in all (rayon's `par_sort_unstable`
/// without AVX-512F).
fn par_quicksort(v: &mut [u64], budget: u32) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        if v.len() <= PAR_MIN || budget == 0 || rayon::current_num_threads() < 2 {
            // SAFETY: AVX-512F is present (checked just above).
            unsafe { avx512::quicksort(v, budget) };
            return;
        }
        // SAFETY: as above.
        let (lo, hi) = unsafe { avx512::split(v) };
        let (left, rest) = v.split_at_mut(lo);
        let right = &mut rest[hi - lo..];
        rayon::join(
            || par_quicksort(left, budget - 1),
            || par_quicksort(right, budget - 1),
        );
        return;
    }
    let _ = budget;
    v.par_sort_unstable();
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::BASE;

    /// Keys per vector.
    const L: usize = 8;

    /// Loads the first `s.len()` (at most 8) lanes from `s`, the others `u64::MAX`.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn load(s: &[u64]) -> __m512i {
        debug_assert!(s.len() <= L);
        let mask = lanes(s.len());
        // SAFETY: the masked load reads only the lanes set in `mask`, the first
        // `min(s.len(), 8)`, which lie inside `s`; masked-off lanes are not accessed and cannot
        // fault.
        unsafe { _mm512_mask_loadu_epi64(_mm512_set1_epi64(-1), mask, s.as_ptr().cast()) }
    }

    /// Stores the first `d.len()` (at most 8) lanes of `x` into `d`.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn store(d: &mut [u64], x: __m512i) {
        debug_assert!(d.len() <= L);
        let mask = lanes(d.len());
        // SAFETY: the masked store writes only the lanes set in `mask`, the first
        // `min(d.len(), 8)`, which lie inside `d` (borrowed mutably, so nothing else sees the
        // write).
        unsafe { _mm512_mask_storeu_epi64(d.as_mut_ptr().cast(), mask, x) }
    }

    /// The mask of the first `n` lanes (all 8 when `n` is 8 or more).
    #[inline]
    fn lanes(n: usize) -> __mmask8 {
        (0xffu16 >> (L - n.min(L))) as __mmask8
    }

    /// A vector of lane indices.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn idx(i: [i64; 8]) -> __m512i {
        _mm512_setr_epi64(i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7])
    }

    /// One compare-exchange stage inside a vector: lane `i` meets lane `i ^ j`; it keeps the
    /// larger key when its bit `j` is set and its block of `k` lanes ascends (bit `k` clear), or
    /// when neither holds. (`k = 8`: the whole vector ascends.)
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn stage<const J: usize, const K: usize>(x: __m512i) -> __m512i {
        let mut perm = [0i64; 8];
        let mut take_max: u8 = 0;
        for i in 0..L {
            perm[i] = (i ^ J) as i64;
            let upper = i & J != 0;
            let ascending = i & K == 0;
            if upper == ascending {
                take_max |= 1 << i;
            }
        }
        let y = _mm512_permutexvar_epi64(idx(perm), x);
        // The minimum everywhere, overwritten by the maximum in the `take_max` lanes.
        _mm512_mask_max_epu64(_mm512_min_epu64(x, y), take_max, x, y)
    }

    /// Sorts the 8 lanes of `x` ascending (a bitonic network, 6 stages).
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn sort8(x: __m512i) -> __m512i {
        let x = stage::<1, 2>(x);
        let x = stage::<2, 4>(x);
        let x = stage::<1, 4>(x);
        clean8(x)
    }

    /// Sorts a bitonic vector ascending (the last 3 stages of [`sort8`]).
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn clean8(x: __m512i) -> __m512i {
        let x = stage::<4, 8>(x);
        let x = stage::<2, 8>(x);
        stage::<1, 8>(x)
    }

    /// The lanes of `x` in reverse order.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn reverse(x: __m512i) -> __m512i {
        _mm512_permutexvar_epi64(idx([7, 6, 5, 4, 3, 2, 1, 0]), x)
    }

    /// Sorts the `8 N` keys of `r` (register `i` holding keys `8 i..8 i + 8`) ascending:
    /// every vector by itself, then runs of `W` vectors merged pairwise for `W = 1, 2, 4, 8`.
    /// (Every loop has a constant trip count, so the whole network unrolls into registers.)
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn network<const N: usize>(r: &mut [__m512i; N]) {
        for x in r.iter_mut() {
            *x = sort8(*x);
        }
        if N >= 2 {
            merge_level::<N, 1>(r);
        }
        if N >= 4 {
            merge_level::<N, 2>(r);
        }
        if N >= 8 {
            merge_level::<N, 4>(r);
        }
        if N >= 16 {
            merge_level::<N, 8>(r);
        }
        if N >= 32 {
            merge_level::<N, 16>(r);
        }
    }

    /// Merges the sorted runs of `W` registers of `r` pairwise into sorted runs of `2 W`.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn merge_level<const N: usize, const W: usize>(r: &mut [__m512i; N]) {
        // A run A and the next run B: key `t` of A meets key `8 W - 1 - t` of B, so register
        // `i` of A meets the reversed register `W - 1 - i` of B. The smaller keys (a bitonic
        // sequence) stay in A, the larger (bitonic too) replace B.
        for blk in 0..N / (2 * W) {
            let base = blk * 2 * W;
            let mut hi = [_mm512_setzero_si512(); W];
            for i in 0..W {
                let a = r[base + i];
                let b = reverse(r[base + 2 * W - 1 - i]);
                r[base + i] = _mm512_min_epu64(a, b);
                hi[i] = _mm512_max_epu64(a, b);
            }
            r[base + W..base + 2 * W].copy_from_slice(&hi);
        }
        // Both halves of every merged run are bitonic: half-clean them across registers, then
        // inside each register.
        if W >= 16 {
            half_clean::<N, 8>(r);
        }
        if W >= 8 {
            half_clean::<N, 4>(r);
        }
        if W >= 4 {
            half_clean::<N, 2>(r);
        }
        if W >= 2 {
            half_clean::<N, 1>(r);
        }
        for x in r.iter_mut() {
            *x = clean8(*x);
        }
    }

    /// One half-cleaner stage across registers: register `i` meets register `i + S` in every
    /// block of `2 S`, the smaller keys staying in the lower one.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn half_clean<const N: usize, const S: usize>(r: &mut [__m512i; N]) {
        for blk in 0..N / (2 * S) {
            for i in blk * 2 * S..blk * 2 * S + S {
                let (a, b) = (r[i], r[i + S]);
                r[i] = _mm512_min_epu64(a, b);
                r[i + S] = _mm512_max_epu64(a, b);
            }
        }
    }

    /// Sorts `v` (at most `8 N` keys) with the network of `N` registers.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn small_n<const N: usize>(v: &mut [u64]) {
        debug_assert!(v.len() <= N * L);
        let mut r = [_mm512_setzero_si512(); N];
        for (i, x) in r.iter_mut().enumerate() {
            let lo = (i * L).min(v.len());
            let hi = (lo + L).min(v.len());
            *x = load(&v[lo..hi]);
        }
        network(&mut r);
        for (i, x) in r.iter().enumerate() {
            let lo = (i * L).min(v.len());
            let hi = (lo + L).min(v.len());
            store(&mut v[lo..hi], *x);
        }
    }

    /// Sorts a slice of at most [`BASE`] keys.
    #[target_feature(enable = "avx512f,popcnt")]
    fn small(v: &mut [u64]) {
        match v.len().div_ceil(L) {
            0 => {}
            1 => small_n::<1>(v),
            2 => small_n::<2>(v),
            3 | 4 => small_n::<4>(v),
            5..=8 => small_n::<8>(v),
            9..=16 => small_n::<16>(v),
            _ => small_n::<32>(v),
        }
    }

    /// A pivot for `v` (more than [`BASE`] keys): the median of 16 keys spread evenly over it.
    /// (On 4 Mi random keys the median of 8 took 13.4 ns per key against 11.4; medians of 32
    /// and 64 keys were no faster than 16.)
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn pivot(v: &[u64]) -> u64 {
        let n = v.len();
        let mut s = [0u64; 2 * L];
        for (i, k) in s.iter_mut().enumerate() {
            *k = v[(2 * i + 1) * n / (4 * L)];
        }
        let mut r = [load(&s[..L]), load(&s[L..])];
        network(&mut r);
        store(&mut s[..L], r[1]);
        s[0]
    }

    /// Vectors read at a time by [`partition`]: the loads of a block do not wait for the stores
    /// of the previous vectors, and which end to read is decided once per block. (On 4 Mi random
    /// keys: 4.8 ns per key with 8, 5.2 with 4 or 6, 5.3 with 12, 6.8 with 16, which runs out of
    /// registers.)
    const U: usize = 8;

    /// Keys ahead of the block being read that [`partition`] prefetches.
    const FETCH: usize = 256;

    /// Slices longer than this (256 KiB) are partitioned with prefetching; shorter ones are
    /// likely in L2 already, where the prefetches only cost.
    const FAR_KEYS: usize = 1 << 15;

    /// Which keys go left: below `pivot` (`EQ`: at most `pivot`).
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn goes_left<const EQ: bool>(x: __m512i, p: __m512i) -> __mmask8 {
        if EQ {
            _mm512_cmple_epu64_mask(x, p)
        } else {
            _mm512_cmplt_epu64_mask(x, p)
        }
    }

    /// For each mask of the keys that go left, the lane order that puts them first (in lane
    /// order) and the others after them.
    #[repr(align(64))]
    struct Arrange([[i64; L]; 256]);

    static ARRANGE: Arrange = {
        let mut t = [[0i64; L]; 256];
        let mut m = 0;
        while m < 256 {
            // The lanes whose bit is set, then the others, each in lane order.
            let mut at = 0;
            let mut pass = 0;
            while pass < 2 {
                let mut i = 0;
                while i < L {
                    if (m & (1 << i) != 0) == (pass == 0) {
                        t[m][at] = i as i64;
                        at += 1;
                    }
                    i += 1;
                }
                pass += 1;
            }
            m += 1;
        }
        Arrange(t)
    };

    /// Stores the 8 keys of `x`, those that go left at `*wl` (moving it up) and the others just
    /// below `*wr` (moving it down), by storing the arranged vector whole at both places: the
    /// caller guarantees 8 free slots at each, `wl..wl + 8` and `wr - 8..wr`. (Two compresses
    /// and masked stores instead took 5.4 ns per key on 4 Mi random keys against 4.4.)
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn place_whole<const EQ: bool>(
        v: &mut [u64],
        x: __m512i,
        p: __m512i,
        wl: &mut usize,
        wr: &mut usize,
    ) {
        let m = goes_left::<EQ>(x, p);
        let c = m.count_ones() as usize;
        let order: &[i64; L] = &ARRANGE.0[usize::from(m)];
        // SAFETY: an unaligned load of the 64 bytes of one table entry, which `order` borrows.
        let order = unsafe { _mm512_loadu_si512(order.as_ptr().cast()) };
        let y = _mm512_permutexvar_epi64(order, x);
        let low: &mut [u64; L] = (&mut v[*wl..*wl + L]).try_into().unwrap();
        // SAFETY: an unaligned store of 64 bytes into `low`, 8 keys borrowed mutably.
        unsafe { _mm512_storeu_si512(low.as_mut_ptr().cast(), y) };
        let high: &mut [u64; L] = (&mut v[*wr - L..*wr]).try_into().unwrap();
        // SAFETY: as above, into `high`.
        unsafe { _mm512_storeu_si512(high.as_mut_ptr().cast(), y) };
        *wl += c;
        *wr -= L - c;
    }

    /// Stores the lanes of `x` in `valid` that go left at `*wl` (moving it up) and the others
    /// just below `*wr` (moving it down).
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    fn place<const EQ: bool>(
        v: &mut [u64],
        x: __m512i,
        valid: __mmask8,
        p: __m512i,
        wl: &mut usize,
        wr: &mut usize,
    ) {
        let m = goes_left::<EQ>(x, p) & valid;
        let c = m.count_ones() as usize;
        let rest = valid.count_ones() as usize - c;
        store(&mut v[*wl..*wl + c], _mm512_maskz_compress_epi64(m, x));
        *wl += c;
        *wr -= rest;
        store(
            &mut v[*wr..*wr + rest],
            _mm512_maskz_compress_epi64(!m & valid, x),
        );
    }

    /// Moves the keys of `v` below `pivot` (`EQ`: at most `pivot`) before the others; returns
    /// how many there are. `v` holds at least `2 U` vectors.
    #[target_feature(enable = "avx512f,popcnt")]
    fn partition<const EQ: bool, const FAR: bool>(v: &mut [u64], pivot: u64) -> usize {
        let n = v.len();
        debug_assert!(n >= 2 * U * L);
        let p = _mm512_set1_epi64(pivot as i64);
        // The first and last `U` vectors wait in registers; that leaves `2 U` vectors of room,
        // split between the two ends, and whichever end has less gets read next, `U` vectors at
        // once, so both ends always have room for a whole block: `(l - wl) + (wr - r) == 2 U L`
        // until the end.
        let mut held = [_mm512_setzero_si512(); 2 * U];
        for i in 0..U {
            held[i] = load(&v[i * L..(i + 1) * L]);
            held[U + i] = load(&v[n - (i + 1) * L..n - i * L]);
        }
        let (mut l, mut r) = (U * L, n - U * L);
        let (mut wl, mut wr) = (0, n);
        let mut block = [_mm512_setzero_si512(); U];
        while r - l >= U * L {
            let from = if l - wl <= wr - r {
                l += U * L;
                if FAR {
                    let ahead = (l + FETCH).min(r);
                    crate::kernels::prefetch::lines(&v[ahead..(ahead + U * L).min(r)]);
                }
                l - U * L
            } else {
                r -= U * L;
                if FAR {
                    let behind = r.saturating_sub(FETCH + U * L).max(l);
                    crate::kernels::prefetch::lines(&v[behind..(behind + U * L).min(r)]);
                }
                r
            };
            for (i, x) in block.iter_mut().enumerate() {
                *x = load(&v[from + i * L..from + (i + 1) * L]);
            }
            // Before each of these stores both ends have at least 8 free slots: the end just
            // read has at least `U L` and the other end at least `U L`, and each vector placed
            // takes 8 slots from the two together.
            for x in block {
                place_whole::<EQ>(v, x, p, &mut wl, &mut wr);
            }
        }
        // The rest of the middle, read at once (the room is now the whole gap `wl..wr`), then
        // the held vectors.
        let mut rest = [_mm512_setzero_si512(); U];
        let mut valid = [0 as __mmask8; U];
        for i in 0..U {
            let lo = (l + i * L).min(r);
            let hi = (lo + L).min(r);
            rest[i] = load(&v[lo..hi]);
            valid[i] = lanes(hi - lo);
        }
        for i in 0..U {
            place::<EQ>(v, rest[i], valid[i], p, &mut wl, &mut wr);
        }
        for x in held {
            place::<EQ>(v, x, 0xff, p, &mut wl, &mut wr);
        }
        debug_assert_eq!(wl, wr);
        wl
    }

    /// Splits `v` (more than [`BASE`] keys) into keys below a pivot, keys equal to it and keys
    /// above it, returning where the middle part starts and ends; the middle part may be empty
    /// and the outer parts may hold the pivot's key too, but neither outer part is all of `v`
    /// (so every split makes progress).
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) fn split(v: &mut [u64]) -> (usize, usize) {
        let p = pivot(v);
        let far = v.len() > FAR_KEYS;
        let lo = if far {
            partition::<false, true>(v, p)
        } else {
            partition::<false, false>(v, p)
        };
        if lo > 0 {
            return (lo, lo);
        }
        // `p` is the minimum (it is one of the keys): split off its copies, which are done.
        let eq = if far {
            partition::<true, true>(v, p)
        } else {
            partition::<true, false>(v, p)
        };
        (0, eq)
    }

    /// [`super::classify`] with 8-lane vectors.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `padded.len()` is a power of two and `keys` and `out` have
    /// the same length (the caller checks).
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn classify(padded: &[u64], last: u32, keys: &[u64], out: &mut [u32]) {
        let p = padded.len();
        let cap = _mm512_set1_epi64(i64::from(last));
        // With at most 16 bounds, all of them sit in two registers and a lookup is one
        // two-register permute; otherwise they are gathered.
        let in_regs = p <= 2 * L;
        let lo = load(&padded[..p.min(L)]);
        let hi = load(&padded[p.min(L)..p.min(2 * L)]);
        let step = |k: __m512i| -> __m512i {
            let mut base = _mm512_setzero_si512();
            let mut half = p / 2;
            while half > 0 {
                let cand = _mm512_add_epi64(base, _mm512_set1_epi64(half as i64));
                let bound = if in_regs {
                    _mm512_permutex2var_epi64(lo, cand, hi)
                } else {
                    // SAFETY: every lane of `cand` is below `p` (`base + half` stays below the
                    // power of two `p` in a binary search from 0), so each of the 8 loads reads
                    // an element of `padded`.
                    unsafe { _mm512_i64gather_epi64::<8>(cand, padded.as_ptr().cast()) }
                };
                base = _mm512_mask_mov_epi64(base, _mm512_cmple_epu64_mask(bound, k), cand);
                half /= 2;
            }
            _mm512_min_epu64(base, cap)
        };
        for (k, o) in keys.chunks(L).zip(out.chunks_mut(L)) {
            let g = step(load(k));
            let mask = lanes(o.len());
            // SAFETY: the masked store writes only the first `o.len()` 32-bit lanes, which lie
            // inside `o`.
            unsafe { _mm512_mask_cvtepi64_storeu_epi32(o.as_mut_ptr().cast(), mask, g) };
        }
    }

    /// Sorts `v` ascending; `budget` partition levels are left before `sort_unstable` takes
    /// over.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn quicksort(mut v: &mut [u64], mut budget: u32) {
        loop {
            if v.len() <= BASE {
                small(v);
                return;
            }
            if budget == 0 {
                v.sort_unstable();
                return;
            }
            budget -= 1;
            let (lo, hi) = split(v);
            let (left, rest) = std::mem::take(&mut v).split_at_mut(lo);
            let right = &mut rest[hi - lo..];
            // Recurse into the smaller side, loop on the larger: the stack stays O(log n).
            if left.len() < right.len() {
                // SAFETY: same CPU, and this function's caller guarantees AVX-512F.
                unsafe { quicksort(left, budget) };
                v = right;
            } else {
                // SAFETY: as above.
                unsafe { quicksort(right, budget) };
                v = left;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn check(mut v: Vec<u64>) {
        let mut want = v.clone();
        want.sort_unstable();
        let mut p = v.clone();
        super::sort(&mut v);
        assert_eq!(v, want);
        super::par_sort(&mut p);
        assert_eq!(p, want);
    }

    /// A seeded xorshift stream.
    fn keys(n: usize, seed: u64, modulo: u64) -> Vec<u64> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if modulo == 0 { s } else { s % modulo }
            })
            .collect()
    }

    #[test]
    fn every_small_length() {
        for n in 0..=300 {
            check(keys(n, n as u64 + 1, 0));
            check(keys(n, n as u64 + 7, 5));
        }
    }

    #[test]
    fn shapes_that_trouble_quicksorts() {
        let n = 200_000;
        check((0..n).collect());
        check((0..n).rev().collect());
        check(vec![7; n as usize]);
        check(vec![u64::MAX; 1000]);
        check((0..n).map(|i| i % 2 * u64::MAX).collect());
        // Organ pipe and sawtooth.
        check((0..n).map(|i| i.min(n - i)).collect());
        check((0..n).map(|i| i % 1000).collect());
        // Sorted with a few keys out of place.
        let mut v: Vec<u64> = (0..n).collect();
        v.swap(10, 150_000);
        v.swap(77, 99_999);
        check(v);
    }

    #[test]
    fn large_random_with_and_without_duplicates() {
        check(keys(1 << 18, 42, 0));
        check(keys(1 << 18, 43, 3));
        check(keys(300_000, 44, 1 << 20));
    }

    #[test]
    fn classify_matches_the_scalar_search() {
        for nb in [1usize, 2, 3, 5, 8, 9, 16, 17, 40, 300] {
            let mut bounds: Vec<u64> = keys(nb, nb as u64, 0);
            bounds[0] = 0;
            bounds.sort_unstable();
            bounds.dedup();
            let last = bounds.len() as u32 - 1;
            let mut padded = bounds.clone();
            padded.resize(bounds.len().next_power_of_two(), u64::MAX);
            let mut ks = keys(1003, 9, 0);
            ks.extend_from_slice(&bounds);
            ks.extend([0, 1, u64::MAX, u64::MAX - 1]);
            let mut got = vec![0u32; ks.len()];
            super::classify(&padded, last, &ks, &mut got);
            for (&k, &g) in ks.iter().zip(&got) {
                let want = bounds.partition_point(|&b| b <= k) - 1;
                assert_eq!(g as usize, want, "key {k} with {} bounds", bounds.len());
                assert_eq!(g, super::classify_one(&padded, last, k));
            }
        }
    }

    proptest! {
        #[test]
        fn sorts_like_sort_unstable(v in prop::collection::vec(any::<u64>(), 0..2000)) {
            check(v);
        }

        #[test]
        fn sorts_few_distinct_keys(v in prop::collection::vec(
            prop::sample::select(vec![0u64, 1, 2, u64::MAX - 1, u64::MAX]), 0..3000)) {
            check(v);
        }
    }
}
