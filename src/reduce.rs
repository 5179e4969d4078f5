//! Streaming reductions: count, NaN count, sum, mean, variance / standard deviation, min, max,
//! argmin and argmax in one parallel pass over any source.
//!
//! Each chunk is processed in L1-sized blocks: a NumPy-style pairwise sum (NaNs masked to zero and
//! counted), vectorisable min/max lanes, and the block's sum of squared deviations about its own
//! mean — for floats all in one read of the block, the deviations summed about the previous
//! block's mean and corrected (`shifted_m2`). Blocks, then chunks, are merged with Chan et
//! al.'s parallel update for the variance (float means carried as value + remainder pairs) and a
//! pairwise tree for the sum, always in index order, so results do not depend on the thread
//! count. Integer sums are exact (`i128`); `f32` data is accumulated in `f64`.
//!
//! NaNs are skipped (NumPy's `nan*` functions): `count` excludes them, min/max ignore them.

use std::fmt;

use crate::dtype::{Bool, DType, Element};
use crate::error::Result;
use crate::pipeline::{Progress, map_chunks, no_progress};
use crate::storage::{Chunk, ChunkSource};

/// Elements per block: 4096 x 8 bytes = 32 KiB, so the extra passes of a block hit L1.
const BLOCK: usize = 4096;

/// One element value, kept in its own type for exact printing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// Any integer (`i128` holds every `i64` and `u64`, and exact sums of them).
    Int(i128),
    /// A single-precision float (printed with `f32` round-trip precision).
    F32(f32),
    /// A double-precision float.
    F64(f64),
}

impl Scalar {
    /// The value as `f64`.
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => f64::from(u8::from(b)),
            Scalar::Int(i) => i as f64,
            Scalar::F32(f) => f64::from(f),
            Scalar::F64(f) => f,
        }
    }

    /// The value as JSON text: integers exact, floats with round-trip precision, non-finite floats
    /// as `NaN` / `Infinity` / `-Infinity` (what Python's `json` module reads and writes).
    pub fn to_json(self) -> String {
        fn float(v: f64, s: String) -> String {
            if v.is_nan() {
                "NaN".into()
            } else if v.is_infinite() {
                if v > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                }
            } else {
                s
            }
        }
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::F32(f) => float(f64::from(f), fmt_f32(f)),
            Scalar::F64(f) => float(f, fmt_f64(f)),
        }
    }
}

/// Shortest round-trip text for an `f64`, always with a decimal point or exponent.
pub fn fmt_f64(v: f64) -> String {
    format!("{v:?}")
}

/// Shortest round-trip text for an `f32`.
pub fn fmt_f32(v: f32) -> String {
    format!("{v:?}")
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::F32(v) => write!(f, "{}", fmt_f32(*v)),
            Scalar::F64(v) => write!(f, "{}", fmt_f64(*v)),
        }
    }
}

/// Which figures a [`stats_for`] pass computes. The element and NaN counts are always computed;
/// a pass that asks for less runs a leaner kernel (a sum alone skips the extremes and the squared
/// deviations), so the pass stays at the speed of reading the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Need {
    /// The sum (and with it the mean).
    pub sum: bool,
    /// The sum of squared deviations (variance, standard deviation); implies `sum`.
    pub m2: bool,
    /// Minimum, maximum and the flat positions of their first occurrences.
    pub extremes: bool,
}

impl Need {
    /// Every figure (what [`stats`] computes).
    pub const ALL: Need = Need {
        sum: true,
        m2: true,
        extremes: true,
    };
    /// The sum and count (`sum`, `mean`, `nansum`, `nanmean`).
    pub const SUM: Need = Need {
        sum: true,
        m2: false,
        extremes: false,
    };
    /// Sum, count and squared deviations (`mean`, `var`, `std`).
    pub const MOMENTS: Need = Need {
        sum: true,
        m2: true,
        extremes: false,
    };
    /// Minimum, maximum, their positions and the NaN count.
    pub const EXTREMES: Need = Need {
        sum: false,
        m2: false,
        extremes: true,
    };

    /// `self` with what it implies added (`m2` needs the sum).
    pub fn normalized(self) -> Need {
        Need {
            sum: self.sum || self.m2,
            ..self
        }
    }

    /// Both sets of figures.
    pub fn union(self, o: Need) -> Need {
        Need {
            sum: self.sum || o.sum,
            m2: self.m2 || o.m2,
            extremes: self.extremes || o.extremes,
        }
        .normalized()
    }

    /// True when a pass computing `self` also has every figure of `o`.
    pub fn covers(self, o: Need) -> bool {
        let (a, b) = (self.normalized(), o.normalized());
        (a.sum || !b.sum) && (a.m2 || !b.m2) && (a.extremes || !b.extremes)
    }
}

/// The result of [`stats`] (or of a [`stats_for`] pass: figures outside [`Stats::need`] are `0`
/// or `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// The figures this pass computed (every one for [`stats`]).
    pub need: Need,
    /// Element type of the source.
    pub dtype: DType,
    /// Shape of the source.
    pub shape: Vec<u64>,
    /// Number of non-NaN elements.
    pub count: u64,
    /// Number of NaN elements.
    pub nan_count: u64,
    /// Sum of the non-NaN elements: exact [`Scalar::Int`] for integer and bool data,
    /// [`Scalar::F64`] for floats.
    pub sum: Scalar,
    /// Sum of squared deviations from the mean (for the variance), `0` when `count == 0`.
    pub m2: f64,
    /// Smallest non-NaN element.
    pub min: Option<Scalar>,
    /// Largest non-NaN element.
    pub max: Option<Scalar>,
    /// Flat C-order index of the first smallest element.
    pub argmin: Option<u64>,
    /// Flat C-order index of the first largest element.
    pub argmax: Option<u64>,
}

impl Stats {
    /// Mean of the non-NaN elements (`sum / count`).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0 && self.need.sum).then(|| match self.sum {
            Scalar::Int(s) => exact_div(s, self.count),
            other => other.to_f64() / self.count as f64,
        })
    }

    /// Variance with `ddof` delta degrees of freedom (`None` when `count <= ddof`).
    pub fn var(&self, ddof: u64) -> Option<f64> {
        (self.count > ddof && self.need.m2).then(|| self.m2 / (self.count - ddof) as f64)
    }

    /// Standard deviation with `ddof` delta degrees of freedom.
    pub fn std(&self, ddof: u64) -> Option<f64> {
        self.var(ddof).map(f64::sqrt)
    }

    /// True when `other` describes the same data, allowing for the rounding of float sums in a
    /// different order (a different chunking): everything else must be identical, and the sum and
    /// the sum of squared deviations must agree to `rel` (relative to their magnitude and to the
    /// data's spread).
    pub fn same_up_to_rounding(&self, other: &Stats, rel: f64) -> bool {
        let near = |a: f64, b: f64, scale: f64| {
            a == b
                || (a.is_nan() && b.is_nan())
                || (a - b).abs() <= rel * (a.abs().max(b.abs()) + scale)
        };
        let spread = self.std(0).unwrap_or(0.0) * (self.count as f64).sqrt();
        let sums = match (self.sum, other.sum) {
            (Scalar::F64(a), Scalar::F64(b)) => near(a, b, spread),
            (a, b) => a == b,
        };
        let rest = |s: &Stats| Stats {
            sum: Scalar::Int(0),
            m2: 0.0,
            ..s.clone()
        };
        sums && near(self.m2, other.m2, 0.0) && rest(self) == rest(other)
    }

    /// One JSON object with the keys `shape, dtype, count, nan_count, sum, mean, std, min, max,
    /// argmin, argmax` (std with `ddof`). Integer sums are exact JSON integers; floats have
    /// round-trip precision; absent values are `null`.
    pub fn to_json(&self, ddof: u64) -> String {
        let opt = |v: Option<Scalar>| v.map_or("null".to_string(), Scalar::to_json);
        let idx = |v: Option<u64>| v.map_or("null".to_string(), |i| i.to_string());
        let shape = self
            .shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{{\"shape\": [{shape}], \"dtype\": \"{}\", \"count\": {}, \"nan_count\": {}, \
             \"sum\": {}, \"mean\": {}, \"std\": {}, \"min\": {}, \"max\": {}, \
             \"argmin\": {}, \"argmax\": {}}}",
            self.dtype,
            self.count,
            self.nan_count,
            self.sum.to_json(),
            opt(self.mean().map(Scalar::F64)),
            opt(self.std(ddof).map(Scalar::F64)),
            opt(self.min),
            opt(self.max),
            idx(self.argmin),
            idx(self.argmax),
        )
    }
}

/// `s / n` correctly rounded for the magnitudes that occur (`s` can exceed 2^53).
fn exact_div(s: i128, n: u64) -> f64 {
    let q = s / n as i128;
    let r = s % n as i128;
    q as f64 + r as f64 / n as f64
}

/// `sa / na - sb / nb` from exact integer sums, or `None` if the cross products overflow.
fn exact_mean_diff(sa: i128, na: u64, sb: i128, nb: u64) -> Option<f64> {
    let num = sa
        .checked_mul(nb as i128)?
        .checked_sub(sb.checked_mul(na as i128)?)?;
    let den = (na as i128).checked_mul(nb as i128)?;
    let q = num / den;
    Some(q as f64 + (num - q * den) as f64 / den as f64)
}

/// Computes [`Stats`] over every element of `src` in one parallel pass.
pub fn stats(src: &dyn ChunkSource) -> Result<Stats> {
    stats_with_progress(src, &no_progress)
}

/// [`stats`], reporting processed bytes to `progress`.
pub fn stats_with_progress(src: &dyn ChunkSource, progress: Progress<'_>) -> Result<Stats> {
    stats_for(src, Need::ALL, progress)
}

/// One parallel pass over `src` computing the figures in `need` (plus the counts) with a kernel
/// specialised to them; the figures it computes are bit-identical to [`stats`]'s.
pub fn stats_for(src: &dyn ChunkSource, need: Need, progress: Progress<'_>) -> Result<Stats> {
    let need = need.normalized();
    let info = src.info();
    let shape = info.shape.clone();
    let dtype = info.dtype;
    crate::with_dtype!(dtype, T => {
        let partials = map_chunks(src, progress, |c: Chunk| chunk_partial::<T>(&c, &shape, need))?;
        let partials: Vec<Partial<T>> = partials;
        Ok(finish::<T>(partials, dtype, shape.clone(), need))
    })
}

/// Per-element behaviour the kernels need.
trait StatElem: Element + Copy {
    const FLOAT: bool;
    const LOWEST: Self;
    const HIGHEST: Self;
    fn is_nan(self) -> bool;
    fn to_scalar(self) -> Scalar;
    /// `self - mean` as accurately as f64 allows (integers subtract the rounded mean exactly
    /// first, so 64-bit values far from zero keep their low bits).
    fn centered(self, mean: f64) -> f64;
    /// Exact sum of a block (integers) as i128; floats return 0 (they use the f64 path).
    fn int_sum(block: &[Self]) -> i128;
}

macro_rules! int_stat {
    ($($t:ty, $acc:ty);*) => {$(
        impl StatElem for $t {
            const FLOAT: bool = false;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            #[inline]
            fn is_nan(self) -> bool { false }
            fn to_scalar(self) -> Scalar { Scalar::Int(self as i128) }
            #[inline]
            fn centered(self, mean: f64) -> f64 {
                let m = mean.round();
                (self as i128 - m as i128) as f64 - (mean - m)
            }
            #[inline]
            fn int_sum(block: &[Self]) -> i128 {
                let mut lanes = [0 as $acc; 8];
                let mut it = block.chunks_exact(8);
                for c in &mut it {
                    for j in 0..8 { lanes[j] += c[j] as $acc; }
                }
                let mut s: i128 = lanes.iter().map(|&l| l as i128).sum();
                for &x in it.remainder() { s += x as i128; }
                s
            }
        }
    )*};
}
// Blocks hold at most 4096 elements, so 32-bit values summed in i64 lanes cannot overflow.
int_stat!(i8, i64; i16, i64; i32, i64; u8, i64; u16, i64; u32, i64; i64, i128; u64, i128);

impl StatElem for Bool {
    const FLOAT: bool = false;
    const LOWEST: Self = Bool(0);
    const HIGHEST: Self = Bool(1);
    #[inline]
    fn is_nan(self) -> bool {
        false
    }
    fn to_scalar(self) -> Scalar {
        Scalar::Bool(self.get())
    }
    #[inline]
    fn centered(self, mean: f64) -> f64 {
        self.to_f64() - mean
    }
    fn int_sum(block: &[Self]) -> i128 {
        block.iter().filter(|b| b.get()).count() as i128
    }
}

impl StatElem for f32 {
    const FLOAT: bool = true;
    const LOWEST: Self = f32::NEG_INFINITY;
    const HIGHEST: Self = f32::INFINITY;
    #[inline]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn to_scalar(self) -> Scalar {
        Scalar::F32(self)
    }
    #[inline]
    fn centered(self, mean: f64) -> f64 {
        self.to_f64() - mean
    }
    fn int_sum(_: &[Self]) -> i128 {
        0
    }
}

impl StatElem for f64 {
    const FLOAT: bool = true;
    const LOWEST: Self = f64::NEG_INFINITY;
    const HIGHEST: Self = f64::INFINITY;
    #[inline]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn to_scalar(self) -> Scalar {
        Scalar::F64(self)
    }
    #[inline]
    fn centered(self, mean: f64) -> f64 {
        self.to_f64() - mean
    }
    fn int_sum(_: &[Self]) -> i128 {
        0
    }
}

/// Partial results for one block or chunk.
#[derive(Clone, Debug)]
struct Partial<T> {
    count: u64,
    nan: u64,
    fsum: f64,
    isum: i128,
    /// The mean, as `mean + mean_lo` for floats: `mean` is the first block's (rounded) mean,
    /// `mean_lo` the rest, drift included, so the merges' differences of means are taken
    /// between these pairs and a mean far from zero (1e9 with a spread of 1, say) does not lose
    /// its low digits to the rounding of one `f64`. `mean_lo` is 0 for integers (their
    /// differences come from exact sums).
    mean: f64,
    mean_lo: f64,
    m2: f64,
    /// (value, global flat index) of the first minimum / maximum.
    min: Option<(T, u64)>,
    max: Option<(T, u64)>,
    /// The mean of the last block folded in (NaN before any): the next block's shift for its
    /// one-pass squared deviations (see [`shifted_m2`]).
    shift: f64,
}

impl<T: StatElem> Partial<T> {
    fn empty() -> Self {
        Partial {
            count: 0,
            nan: 0,
            fsum: 0.0,
            isum: 0,
            mean: 0.0,
            mean_lo: 0.0,
            m2: 0.0,
            min: None,
            max: None,
            shift: f64::NAN,
        }
    }

    /// Chan et al.'s merge of mean and M2, sums added, extremes kept with the smaller index on ties.
    fn merge(mut self, o: &Partial<T>) -> Self {
        if o.count > 0 {
            if self.count == 0 {
                (self.mean, self.mean_lo, self.m2) = (o.mean, o.mean_lo, o.m2);
            } else {
                let n = (self.count + o.count) as f64;
                let w = o.count as f64 / n;
                // For integers the difference of the means is taken from the exact sums, so
                // means of 64-bit values far from zero lose nothing to rounding; for floats,
                // from the (mean, rest) pairs, the means' high parts first (exact when they
                // are within a factor of 2 of each other).
                let delta = if T::FLOAT {
                    (o.mean - self.mean) + (o.mean_lo - self.mean_lo)
                } else {
                    exact_mean_diff(o.isum, o.count, self.isum, self.count)
                        .unwrap_or(o.mean - self.mean)
                };
                if T::FLOAT {
                    self.mean_lo += delta * w;
                } else {
                    self.mean += delta * w;
                }
                self.m2 += o.m2 + delta * delta * (self.count as f64 * w);
            }
        }
        self.count += o.count;
        self.nan += o.nan;
        self.isum += o.isum;
        self.min = match (self.min, o.min) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, o.max) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        };
        self
    }
}

/// Running per-lane extremes and non-NaN counts of a block.
struct Lanes<T> {
    mn: [T; 8],
    mx: [T; 8],
    /// Non-NaN elements seen per lane, as floats (exact below 2^53) so the counting vectorises
    /// like the sum.
    cnt: [f64; 8],
}

/// NumPy's sum of a leaf's 8 lanes: `((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))`.
///
/// The lanes pass through [`std::hint::black_box`] first: when LLVM's SLP vectoriser sees this
/// tree of adjacent pairs it lays the lane loop out as even and odd halves, shuffling every
/// load (`vunpcklpd`/`vunpckhpd` on 128-bit registers) and running far slower than the two
/// plain 256-bit adds per 8 elements it makes otherwise. The order of the adds is unchanged.
#[inline(always)]
fn lane_total(r: [f64; 8]) -> f64 {
    let r = std::hint::black_box(r);
    ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
}

/// A leaf of at most 128 elements (L1-resident): its sum in 8 lanes with NaNs as zero (NumPy's
/// leaf), counting the non-NaN elements, then a second pass for the lane extremes (NaN fails
/// every comparison, so it is skipped without a branch). Simple lane loops vectorise fully.
#[inline(always)]
fn leaf<T: StatElem, const EXT: bool>(x: &[T], l: &mut Lanes<T>) -> f64 {
    let mut r = [0.0f64; 8];
    // Accumulators in locals (registers), written back once per leaf.
    let mut cnt = l.cnt;
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            let v = c[j].to_f64();
            // `v == v` is false exactly for NaN, compared in f64 for every T.
            #[allow(clippy::eq_op)]
            let ok = v == v;
            r[j] += if ok { v } else { 0.0 };
            cnt[j] += if ok { 1.0 } else { 0.0 };
        }
    }
    l.cnt = cnt;
    let mut res = lane_total(r);
    for (j, &e) in it.remainder().iter().enumerate() {
        let ok = !e.is_nan();
        res += if ok { e.to_f64() } else { 0.0 };
        l.cnt[j] += if ok { 1.0 } else { 0.0 };
    }
    if EXT {
        extremes(x, l);
    }
    res
}

/// A leaf's sum in the same 8 lanes and order as [`leaf`] but without the NaN mask or the count:
/// NaN exactly when the leaf holds a NaN (or both infinities), bit-identical to [`leaf`]'s sum
/// otherwise. The common case (no NaN) then costs one add per element.
#[inline(always)]
fn leaf_plain<T: StatElem>(x: &[T]) -> f64 {
    let mut r = [0.0f64; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            r[j] += c[j].to_f64();
        }
    }
    let mut res = lane_total(r);
    for &e in it.remainder() {
        res += e.to_f64();
    }
    res
}

/// One pass over a block from memory for the float kernels: the sum exactly as
/// [`pairwise_plain`] computes it (the same leaves, lanes and order, so the same bits), and with
/// `EXT` the lane extremes (as [`extremes`]), with `SHIFTED` the lane sums of `x - k` and of
/// `(x - k)^2` about a shift `k` (see [`shifted_m2`]). Without a NaN in the block (a sum that is
/// not NaN proves it), every figure is then final after one read of the block instead of one
/// read per figure: the later passes ran from L1 while nothing was fetched from memory.
#[inline(always)]
fn fused_plain<T: StatElem, const EXT: bool, const SHIFTED: bool>(
    x: &[T],
    k: f64,
    l: &mut Lanes<T>,
) -> (f64, [f64; 8], [f64; 8]) {
    let mut leaves = [0.0f64; BLOCK / 128];
    let mut n = 0;
    // Lane loops over whole groups of 8 only, the lanes opaque on entry (as in `extremes`):
    // indexing a lane by a variable anywhere in the loop kept every lane in memory and the
    // loop scalar. Only the last leaf can end in a partial group: its elements are added after.
    let (body, tail) = x.split_at(x.len() / 8 * 8);
    let (mut mn, mut mx) = std::hint::black_box((l.mn, l.mx));
    let (mut d1, mut d2) = std::hint::black_box(([0.0f64; 8], [0.0f64; 8]));
    for part in body.chunks(128) {
        let mut r = [0.0f64; 8];
        for c in part.chunks_exact(8) {
            for j in 0..8 {
                r[j] += c[j].to_f64();
            }
            if EXT {
                for j in 0..8 {
                    mn[j] = if c[j] < mn[j] { c[j] } else { mn[j] };
                }
                for j in 0..8 {
                    mx[j] = if c[j] > mx[j] { c[j] } else { mx[j] };
                }
            }
            if SHIFTED {
                for j in 0..8 {
                    let d = c[j].to_f64() - k;
                    d1[j] += d;
                    d2[j] += d * d;
                }
            }
        }
        leaves[n] = lane_total(r);
        n += 1;
    }
    (l.mn, l.mx) = (mn, mx);
    if !tail.is_empty() {
        // The tail ends the last leaf, or is a leaf of its own (lanes all zero).
        if body.len() % 128 == 0 {
            leaves[n] = lane_total([0.0; 8]);
            n += 1;
        }
        for (j, &e) in tail.iter().enumerate() {
            leaves[n - 1] += e.to_f64();
            if EXT {
                l.mn[j] = if e < l.mn[j] { e } else { l.mn[j] };
                l.mx[j] = if e > l.mx[j] { e } else { l.mx[j] };
            }
            if SHIFTED {
                let d = e.to_f64() - k;
                d1[j] += d;
                d2[j] += d * d;
            }
        }
    }
    (pairwise_f64(&leaves[..n]), d1, d2)
}

/// The sum of squared deviations of `n` values about their mean from their shifted sums
/// `s1 = sum(x - k)` and `s2 = sum((x - k)^2)`: `s2 - s1^2 / n`, with `s1 / n` (the mean's
/// offset from the shift); `None` when the subtraction would cancel more than 4 bits (the
/// squared offset of the mean over 15 times the variance), and the caller takes the two-pass
/// form instead.
///
/// Accuracy: the subtraction multiplies the relative errors of `s2` (that of a sum of 512
/// squares per lane) and of `s1^2 / n` (at most about twice that) by at most `s2 / result`,
/// here 16: at worst about 6 bits lost against the two-pass form, measured at 5.6 with the
/// mean 3.4-3.9 standard deviations from the shift. The shift is the previous block's mean,
/// so the mean lies within a fraction of a standard deviation of it for stationary data (at most
/// a bit lost) and within a few for steady trends (a ramp of 4096 values sits 3.5 standard
/// deviations from the block before); besides, an offset that large is a difference
/// between neighbouring blocks' means, which the merge adds to the chunk's total at the same
/// scale, so relative to the total the loss is smaller still.
#[inline(always)]
fn shifted_m2(d1: [f64; 8], d2: [f64; 8], n: usize) -> Option<(f64, f64)> {
    let s1 = pairwise_f64(&std::hint::black_box(d1));
    let s2 = pairwise_f64(&std::hint::black_box(d2));
    let b = s1 * s1 / n as f64;
    (s2.is_finite() && b <= s2 * (15.0 / 16.0)).then_some((s2 - b, s1 / n as f64))
}

/// [`pairwise_fused`] without extremes, NaN mask or count (see [`leaf_plain`]).
#[inline(always)]
fn pairwise_plain<T: StatElem>(x: &[T]) -> f64 {
    let mut leaves = [0.0f64; BLOCK / 128];
    let mut n = 0;
    for part in x.chunks(128) {
        leaves[n] = leaf_plain(part);
        n += 1;
    }
    pairwise_f64(&leaves[..n])
}

/// Lane extremes and non-NaN counts of `x` (floats, when no sum is asked for).
#[inline(always)]
fn extremes_counted<T: StatElem>(x: &[T], l: &mut Lanes<T>) {
    // Opaque, as in `extremes`: without it this loop, inlined beside `fused_plain`, came out
    // with every lane register permuted (`vpermpd`) at each step, 2.2x slower.
    let (mut mn, mut mx, mut cnt) = std::hint::black_box((l.mn, l.mx, l.cnt));
    let mut it = x.chunks_exact(8);
    // One lane loop per figure: fused into one, LLVM's SLP vectoriser permuted the lanes
    // (vpermpd/vpackssdw per step) and ran 2x slower.
    for c in &mut it {
        for j in 0..8 {
            mn[j] = if c[j] < mn[j] { c[j] } else { mn[j] };
        }
        for j in 0..8 {
            mx[j] = if c[j] > mx[j] { c[j] } else { mx[j] };
        }
        for j in 0..8 {
            let v = c[j].to_f64();
            #[allow(clippy::eq_op)]
            let ok = v == v;
            cnt[j] += if ok { 1.0 } else { 0.0 };
        }
    }
    (l.mn, l.mx, l.cnt) = (mn, mx, cnt);
    for (j, &e) in it.remainder().iter().enumerate() {
        l.cnt[j] += if e.is_nan() { 0.0 } else { 1.0 };
        l.mn[j] = if e < l.mn[j] { e } else { l.mn[j] };
        l.mx[j] = if e > l.mx[j] { e } else { l.mx[j] };
    }
}

/// Updates the lane minima and maxima with `x`.
#[inline(always)]
fn extremes<T: StatElem>(x: &[T], l: &mut Lanes<T>) {
    // Through `black_box`, as in `lane_total`: inlined into the f64 stats kernel, LLVM otherwise
    // laid these lanes out reversed and spent a `vpermpd` per register and a mask repacking per
    // step (perf: 40 instructions per 8 elements instead of 8).
    let (mut mn, mut mx) = std::hint::black_box((l.mn, l.mx));
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            mn[j] = if c[j] < mn[j] { c[j] } else { mn[j] };
        }
        for j in 0..8 {
            mx[j] = if c[j] > mx[j] { c[j] } else { mx[j] };
        }
    }
    (l.mn, l.mx) = (mn, mx);
    for (j, &e) in it.remainder().iter().enumerate() {
        l.mn[j] = if e < l.mn[j] { e } else { l.mn[j] };
        l.mx[j] = if e > l.mx[j] { e } else { l.mx[j] };
    }
}

/// Pairwise summation fused with the extremes and NaN count: leaves of 128 elements are summed in
/// 8 lanes (NumPy's leaf), and the leaf sums are then added pairwise — for a full block of 4096
/// this is exactly NumPy's tree. Iterative, so it inlines into the multiversioned kernel.
#[inline(always)]
fn pairwise_fused<T: StatElem, const EXT: bool>(x: &[T], l: &mut Lanes<T>) -> f64 {
    let mut leaves = [0.0f64; BLOCK / 128];
    let mut n = 0;
    for part in x.chunks(128) {
        leaves[n] = leaf::<T, EXT>(part, l);
        n += 1;
    }
    pairwise_f64(&leaves[..n])
}

/// Sums values pairwise (used to combine block and chunk sums in index order).
#[inline]
fn pairwise_f64(x: &[f64]) -> f64 {
    // A full block's 32 leaf sums (any power of two up to 32): the same balanced tree as the
    // recursion below, level by level, without the calls.
    let n = x.len();
    if n.is_power_of_two() && n <= BLOCK / 128 && n > 1 {
        let mut t = [0.0f64; BLOCK / 128];
        t[..n].copy_from_slice(x);
        let mut len = n;
        while len > 1 {
            len /= 2;
            for i in 0..len {
                t[i] = t[2 * i] + t[2 * i + 1];
            }
        }
        return t[0];
    }
    pairwise_f64_rec(x)
}

fn pairwise_f64_rec(x: &[f64]) -> f64 {
    match x.len() {
        0 => 0.0,
        1 => x[0],
        n => pairwise_f64_rec(&x[..n / 2]) + pairwise_f64_rec(&x[n / 2..]),
    }
}

/// Lanes of [`sq_dev`]: 16, so four independent vector adds are in flight (the add's latency,
/// not its throughput, bounds a loop with fewer).
const SQ_LANES: usize = 16;

/// Sums of the deviations and of the squared deviations of the non-NaN elements about `mean`
/// (16 lanes each, then pairwise): the second pass of the two-pass form. `MASK = false` when the
/// block is known to hold no NaN: the same operations without the test.
#[inline(always)]
fn sq_dev<T: StatElem, const MASK: bool>(x: &[T], mean: f64) -> (f64, f64) {
    let (mut l1, mut l2) = ([0.0f64; SQ_LANES], [0.0f64; SQ_LANES]);
    let mut it = x.chunks_exact(SQ_LANES);
    for c in &mut it {
        for j in 0..SQ_LANES {
            let e = c[j];
            let d = if MASK && e.is_nan() {
                0.0
            } else {
                e.centered(mean)
            };
            l1[j] += d;
            l2[j] += d * d;
        }
    }
    // Opaque for the same reason as in `lane_total`.
    let (l1, l2) = std::hint::black_box((l1, l2));
    let (mut s1, mut s2) = (pairwise_f64(&l1), pairwise_f64(&l2));
    for &e in it.remainder() {
        if !(MASK && e.is_nan()) {
            let d = e.centered(mean);
            s1 += d;
            s2 += d * d;
        }
    }
    (s1, s2)
}

/// Statistics of one block (the sum if `SUM`, squared deviations if `M2`, extremes if `EXT`;
/// counts always), with the extremes' values only (positions are found by the caller, and only
/// when they matter). Each combination is its own monomorphised loop.
#[inline(always)]
fn block_partial<T: StatElem, const SUM: bool, const M2: bool, const EXT: bool>(
    x: &[T],
    shift: Option<f64>,
) -> (Partial<T>, Option<(T, T)>) {
    let mut p = Partial::empty();
    let mut l = Lanes {
        mn: [T::HIGHEST; 8],
        mx: [T::LOWEST; 8],
        cnt: [0.0; 8],
    };
    // Floats: a sum first tries the unmasked kernel; a result that is not NaN proves the block
    // holds no NaN (NaN propagates through every add), so the count is its length, the sum is
    // bit-identical to the masked one and the extremes need no count. Otherwise the block
    // (still in cache) is summed again with the mask.
    let mut clean = false;
    // The squared deviations, the shift and the mean's offset from it, when one pass found them.
    let mut shifted = None;
    if T::FLOAT && SUM {
        // One read for every figure where it can: the extremes always, the squared deviations
        // when a shift is known (the mean of the block before).
        let (s, m2) = match shift {
            Some(k) if M2 && k.is_finite() => {
                let (s, d1, d2) = fused_plain::<T, EXT, true>(x, k, &mut l);
                (s, shifted_m2(d1, d2, x.len()).map(|(m2, off)| (m2, k, off)))
            }
            _ if EXT => (fused_plain::<T, true, false>(x, 0.0, &mut l).0, None),
            _ => (pairwise_plain(x), None),
        };
        if !s.is_nan() {
            clean = true;
            p.fsum = s;
            p.count = x.len() as u64;
            shifted = m2;
        } else if EXT {
            // The masked pass below recomputes the extremes from scratch.
            l.mn = [T::HIGHEST; 8];
            l.mx = [T::LOWEST; 8];
        }
    }
    if T::FLOAT && !clean {
        if SUM {
            p.fsum = pairwise_fused::<T, EXT>(x, &mut l);
        } else {
            extremes_counted(x, &mut l);
        }
        p.count = l.cnt.iter().sum::<f64>() as u64;
        p.nan = x.len() as u64 - p.count;
    } else if !T::FLOAT {
        if EXT {
            extremes(x, &mut l);
        }
        if SUM {
            p.isum = T::int_sum(x);
        }
        p.count = x.len() as u64;
    }
    if p.count == 0 {
        return (p, None);
    }
    if SUM {
        let sum = if T::FLOAT { p.fsum } else { p.isum as f64 };
        p.mean = sum / p.count as f64;
        if M2 {
            let n = p.count as f64;
            if let Some((m2, k, off)) = shifted {
                // The mean is `k + off`, held as `p.mean` and the rest (`k - p.mean` is exact
                // when the two are within a factor of 2).
                p.m2 = m2;
                p.mean_lo = (k - p.mean) + off;
            } else {
                let (s1, s2) = if clean || !T::FLOAT {
                    sq_dev::<T, false>(x, p.mean)
                } else {
                    sq_dev::<T, true>(x, p.mean)
                };
                // About the rounded mean, corrected for its rounding (`s1` is `n` times it),
                // which the sum of deviations measures to far more digits than the mean holds.
                // (Clamped at 0 against rounding, NaN kept: infinities make it NaN, as in NumPy.)
                let m2 = s2 - s1 * s1 / n;
                p.m2 = if m2 < 0.0 { 0.0 } else { m2 };
                if T::FLOAT {
                    p.mean_lo = s1 / n;
                }
            }
        }
    }
    if !EXT {
        return (p, None);
    }
    let mut lo = l.mn[0];
    let mut hi = l.mx[0];
    for j in 1..8 {
        if l.mn[j] < lo {
            lo = l.mn[j];
        }
        if l.mx[j] > hi {
            hi = l.mx[j];
        }
    }
    // count > 0, so lo and hi are values present in the block.
    (p, Some((lo, hi)))
}

/// Statistics of one chunk, with global flat indices. Compiled for AVX2 too and picked at run
/// time (the lane structure fixes the order of every float operation, so the results are
/// identical on every target).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn chunk_partial<T: StatElem>(chunk: &Chunk, shape: &[u64], need: Need) -> Partial<T> {
    let data: &[T] = chunk.as_slice();
    let normalized: Vec<T>;
    let data: &[T] = if T::DTYPE == DType::Bool && data.iter().any(|b| b.to_f64() > 1.0) {
        // Bool bytes other than 0/1 (non-canonical files) are normalised before summing.
        normalized = data
            .iter()
            .map(|&b| T::from_f64(b.to_f64().min(1.0)))
            .collect();
        &normalized
    } else {
        data
    };
    let mut acc = Partial::<T>::empty();
    let mut sums = Vec::with_capacity(data.len().div_ceil(BLOCK));
    for (b, block) in data.chunks(BLOCK).enumerate() {
        add_block_for(&mut acc, &mut sums, block, (b * BLOCK) as u64, need);
    }
    acc.fsum = pairwise_f64(&sums);
    let to_global = |i: u64| chunk.region.global_flat_index(i, shape);
    acc.min = acc.min.map(|(v, i)| (v, to_global(i)));
    acc.max = acc.max.map(|(v, i)| (v, to_global(i)));
    acc
}

/// [`add_block`] with the kernel for `need` (normalised) picked once per block.
#[inline(always)]
fn add_block_for<T: StatElem>(
    acc: &mut Partial<T>,
    sums: &mut Vec<f64>,
    block: &[T],
    base: u64,
    need: Need,
) {
    match (need.sum, need.m2, need.extremes) {
        (_, true, true) => add_block::<T, true, true, true>(acc, sums, block, base),
        (_, true, false) => add_block::<T, true, true, false>(acc, sums, block, base),
        (true, false, true) => add_block::<T, true, false, true>(acc, sums, block, base),
        (true, false, false) => add_block::<T, true, false, false>(acc, sums, block, base),
        // Counts alone come with the extremes (the cheapest kernel that counts NaNs).
        (false, false, _) => add_block::<T, false, false, true>(acc, sums, block, base),
    }
}

/// Folds one block (at local position `base`) into a chunk's running partial; its sum goes to
/// `sums` for the chunk's pairwise total.
#[inline(always)]
fn add_block<T: StatElem, const SUM: bool, const M2: bool, const EXT: bool>(
    acc: &mut Partial<T>,
    sums: &mut Vec<f64>,
    block: &[T],
    base: u64,
) {
    let shift = acc.shift.is_finite().then_some(acc.shift);
    let (p, extremes) = block_partial::<T, SUM, M2, EXT>(block, shift);
    if SUM {
        sums.push(p.fsum);
    }
    *acc = std::mem::replace(acc, Partial::empty()).merge(&p);
    if p.count > 0 {
        acc.shift = p.mean + p.mean_lo;
    }
    let Some((lo, hi)) = extremes else { return };
    // Blocks come in order, so a later block only wins with a strictly better value; only then
    // is its position looked up.
    if acc.min.is_none_or(|(v, _)| lo < v) {
        let i = block.iter().position(|&e| e == lo).unwrap_or(0) as u64;
        acc.min = Some((lo, base + i));
    }
    if acc.max.is_none_or(|(v, _)| hi > v) {
        let i = block.iter().position(|&e| e == hi).unwrap_or(0) as u64;
        acc.max = Some((hi, base + i));
    }
}

/// [`add_block`] for one tile of a fused expression, compiled for AVX2 too.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn add_tile<T: StatElem>(
    acc: &mut Partial<T>,
    sums: &mut Vec<f64>,
    tile: &[T],
    base: u64,
    need: Need,
) {
    add_block_for(acc, sums, tile, base, need);
}

/// [`stats`] of a lazy element-wise expression, fused: every tile of results is reduced while it
/// is still in L1, so no chunk of the expression is ever materialised.
pub fn stats_of_expr(node: &crate::expr::Node, progress: Progress<'_>) -> Result<Stats> {
    stats_of_expr_for(node, Need::ALL, progress)
}

/// [`stats_for`] of a lazy element-wise expression, fused like [`stats_of_expr`].
pub fn stats_of_expr_for(
    node: &crate::expr::Node,
    need: Need,
    progress: Progress<'_>,
) -> Result<Stats> {
    use rayon::prelude::*;
    let need = need.normalized();
    let info = node.info();
    let shape = info.shape.clone();
    let dtype = info.dtype;
    let layout = info.layout.clone();
    let n = layout.num_chunks();
    crate::with_dtype!(dtype, T => {
        let partials: Vec<Partial<T>> = (0..n)
            .into_par_iter()
            .map(|i| -> Result<Partial<T>> {
                let region = layout.chunk_region(i);
                let mut acc = Partial::<T>::empty();
                let mut sums = Vec::with_capacity((region.numel() as usize).div_ceil(BLOCK));
                node.for_each_tile(&region, &mut |off, bytes| {
                    add_tile::<T>(
                        &mut acc,
                        &mut sums,
                        bytemuck::cast_slice(bytes),
                        off as u64,
                        need,
                    );
                    Ok(())
                })?;
                acc.fsum = pairwise_f64(&sums);
                acc.min = acc.min.map(|(v, i)| (v, region.global_flat_index(i, &shape)));
                acc.max = acc.max.map(|(v, i)| (v, region.global_flat_index(i, &shape)));
                progress(region.numel() * dtype.size() as u64);
                Ok(acc)
            })
            .collect::<Result<_>>()?;
        Ok(finish::<T>(partials, dtype, shape.clone(), need))
    })
}

fn finish<T: StatElem>(
    partials: Vec<Partial<T>>,
    dtype: DType,
    shape: Vec<u64>,
    need: Need,
) -> Stats {
    let sums: Vec<f64> = partials.iter().map(|p| p.fsum).collect();
    let mut acc = Partial::<T>::empty();
    for p in &partials {
        acc = acc.merge(p);
    }
    let fsum = pairwise_f64(&sums);
    let sum = if T::FLOAT {
        Scalar::F64(fsum)
    } else {
        Scalar::Int(acc.isum)
    };
    if !need.extremes {
        (acc.min, acc.max) = (None, None);
    }
    Stats {
        need,
        dtype,
        shape,
        count: acc.count,
        nan_count: acc.nan,
        sum,
        m2: if acc.count > 0 && need.m2 {
            acc.m2
        } else {
            0.0
        },
        min: acc.min.map(|(v, _)| v.to_scalar()),
        max: acc.max.map(|(v, _)| v.to_scalar()),
        argmin: acc.min.map(|(_, i)| i),
        argmax: acc.max.map(|(_, i)| i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::histogram::test_source::MemSource;
    use proptest::prelude::*;

    #[test]
    fn iterative_pairwise_equals_the_recursion() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..70 {
            let x: Vec<f64> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 11) as f64 * 1e-3 * if seed & 1 == 0 { 1.0 } else { -1e7 }
                })
                .collect();
            assert_eq!(
                pairwise_f64(&x).to_bits(),
                pairwise_f64_rec(&x).to_bits(),
                "n = {n}"
            );
        }
    }

    /// The figures of `full` a pass for `need` must reproduce bit for bit.
    fn restricted(full: &Stats, need: Need) -> Stats {
        let need = need.normalized();
        let mut s = full.clone();
        s.need = need;
        if !need.sum {
            s.sum = match full.sum {
                Scalar::F64(_) => Scalar::F64(0.0),
                _ => Scalar::Int(0),
            };
        }
        if !need.m2 {
            s.m2 = 0.0;
        }
        if !need.extremes {
            (s.min, s.max, s.argmin, s.argmax) = (None, None, None, None);
        }
        s
    }

    const NEEDS: [Need; 5] = [
        Need::SUM,
        Need::MOMENTS,
        Need::EXTREMES,
        Need::ALL,
        Need {
            sum: true,
            m2: false,
            extremes: true,
        },
    ];

    /// Every specialised pass equals the full pass restricted to its figures, for any thread
    /// count, and the full pass does not depend on the thread count.
    fn check<T: Element>(values: &[T], chunk: u64) {
        let src = MemSource::vec(values, chunk);
        let full = stats(&src).unwrap();
        on_threads(|n| {
            assert_eq!(stats(&src).unwrap(), full, "threads {n}");
            for need in NEEDS {
                let s = stats_for(&src, need, &no_progress).unwrap();
                assert_eq!(s, restricted(&full, need), "{need:?}, threads {n}");
            }
        });
    }

    /// Runs `f(n)` inside pools of 1, 2 and 7 threads.
    fn on_threads(f: impl Fn(usize) + Sync) {
        for n in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap();
            pool.install(|| f(n));
        }
    }

    /// A value and its flat index.
    type At = Option<(f64, u64)>;

    /// A naive reference for the counts, extremes and their positions.
    fn naive_extremes(v: &[f64]) -> (u64, At, At) {
        let mut count = 0;
        let (mut mn, mut mx): (At, At) = (None, None);
        for (i, &x) in v.iter().enumerate() {
            if x.is_nan() {
                continue;
            }
            count += 1;
            if mn.is_none_or(|(m, _)| x < m) {
                mn = Some((x, i as u64));
            }
            if mx.is_none_or(|(m, _)| x > m) {
                mx = Some((x, i as u64));
            }
        }
        (count, mn, mx)
    }

    fn floats() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![
                8 => -1e3f64..1e3,
                1 => Just(f64::NAN),
                1 => (-4i32..4).prop_map(f64::from),
            ],
            0..20_000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn passes_match_full_stats_f64(v in floats(), chunk in 1u64..9000) {
            check(&v, chunk);
            let s = stats_for(&MemSource::vec(&v, chunk), Need::EXTREMES, &no_progress).unwrap();
            let (count, mn, mx) = naive_extremes(&v);
            prop_assert_eq!(s.count, count);
            prop_assert_eq!(s.nan_count, v.len() as u64 - count);
            prop_assert_eq!(s.min, mn.map(|m| Scalar::F64(m.0)));
            prop_assert_eq!(s.argmin, mn.map(|m| m.1));
            prop_assert_eq!(s.max, mx.map(|m| Scalar::F64(m.0)));
            prop_assert_eq!(s.argmax, mx.map(|m| m.1));
            let sum = stats_for(&MemSource::vec(&v, chunk), Need::SUM, &no_progress).unwrap();
            let naive: f64 = v.iter().filter(|x| !x.is_nan()).sum();
            let Scalar::F64(got) = sum.sum else { panic!("float sum") };
            prop_assert!((got - naive).abs() <= 1e-9 * (1.0 + v.len() as f64 * 1e3));
        }

        #[test]
        fn passes_match_full_stats_f32(v in floats(), chunk in 1u64..9000) {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            check(&v, chunk);
        }

        #[test]
        fn passes_match_full_stats_ints(
            v in prop::collection::vec(any::<i64>(), 0..10_000),
            chunk in 1u64..5000,
        ) {
            check(&v, chunk);
            let u: Vec<u8> = v.iter().map(|&x| x as u8).collect();
            check(&u, chunk);
            let s = stats_for(&MemSource::vec(&v, chunk), Need::SUM, &no_progress).unwrap();
            prop_assert_eq!(s.sum, Scalar::Int(v.iter().map(|&x| x as i128).sum()));
        }
    }

    /// `x * 3 + y`, fused, over two sources chunked differently (the expression takes one
    /// layout, so tiles straddle the other's chunks).
    fn fused<T: Element>(x: &[T], y: &[T], cx: u64, cy: u64) -> crate::expr::lazy::Src {
        use crate::expr::lazy::{ConstValue, Node, Src};
        use crate::expr::ops::BinOp;
        let xs: Src = std::sync::Arc::new(MemSource::vec(x, cx));
        let ys: Src = std::sync::Arc::new(MemSource::vec(y, cy));
        let three = Node::constant(T::DTYPE, ConstValue::Int(3));
        let x3 = Node::binary(BinOp::Mul, &xs, &three).unwrap();
        Node::binary(BinOp::Add, &x3, &ys).unwrap()
    }

    /// [`check`] for fused expressions: every specialised pass of `stats_of_expr_for` equals its
    /// full pass restricted to its figures, whatever the thread count; and the full pass agrees
    /// with [`stats`] of the materialised values (`want`): counts, extremes and their positions
    /// exactly, sums and squared deviations to rounding.
    fn check_fused(node: &crate::expr::lazy::Src, want: &Stats) {
        let node = crate::expr::lazy::as_node(node).expect("an expression node");
        let full = stats_of_expr(node, &no_progress).unwrap();
        on_threads(|n| {
            assert_eq!(
                stats_of_expr(node, &no_progress).unwrap(),
                full,
                "threads {n}"
            );
            for need in NEEDS {
                let s = stats_of_expr_for(node, need, &no_progress).unwrap();
                assert_eq!(s, restricted(&full, need), "{need:?}, threads {n}");
            }
        });
        assert_eq!(
            (full.count, full.nan_count, full.argmin, full.argmax),
            (want.count, want.nan_count, want.argmin, want.argmax)
        );
        assert_eq!((&full.min, &full.max), (&want.min, &want.max));
        match (&full.sum, &want.sum) {
            (Scalar::F64(a), Scalar::F64(b)) => {
                let tol = 1e-12 * (1.0 + full.count as f64) * (1.0 + b.abs());
                assert!(
                    (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
                    "{a} vs {b}"
                );
            }
            (a, b) => assert_eq!(a, b),
        }
        let (a, b) = (full.m2, want.m2);
        assert!(
            (a - b).abs() <= 1e-9 * (1.0 + b.abs()) || (a.is_nan() && b.is_nan()),
            "m2 {a} vs {b}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn fused_passes_match_full_stats_f64(
            x in floats(),
            seed in any::<u64>(),
            cx in 1u64..9000,
            cy in 1u64..9000,
        ) {
            let y: Vec<f64> = noise(x.len(), seed).iter().map(|v| v * 100.0).collect();
            let vals: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a * 3.0 + b).collect();
            let want = stats(&MemSource::vec(&vals, cx)).unwrap();
            check_fused(&fused(&x, &y, cx, cy), &want);
        }

        #[test]
        fn fused_passes_match_full_stats_ints(
            x in prop::collection::vec(-1_000_000i64..1_000_000, 0..10_000),
            seed in any::<u64>(),
            cx in 1u64..5000,
            cy in 1u64..5000,
        ) {
            let y: Vec<i64> = noise(x.len(), seed).iter().map(|v| (v * 1e6) as i64).collect();
            let vals: Vec<i64> = x.iter().zip(&y).map(|(a, b)| a * 3 + b).collect();
            let want = stats(&MemSource::vec(&vals, cx)).unwrap();
            check_fused(&fused(&x, &y, cx, cy), &want);
            let x: Vec<i32> = x.iter().map(|&v| v as i32).collect();
            let y: Vec<i32> = y.iter().map(|&v| v as i32).collect();
            let vals: Vec<i32> = x.iter().zip(&y).map(|(a, b)| a * 3 + b).collect();
            let want = stats(&MemSource::vec(&vals, cx)).unwrap();
            check_fused(&fused(&x, &y, cx, cy), &want);
        }
    }

    #[test]
    fn needs_cover_and_normalise() {
        assert!(Need::ALL.covers(Need::MOMENTS));
        assert!(Need::MOMENTS.covers(Need::SUM));
        assert!(!Need::SUM.covers(Need::MOMENTS));
        assert!(!Need::MOMENTS.covers(Need::EXTREMES));
        assert!(!Need::EXTREMES.covers(Need::SUM));
        let m2_only = Need {
            sum: false,
            m2: true,
            extremes: false,
        };
        assert_eq!(m2_only.normalized(), Need::MOMENTS);
        assert_eq!(Need::SUM.union(Need::EXTREMES).union(m2_only), Need::ALL);
    }

    #[test]
    fn partial_passes_hide_what_they_did_not_compute() {
        let v = [1.0f64, 2.0, 4.0];
        let s = stats_for(&MemSource::vec(&v, 2), Need::EXTREMES, &no_progress).unwrap();
        assert_eq!((s.count, s.mean(), s.var(0)), (3, None, None));
        assert_eq!(s.max, Some(Scalar::F64(4.0)));
        let s = stats_for(&MemSource::vec(&v, 2), Need::SUM, &no_progress).unwrap();
        assert_eq!((s.mean(), s.var(0), s.min), (Some(7.0 / 3.0), None, None));
    }

    /// Sum of squared deviations of the non-NaN values about their mean: two passes, each
    /// summed with Neumaier's compensation.
    fn reference_m2(v: &[f64]) -> f64 {
        fn neumaier(it: impl Iterator<Item = f64>) -> f64 {
            let (mut s, mut c) = (0.0f64, 0.0f64);
            for x in it {
                let t = s + x;
                c += if s.abs() >= x.abs() {
                    (s - t) + x
                } else {
                    (x - t) + s
                };
                s = t;
            }
            s + c
        }
        let ok = || v.iter().copied().filter(|x| !x.is_nan());
        let mean = neumaier(ok()) / ok().count() as f64;
        neumaier(ok().map(|x| (x - mean) * (x - mean)))
    }

    /// Uniform noise in `[-0.5, 0.5)`, seeded.
    fn noise(n: usize, mut seed: u64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    /// The squared deviations summed in the same pass as the sum (about the block before's mean)
    /// agree with a compensated two-pass reference, and so do the blocks that fall back to a
    /// second pass because that shift lies too far from their mean (levels that jump by 10^8
    /// from block to block would lose every digit to cancellation without that fallback).
    #[test]
    fn one_pass_deviations_match_a_two_pass_reference() {
        let n = 5 * BLOCK + 123;
        let mut cases: Vec<(&str, Vec<f64>)> = vec![
            ("noise", noise(n, 1)),
            (
                "noise on 1e9",
                noise(n, 2).iter().map(|x| 1e9 + x).collect(),
            ),
            ("ramp", (0..n).map(|i| i as f64 * 0.25).collect()),
            (
                "levels jumping by 1e8",
                noise(n, 3)
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x + if (i / BLOCK) % 2 == 1 { 1e8 } else { 0.0 })
                    .collect(),
            ),
            ("constant", vec![3.25; n]),
        ];
        // Stationary noise takes the one-pass form (the shift, the block before's mean, lies
        // within a fraction of a standard deviation).
        let v = noise(2 * BLOCK, 1);
        let mut l = Lanes {
            mn: [f64::INFINITY; 8],
            mx: [f64::NEG_INFINITY; 8],
            cnt: [0.0; 8],
        };
        let k = v[..BLOCK].iter().sum::<f64>() / BLOCK as f64;
        let (_, d1, d2) = fused_plain::<f64, true, true>(&v[BLOCK..], k, &mut l);
        assert!(shifted_m2(d1, d2, BLOCK).is_some());
        let mut with_nan = noise(n, 4);
        with_nan[BLOCK + 7] = f64::NAN;
        with_nan[3 * BLOCK] = f64::NAN;
        cases.push(("NaN in two blocks", with_nan));
        for (name, v) in &cases {
            let want = reference_m2(v);
            for chunk in [BLOCK as u64 * 3, 10_000, 1 << 20] {
                let src = MemSource::vec(v, chunk);
                let got = stats_for(&src, Need::MOMENTS, &no_progress).unwrap().m2;
                assert!(
                    (got - want).abs() <= 1e-12 * want,
                    "{name}, chunks of {chunk}: m2 {got} against {want}"
                );
                let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                let want = reference_m2(&f.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
                let got = stats_for(&MemSource::vec(&f, chunk), Need::ALL, &no_progress)
                    .unwrap()
                    .m2;
                assert!(
                    (got - want).abs() <= 1e-12 * want,
                    "{name} as f32, chunks of {chunk}: m2 {got} against {want}"
                );
            }
        }
    }

    /// The one-pass form is used only while the shift is within sqrt(15) standard deviations
    /// of the block's mean (so the subtraction cancels at most 4 bits).
    #[test]
    fn shifted_deviations_refuse_a_far_shift() {
        let x: Vec<f64> = (0..BLOCK).map(|i| (i % 2) as f64).collect(); // mean 0.5, variance 0.25
        let m2 = |k: f64| {
            let mut l = Lanes {
                mn: [f64::INFINITY; 8],
                mx: [f64::NEG_INFINITY; 8],
                cnt: [0.0; 8],
            };
            let (sum, d1, d2) = fused_plain::<f64, false, true>(&x, k, &mut l);
            assert_eq!(sum, BLOCK as f64 / 2.0);
            shifted_m2(d1, d2, x.len())
        };
        let want = BLOCK as f64 * 0.25;
        // A shift within a standard deviation (0.5) of the mean loses at most a bit; the
        // farthest accepted (offset sqrt(15) standard deviations) at most 4.
        for (k, tol) in [
            (0.5, 1e-13),
            (0.9, 1e-13),
            (0.1, 1e-13),
            (1.0, 1e-13),
            (2.4, 1e-12),
        ] {
            let (got, off) = m2(k).unwrap_or_else(|| panic!("shift {k} refused"));
            assert!((got - want).abs() <= tol * want, "shift {k}: {got}");
            assert!(
                (k + off - 0.5).abs() <= 1e-13 * k.abs().max(1.0),
                "shift {k}: {off}"
            );
        }
        for k in [2.5, -1.5, 1e9, f64::INFINITY, f64::NAN] {
            assert_eq!(m2(k), None, "shift {k}");
        }
    }
}
