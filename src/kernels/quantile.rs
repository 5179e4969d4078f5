//! Exact quantiles out of core: [`quantile`] (`np.quantile(a, q)` with the default `'linear'`
//! method, or `np.nanquantile`), [`percentile`] and [`median`] (`np.median` / `np.nanmedian`),
//! over all elements of a source, in a few streaming passes and bounded memory.
//!
//! **Algorithm.** Every value maps to an order-preserving integer key (floats: the sign-flip bit
//! trick, with `-0.0` keyed as `0.0` so the two tie as NumPy treats them; integers: the sign bit
//! flipped). The ranks NumPy's linear method needs are `floor((n - 1) q)` and the next one.
//! 1. Pass 1 counts the elements and NaNs, finds the smallest and largest keys and counts keys by
//!    their top 16 bits (so 8- and 16-bit dtypes are resolved exactly in this one pass).
//! 2. Each needed rank now lies in a known key interval with a known number of smaller keys. While
//!    an interval holds more candidates than the candidate allowance (or its reservation in the
//!    memory budget is refused), the next pass splits it into up to 2^16 buckets of equal key
//!    width and keeps the bucket holding the rank. Intervals that fit are collected in the same
//!    pass into exactly-sized reserved vectors, and the ranks are selected with
//!    `select_nth_unstable`. An interval of one key needs no collecting.
//!
//! 3. For 32- and 64-bit data of at least 16 Mi elements, a sample (runs of 64 values, one value
//!    in 256) first brackets each quantile's keys, and pass 1 is replaced by one pass that counts
//!    the keys below and inside the brackets and collects those inside (`quantile/sampled.rs`):
//!    usually the only pass. A rank the sample misplaced lies in an interval whose counts that
//!    pass gives exactly, and step 2 takes it from there (for 64-bit keys up to 4 passes more,
//!    as the interval may span most of the key range).
//!
//! All ranks share every pass. Each histogram pass divides a key range by 2^16, so there are
//! never more than 4 passes for up to 8 quantiles on the key-prefix path (1 for 8- and 16-bit
//! data; typically 2 for floats) and 5 on the sampled one (typically 1); with more quantiles, each
//! split interval gets fewer buckets and passes may grow slowly. Per-chunk
//! partial counts are integers and the collected candidates are selected by rank, so nothing
//! depends on the thread count or the chunk visiting order.
//!
//! **NumPy's arithmetic.** The result is NumPy's `_lerp(a, b, t)`: `a + (b - a) * t`, or
//! `b - (b - a) * (1 - t)` when `t >= 0.5`, with `(b - a)` in the input dtype (so integer
//! differences wrap exactly as NumPy's do) and, for `float32` input with a scalar `q`, every step
//! in `float32`. At or past the last rank NumPy interpolates the maximum with itself with
//! `t = (n - 1) q + 1` (so an infinite maximum gives NaN, as in NumPy). `np.median` instead takes
//! the mean of the one or two middle values (`(a + b) / 2`, in `float32` for `float32` input).

use std::sync::Mutex;

use crate::dtype::{Bool, DType, Element};
use crate::error::{Error, Result};
use crate::kernels::histogram::{Num, count_lanes, fold_chunks};
use crate::kernels::prefetch;
use crate::memory::{self, Reservation};
use crate::pipeline::Progress;
use crate::storage::ChunkSource;

mod sampled;

/// How to compute quantiles.
#[derive(Clone, Debug, Default)]
pub struct QuantileOptions {
    /// Ignore NaNs (`np.nanquantile`, `np.nanpercentile`, `np.nanmedian`). Without it any NaN
    /// makes every result NaN, as in NumPy.
    pub skip_nan: bool,
    /// Mirror `np.quantile(a, [q1, q2, ..])` (the quantiles passed as an array): for `float32`
    /// input the interpolation then runs in `float64` and NumPy returns `float64`. By default
    /// each `q` is treated as a Python float (`np.quantile(a, q)`), which for `float32` input
    /// interpolates in `float32` and returns `float32`. Other dtypes are unaffected.
    pub array_q: bool,
    /// Most bytes of candidate keys to collect for the final exact selection (default: an
    /// eighth of the memory budget's limit, at most 256 MiB). Smaller values cost more passes,
    /// never more memory.
    pub max_candidate_bytes: Option<u64>,
    /// Sample one value in this many (in runs of 64) to place the ranks before the first pass
    /// (see the module documentation); `Some(0)` never samples. Default: one in 256 for 32- and
    /// 64-bit data of at least 16 Mi elements, at most 2 Mi values in all. 8- and 16-bit data
    /// is never sampled (its first pass is exact).
    pub sample_every: Option<u64>,
}

/// Quantile values and how they were found.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantileResult {
    /// One value per requested quantile, in request order (an `F32` result is stored exactly).
    pub values: Vec<f64>,
    /// The dtype NumPy returns: `F32` for `float32` input (unless [`QuantileOptions::array_q`]
    /// asks for the array form of `np.quantile`), `F64` otherwise.
    pub dtype: DType,
    /// Streaming passes over the data (not counting the sample, see [`Self::sampled`]).
    pub passes: u32,
    /// Values read to estimate where the ranks lie before the passes (0 when the first pass
    /// counted key prefixes instead; see the module documentation).
    pub sampled: u64,
    /// Non-NaN elements.
    pub count: u64,
    /// NaN elements.
    pub nan_count: u64,
}

/// Element behaviour for order statistics.
trait QElem: Num {
    /// Significant bits of the key.
    const BITS: u32;
    /// Order-preserving key (not called on NaN; `-0.0` and `0.0` share a key).
    fn key(self) -> u64;
    /// The value of a key.
    fn from_key(k: u64) -> Self;
    /// NumPy's `_lerp(a, b, t)` for this dtype; `weak` when `t` is a Python float.
    fn lerp(a: Self, b: Self, t: f64, weak: bool) -> f64;
    /// `np.mean([a, b])` as `np.median` computes it.
    fn mid(a: Self, b: Self) -> f64;
}

impl QElem for f64 {
    const BITS: u32 = 64;
    #[inline(always)]
    fn key(self) -> u64 {
        let b = (self + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
        b ^ (((b as i64 >> 63) as u64) | 1 << 63)
    }
    fn from_key(k: u64) -> Self {
        f64::from_bits(if k >> 63 == 1 { k ^ 1 << 63 } else { !k })
    }
    fn lerp(a: Self, b: Self, t: f64, _: bool) -> f64 {
        let d = b - a;
        if t >= 0.5 {
            b - d * (1.0 - t)
        } else {
            a + d * t
        }
    }
    fn mid(a: Self, b: Self) -> f64 {
        (a + b) / 2.0
    }
}

impl QElem for f32 {
    const BITS: u32 = 32;
    #[inline(always)]
    fn key(self) -> u64 {
        let b = (self + 0.0).to_bits();
        u64::from(b ^ (((b as i32 >> 31) as u32) | 1 << 31))
    }
    fn from_key(k: u64) -> Self {
        let k = k as u32;
        f32::from_bits(if k >> 31 == 1 { k ^ 1 << 31 } else { !k })
    }
    fn lerp(a: Self, b: Self, t: f64, weak: bool) -> f64 {
        let d = b - a;
        if weak {
            // A Python float `t` is cast to float32 before each float32 operation.
            f64::from(if t >= 0.5 {
                b - d * ((1.0 - t) as f32)
            } else {
                a + d * (t as f32)
            })
        } else {
            let d = f64::from(d);
            if t >= 0.5 {
                f64::from(b) - d * (1.0 - t)
            } else {
                f64::from(a) + d * t
            }
        }
    }
    fn mid(a: Self, b: Self) -> f64 {
        f64::from((a + b) / 2.0)
    }
}

macro_rules! q_int {
    ($($t:ty, $u:ty, $bits:expr, $flip:expr);*) => {$(
        impl QElem for $t {
            const BITS: u32 = $bits;
            #[inline(always)]
            fn key(self) -> u64 { u64::from((self as $u) ^ $flip) }
            fn from_key(k: u64) -> Self { ((k as $u) ^ $flip) as $t }
            fn lerp(a: Self, b: Self, t: f64, _: bool) -> f64 {
                // NumPy subtracts in the input dtype (wrapping on overflow), then goes to f64.
                let d = b.wrapping_sub(a) as f64;
                if t >= 0.5 { b as f64 - d * (1.0 - t) } else { a as f64 + d * t }
            }
            fn mid(a: Self, b: Self) -> f64 { (a as f64 + b as f64) / 2.0 }
        }
    )*};
}
q_int!(i8, u8, 8, 1 << 7; i16, u16, 16, 1 << 15; i32, u32, 32, 1 << 31; i64, u64, 64, 1 << 63;
       u8, u8, 8, 0; u16, u16, 16, 0; u32, u32, 32, 0; u64, u64, 64, 0);

impl QElem for Bool {
    const BITS: u32 = 8;
    #[inline(always)]
    fn key(self) -> u64 {
        u64::from(self.get())
    }
    fn from_key(k: u64) -> Self {
        Bool(k as u8)
    }
    fn lerp(_: Self, _: Self, _: f64, _: bool) -> f64 {
        f64::NAN // rejected before: NumPy cannot subtract booleans
    }
    fn mid(a: Self, b: Self) -> f64 {
        (a.to_f64() + b.to_f64()) / 2.0
    }
}

/// `np.quantile(a, qs)` (or `np.nanquantile` with [`QuantileOptions::skip_nan`]) over every
/// element, exactly, with NumPy's default `'linear'` method. Every `q` must lie in `[0, 1]`.
pub fn quantile(
    src: &dyn ChunkSource,
    qs: &[f64],
    opts: &QuantileOptions,
    progress: Progress<'_>,
) -> Result<QuantileResult> {
    for &q in qs {
        if !(0.0..=1.0).contains(&q) {
            return Err(Error::Invalid(format!(
                "quantile {q} is outside [0, 1] (quantiles must be in the range [0, 1])"
            )));
        }
    }
    run(src, Want::Quantiles(qs.to_vec()), opts, progress)
}

/// `np.percentile(a, ps)` (or `np.nanpercentile`): [`quantile`] of `p / 100`. Every `p` must
/// lie in `[0, 100]`.
pub fn percentile(
    src: &dyn ChunkSource,
    ps: &[f64],
    opts: &QuantileOptions,
    progress: Progress<'_>,
) -> Result<QuantileResult> {
    let qs: Vec<f64> = ps.iter().map(|p| p / 100.0).collect();
    for (&p, &q) in ps.iter().zip(&qs) {
        if !(0.0..=1.0).contains(&q) {
            return Err(Error::Invalid(format!(
                "percentile {p} is outside [0, 100] (percentiles must be in the range [0, 100])"
            )));
        }
    }
    run(src, Want::Quantiles(qs), opts, progress)
}

/// `np.median(a)` (or `np.nanmedian`): the middle value, or the mean of the two middle values
/// (computed as NumPy's `mean` does, which can differ from `quantile(0.5)` in the last bit).
/// Bool arrays are allowed here (NumPy averages them as 0/1).
pub fn median(
    src: &dyn ChunkSource,
    opts: &QuantileOptions,
    progress: Progress<'_>,
) -> Result<QuantileResult> {
    run(src, Want::Median, opts, progress)
}

enum Want {
    Quantiles(Vec<f64>),
    Median,
}

fn run(
    src: &dyn ChunkSource,
    want: Want,
    opts: &QuantileOptions,
    progress: Progress<'_>,
) -> Result<QuantileResult> {
    let info = src.info();
    if info.numel() == 0 {
        return Err(Error::Invalid(format!(
            "{}: cannot take a quantile or median of an empty array (shape {})",
            info.name,
            crate::shape::shape_str(&info.shape)
        )));
    }
    if info.dtype == DType::Bool && matches!(want, Want::Quantiles(_)) {
        return Err(Error::Invalid(format!(
            "{}: quantiles of a bool array are not supported (NumPy cannot subtract booleans); \
             convert it to an integer dtype first",
            info.name
        )));
    }
    crate::with_dtype!(info.dtype, T => run_typed::<T>(src, &want, opts, progress))
}

/// Keys `[lo, hi]` (inclusive) known to hold `count` keys, with `below` keys smaller than `lo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interval {
    lo: u64,
    hi: u64,
    below: u64,
    count: u64,
}

/// Pass-1 totals.
struct First {
    count: u64,
    nan: u64,
    min: u64,
    max: u64,
    hist: Vec<u64>,
}

/// Keys buffered per collected interval and worker before they are appended under the lock.
const LOCAL_KEYS: usize = 1024;

/// Counters flushed from `u32` scratch at least this often.
#[cfg(not(test))]
const FLUSH_EVERY: usize = u32::MAX as usize;
/// In unit tests, few enough that tests of a few hundred thousand values flush.
#[cfg(test)]
const FLUSH_EVERY: usize = 1 << 16;

/// Elements keyed per block, a [`prefetch::pieces`] piece: the keys (and bucket indices) of a
/// block are computed first in a loop of independent operations that vectorises, then counted
/// or filtered.
const QBLOCK: usize = prefetch::MAX_PIECE_ELEMS;

/// Interleaved sub-histograms (`counts[slot * LANES + lane]`) used when the counters are small
/// enough, so runs of equal buckets do not serialise on one counter.
const LANES: usize = 4;

/// Per-worker counters (`lanes` interleaved sub-histograms), local key buffers, and the number of
/// elements counted since the counters were last flushed.
struct Scratch {
    counts: Vec<u32>,
    lanes: usize,
    bufs: Vec<Vec<u64>>,
    pending: usize,
    _res: Reservation,
}

impl Scratch {
    /// Adds the counters into `total` (one entry per slot) and zeroes them.
    fn flush(&mut self, total: &mut [u64]) {
        for (t, c) in total
            .iter_mut()
            .zip(self.counts.chunks_exact_mut(self.lanes))
        {
            for c in c {
                *t += u64::from(*c);
                *c = 0;
            }
        }
        self.pending = 0;
    }
}

/// Counts `idx` into `counts` with `lanes` (1 or [`LANES`]) interleaved lanes.
#[inline(always)]
fn count_idx(idx: &[u32], counts: &mut [u32], lanes: usize) {
    if lanes == LANES {
        count_lanes::<LANES>(idx, counts);
    } else {
        count_lanes::<1>(idx, counts);
    }
}

/// Keys of a block (vectorises). Not meaningful for NaN, whose keys lie outside every key of a
/// non-NaN value (above `+inf`'s key for a positive NaN, below `-inf`'s for a negative one).
#[inline(always)]
fn keys_into<T: QElem>(block: &[T], keys: &mut [u64; QBLOCK]) {
    for (k, &v) in keys.iter_mut().zip(block) {
        *k = v.key();
    }
}

/// Slots of the first pass's histogram: the top 16 bits of a key (all of an 8-bit key).
const FIRST_SLOTS: usize = 1 << 16;

/// The slot NaNs are counted in by the first pass, then taken out of by their count: the last.
/// (For floats only NaN keys reach it, but the arithmetic does not rely on that.)
const NAN_SLOT: u16 = u16::MAX;

/// Slots of the first pass's histogram for 8-bit data.
const NARROW_SLOTS: usize = 1 << 8;

/// Counts the keys' top bits of `data` into `counts` (NaN into [`NAN_SLOT`]) and returns the
/// number of NaNs and the smallest and largest key (`u64::MAX` and 0 when every value is NaN).
/// The slots of 512 values are computed as `u16` with the extremes of their keys (NaN left out),
/// a piece at a time in a loop that vectorises, then counted. (On the Zen 5 VM, one thread over 4 GiB of
/// page-cached `f64`: this pass took 0.29 s counting `u32` slots per 64-value piece.)
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn first_chunk<T: QElem, const N: usize>(
    data: &[T],
    shift: u32,
    counts: &mut [[u32; LANES]; N],
) -> (u64, u64, u64) {
    let (mut nan, mut lo, mut hi) = (0u64, u64::MAX, 0u64);
    let mut idx = [0u16; QBLOCK];
    for block in data.chunks(QBLOCK) {
        let mut at = 0;
        for piece in prefetch::pieces(block) {
            for (o, &v) in idx[at..at + piece.len()].iter_mut().zip(piece) {
                let is_nan = v.nan();
                nan += u64::from(is_nan);
                *o = if is_nan {
                    NAN_SLOT
                } else {
                    (v.key() >> shift) as u16
                };
            }
            at += piece.len();
            // A loop of its own, NaN masked out with integer operations: with the extremes in
            // the loop above, or chosen by a select on the NaN test, LLVM left it scalar.
            for &v in piece {
                let nan_mask = u64::from(v.nan()).wrapping_neg();
                let k = v.key();
                lo = lo.min(k | nan_mask);
                hi = hi.max(k & !nan_mask);
            }
        }
        let mut it = idx[..block.len()].chunks_exact(LANES);
        // `N` is a power of two at least the slots' range, so the mask changes no slot (NaN's
        // aside, where `N` is smaller than `NAN_SLOT`: see `first_pass`) and lets the index go
        // unchecked.
        for c in &mut it {
            for (l, &i) in c.iter().enumerate() {
                counts[usize::from(i) & (N - 1)][l] += 1;
            }
        }
        for &i in it.remainder() {
            counts[usize::from(i) & (N - 1)][0] += 1;
        }
    }
    (nan, lo, hi)
}

/// Per-worker state of the first pass.
struct FirstScratch {
    /// [`FIRST_SLOTS`] entries, or [`NARROW_SLOTS`] for 8-bit data.
    counts: Box<[[u32; LANES]]>,
    pending: usize,
    _res: Reservation,
}

fn first_pass<T: QElem>(src: &dyn ChunkSource, progress: Progress<'_>) -> Result<(First, u32)> {
    let hb = T::BITS.min(16);
    let shift = T::BITS - hb;
    let slots = 1usize << hb;
    // 8-bit keys need 256 counters, not 64 Ki (NaN, which 8-bit types cannot hold, would share
    // the last with the largest key and be taken out of it by its count as below).
    let n = if hb <= 8 { NARROW_SLOTS } else { FIRST_SLOTS };
    let _res = memory::global().reserve(n as u64 * 8, "quantile histogram")?;
    let acc = Mutex::new(First {
        count: 0,
        nan: 0,
        min: u64::MAX,
        max: 0,
        hist: vec![0; n],
    });
    let fold = |s: &mut FirstScratch, nan: u64, n: u64, mn: u64, mx: u64, flush: bool| {
        let mut a = acc.lock().unwrap_or_else(|e| e.into_inner());
        a.nan += nan;
        a.count += n - nan;
        a.min = a.min.min(mn);
        a.max = a.max.max(mx);
        if flush {
            for (t, c) in a.hist.iter_mut().zip(s.counts.iter_mut()) {
                *t += c.iter().map(|&c| u64::from(c)).sum::<u64>();
                *c = [0; LANES];
            }
            s.pending = 0;
        }
    };
    fold_chunks(
        src,
        progress,
        || {
            let res = memory::global()
                .reserve((n * size_of::<[u32; LANES]>()) as u64, "quantile scratch")?;
            Ok(FirstScratch {
                counts: vec![[0; LANES]; n].into_boxed_slice(),
                pending: 0,
                _res: res,
            })
        },
        |s, c| {
            for piece in c.as_slice::<T>().chunks(FLUSH_EVERY / 2) {
                let flush = s.pending + piece.len() > FLUSH_EVERY;
                if flush {
                    fold(s, 0, 0, u64::MAX, 0, true);
                }
                let counts = &mut *s.counts;
                let (nan, mn, mx) = if let Ok(c) = counts.try_into() {
                    first_chunk::<T, FIRST_SLOTS>(piece, shift, c)
                } else {
                    let c = counts.try_into().expect("NARROW_SLOTS entries");
                    first_chunk::<T, NARROW_SLOTS>(piece, shift, c)
                };
                s.pending += piece.len();
                fold(s, nan, piece.len() as u64, mn, mx, false);
            }
            Ok(())
        },
        |mut s| {
            fold(&mut s, 0, 0, u64::MAX, 0, true);
            Ok(())
        },
    )?;
    let mut first = acc.into_inner().unwrap_or_else(|e| e.into_inner());
    first.hist[usize::from(NAN_SLOT) & (n - 1)] -= first.nan;
    first.hist.truncate(slots);
    Ok((first, shift))
}

/// How a refinement pass treats one interval.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// Count keys into buckets `(key - lo) >> shift` at `offset` in the scratch counters.
    Count { shift: u32, offset: usize },
    /// Collect the keys into candidate vector `slot`.
    Collect { slot: usize },
}

/// Refines one block when the plan has a single interval `iv` that is counted: bucket indices
/// (keys outside `iv`, NaN included, go to the discard slot `discard`) are computed in a loop
/// that vectorises, then counted.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn refine_count_one<T: QElem>(
    data: &[T],
    iv: Interval,
    shift: u32,
    discard: u32,
    counts: &mut [u32],
    lanes: usize,
) {
    let mut idx = [0u32; QBLOCK];
    for block in prefetch::pieces(data) {
        for (o, &v) in idx.iter_mut().zip(block) {
            let k = v.key();
            let inside = (k >= iv.lo) & (k <= iv.hi);
            // `(k - lo) >> shift` is below the number of buckets for keys inside.
            let b = (k.wrapping_sub(iv.lo) >> shift) as u32;
            *o = if inside { b } else { discard };
        }
        count_idx(&idx[..block.len()], counts, lanes);
    }
}

/// The keys of `data` inside `[lo, hi]` (NaN never is), appended to `out` block by block:
/// keys are computed in a loop that vectorises, then filtered without branches.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn filter_keys<T: QElem, F: FnMut(&[u64])>(data: &[T], lo: u64, hi: u64, mut out: F) {
    let mut keys = [0u64; QBLOCK];
    let mut hits = [0u64; QBLOCK];
    for block in prefetch::pieces(data) {
        // Usually no key is inside (the interval is narrow): a count that vectorises, reading
        // the values once, skips keying the block into a buffer and the compaction, whose every
        // step waits on the previous one.
        let inside: u64 = block
            .iter()
            .map(|&v| {
                let k = v.key();
                u64::from((k >= lo) & (k <= hi))
            })
            .sum();
        if inside == 0 {
            continue;
        }
        keys_into(block, &mut keys);
        let mut m = 0;
        for &k in &keys[..block.len()] {
            hits[m] = k;
            m += usize::from((k >= lo) & (k <= hi));
        }
        if m > 0 {
            out(&hits[..m]);
        }
    }
}

/// Plans with at most this many intervals are refined by [`classify`]; longer ones look each
/// key's interval up by binary search.
const CLASSIFY_MAX: usize = 8;

/// The keys of `data` inside one of the intervals `[los[j], his[j]]` (disjoint, sorted), with
/// the index `j` of their interval, handed to `out` block by block. Whether a key is inside an
/// interval and how many intervals lie entirely below it are found with compares in loops that
/// vectorise (NaN keys lie outside every interval), then the keys inside are gathered without
/// branches.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn classify<T: QElem, F: FnMut(&[u64], &[u64])>(data: &[T], los: &[u64], his: &[u64], mut out: F) {
    let mut keys = [0u64; QBLOCK];
    let mut inside = [0u64; QBLOCK];
    let mut which = [0u64; QBLOCK];
    let mut sel = [0u64; QBLOCK];
    let mut selw = [0u64; QBLOCK];
    for block in prefetch::pieces(data) {
        let len = block.len();
        keys_into(block, &mut keys);
        inside[..len].fill(0);
        which[..len].fill(0);
        for (&lo, &hi) in los.iter().zip(his) {
            for ((&k, i), w) in keys[..len].iter().zip(&mut inside).zip(&mut which) {
                *i |= u64::from((k >= lo) & (k <= hi));
                *w += u64::from(k > hi);
            }
        }
        // As in `filter_keys`: skip the serial compaction when no key is inside.
        if inside[..len].iter().sum::<u64>() == 0 {
            continue;
        }
        let mut m = 0;
        for ((&k, &i), &w) in keys[..len].iter().zip(&inside).zip(&which) {
            sel[m] = k;
            selw[m] = w;
            m += i as usize;
        }
        if m > 0 {
            out(&sel[..m], &selw[..m]);
        }
    }
}

/// One refinement pass over `src`: intervals (disjoint, sorted by `lo`) with their actions.
/// Returns the bucket counts (all `Count` intervals, concatenated) and the collected keys.
fn refine_pass<T: QElem>(
    src: &dyn ChunkSource,
    plan: &[(Interval, Action)],
    slots: usize,
    collect_sizes: &[u64],
    progress: Progress<'_>,
) -> Result<(Vec<u64>, Vec<Vec<u64>>)> {
    let ncollect = collect_sizes.len();
    let _res = memory::global().reserve((slots as u64 + 1) * 8, "quantile histogram")?;
    let total = Mutex::new(vec![0u64; slots + 1]);
    let collected: Vec<Mutex<Vec<u64>>> = collect_sizes
        .iter()
        .map(|&n| Mutex::new(Vec::with_capacity(n as usize)))
        .collect();
    let append = |slot: usize, keys: &[u64]| {
        collected[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(keys);
    };
    let glo = plan.first().map_or(0, |p| p.0.lo);
    let ghi = plan.last().map_or(0, |p| p.0.hi);
    // Interval starts, padded with `u64::MAX` to a power of two for the binary search.
    let mut los: Vec<u64> = plan.iter().map(|p| p.0.lo).collect();
    los.resize(plan.len().next_power_of_two(), u64::MAX);
    let his: Vec<u64> = plan.iter().map(|p| p.0.hi).collect();
    // Slot `slots` takes the keys outside the single counted interval.
    let lanes = if slots < 1 << 17 { LANES } else { 1 };
    let flush = |s: &mut Scratch| {
        for (slot, buf) in s.bufs.iter_mut().enumerate() {
            if !buf.is_empty() {
                append(slot, buf);
                buf.clear();
            }
        }
        s.flush(&mut total.lock().unwrap_or_else(|e| e.into_inner()));
    };
    fold_chunks(
        src,
        progress,
        || {
            let len = (slots + 1) * lanes;
            let bytes = len as u64 * 4 + (ncollect * LOCAL_KEYS * 8) as u64;
            Ok(Scratch {
                _res: memory::global().reserve(bytes, "quantile scratch")?,
                counts: vec![0; len],
                lanes,
                bufs: (0..ncollect)
                    .map(|_| Vec::with_capacity(LOCAL_KEYS))
                    .collect(),
                pending: 0,
            })
        },
        |s, c| {
            for piece in c.as_slice::<T>().chunks(FLUSH_EVERY / 2) {
                if s.pending + piece.len() > FLUSH_EVERY {
                    flush(s);
                }
                s.pending += piece.len();
                match plan {
                    [(iv, Action::Count { shift, .. })] => refine_count_one::<T>(
                        piece,
                        *iv,
                        *shift,
                        slots as u32,
                        &mut s.counts,
                        lanes,
                    ),
                    [(iv, Action::Collect { slot })] => {
                        filter_keys::<T, _>(piece, iv.lo, iv.hi, |keys| append(*slot, keys));
                    }
                    _ if plan.len() <= CLASSIFY_MAX => {
                        classify::<T, _>(piece, &los[..plan.len()], &his, |keys, which| {
                            for (&k, &j) in keys.iter().zip(which) {
                                let (iv, act) = plan[j as usize];
                                match act {
                                    Action::Count { shift, offset } => {
                                        let b = offset + ((k - iv.lo) >> shift) as usize;
                                        s.counts[b * lanes] += 1;
                                    }
                                    Action::Collect { slot } => {
                                        let buf = &mut s.bufs[slot];
                                        buf.push(k);
                                        if buf.len() == LOCAL_KEYS {
                                            append(slot, buf);
                                            buf.clear();
                                        }
                                    }
                                }
                            }
                        });
                    }
                    _ => filter_keys::<T, _>(piece, glo, ghi, |keys| {
                        for &k in keys {
                            // Branch-free binary search: the last interval starting at or
                            // below `k` (the padding only ever matches `u64::MAX`).
                            let mut i = 0;
                            let mut half = los.len() / 2;
                            while half > 0 {
                                i += half & usize::from(los[i + half] <= k).wrapping_neg();
                                half /= 2;
                            }
                            let (iv, act) = plan[i.min(plan.len() - 1)];
                            if k > iv.hi {
                                continue;
                            }
                            match act {
                                Action::Count { shift, offset } => {
                                    let b = offset + ((k - iv.lo) >> shift) as usize;
                                    s.counts[b * lanes] += 1;
                                }
                                Action::Collect { slot } => {
                                    let buf = &mut s.bufs[slot];
                                    buf.push(k);
                                    if buf.len() == LOCAL_KEYS {
                                        append(slot, buf);
                                        buf.clear();
                                    }
                                }
                            }
                        }
                    }),
                }
            }
            Ok(())
        },
        |mut s| {
            flush(&mut s);
            Ok(())
        },
    )?;
    let mut counts = total.into_inner().unwrap_or_else(|e| e.into_inner());
    counts.truncate(slots);
    Ok((
        counts,
        collected
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect(),
    ))
}

/// Splits `iv` by the bucket `counts` (bucket `b` covers keys `iv.lo + (b << shift) ..`) and
/// returns, for each rank in `ranks` (all inside `iv`), the sub-interval holding it.
fn narrow(iv: Interval, counts: &[u64], shift: u32, ranks: &[u64]) -> Vec<(u64, Interval)> {
    let mut out = Vec::with_capacity(ranks.len());
    let mut below = iv.below;
    let mut b = 0;
    for &r in ranks {
        while below + counts[b] <= r {
            below += counts[b];
            b += 1;
        }
        let lo = iv.lo + ((b as u64) << shift);
        let hi = lo.saturating_add((1u64 << shift) - 1).min(iv.hi);
        out.push((
            r,
            Interval {
                lo,
                hi,
                below,
                count: counts[b],
            },
        ));
    }
    out
}

/// Groups `(rank, interval)` pairs by interval (sorted by `lo`).
fn group(pairs: Vec<(u64, Interval)>) -> Vec<(Interval, Vec<u64>)> {
    let mut pairs = pairs;
    pairs.sort_by_key(|&(r, iv)| (iv.lo, r));
    let mut out: Vec<(Interval, Vec<u64>)> = Vec::new();
    for (r, iv) in pairs {
        match out.last_mut() {
            Some((last, rs)) if *last == iv => rs.push(r),
            _ => out.push((iv, vec![r])),
        }
    }
    out
}

/// Default candidate allowance: an eighth of the budget, at most 256 MiB.
fn default_cap() -> u64 {
    (memory::global().limit() / 8).min(256 << 20)
}

/// Finds the keys of `ranks` (sorted, distinct, each `< count`); returns them with the number of
/// passes, including pass 1 (already done, given as `first`).
fn select_ranks<T: QElem>(
    src: &dyn ChunkSource,
    first: &First,
    shift: u32,
    ranks: &[u64],
    cap: u64,
    progress: Progress<'_>,
) -> Result<(Found, u32)> {
    let start = Interval {
        lo: 0,
        hi: u64::MAX >> (64 - T::BITS),
        below: 0,
        count: first.count,
    };
    let mut open = group(narrow(start, &first.hist, shift, ranks));
    for (iv, _) in &mut open {
        iv.lo = iv.lo.max(first.min);
        iv.hi = iv.hi.min(first.max);
    }
    refine_open::<T>(src, open, Found::new(), 1, cap, progress)
}

/// The key of each rank found so far.
type Found = std::collections::BTreeMap<u64, u64>;

/// Finds the keys of the ranks of `open` (intervals of non-NaN keys, each with the ranks inside
/// it) by refinement passes, adding them to `found`; returns `found` and `passes` plus the passes
/// made.
fn refine_open<T: QElem>(
    src: &dyn ChunkSource,
    mut open: Vec<(Interval, Vec<u64>)>,
    mut found: Found,
    mut passes: u32,
    cap: u64,
    progress: Progress<'_>,
) -> Result<(Found, u32)> {
    loop {
        open.retain(|(iv, rs)| {
            if iv.lo == iv.hi {
                for &r in rs {
                    found.insert(r, iv.lo);
                }
                false
            } else {
                true
            }
        });
        if open.is_empty() {
            return Ok((found, passes));
        }
        // Collect the smallest intervals that fit the allowance and the budget; split the rest.
        let mut order: Vec<usize> = (0..open.len()).collect();
        order.sort_by_key(|&i| open[i].0.count);
        let mut take = 0u64;
        let mut collect = vec![false; open.len()];
        for &i in &order {
            let bytes = open[i].0.count * 8;
            if take + bytes <= cap {
                take += bytes;
                collect[i] = true;
            }
        }
        let mut reservation = None;
        if take > 0 {
            reservation = memory::global().try_reserve(take, "quantile candidates");
            if reservation.is_none() {
                collect.iter_mut().for_each(|c| *c = false);
            }
        }
        let nsplit = collect.iter().filter(|&&c| !c).count();
        // 2^16 buckets per interval for up to 16 intervals, then fewer: at most 2^20 counters
        // (4 MiB) per worker in all.
        let bb = (20 - nsplit.next_power_of_two().trailing_zeros() as i32).clamp(8, 16) as u32;
        let mut plan = Vec::with_capacity(open.len());
        let mut sizes = Vec::new();
        let mut slots = 0usize;
        for (i, (iv, _)) in open.iter().enumerate() {
            if collect[i] {
                plan.push((*iv, Action::Collect { slot: sizes.len() }));
                sizes.push(iv.count);
            } else {
                let width = iv.hi - iv.lo;
                let bits = 64 - width.leading_zeros();
                let sh = bits.saturating_sub(bb);
                plan.push((
                    *iv,
                    Action::Count {
                        shift: sh,
                        offset: slots,
                    },
                ));
                slots += (width >> sh) as usize + 1;
            }
        }
        let (counts, mut cands) = refine_pass::<T>(src, &plan, slots, &sizes, progress)?;
        passes += 1;
        let mut next = Vec::new();
        for ((iv, rs), (_, act)) in open.iter().zip(&plan) {
            match *act {
                Action::Collect { slot } => {
                    let keys = &mut cands[slot];
                    debug_assert_eq!(keys.len() as u64, iv.count);
                    for &r in rs {
                        let k = (r - iv.below) as usize;
                        let (_, v, _) = keys.select_nth_unstable(k);
                        found.insert(r, *v);
                    }
                }
                Action::Count { shift, offset } => {
                    let n = ((iv.hi - iv.lo) >> shift) as usize + 1;
                    next.extend(narrow(*iv, &counts[offset..offset + n], shift, rs));
                }
            }
        }
        drop(cands);
        drop(reservation);
        open = group(next);
    }
}

/// The ranks each output needs among `m` sorted non-NaN values, and how it combines them:
/// `(rank a, rank b, t)`.
fn rank_plans(want: &Want, m: u64) -> Vec<(u64, u64, f64)> {
    match want {
        Want::Quantiles(qs) => qs
            .iter()
            .map(|&q| {
                let vi = (m - 1) as f64 * q;
                if vi >= (m - 1) as f64 {
                    (m - 1, m - 1, vi + 1.0)
                } else {
                    let prev = vi.floor();
                    (prev as u64, prev as u64 + 1, vi - prev)
                }
            })
            .collect(),
        Want::Median => vec![if m % 2 == 1 {
            ((m - 1) / 2, (m - 1) / 2, f64::NAN)
        } else {
            (m / 2 - 1, m / 2, f64::NAN)
        }],
    }
}

/// The distinct ranks of `plans`, sorted.
fn plan_ranks(plans: &[(u64, u64, f64)]) -> Vec<u64> {
    let mut ranks: Vec<u64> = plans.iter().flat_map(|&(a, b, _)| [a, b]).collect();
    ranks.sort_unstable();
    ranks.dedup();
    ranks
}

/// Fills `result.values` from the keys of the ranks.
fn finish<T: QElem>(
    result: &mut QuantileResult,
    want: &Want,
    opts: &QuantileOptions,
    plans: &[(u64, u64, f64)],
    found: &Found,
) {
    let value = |r: u64| T::from_key(found[&r]);
    for (out, &(ra, rb, t)) in result.values.iter_mut().zip(plans) {
        let (a, b) = (value(ra), value(rb));
        *out = match want {
            Want::Quantiles(_) => T::lerp(a, b, t, !opts.array_q),
            Want::Median if ra == rb => a.to_f64(),
            Want::Median => T::mid(a, b),
        };
    }
}

fn run_typed<T: QElem>(
    src: &dyn ChunkSource,
    want: &Want,
    opts: &QuantileOptions,
    progress: Progress<'_>,
) -> Result<QuantileResult> {
    let dtype = if T::DTYPE == DType::F32 && (matches!(want, Want::Median) || !opts.array_q) {
        DType::F32
    } else {
        DType::F64
    };
    let n_out = match want {
        Want::Quantiles(q) => q.len(),
        Want::Median => 1,
    };
    let cap = opts.max_candidate_bytes.unwrap_or_else(default_cap);
    let mut result = QuantileResult {
        values: vec![f64::NAN; n_out],
        dtype,
        passes: 1,
        sampled: 0,
        count: 0,
        nan_count: 0,
    };
    if n_out > 0 && sampled::try_run::<T>(src, want, opts, cap, &mut result, progress)? {
        return Ok(result);
    }
    let (first, shift) = first_pass::<T>(src, progress)?;
    result.count = first.count;
    result.nan_count = first.nan;
    let m = first.count;
    if (first.nan > 0 && !opts.skip_nan) || m == 0 || n_out == 0 {
        return Ok(result);
    }
    let plans = rank_plans(want, m);
    let ranks = plan_ranks(&plans);
    let (found, passes) = select_ranks::<T>(src, &first, shift, &ranks, cap, progress)?;
    result.passes = passes;
    finish::<T>(&mut result, want, opts, &plans, &found);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::histogram::test_source::MemSource;
    use crate::pipeline::no_progress;
    use proptest::prelude::*;

    fn q<T: Element>(v: &[T], chunk: u64, qs: &[f64], opts: &QuantileOptions) -> QuantileResult {
        quantile(&MemSource::vec(v, chunk), qs, opts, &no_progress).unwrap()
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    // Expected values below were obtained by running NumPy 2.4.6 by hand (printed with
    // `float.hex`).
    #[test]
    fn numpy_fixtures() {
        let o = QuantileOptions::default();
        let f: Vec<f32> = (1..11).map(|i| i as f32 * 0.1f32).collect();
        // np.quantile(f, q) for a Python float q: float32 arithmetic and result.
        let r = q(&f, 3, &[0.1, 0.33, 0.5, 0.9, 1.0, 0.0], &o);
        assert_eq!(r.dtype, DType::F32);
        let want = [
            0x3e428f5c, 0x3ecb4396, 0x3f0ccccd, 0x3f68f5c3, 0x3f800000, 0x3dcccccd,
        ];
        assert_eq!(r.values, want.map(|b: u32| f64::from(f32::from_bits(b))));
        // np.quantile(f, [q]): float64 arithmetic and result.
        let a = QuantileOptions {
            array_q: true,
            ..Default::default()
        };
        let r = q(&f, 4, &[0.1, 0.33, 0.5, 0.9], &a);
        assert_eq!(r.dtype, DType::F64);
        assert_eq!(
            bits(&r.values),
            [
                0x3fc851eb8b333333,
                0x3fd96872b6b851ec,
                0x3fe19999a0000000,
                0x3fed1eb863333333
            ]
        );
        let m = median(&MemSource::vec(&f, 2), &o, &no_progress).unwrap();
        assert_eq!(
            (m.values[0], m.dtype),
            (f64::from(f32::from_bits(0x3f0ccccd)), DType::F32)
        );
        let g = [3.5, -1.25, 7.0, 1e10, 2.0, -0.0, 0.0, 2.0];
        let r = q(&g, 3, &[0.0, 0.2, 0.5, 0.7, 0.999, 1.0], &o);
        let want = [-1.25, 0.0, 2.0, f64::from_bits(0x400acccccccccccb)];
        assert_eq!(r.values[..4], want);
        assert_eq!(r.values[4..], [f64::from_bits(0x42027efe3400645c), 1e10]);
        let m = median(&MemSource::vec(&g, 5), &o, &no_progress).unwrap();
        assert_eq!(m.values, [2.0]);
        let p = percentile(&MemSource::vec(&g, 5), &[37.5], &o, &no_progress).unwrap();
        assert_eq!(p.values, [1.25]);
        // NumPy subtracts int8 values in int8 (wrapping): 128.0, not 0.0.
        assert_eq!(q(&[-100i8, 100], 1, &[0.5], &o).values, [128.0]);
        let u: [u8; 7] = [1, 2, 3, 4, 5, 6, 7];
        let r = q(&u, 2, &[0.1, 0.5, 0.95], &o);
        assert_eq!(
            bits(&r.values),
            [1.6f64.to_bits(), 4.0f64.to_bits(), 0x401acccccccccccc]
        );
        assert_eq!(r.passes, 1);
        let b = [Bool(1), Bool(0), Bool(1), Bool(1)];
        assert_eq!(
            median(&MemSource::vec(&b, 3), &o, &no_progress)
                .unwrap()
                .values,
            [1.0]
        );
        let n = [f64::NAN, 1., 2., f64::NAN, 4.];
        let skip = QuantileOptions {
            skip_nan: true,
            ..Default::default()
        };
        assert_eq!(q(&n, 2, &[0.25, 0.5], &skip).values, [1.5, 2.0]);
        assert_eq!(
            median(&MemSource::vec(&n, 2), &skip, &no_progress)
                .unwrap()
                .values,
            [2.0]
        );
        let r = q(&n, 2, &[0.25, 0.5], &o);
        assert!(r.values.iter().all(|v| v.is_nan()) && r.nan_count == 2);
        let big: [i64; 3] = [(1 << 62) + 1, (1 << 62) + 3, 5];
        assert_eq!(q(&big, 2, &[0.5, 0.75], &o).values, [2f64.powi(62); 2]);
        // Infinite neighbours: NumPy's lerp gives NaN even with t = 0 or at the maximum.
        let inf = f64::INFINITY;
        assert!(q(&[1.0, inf], 1, &[1.0], &o).values[0].is_nan());
        assert!(q(&[0.0, 1.0, inf], 1, &[0.5], &o).values[0].is_nan());
        assert!(q(&[f64::NAN, f64::NAN], 1, &[0.5], &skip).values[0].is_nan());
    }

    #[test]
    fn errors() {
        let s = MemSource::vec(&[1.0f64, 2.0], 1);
        let o = QuantileOptions::default();
        let e = quantile(&s, &[0.5, 1.5], &o, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("quantile 1.5 is outside [0, 1]"), "{e}");
        let e = quantile(&s, &[f64::NAN], &o, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN"), "{e}");
        let e = percentile(&s, &[101.0], &o, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("percentile 101"), "{e}");
        let e = median(&MemSource::vec::<f64>(&[], 1), &o, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty array") && e.contains("(0,)"), "{e}");
        let b = MemSource::vec(&[Bool(1)], 1);
        let e = quantile(&b, &[0.5], &o, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bool"), "{e}");
    }

    /// Reference: sort the non-NaN values, then NumPy's index and lerp rules.
    pub(super) fn naive<T: QElem>(v: &[T], qs: &[f64], opts: &QuantileOptions) -> Vec<f64> {
        let nan = v.iter().any(|x| x.nan());
        let mut s: Vec<T> = v.iter().copied().filter(|x| !x.nan()).collect();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        qs.iter()
            .map(|&q| {
                if (nan && !opts.skip_nan) || s.is_empty() {
                    return f64::NAN;
                }
                let n = s.len();
                let vi = (n - 1) as f64 * q;
                let (a, b, t) = if vi >= (n - 1) as f64 {
                    (s[n - 1], s[n - 1], vi + 1.0)
                } else {
                    let p = vi.floor();
                    (s[p as usize], s[p as usize + 1], vi - p)
                };
                T::lerp(a, b, t, !opts.array_q)
            })
            .collect()
    }

    fn naive_median<T: QElem>(v: &[T], skip: bool) -> f64 {
        let nan = v.iter().any(|x| x.nan());
        let mut s: Vec<T> = v.iter().copied().filter(|x| !x.nan()).collect();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = s.len();
        if (nan && !skip) || n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2].to_f64()
        } else {
            T::mid(s[n / 2 - 1], s[n / 2])
        }
    }

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    #[track_caller]
    fn same(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(x == y || (x.is_nan() && y.is_nan()), "{a:?} != {b:?}");
        }
    }

    fn check_all<T: QElem>(
        v: &[T],
        chunk: u64,
        qs: &[f64],
        cap: u64,
        skip: bool,
        sample_every: Option<u64>,
    ) {
        for array_q in [false, true] {
            let opts = QuantileOptions {
                skip_nan: skip,
                array_q,
                max_candidate_bytes: Some(cap),
                sample_every,
            };
            let src = MemSource::vec(v, chunk);
            let rs: Vec<QuantileResult> = [1, 2, 7]
                .iter()
                .map(|&t| pool(t).install(|| quantile(&src, qs, &opts, &no_progress).unwrap()))
                .collect();
            same(&rs[0].values, &naive(v, qs, &opts));
            let most = if rs[0].sampled > 0 { 5 } else { 4 };
            assert!(rs[0].passes <= most, "{} passes", rs[0].passes);
            // With a cap this large the sampled path always fits (at most 4 brackets).
            if T::BITS > 16
                && sample_every == Some(1)
                && cap >= 1 << 20
                && v.iter().any(|x| !x.nan())
            {
                assert!(rs[0].sampled > 0 || chunk < 64 || v.iter().any(|x| x.nan()));
            }
            if T::BITS <= 16 || sample_every == Some(0) {
                assert_eq!(rs[0].sampled, 0);
            }
            for r in &rs[1..] {
                same(&r.values, &rs[0].values);
                assert_eq!(r.passes, rs[0].passes);
            }
        }
        let opts = QuantileOptions {
            skip_nan: skip,
            array_q: false,
            max_candidate_bytes: Some(cap),
            sample_every,
        };
        let m = median(&MemSource::vec(v, chunk), &opts, &no_progress).unwrap();
        same(&m.values, &[naive_median(v, skip)]);
    }

    fn values() -> impl Strategy<Value = Vec<f64>> {
        let v = prop_oneof![
            4 => -1e6..1e6f64,
            2 => (-4i32..4).prop_map(|i| i as f64),
            1 => Just(-0.0),
            1 => Just(1e300),
            1 => Just(f64::NAN),
            1 => Just(f64::NEG_INFINITY),
        ];
        prop::collection::vec(v, 1..400)
    }

    fn cast<T: Element>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::from_f64(x)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive(vals in values(), chunk in 1u64..90,
                         qs in prop::collection::vec(prop_oneof![0.0..=1.0f64, Just(0.5), Just(1.0), Just(0.0)], 1..5),
                         cap in prop_oneof![Just(0u64), Just(64), Just(1 << 20)],
                         dt in 0usize..6, skip in any::<bool>(),
                         every in prop_oneof![Just(None), Just(Some(1)), Just(Some(2)), Just(Some(0))]) {
            match dt {
                0 => check_all(&vals, chunk, &qs, cap, skip, every),
                1 => check_all(&cast::<f32>(&vals), chunk, &qs, cap, skip, every),
                2 => check_all(&cast::<i64>(&vals), chunk, &qs, cap, skip, every),
                3 => check_all(&cast::<i16>(&vals), chunk, &qs, cap, skip, every),
                4 => check_all(&cast::<u32>(&vals), chunk, &qs, cap, skip, every),
                _ => check_all(&cast::<i8>(&vals), chunk, &qs, cap, skip, every),
            }
        }
    }

    #[test]
    fn many_quantiles_use_the_binary_search_path() {
        // More intervals than `CLASSIFY_MAX` in one refinement pass, counted and collected.
        let qs: Vec<f64> = (0..23).map(|i| i as f64 / 22.0).collect();
        let f: Vec<f64> = (0..20_000)
            .map(|i| ((i * 7919) % 20_011) as f64 * 0.37 - 3000.0)
            .collect();
        let i: Vec<i64> = (0..20_000).map(|i| (i * 104_729) % 20_011 - 9000).collect();
        fn check<T: QElem>(v: &[T], chunk: u64, qs: &[f64], cap: u64) {
            let opts = QuantileOptions {
                max_candidate_bytes: Some(cap),
                ..Default::default()
            };
            let src = MemSource::vec(v, chunk);
            let want = naive(v, qs, &opts);
            for t in [1, 2, 7] {
                let r = pool(t).install(|| quantile(&src, qs, &opts, &no_progress).unwrap());
                same(&r.values, &want);
            }
        }
        for cap in [0, 64, 4096, 1 << 20] {
            check(&f, 777, &qs, cap);
            check(&i, 1234, &qs, cap);
        }
    }

    /// The first pass's and the refinements' `u32` counters flushed many times per worker
    /// (`FLUSH_EVERY` is 64 Ki values in tests), on the exact and the sampled paths.
    #[test]
    fn flushed_counters_give_exact_quantiles() {
        let f: Vec<f64> = (0..400_000u64)
            .map(|i| ((i * 2_654_435_761) % 400_009) as f64 * 0.001 - 150.0)
            .collect();
        let i: Vec<i32> = (0..400_000i64)
            .map(|i| ((i * 40_503) % 65_521 - 30_000) as i32)
            .collect();
        let qs = [0.0, 0.01, 0.5, 0.75, 1.0];
        // The exact path with counting refinements (few candidates allowed), and the sampled one.
        for (every, cap) in [(Some(0), Some(4096)), (Some(64), None)] {
            let opts = QuantileOptions {
                sample_every: every,
                max_candidate_bytes: cap,
                ..Default::default()
            };
            for t in [1, 3] {
                let r = pool(t).install(|| {
                    quantile(&MemSource::vec(&f, 150_000), &qs, &opts, &no_progress).unwrap()
                });
                same(&r.values, &naive(&f, &qs, &opts));
                assert_eq!(r.sampled > 0, cap.is_none(), "{r:?}");
                let r = pool(t).install(|| {
                    quantile(&MemSource::vec(&i, 150_000), &qs, &opts, &no_progress).unwrap()
                });
                same(&r.values, &naive(&i, &qs, &opts));
                assert_eq!(r.sampled > 0, cap.is_none(), "{r:?}");
            }
        }
    }

    #[test]
    fn constant_and_ties_resolve_without_collecting() {
        let v = vec![2.5f64; 1000];
        let r = q(&v, 7, &[0.0, 0.3, 1.0], &QuantileOptions::default());
        assert_eq!((r.values, r.passes), (vec![2.5; 3], 1));
        // Wide keys, no room to collect: histogram passes alone narrow to single keys.
        let v: Vec<i64> = (0..5000)
            .map(|i| (i * 7919 % 5000) * 1_000_000_007)
            .collect();
        let opts = QuantileOptions {
            max_candidate_bytes: Some(0),
            ..Default::default()
        };
        let r = q(&v, 333, &[0.5, 0.25], &opts);
        same(&r.values, &naive(&v, &[0.5, 0.25], &opts));
        assert!(r.passes >= 2 && r.passes <= 4, "{}", r.passes);
    }
}

/// Throughput on 1 GiB of uniform f64, against `reduce::stats` on the same file in the same run:
/// `cargo test --release --lib kernels::quantile::bench -- --ignored --nocapture`.
#[cfg(test)]
mod bench {
    use std::time::Instant;

    use crate::generate::{Dist, GenSpec, generate};
    use crate::kernels::histogram::histogram;
    use crate::pipeline::no_progress;

    #[test]
    #[ignore = "writes and reads 1 GiB; run by hand for the figures"]
    fn gib_histogram_and_median_vs_stats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.npy");
        let path = path.to_str().unwrap();
        let n = 1u64 << 27;
        generate(
            path,
            &GenSpec {
                shape: vec![n],
                dtype: crate::DType::F64,
                dist: Dist::UNIFORM,
                seed: 7,
                options: Default::default(),
            },
        )
        .unwrap();
        let src = crate::formats::open(path).unwrap();
        let gb = (n * 8) as f64 / 1e9;
        let time = |f: &mut dyn FnMut()| {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64());
            }
            best
        };
        let ts = time(&mut || {
            crate::reduce::stats(src.as_ref()).unwrap();
        });
        let th = time(&mut || {
            let h = histogram(src.as_ref(), 100, Some((0.0, 1.0)), &no_progress).unwrap();
            assert_eq!(h.counts.iter().sum::<u64>(), n);
        });
        let ta = time(&mut || {
            histogram(src.as_ref(), 100, None, &no_progress).unwrap();
        });
        let mut passes = 0;
        let tm = time(&mut || {
            let r = super::median(src.as_ref(), &Default::default(), &no_progress).unwrap();
            passes = r.passes;
            assert!((r.values[0] - 0.5).abs() < 1e-3);
        });
        let mut qpasses = 0;
        let tq = time(&mut || {
            qpasses = super::quantile(
                src.as_ref(),
                &[0.01, 0.25, 0.5, 0.75, 0.99],
                &Default::default(),
                &no_progress,
            )
            .unwrap()
            .passes;
        });
        let threads = rayon::current_num_threads();
        println!("1 GiB uniform f64, {threads} threads (best of 3):");
        println!("  stats               {ts:.3} s  {:.2} GB/s", gb / ts);
        println!(
            "  histogram range     {th:.3} s  {:.2} GB/s  ({:.2}x stats time)",
            gb / th,
            th / ts
        );
        println!(
            "  histogram auto      {ta:.3} s  ({:.2}x stats time)",
            ta / ts
        );
        println!(
            "  median ({passes} passes)  {tm:.3} s  ({:.2}x stats time)",
            tm / ts
        );
        println!(
            "  5 quantiles ({qpasses} p) {tq:.3} s  ({:.2}x stats time)",
            tq / ts
        );
    }
}
