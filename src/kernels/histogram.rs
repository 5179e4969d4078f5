//! Histograms with NumPy's exact semantics: [`histogram`] (`np.histogram(a, bins=N, range=..)`)
//! and [`histogram2d`] (`np.histogram2d(x, y, bins=(NX, NY), range=..)`), in one streaming
//! parallel pass over the chunks (two when the range is found from the data, one again with
//! [`histogram_with_stats`], which takes the data's extremes from an earlier statistics pass).
//!
//! **Edges** are `np.linspace(lo, hi, bins + 1)` computed as NumPy computes them: in `float32`
//! arithmetic for `f32` data with an autodetected range, in `float64` (then rounded to `float32`)
//! for `f32` data with an explicit range, in `float64` otherwise. [`Histogram::edges_dtype`] says
//! which, so callers can print the edges as NumPy would.
//!
//! **Binning (1-D)** follows `numpy/lib/_histograms_impl.py` step by step: values outside
//! `[edges[0], edges[-1]]` (and NaN) are dropped, the bin index is guessed as
//! `((a - first_edge) / norm_denom) * bins` in the arithmetic NumPy uses for the dtype, clamped,
//! then corrected once down (`a < edges[i]`) and once up (`a >= edges[i + 1]`, except in the last
//! bin, which is closed). Blocks of values are binned in a loop of branch-free compares and selects
//! that vectorises: when every edge is exactly `i * step + start` (NumPy's `f64` `linspace`,
//! checked once) the corrections compute the two edges they compare with; otherwise they load
//! them in a second, scalar loop. With such edges and a bin wider than 2^40 units in the last
//! place of the range, the guess multiplies by `bins / width` instead of dividing: both guesses
//! are then within one bin of the bin the edges define, and the corrections move either to it.
//! There, a block whose every guess lies farther from an integer than a proven error bound
//! (`margin`, about 10^-12 bins for 100 bins over (-6, 6)) takes the guess's floor as the bin and
//! skips the corrections; a block with a value near an edge (or NaN) is binned again with them.
//! The slots of a block of 512 values are counted after the block is binned: up to 126 bins as
//! pairs of byte indices, one increment per pair in a table of `slots²` counters; up to 254 bins
//! as byte indices into eight 256-entry tables (eight indices per load, no bounds checks); up to
//! 16 Ki bins into 4 interleaved sub-histograms, so runs of equal bins do not serialise on one
//! counter.
//! The binning loops fetch the data ahead into L2 only (`prefetch::pieces_to_l2`): the L1 is
//! left to the counters (over 4 GiB on the Zen 4 VM this was faster or no slower for every
//! counter kind: 10, 100, 200, 1000 and 20 000 bins were measured).
//! Integers and bools are converted to `f64` (NumPy converts bools to `uint8` first).
//!
//! **Binning (2-D)** follows `np.histogramdd`: `searchsorted(edges, v, side='right')`, values on
//! the last edge moved into the last bin, everything else outside (and NaN) dropped.
//!
//! **Determinism:** counts are integers, so adding per-chunk partial counts in any order gives the
//! same result; nothing depends on the thread count.
//! **Memory:** one count array per worker (reserved in the budget) plus the result.

use std::sync::Mutex;

use rayon::prelude::*;

use crate::dtype::{Bool, DType, Element};
use crate::error::{Error, Result};
use crate::kernels::prefetch;
use crate::memory::{self, Reservation};
use crate::pipeline::Progress;
use crate::reduce::{Scalar, Stats};
use crate::shape::shape_str;
use crate::storage::{Chunk, ChunkSource};

/// A 1-D histogram: `counts[i]` values fell in `[edges[i], edges[i + 1])` (the last bin is closed).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Count per bin (`bins` entries). NumPy returns these as `int64`.
    pub counts: Vec<u64>,
    /// Bin edges (`bins + 1` entries), exactly NumPy's values.
    pub edges: Vec<f64>,
    /// The dtype NumPy gives the edges: `F32` for `f32` data, `F64` otherwise (every `F32` edge is
    /// stored exactly in the `f64`).
    pub edges_dtype: DType,
}

/// A 2-D histogram: `counts[i * ny + j]` pairs had `x` in x-bin `i` and `y` in y-bin `j`
/// (NumPy's `H[i, j]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram2d {
    /// Counts, `nx * ny` entries in C order (x major). NumPy returns them as `float64`.
    pub counts: Vec<u64>,
    /// Number of x bins (rows of `H`).
    pub nx: usize,
    /// Number of y bins (columns of `H`).
    pub ny: usize,
    /// The x edges (`nx + 1` entries).
    pub x_edges: Vec<f64>,
    /// The y edges (`ny + 1` entries).
    pub y_edges: Vec<f64>,
    /// The dtype NumPy gives both edge arrays (`F32` only when the common dtype of `x` and `y` is
    /// `float32` and the range is autodetected).
    pub edges_dtype: DType,
}

/// Formats a float the way Python's `repr` does for the common cases (`nan`, `inf`, `1.0`).
pub(crate) fn py_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{x:?}")
    }
}

/// Runs `f` on every chunk of `src` on the rayon pool with a per-worker state made lazily by
/// `init` (reserving what it allocates). `f` must fold each chunk's result into shared state
/// itself; the order chunks are visited in is unspecified, so that folding must be
/// order-independent (integer counts, minima/maxima, sets).
pub(crate) fn for_each_chunk<S, I, F>(
    src: &dyn ChunkSource,
    progress: Progress<'_>,
    init: I,
    f: F,
) -> Result<()>
where
    S: Send,
    I: Fn() -> Result<S> + Sync,
    F: Fn(&mut S, &Chunk) -> Result<()> + Sync,
{
    visit_chunks(src, false, progress, init, f)
}

/// [`for_each_chunk`], with chunks read by [`ChunkSource::read_chunk_sparse`] when `sparse` (an
/// `f` that looks at only a little of each chunk, a sample).
pub(crate) fn visit_chunks<S, I, F>(
    src: &dyn ChunkSource,
    sparse: bool,
    progress: Progress<'_>,
    init: I,
    f: F,
) -> Result<()>
where
    S: Send,
    I: Fn() -> Result<S> + Sync,
    F: Fn(&mut S, &Chunk) -> Result<()> + Sync,
{
    let n = src.info().layout.num_chunks();
    (0..n).into_par_iter().try_for_each_init(
        || None,
        |slot: &mut Option<S>, i| {
            let chunk = if sparse {
                src.read_chunk_sparse(i)?
            } else {
                src.read_chunk(i)?
            };
            let state = match slot {
                Some(s) => s,
                None => slot.insert(init()?),
            };
            f(state, &chunk)?;
            progress(chunk.data.len() as u64);
            Ok(())
        },
    )
}

/// Like [`for_each_chunk`], but each per-worker state is handed to `done` once its worker has
/// finished its share of the chunks, so `f` can accumulate across chunks (recycling its buffers)
/// and fold into shared state once per worker instead of once per chunk. `done` must fold in an
/// order-independent way.
pub(crate) fn fold_chunks<S, I, F, D>(
    src: &dyn ChunkSource,
    progress: Progress<'_>,
    init: I,
    f: F,
    done: D,
) -> Result<()>
where
    S: Send,
    I: Fn() -> Result<S> + Sync,
    F: Fn(&mut S, &Chunk) -> Result<()> + Sync,
    D: Fn(S) -> Result<()> + Sync,
{
    let n = src.info().layout.num_chunks();
    (0..n)
        .into_par_iter()
        .try_fold(
            || None,
            |mut slot: Option<S>, i| {
                let chunk = src.read_chunk(i)?;
                let state = match &mut slot {
                    Some(s) => s,
                    None => slot.insert(init()?),
                };
                f(state, &chunk)?;
                progress(chunk.data.len() as u64);
                Ok::<_, Error>(slot)
            },
        )
        .try_for_each(|r| match r? {
            Some(s) => done(s),
            None => Ok(()),
        })
}

/// What the kernels need from an element beyond [`Element`].
pub(crate) trait Num: Element + Copy {
    /// The exact integer value (ints and bool); 0 for floats (unused).
    fn exact(self) -> i128;
    /// True for NaN.
    #[inline(always)]
    fn nan(self) -> bool {
        // Only NaN is unequal to itself (PartialEq compares values for every element type).
        #[allow(clippy::eq_op)]
        let ne = self != self;
        ne
    }
}

macro_rules! num_int {
    ($($t:ty),*) => {$(
        impl Num for $t {
            #[inline(always)]
            fn exact(self) -> i128 { self as i128 }
        }
    )*};
}
num_int!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Num for Bool {
    #[inline(always)]
    fn exact(self) -> i128 {
        i128::from(self.get())
    }
}

impl Num for f32 {
    #[inline(always)]
    fn exact(self) -> i128 {
        0
    }
}

impl Num for f64 {
    #[inline(always)]
    fn exact(self) -> i128 {
        0
    }
}

/// Minimum, maximum and whether a NaN was seen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Extremes<T> {
    /// Smallest non-NaN value.
    pub min: Option<T>,
    /// Largest non-NaN value.
    pub max: Option<T>,
    /// A NaN was seen.
    pub nan: bool,
}

impl<T: Num> Extremes<T> {
    fn empty() -> Self {
        Extremes {
            min: None,
            max: None,
            nan: false,
        }
    }

    fn merge(self, o: Self) -> Self {
        let pick = |a: Option<T>, b: Option<T>, better: fn(T, T) -> bool| match (a, b) {
            (Some(a), Some(b)) => Some(if better(b, a) { b } else { a }),
            (a, b) => a.or(b),
        };
        Extremes {
            min: pick(self.min, o.min, |b, a| b < a),
            max: pick(self.max, o.max, |b, a| b > a),
            nan: self.nan || o.nan,
        }
    }
}

/// Extremes of a slice: 8 lanes of compare-and-select (vectorises; NaN fails every compare).
#[inline(always)]
fn slice_extremes<T: Num>(x: &[T]) -> Extremes<T> {
    let Some(first) = x.iter().copied().find(|v| !v.nan()) else {
        return Extremes {
            min: None,
            max: None,
            nan: !x.is_empty(),
        };
    };
    let (mut mn, mut mx) = ([first; 8], [first; 8]);
    let mut nan = [false; 8];
    // Pieces hold a multiple of 8 elements, so only the last can leave a remainder.
    let mut rest: &[T] = &[];
    for piece in prefetch::pieces(x) {
        let mut it = piece.chunks_exact(8);
        for c in &mut it {
            for j in 0..8 {
                let e = c[j];
                mn[j] = if e < mn[j] { e } else { mn[j] };
                mx[j] = if e > mx[j] { e } else { mx[j] };
                nan[j] |= e.nan();
            }
        }
        rest = it.remainder();
    }
    let mut out = Extremes {
        min: Some(first),
        max: Some(first),
        nan: nan.iter().any(|&b| b),
    };
    for j in 0..8 {
        out = out.merge(Extremes {
            min: Some(mn[j]),
            max: Some(mx[j]),
            nan: false,
        });
    }
    for &e in rest {
        out.nan |= e.nan();
        if !e.nan() {
            out = out.merge(Extremes {
                min: Some(e),
                max: Some(e),
                nan: false,
            });
        }
    }
    out
}

#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn chunk_extremes<T: Num>(x: &[T]) -> Extremes<T> {
    slice_extremes(x)
}

/// One parallel pass: the minimum, maximum and NaN flag of every element of `src` (of type `T`).
pub(crate) fn extremes<T: Num>(
    src: &dyn ChunkSource,
    progress: Progress<'_>,
) -> Result<Extremes<T>> {
    let acc = Mutex::new(Extremes::<T>::empty());
    for_each_chunk(
        src,
        progress,
        || Ok(()),
        |_, c| {
            let e = chunk_extremes::<T>(c.as_slice());
            let mut a = acc.lock().unwrap_or_else(|e| e.into_inner());
            *a = a.merge(e);
            Ok(())
        },
    )?;
    Ok(acc.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// `np.linspace(start, stop, num)` evaluated in `f64`: `arange(num) * step + start` with the last
/// value set to `stop` (or `arange / div * delta + start` when the step underflows to 0).
pub(crate) fn linspace_f64(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = num.saturating_sub(1);
    let delta = stop - start;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64).collect();
    if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            y.iter_mut().for_each(|v| *v = *v / div as f64 * delta);
        } else {
            y.iter_mut().for_each(|v| *v *= step);
        }
    } else {
        y.iter_mut().for_each(|v| *v *= delta);
    }
    y.iter_mut().for_each(|v| *v += start);
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `np.linspace(start, stop, num)` for `float32` start and stop: every operation in `f32`.
pub(crate) fn linspace_f32(start: f32, stop: f32, num: usize) -> Vec<f32> {
    let div = num.saturating_sub(1);
    let delta = stop - start;
    let mut y: Vec<f32> = (0..num).map(|i| i as f32).collect();
    if div > 0 {
        let step = delta / div as f32;
        if step == 0.0 {
            y.iter_mut().for_each(|v| *v = *v / div as f32 * delta);
        } else {
            y.iter_mut().for_each(|v| *v *= step);
        }
    } else {
        y.iter_mut().for_each(|v| *v *= delta);
    }
    y.iter_mut().for_each(|v| *v += start);
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// NumPy's `_get_outer_edges` checks for an explicit range.
fn check_range(lo: f64, hi: f64) -> Result<()> {
    if lo > hi {
        return Err(Error::Invalid(format!(
            "histogram range [{}, {}]: max must be larger than min",
            py_float(lo),
            py_float(hi)
        )));
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(Error::Invalid(format!(
            "supplied histogram range of [{}, {}] is not finite",
            py_float(lo),
            py_float(hi)
        )));
    }
    Ok(())
}

fn autodetect_error(name: &str, lo: f64, hi: f64) -> Error {
    Error::Invalid(format!(
        "{name}: autodetected histogram range of [{}, {}] is not finite (NaN or infinity in the \
         data; pass an explicit range)",
        py_float(lo),
        py_float(hi)
    ))
}

/// The index guess `((a - first_edge) / norm_denom) * bins` in the arithmetic NumPy uses.
trait Guess: Copy + Send + Sync {
    fn guess<T: Element>(self, v: T, x: f64) -> f64;
    /// Whether the guess is computed in `f64` from `x` alone, so that [`GuessScaled`] may stand
    /// in for it where [`scaled_is_exact`] says the result cannot change.
    const F64: bool = false;
}

/// `(x - first) * scale`, a multiply instead of NumPy's divide. Used only with edges that are
/// exactly `i * step + start` and a range where [`scaled_is_exact`] holds: there NumPy's guess and
/// this one are both within one bin of the bin the edges define, and the corrections, which
/// compare with the edges, move either guess to that same bin.
#[derive(Clone, Copy)]
struct GuessScaled {
    first: f64,
    scale: f64,
}

impl Guess for GuessScaled {
    #[inline(always)]
    fn guess<T: Element>(self, _: T, x: f64) -> f64 {
        (x - self.first) * self.scale
    }
}

/// True when a kept value's guess, computed by NumPy's divide or by [`GuessScaled`]'s multiply,
/// lands within one bin of the bin the edges `i * step + start` put it in: a bin is wider than
/// 2^40 units in the last place of the range's largest magnitude, so the rounding of the edges,
/// of `x - first` and of the divide or multiply is far below one bin (at most 2^24 bins).
fn scaled_is_exact(start: f64, stop: f64, step: f64, n: usize) -> bool {
    let mag = start.abs().max(stop.abs());
    n <= 1 << 24 && step.is_finite() && step > 0.0 && mag.is_finite() && mag * 2f64.powi(-40) < step
}

/// Everything in `f64` (f64 data; ints and bools, which NumPy casts to the f64 edge type).
#[derive(Clone, Copy)]
struct GuessF64 {
    first: f64,
    denom: f64,
    n: f64,
}

impl Guess for GuessF64 {
    #[inline(always)]
    fn guess<T: Element>(self, _: T, x: f64) -> f64 {
        ((x - self.first) / self.denom) * self.n
    }
    const F64: bool = true;
}

/// `f32` data with an autodetected range: every operation in `f32`.
#[derive(Clone, Copy)]
struct GuessF32 {
    first: f32,
    denom: f32,
    n: f32,
}

impl Guess for GuessF32 {
    #[inline(always)]
    fn guess<T: Element>(self, _: T, x: f64) -> f64 {
        // `x` came from an f32, so the conversion back is exact.
        f64::from(((x as f32 - self.first) / self.denom) * self.n)
    }
}

/// `f32` data with an explicit range: the difference in `f32` (the Python float range bound is
/// cast to `f32`), then divided by the `float64` range width and multiplied in `f64`.
#[derive(Clone, Copy)]
struct GuessF32Diff {
    first: f32,
    denom: f64,
    n: f64,
}

impl Guess for GuessF32Diff {
    #[inline(always)]
    fn guess<T: Element>(self, _: T, x: f64) -> f64 {
        (f64::from(x as f32 - self.first) / self.denom) * self.n
    }
}

/// What the 1-D binning loop needs.
#[derive(Clone, Copy)]
struct Bins<'a, G> {
    guess: G,
    /// `[edges[i], edges[i + 1]]` for each bin `i < n`, as `f64` (exact copies of `f32` edges),
    /// with the upper edge of the last bin replaced by NaN (the last bin is closed: nothing moves
    /// up out of it), then `[NaN, NaN]` for the discard slot `n` (nothing moves out of it).
    pairs: &'a [[f64; 2]],
    /// `(step, start)` when every edge but the last is `i * step + start` exactly (NumPy's
    /// `linspace` in `f64`), so the corrections can compute the edges instead of loading them.
    arith: Option<(f64, f64)>,
    /// Values kept: `keep_lo <= x <= keep_hi` (NumPy's `keep` mask, compared in the data's type).
    keep_lo: f64,
    keep_hi: f64,
    /// With `arith`, a bound (in bins) on how far the guess can be from the position of the value
    /// between the edges, when [`margin`] can prove one: a guess farther than this from every
    /// integer has its floor as the bin, and the corrections are skipped.
    margin: Option<f64>,
}

/// A bound, in bins, on the distance between [`GuessScaled`]'s guess for any value within one bin
/// of the range `[start, stop]` and that value's position between the edges `i * step + start`
/// (each rounded), or `None` when the bound is not far below one bin.
///
/// The errors, in units of `2^-52`: `x - start` is off by at most `|x - start| / 2`, at most `m`
/// (the largest magnitude within a bin of the range), i.e. `m / step` bins; the multiply and the
/// rounded `bins / width` add relative errors of a few units, at most `2 (bins + 1)` bins; each
/// edge is off by two roundings and the rounded step times `i`, at most `2 m` (`2 m / step`
/// bins). The bound is 16 times their sum. Values farther out need no bound: the guess is
/// monotonic in the value, so it stays beyond the guess of the range's ends (or lands within the
/// margin of them and takes the exact path).
fn margin(start: f64, stop: f64, step: f64, n: usize) -> Option<f64> {
    let m = start.abs().max(stop.abs()) + step;
    let units = 16.0 * (3.0 * m / step + 2.0 * (n as f64 + 1.0));
    let bound = units * f64::EPSILON;
    (bound.is_finite() && step > 0.0 && bound < 1.0 / 64.0).then_some(bound)
}

/// 2^52: adding it to an integer-valued `f64` in `[0, 2^52)` leaves the integer in the low bits.
const TWO52: f64 = 4503599627370496.0;

/// Values binned per block: the slots of a whole block are computed first, a
/// [`prefetch::pieces`] piece at a time (loops of independent float operations that vectorise),
/// then counted. A block of 512 values (several pieces for elements wider than a byte) leaves
/// the counting loop's loads of the slots far behind the vector stores that wrote them: counting
/// each 64-value piece straight after binning it was a fifth slower in a scratch benchmark.
const BLOCK: usize = prefetch::MAX_PIECE_ELEMS;

/// Where the binning loop counts slot indices, and how a slot index is held between the loop
/// that computes it and the loop that counts it.
trait Tally: Send {
    /// A slot index as stored in the block buffer.
    type Idx: Copy + Default;
    /// The slot whose index is the low 32 bits of `bits` (an integer-valued `f64` plus 2^52,
    /// as bits; every slot index fits the type).
    fn idx(bits: u64) -> Self::Idx;
    /// The slot index `i` holds.
    fn slot(i: Self::Idx) -> usize;
    /// Counts every slot index of `idx`.
    fn count(&mut self, idx: &[Self::Idx]);
    /// Adds the count of each slot into `total` (one entry per slot) and zeroes the counters.
    fn drain_into(&mut self, total: &mut [u64]);
}

/// Up to 256 slots (used above [`PairTable::SLOTS`]): byte indices counted into eight tables of
/// 256 counters, value `j` of each 8 going to table `j`. Eight slot indices are read with one
/// 8-byte load and taken apart by shifts, and a byte indexes a 256-entry table with no bounds check, so counting costs little
/// more than its load-add-store; eight tables keep runs of equal slots from serialising on one
/// counter. In a scratch benchmark on the Zen 5 VM (100 bins of normal data, one thread, data in
/// L2), binning and counting took 0.34 ns per value this way against 0.50 with `u64` indices
/// counted into 4 interleaved lanes.
struct ByteTables(Box<[[u32; 256]; 8]>);

impl ByteTables {
    /// Most slots the tables hold.
    const SLOTS: usize = 256;

    fn new() -> ByteTables {
        ByteTables(Box::new([[0; 256]; 8]))
    }
}

impl Tally for ByteTables {
    type Idx = u8;

    #[inline(always)]
    fn idx(bits: u64) -> u8 {
        bits as u8
    }

    #[inline(always)]
    fn slot(i: u8) -> usize {
        usize::from(i)
    }

    #[inline(always)]
    fn count(&mut self, idx: &[u8]) {
        let t = &mut *self.0;
        let mut it = idx.chunks_exact(8);
        for c in &mut it {
            let w = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
            for (k, t) in t.iter_mut().enumerate() {
                t[usize::from((w >> (8 * k)) as u8)] += 1;
            }
        }
        for (t, &i) in t.iter_mut().zip(it.remainder()) {
            t[usize::from(i)] += 1;
        }
    }

    fn drain_into(&mut self, total: &mut [u64]) {
        for t in self.0.iter_mut() {
            for (acc, c) in total.iter_mut().zip(t.iter_mut()) {
                *acc += u64::from(*c);
                *c = 0;
            }
        }
    }
}

/// Up to 128 slots: the byte indices of a block taken two at a time, and each pair `(a, b)`
/// counted once, at `a + slots * b` in a table of `slots²` counters (an odd last index goes to a
/// table of single counts). That halves the load-add-stores of [`ByteTables`], which cost as
/// much as the binning itself: the pair indices of a block are made first, 32 per vector
/// instruction sequence, then counted with one increment each. Equal pairs follow each other
/// rarely (for 100 bins of normal data, about once in 2000), so one table does not serialise the
/// way one table of single counts would. The drain gives each pair's count to both its slots.
/// In a scratch benchmark on the Zen 4 VM (one thread, data in L2), binning and counting 100
/// bins of normal data took 0.45 ns per value this way against 0.54 with byte tables; uniform
/// data and constant data gained as much. Over 4 GiB with the range given (2 threads), the
/// whole histogram took 0.16-0.19 s against 0.19-0.22 s with byte tables.
struct PairTable {
    /// `slots²` pair counters, in a table of [`PairTable::LEN`] so the masked index needs no bounds
    /// check.
    pairs: Box<[u32; PairTable::LEN]>,
    /// Counts of single indices (blocks of odd length).
    singles: Box<[u32; 256]>,
    slots: usize,
}

impl PairTable {
    /// Most slots the table holds (every pair index `a + slots * b` fits 14 bits).
    const SLOTS: usize = 128;
    /// Counters in the table.
    const LEN: usize = 1 << 14;
    /// Bytes a table allocates.
    const BYTES: usize = Self::LEN * 4 + 256 * 4;

    fn new(slots: usize) -> PairTable {
        assert!(slots <= Self::SLOTS);
        PairTable {
            pairs: vec![0; Self::LEN]
                .into_boxed_slice()
                .try_into()
                .expect("LEN"),
            singles: Box::new([0; 256]),
            slots,
        }
    }
}

impl Tally for PairTable {
    type Idx = u8;

    #[inline(always)]
    fn idx(bits: u64) -> u8 {
        bits as u8
    }

    #[inline(always)]
    fn slot(i: u8) -> usize {
        usize::from(i)
    }

    #[inline(always)]
    fn count(&mut self, idx: &[u8]) {
        // Every index is below `slots <= 128`, so `a + slots * b < 2^14` and the mask changes
        // nothing; it only lets the compiler drop the bounds check.
        let s = self.slots as u16;
        let mut pi = [0u16; BLOCK / 2];
        for chunk in idx.chunks(BLOCK) {
            let n = chunk.len() / 2;
            for (o, c) in pi.iter_mut().zip(chunk.chunks_exact(2)) {
                *o = u16::from(c[0]) + u16::from(c[1]) * s;
            }
            let t = &mut *self.pairs;
            for &k in &pi[..n] {
                t[usize::from(k) & (Self::LEN - 1)] += 1;
            }
            if chunk.len() % 2 == 1 {
                self.singles[usize::from(chunk[chunk.len() - 1])] += 1;
            }
        }
    }

    fn drain_into(&mut self, total: &mut [u64]) {
        let s = self.slots;
        for (b, row) in self.pairs[..s * s].chunks_exact_mut(s).enumerate() {
            for (a, c) in row.iter_mut().enumerate() {
                let c = std::mem::take(c);
                total[a] += u64::from(c);
                total[b] += u64::from(c);
            }
        }
        for (acc, c) in total.iter_mut().zip(self.singles.iter_mut()) {
            *acc += u64::from(std::mem::take(c));
        }
    }
}

/// Any number of slots: `u32` indices counted into `L` interleaved sub-histograms
/// (`counts[slot * L + lane]`), so runs of equal slots do not serialise on one counter.
struct Lanes<const L: usize>(Vec<u32>);

impl<const L: usize> Tally for Lanes<L> {
    type Idx = u32;

    #[inline(always)]
    fn idx(bits: u64) -> u32 {
        bits as u32
    }

    #[inline(always)]
    fn slot(i: u32) -> usize {
        i as usize
    }

    #[inline(always)]
    fn count(&mut self, idx: &[u32]) {
        count_lanes::<L>(idx, &mut self.0);
    }

    fn drain_into(&mut self, total: &mut [u64]) {
        for (acc, c) in total.iter_mut().zip(self.0.chunks_exact_mut(L)) {
            for c in c {
                *acc += u64::from(*c);
                *c = 0;
            }
        }
    }
}

/// Counts the slot indices of `idx` into `counts`, `L` interleaved sub-histograms
/// (`counts[slot * L + lane]`).
#[inline(always)]
pub(crate) fn count_lanes<const L: usize>(idx: &[u32], counts: &mut [u32]) {
    let mut it = idx.chunks_exact(L);
    for i in &mut it {
        for l in 0..L {
            counts[i[l] as usize * L + l] += 1;
        }
    }
    for &i in it.remainder() {
        counts[i as usize * L] += 1;
    }
}

/// Counts `data` into `counts`, `n + 2` slots. With `arith`, bin `i` is slot `i + 1`, and slots 0
/// and `n + 1` take the values outside the range and NaN; otherwise bin `i` is slot `i`, slot `n`
/// takes those values and slot `n + 1` stays 0.
#[inline(always)]
fn count_slice<T: Element, G: Guess, C: Tally>(data: &[T], b: &Bins<'_, G>, counts: &mut C) {
    let pairs = b.pairs;
    let n = pairs.len() - 1;
    let (nf, lastf) = (n as f64, (n - 1) as f64);
    let mut idx = [C::Idx::default(); BLOCK];
    if let Some((step, start)) = b.arith {
        // NumPy's guess, its corrections against the computed edges `g * step + start` and
        // `(g + 1) * step + start` (no move up out of the last bin), then the discard slot for
        // values not kept: one loop that vectorises.
        let exact = |piece: &[T], idx: &mut [C::Idx]| {
            for (o, &v) in idx.iter_mut().zip(piece) {
                let x = v.to_f64();
                let keep = (x >= b.keep_lo) & (x <= b.keep_hi);
                let g = b.guess.guess(v, x);
                let g = if g > 0.0 { g } else { 0.0 };
                let g = if g < lastf { g } else { lastf }.floor();
                let down = x < g * step + start;
                let up = (x >= (g + 1.0) * step + start) & (g < lastf);
                let i = if down { g - 1.0 } else { g } + if up { 1.0 } else { 0.0 };
                let i = if i > 0.0 { i } else { 0.0 };
                let i = if keep { i + 1.0 } else { 0.0 };
                *o = C::idx((i + TWO52).to_bits());
            }
        };
        // Pieces take the short path below while few of them need the exact one (data sitting
        // on the edges, such as integers binned at integer edges, soon goes straight to it).
        let (mut fast, mut tried, mut missed) = (b.margin.is_some(), 0u32, 0u32);
        let m = b.margin.unwrap_or(0.0);
        for block in data.chunks(BLOCK) {
            let mut at = 0;
            for piece in prefetch::pieces_to_l2(block) {
                let out = &mut idx[at..at + piece.len()];
                at += piece.len();
                let mut near = 0u32;
                if fast {
                    // The floor of the guess, clamped to `[-1, n]` and shifted to a slot, for
                    // every value whose guess lies more than `m` from an integer (NaN and
                    // infinities fail that test); those within `m` send the piece to the exact
                    // path.
                    for (o, &v) in out.iter_mut().zip(piece) {
                        let x = v.to_f64();
                        let g = b.guess.guess(v, x);
                        let f = g.floor();
                        let d = g - f;
                        near += u32::from(!((d > m) & (d < 1.0 - m)));
                        let i = if f > -1.0 { f } else { -1.0 };
                        let i = if i < nf { i } else { nf };
                        *o = C::idx((i + (1.0 + TWO52)).to_bits());
                    }
                    tried += 1;
                    if near > 0 {
                        missed += 1;
                        fast = tried < 64 || missed * 4 < tried;
                    }
                }
                if !fast || near > 0 {
                    exact(piece, out);
                }
            }
            counts.count(&idx[..block.len()]);
        }
        return;
    }
    for block in data.chunks(BLOCK) {
        let mut at = 0;
        for piece in prefetch::pieces_to_l2(block) {
            let out = &mut idx[at..at + piece.len()];
            at += piece.len();
            // Phase 1: NumPy's guess, clamped to a valid bin, or the discard slot for values
            // NumPy drops (NaN fails both compares). Written with compares and selects (a NaN
            // guess becomes 0), and converted by adding 2^52 to the floor and taking the low
            // bits (exact for integers in `[0, 2^32)`; `n < 2^32`), so the loop vectorises.
            for (o, &v) in out.iter_mut().zip(piece) {
                let x = v.to_f64();
                let keep = (x >= b.keep_lo) & (x <= b.keep_hi);
                let g = b.guess.guess(v, x);
                let g = if g > 0.0 { g } else { 0.0 };
                let g = if g < lastf { g } else { lastf };
                let g = if keep { g } else { nf };
                *o = C::idx((g.floor() + TWO52).to_bits());
            }
            // Phase 2: NumPy's one-step corrections (down if `x < edges[i]`, else up if
            // `x >= edges[i + 1]`; the edges strictly increase, so at most one applies and a
            // kept value never moves below bin 0), written back over the guess.
            for (o, &v) in out.iter_mut().zip(piece) {
                let x = v.to_f64();
                let i = C::slot(*o);
                let [lo, hi] = pairs[i];
                let j = i.saturating_sub(usize::from(x < lo)) + usize::from(x >= hi);
                *o = C::idx(j as u64);
            }
        }
        counts.count(&idx[..block.len()]);
    }
}

#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn count_chunk<T: Element, G: Guess, C: Tally>(data: &[T], b: &Bins<'_, G>, counts: &mut C) {
    count_slice::<T, G, C>(data, b, counts);
}

/// Per-worker counters, reserved in the budget, with the number of elements counted into them
/// since they were last flushed.
struct Scratch<C> {
    counts: C,
    pending: usize,
    _res: Reservation,
}

impl<C> Scratch<C> {
    /// Reserves `bytes`, then makes the counters (so a refused reservation allocates nothing).
    fn new(make: impl FnOnce() -> C, bytes: usize, what: &'static str) -> Result<Scratch<C>> {
        let res = memory::global().reserve(bytes as u64, what)?;
        Ok(Scratch {
            counts: make(),
            pending: 0,
            _res: res,
        })
    }
}

/// Largest number of elements counted into `u32` scratch counters before they are flushed (far
/// fewer in unit tests, so that tests of a few hundred thousand values flush).
#[cfg(not(test))]
const FLUSH_EVERY: usize = u32::MAX as usize;
#[cfg(test)]
const FLUSH_EVERY: usize = 1 << 16;

/// Counts every element of `src` (type `T`) with `bins`; returns `n` counts.
fn count_all<T: Element, G: Guess>(
    src: &dyn ChunkSource,
    bins: &Bins<'_, G>,
    progress: Progress<'_>,
) -> Result<Vec<u64>> {
    let slots = bins.pairs.len() + 1; // n bins + two discard slots (see `count_slice`)
    if slots <= PairTable::SLOTS {
        count_with::<T, G, _>(
            src,
            bins,
            slots,
            progress,
            || PairTable::new(slots),
            PairTable::BYTES,
        )
    } else if slots <= ByteTables::SLOTS {
        count_with::<T, G, _>(src, bins, slots, progress, ByteTables::new, 8 << 10)
    } else if slots * 4 * 4 <= 256 << 10 {
        let len = slots * 4;
        count_with::<T, G, _>(
            src,
            bins,
            slots,
            progress,
            || Lanes::<4>(vec![0; len]),
            len * 4,
        )
    } else {
        let len = slots;
        count_with::<T, G, _>(
            src,
            bins,
            slots,
            progress,
            || Lanes::<1>(vec![0; len]),
            len * 4,
        )
    }
}

/// [`count_all`] with the counters `make` returns (`bytes` each).
fn count_with<T: Element, G: Guess, C: Tally>(
    src: &dyn ChunkSource,
    bins: &Bins<'_, G>,
    slots: usize,
    progress: Progress<'_>,
    make: impl Fn() -> C + Sync,
    bytes: usize,
) -> Result<Vec<u64>> {
    let _total_res = memory::global().reserve(slots as u64 * 8, "histogram counts")?;
    let total = Mutex::new(vec![0u64; slots]);
    let flush = |s: &mut Scratch<C>| {
        let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
        s.counts.drain_into(&mut t);
        s.pending = 0;
    };
    fold_chunks(
        src,
        progress,
        || Scratch::new(&make, bytes, "histogram scratch"),
        |s, c| {
            for piece in c.as_slice::<T>().chunks(FLUSH_EVERY / 2) {
                if s.pending + piece.len() > FLUSH_EVERY {
                    flush(s);
                }
                count_chunk::<T, G, C>(piece, bins, &mut s.counts);
                s.pending += piece.len();
            }
            Ok(())
        },
        |mut s| {
            flush(&mut s);
            Ok(())
        },
    )?;
    let mut t = total.into_inner().unwrap_or_else(|e| e.into_inner());
    let first = usize::from(bins.arith.is_some());
    Ok(t.drain(first..first + slots - 2).collect())
}

/// NumPy's check that the edges are strictly increasing.
fn check_edges(edges: &[f64], bins: usize) -> Result<()> {
    if edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::Invalid(format!(
            "too many histogram bins for the data range: cannot create {bins} finite-sized bins \
             between {} and {}",
            py_float(edges[0]),
            py_float(edges[bins])
        )));
    }
    Ok(())
}

/// `np.histogram(a.ravel(), bins=bins, range=range)`: see the module docs for the exact
/// semantics. With `range == None` a first pass finds the data's minimum and maximum (an error if
/// they are not finite, as in NumPy); `lo == hi` widens to `(lo - 0.5, hi + 0.5)`; an empty array
/// uses `(0, 1)`. `progress` is told the bytes processed by each pass (twice the array's size with
/// an autodetected range).
pub fn histogram(
    src: &dyn ChunkSource,
    bins: usize,
    range: Option<(f64, f64)>,
    progress: Progress<'_>,
) -> Result<Histogram> {
    if bins < 1 {
        return Err(Error::Invalid(format!(
            "histogram bins must be a positive integer, not {bins}"
        )));
    }
    if let Some((lo, hi)) = range {
        check_range(lo, hi)?;
    }
    let dtype = src.info().dtype;
    crate::with_dtype!(dtype, T => histogram_typed::<T>(src, bins, range, None, progress))
}

/// [`histogram`] with the range autodetected from `stats`, a statistics pass already made over
/// `src` (with [`Need::extremes`](crate::reduce::Need)), instead of a first pass of its own: one
/// pass over the data instead of two, and the same counts and edges (NaN in the data is the same
/// error). One difference: where the data's maximum is a zero and both `0.0` and `-0.0` occur,
/// the two passes may pick different zeros, so the last edge may differ in sign (NumPy's own
/// choice between them is unspecified). A batch script's `histogram(a)` takes the pass a
/// `min(a)`, `max(a)`, `argmin(a)` or `argmax(a)` before it made.
///
/// # Errors
/// As [`histogram`]; also when `stats` lacks the extremes or is of another dtype or shape than
/// `src` (it must be `src`'s).
pub fn histogram_with_stats(
    src: &dyn ChunkSource,
    bins: usize,
    stats: &Stats,
    progress: Progress<'_>,
) -> Result<Histogram> {
    if bins < 1 {
        return Err(Error::Invalid(format!(
            "histogram bins must be a positive integer, not {bins}"
        )));
    }
    let info = src.info();
    if !stats.need.extremes
        || stats.dtype != info.dtype
        || stats.shape != info.shape
        || stats.count + stats.nan_count != info.numel()
    {
        return Err(Error::Invalid(format!(
            "{}: the statistics given for the histogram's range are not this array's \
             ({} {} with{} extremes, not {} {})",
            info.name,
            stats.dtype,
            shape_str(&stats.shape),
            if stats.need.extremes { "" } else { "out" },
            info.dtype,
            shape_str(&info.shape)
        )));
    }
    let dtype = info.dtype;
    crate::with_dtype!(dtype, T => {
        let e = Extremes::<T> {
            min: stats.min.map(scalar_as::<T>),
            max: stats.max.map(scalar_as::<T>),
            nan: stats.nan_count > 0,
        };
        histogram_typed::<T>(src, bins, None, Some(e), progress)
    })
}

/// A statistics pass's exact value as the element type it was read from.
fn scalar_as<T: Element>(s: Scalar) -> T {
    match s {
        Scalar::Bool(b) => T::from_index(u64::from(b)),
        // Two's complement: `i as u64` then `as` the integer type gives back every i64 and u64.
        Scalar::Int(i) => T::from_index(i as u64),
        Scalar::F32(x) => T::from_f64(f64::from(x)),
        Scalar::F64(x) => T::from_f64(x),
    }
}

fn histogram_typed<T: Num>(
    src: &dyn ChunkSource,
    n: usize,
    range: Option<(f64, f64)>,
    known: Option<Extremes<T>>,
    progress: Progress<'_>,
) -> Result<Histogram> {
    // The data's extremes for an autodetected range: given, or found in a first pass.
    let extremes = || match known {
        Some(e) => Ok(e),
        None => extremes::<T>(src, progress),
    };
    let nf = n as f64;
    // An empty array without a range uses (0, 1), like an explicit range.
    let range = match range {
        None if src.info().numel() == 0 => Some((0.0, 1.0)),
        r => r,
    };
    let widen = |lo: f64, hi: f64| {
        if lo == hi {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        }
    };
    match (T::DTYPE, range) {
        (DType::F32, Some((lo, hi))) => {
            // Edges in float64, then cast to the float32 bin type; the data minus the range's
            // start in float32, divided by the float64 width.
            let (lo, hi) = widen(lo, hi);
            let edges: Vec<f64> = linspace_f64(lo, hi, n + 1)
                .into_iter()
                .map(|e| f64::from(e as f32))
                .collect();
            let guess = GuessF32Diff {
                first: lo as f32,
                denom: hi - lo,
                n: nf,
            };
            let (klo, khi) = (f64::from(lo as f32), f64::from(hi as f32));
            run::<T, _>(src, guess, edges, klo, khi, DType::F32, progress)
        }
        (DType::F32, None) => {
            let e = extremes()?;
            let (lo, hi) = finite_extremes(&src.info().name, &e)?;
            // Range and edges in float32 arithmetic (np.float32 scalars throughout).
            let (lo, hi) = (lo as f32, hi as f32);
            let (lo, hi) = if lo == hi {
                (lo - 0.5, hi + 0.5)
            } else {
                (lo, hi)
            };
            let edges: Vec<f64> = linspace_f32(lo, hi, n + 1)
                .into_iter()
                .map(f64::from)
                .collect();
            let guess = GuessF32 {
                first: lo,
                denom: hi - lo,
                n: n as f32,
            };
            run::<T, _>(
                src,
                guess,
                edges,
                f64::from(lo),
                f64::from(hi),
                DType::F32,
                progress,
            )
        }
        (_, Some((lo, hi))) => {
            let (lo, hi) = widen(lo, hi);
            let guess = GuessF64 {
                first: lo,
                denom: hi - lo,
                n: nf,
            };
            let edges = linspace_f64(lo, hi, n + 1);
            run::<T, _>(src, guess, edges, lo, hi, DType::F64, progress)
        }
        (DType::F64, None) => {
            let e = extremes()?;
            let (lo, hi) = widen_pair(finite_extremes(&src.info().name, &e)?);
            let guess = GuessF64 {
                first: lo,
                denom: hi - lo,
                n: nf,
            };
            let edges = linspace_f64(lo, hi, n + 1);
            run::<T, _>(src, guess, edges, lo, hi, DType::F64, progress)
        }
        (_, None) => {
            // Integers: the range is the integer minimum and maximum; the width is their exact
            // difference (NumPy's unsigned subtract), as f64.
            let e = extremes()?;
            let (Some(mn), Some(mx)) = (e.min, e.max) else {
                unreachable!("a non-empty integer array has extremes")
            };
            let (lo, hi, denom) = if mn.exact() == mx.exact() {
                let (lo, hi) = (mn.to_f64() - 0.5, mx.to_f64() + 0.5);
                (lo, hi, hi - lo)
            } else {
                (mn.to_f64(), mx.to_f64(), (mx.exact() - mn.exact()) as f64)
            };
            let guess = GuessF64 {
                first: lo,
                denom,
                n: nf,
            };
            let edges = linspace_f64(lo, hi, n + 1);
            let inf = f64::INFINITY;
            run::<T, _>(src, guess, edges, -inf, inf, DType::F64, progress)
        }
    }
}

fn widen_pair((lo, hi): (f64, f64)) -> (f64, f64) {
    if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// The data's minimum and maximum as `f64`, or NumPy's error when they are not finite.
fn finite_extremes<T: Num>(name: &str, e: &Extremes<T>) -> Result<(f64, f64)> {
    match (e.min, e.max) {
        (Some(lo), Some(hi)) if !e.nan && lo.to_f64().is_finite() && hi.to_f64().is_finite() => {
            Ok((lo.to_f64(), hi.to_f64()))
        }
        (Some(lo), Some(hi)) if !e.nan => Err(autodetect_error(name, lo.to_f64(), hi.to_f64())),
        _ => Err(autodetect_error(name, f64::NAN, f64::NAN)),
    }
}

fn run<T: Num, G: Guess>(
    src: &dyn ChunkSource,
    guess: G,
    edges: Vec<f64>,
    keep_lo: f64,
    keep_hi: f64,
    edges_dtype: DType,
    progress: Progress<'_>,
) -> Result<Histogram> {
    let n = edges.len() - 1;
    check_edges(&edges, n)?;
    if n >= u32::MAX as usize {
        return Err(Error::Invalid(format!(
            "histogram: {n} bins are too many (at most {} are supported)",
            u32::MAX - 1
        )));
    }
    let _pairs_res = memory::global().reserve((n as u64 + 1) * 16, "histogram edges")?;
    let mut pairs: Vec<[f64; 2]> = edges.windows(2).map(|w| [w[0], w[1]]).collect();
    pairs[n - 1][1] = f64::NAN;
    pairs.push([f64::NAN; 2]);
    let step = (edges[n] - edges[0]) / n as f64;
    let start = edges[0];
    let exact = edges[..n]
        .iter()
        .enumerate()
        .all(|(i, &e)| e == i as f64 * step + start);
    let counts = if exact && G::F64 && scaled_is_exact(start, edges[n], step, n) {
        let bins = Bins {
            guess: GuessScaled {
                first: start,
                scale: n as f64 / (edges[n] - start),
            },
            pairs: &pairs,
            arith: Some((step, start)),
            keep_lo,
            keep_hi,
            margin: margin(start, edges[n], step, n),
        };
        count_all::<T, GuessScaled>(src, &bins, progress)?
    } else {
        let bins = Bins {
            guess,
            pairs: &pairs,
            arith: exact.then_some((step, start)),
            keep_lo,
            keep_hi,
            margin: None,
        };
        count_all::<T, G>(src, &bins, progress)?
    };
    Ok(Histogram {
        counts,
        edges,
        edges_dtype,
    })
}

/// One axis of a 2-D histogram.
struct Axis {
    edges: Vec<f64>,
    /// `bins / (last - first)`, for the first guess.
    scale: f64,
}

impl Axis {
    fn new(edges: Vec<f64>) -> Axis {
        let n = edges.len() - 1;
        let scale = n as f64 / (edges[n] - edges[0]);
        Axis { edges, scale }
    }

    /// The bin of `v` as NumPy's `histogramdd` finds it: `searchsorted(edges, v, 'right') - 1`,
    /// values equal to the last edge in the last bin, anything else outside the edges (and NaN)
    /// `None`. Found from an arithmetic guess corrected by walking (exact for any sorted edges,
    /// repeated ones included).
    #[inline(always)]
    fn locate(&self, v: f64) -> Option<usize> {
        let e = &self.edges;
        let n = e.len() - 1;
        if !(v >= e[0] && v <= e[n]) {
            return None;
        }
        // c = number of edges <= v, in 1 ..= n + 1.
        let g = (v - e[0]) * self.scale;
        let mut c = if g.is_finite() {
            (g as usize).saturating_add(1).min(n + 1)
        } else {
            1
        };
        while c > 1 && e[c - 1] > v {
            c -= 1;
        }
        while c <= n && e[c] <= v {
            c += 1;
        }
        if v == e[n] {
            c -= 1;
        }
        Some(c - 1)
    }
}

/// True when NumPy's common dtype of `x` and `y` (`np.result_type`) is `float32`.
fn common_is_f32(a: DType, b: DType) -> bool {
    let small = |d: DType| {
        matches!(
            d,
            DType::Bool | DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::F32
        )
    };
    small(a) && small(b) && (a == DType::F32 || b == DType::F32)
}

/// Edges of one axis of `np.histogramdd`: `np.linspace(smin, smax, n + 1)` from the explicit
/// range (in `f64`) or from the data (in `f32` when the common dtype is `float32`).
fn axis_edges(
    src: &dyn ChunkSource,
    n: usize,
    range: Option<(f64, f64)>,
    f32_common: bool,
    progress: Progress<'_>,
) -> Result<Vec<f64>> {
    let range = match range {
        None if src.info().numel() == 0 => Some((0.0, 1.0)),
        r => r,
    };
    if let Some(r) = range {
        let (lo, hi) = widen_pair(r);
        return Ok(linspace_f64(lo, hi, n + 1));
    }
    let name = &src.info().name;
    let (lo, hi) = crate::with_dtype!(src.info().dtype, T => {
        let e = extremes::<T>(src, progress)?;
        finite_extremes(name, &e)?
    });
    Ok(if f32_common {
        let (lo, hi) = (lo as f32, hi as f32);
        let (lo, hi) = if lo == hi {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        linspace_f32(lo, hi, n + 1)
            .into_iter()
            .map(f64::from)
            .collect()
    } else {
        let (lo, hi) = widen_pair((lo, hi));
        linspace_f64(lo, hi, n + 1)
    })
}

/// Converts `src` (elements of `dtype`) to `f64` into `out` (same length).
fn to_f64_into(dtype: DType, src: &[u8], out: &mut [f64]) {
    crate::with_dtype!(dtype, T => {
        let s: &[T] = bytemuck::cast_slice(src);
        for (o, &v) in out.iter_mut().zip(s) {
            *o = v.to_f64();
        }
    })
}

/// Elements converted to `f64` at a time by [`histogram2d`] (two 8 KiB stack blocks).
const BLOCK2D: usize = 1024;

/// `np.histogram2d(x.ravel(), y.ravel(), bins=bins, range=range)`: see the module docs. `x` and
/// `y` must have the same shape (any dtypes; values are compared as NumPy compares them). With
/// `range == None` a first pass over each input finds its extremes (an error if they are not
/// finite). Reads `x` chunk by chunk and the matching region of `y`.
pub fn histogram2d(
    x: &dyn ChunkSource,
    y: &dyn ChunkSource,
    bins: (usize, usize),
    range: Option<((f64, f64), (f64, f64))>,
    progress: Progress<'_>,
) -> Result<Histogram2d> {
    let (xi, yi) = (x.info(), y.info());
    if xi.shape != yi.shape {
        return Err(Error::Invalid(format!(
            "histogram2d: x ({}) has shape {} but y ({}) has shape {}; they must match",
            xi.name,
            shape_str(&xi.shape),
            yi.name,
            shape_str(&yi.shape)
        )));
    }
    for (axis, b) in [bins.0, bins.1].into_iter().enumerate() {
        if b < 1 {
            return Err(Error::Invalid(format!(
                "histogram2d: bins[{axis}] must be a positive integer, not {b}"
            )));
        }
    }
    if let Some((rx, ry)) = range {
        check_range(rx.0, rx.1)?;
        check_range(ry.0, ry.1)?;
    }
    let f32_common = common_is_f32(xi.dtype, yi.dtype);
    let ax = Axis::new(axis_edges(
        x,
        bins.0,
        range.map(|r| r.0),
        f32_common,
        progress,
    )?);
    let ay = Axis::new(axis_edges(
        y,
        bins.1,
        range.map(|r| r.1),
        f32_common,
        progress,
    )?);
    let (nx, ny) = bins;
    let cells = nx.checked_mul(ny).ok_or_else(|| {
        Error::Invalid(format!(
            "histogram2d: {nx} x {ny} bins do not fit in memory"
        ))
    })?;
    let total = Mutex::new(vec![0u64; cells]);
    let _total_res = memory::global().reserve(cells as u64 * 8, "histogram counts")?;
    let (dx, dy) = (xi.dtype, yi.dtype);
    for_each_chunk(
        x,
        progress,
        || Scratch::new(|| vec![0u32; cells], cells * 4, "histogram scratch"),
        |s, c| {
            let yb = y.read_region(&c.region)?;
            let (xs, ys) = (c.data.bytes(), yb.bytes());
            let (ex, ey) = (dx.size(), dy.size());
            let n = xs.len() / ex;
            let (mut bx, mut by) = ([0f64; BLOCK2D], [0f64; BLOCK2D]);
            let mut done = 0;
            let mut since_flush = 0usize;
            while done < n {
                let k = (n - done).min(BLOCK2D);
                to_f64_into(dx, &xs[done * ex..(done + k) * ex], &mut bx[..k]);
                to_f64_into(dy, &ys[done * ey..(done + k) * ey], &mut by[..k]);
                for (&vx, &vy) in bx[..k].iter().zip(&by[..k]) {
                    if let (Some(i), Some(j)) = (ax.locate(vx), ay.locate(vy)) {
                        s.counts[i * ny + j] += 1;
                    }
                }
                done += k;
                since_flush += k;
                if since_flush >= FLUSH_EVERY / 2 || done == n {
                    since_flush = 0;
                    let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
                    for (acc, c) in t.iter_mut().zip(s.counts.iter_mut()) {
                        *acc += u64::from(*c);
                        *c = 0;
                    }
                }
            }
            progress(yb.len() as u64);
            Ok(())
        },
    )?;
    Ok(Histogram2d {
        counts: total.into_inner().unwrap_or_else(|e| e.into_inner()),
        nx,
        ny,
        x_edges: ax.edges,
        y_edges: ay.edges,
        edges_dtype: if f32_common && range.is_none() && xi.numel() > 0 {
            DType::F32
        } else {
            DType::F64
        },
    })
}

/// An in-memory [`ChunkSource`] for the kernels' unit tests.
#[cfg(test)]
pub(crate) mod test_source {
    use crate::dtype::{ByteOrder, DType, Element};
    use crate::error::Result;
    use crate::shape::{ChunkLayout, Region, copy_box};
    use crate::storage::{Buffer, Chunk, ChunkSource, Format, SourceInfo};

    /// A dense C-order array held in memory, cut into a regular chunk grid.
    pub(crate) struct MemSource {
        info: SourceInfo,
        bytes: Vec<u8>,
    }

    impl MemSource {
        /// `values` of shape `shape`, chunked by `chunks`.
        pub(crate) fn new<T: Element>(values: &[T], shape: &[u64], chunks: &[u64]) -> MemSource {
            assert_eq!(crate::shape::numel(shape), values.len() as u64);
            MemSource {
                info: SourceInfo {
                    name: "mem".into(),
                    path: "mem".into(),
                    format: Format::Npy,
                    dtype: T::DTYPE,
                    shape: shape.to_vec(),
                    layout: ChunkLayout::regular(shape, chunks).unwrap(),
                    byte_order: ByteOrder::NATIVE,
                    stored_bytes: 0,
                    details: Vec::new(),
                },
                bytes: bytemuck::cast_slice(values).to_vec(),
            }
        }

        /// A 1-D array of `values` in chunks of `chunk` elements.
        pub(crate) fn vec<T: Element>(values: &[T], chunk: u64) -> MemSource {
            MemSource::new(values, &[values.len() as u64], &[chunk.max(1)])
        }

        /// The dtype.
        pub(crate) fn dtype(&self) -> DType {
            self.info.dtype
        }
    }

    impl ChunkSource for MemSource {
        fn info(&self) -> &SourceInfo {
            &self.info
        }

        fn read_chunk(&self, index: usize) -> Result<Chunk> {
            let region = self.info.layout.chunk_region(index);
            let elem = self.info.dtype.size();
            let mut data = Buffer::zeroed(region.numel() as usize * elem)?;
            copy_box(
                &self.bytes,
                &Region::full(&self.info.shape),
                data.bytes_mut(),
                &region,
                &region,
                elem,
            );
            Ok(Chunk {
                region,
                dtype: self.info.dtype,
                data,
            })
        }
    }

    /// A [`MemSource`] counting the chunks read through it (field 1), for tests that check
    /// how many passes a computation takes.
    pub(crate) struct Counting(pub MemSource, pub std::sync::atomic::AtomicUsize);

    impl Counting {
        /// `src`, no chunk read yet.
        pub(crate) fn new(src: MemSource) -> Counting {
            Counting(src, std::sync::atomic::AtomicUsize::new(0))
        }

        /// Chunks read so far.
        pub(crate) fn reads(&self) -> usize {
            self.1.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    impl ChunkSource for Counting {
        fn info(&self) -> &SourceInfo {
            self.0.info()
        }
        fn read_chunk(&self, index: usize) -> Result<Chunk> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.read_chunk(index)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_source::MemSource;
    use super::*;
    use crate::pipeline::no_progress;
    use proptest::prelude::*;

    fn hex(edges: &[f64]) -> Vec<String> {
        edges.iter().map(|e| format!("{:?}", e.to_bits())).collect()
    }

    /// Edges given as C99 hex floats (as printed by Python's `float.hex`).
    fn from_hex(s: &[&str]) -> Vec<f64> {
        s.iter()
            .map(|t| {
                let (neg, t) = t.strip_prefix('-').map_or((false, *t), |r| (true, r));
                let t = t.strip_prefix("0x").unwrap();
                let (mant, exp) = t.split_once('p').unwrap();
                let (int, frac) = mant.split_once('.').unwrap();
                let mut v = u64::from_str_radix(int, 16).unwrap() as f64;
                let mut scale = 1.0 / 16.0;
                for c in frac.chars() {
                    v += c.to_digit(16).unwrap() as f64 * scale;
                    scale /= 16.0;
                }
                let v = v * 2f64.powi(exp.parse::<i32>().unwrap());
                if neg { -v } else { v }
            })
            .collect()
    }

    #[track_caller]
    fn check(h: &Histogram, counts: &[u64], edges: &[&str], dtype: DType) {
        assert_eq!(h.counts, counts);
        assert_eq!(hex(&h.edges), hex(&from_hex(edges)));
        assert_eq!(h.edges_dtype, dtype);
    }

    // Expected values below were obtained by running NumPy 2.4.6 by hand
    // (`np.histogram(...)`, edges printed with `float.hex`).
    #[test]
    fn numpy_fixtures_1d() {
        let a = [0., 0.1, 0.2, 0.3, 0.7, 1.0];
        let h = histogram(&MemSource::vec(&a, 4), 10, None, &no_progress).unwrap();
        check(
            &h,
            &[1, 1, 2, 0, 0, 0, 1, 0, 0, 1],
            &[
                "0x0.0p+0",
                "0x1.999999999999ap-4",
                "0x1.999999999999ap-3",
                "0x1.3333333333334p-2",
                "0x1.999999999999ap-2",
                "0x1.0000000000000p-1",
                "0x1.3333333333334p-1",
                "0x1.6666666666667p-1",
                "0x1.999999999999ap-1",
                "0x1.ccccccccccccdp-1",
                "0x1.0000000000000p+0",
            ],
            DType::F64,
        );
        // float32: autodetected range in float32 arithmetic, explicit range via float64.
        let f: Vec<f32> = (0..10).map(|i| i as f32 * 0.1f32).collect();
        let h = histogram(&MemSource::vec(&f, 3), 7, None, &no_progress).unwrap();
        check(
            &h,
            &[2, 1, 1, 2, 1, 1, 2],
            &[
                "0x0.0p+0",
                "0x1.0750760000000p-3",
                "0x1.0750760000000p-2",
                "0x1.8af8b00000000p-2",
                "0x1.0750760000000p-1",
                "0x1.4924940000000p-1",
                "0x1.8af8b00000000p-1",
                "0x1.ccccce0000000p-1",
            ],
            DType::F32,
        );
        let h = histogram(&MemSource::vec(&f, 3), 7, Some((0.1, 0.8)), &no_progress).unwrap();
        check(
            &h,
            &[1, 1, 1, 1, 1, 1, 2],
            &[
                "0x1.99999a0000000p-4",
                "0x1.99999a0000000p-3",
                "0x1.3333340000000p-2",
                "0x1.99999a0000000p-2",
                "0x1.0000000000000p-1",
                "0x1.3333340000000p-1",
                "0x1.6666660000000p-1",
                "0x1.99999a0000000p-1",
            ],
            DType::F32,
        );
        let i: [i8; 7] = [1, 2, 2, 3, 3, 3, 10];
        let h = histogram(&MemSource::vec(&i, 2), 4, None, &no_progress).unwrap();
        check(
            &h,
            &[6, 0, 0, 1],
            &[
                "0x1.0000000000000p+0",
                "0x1.a000000000000p+1",
                "0x1.6000000000000p+2",
                "0x1.f000000000000p+2",
                "0x1.4000000000000p+3",
            ],
            DType::F64,
        );
        let h = histogram(&MemSource::vec(&i, 2), 4, Some((2.0, 3.0)), &no_progress).unwrap();
        assert_eq!(h.counts, [2, 0, 0, 3]);
        let h = histogram(&MemSource::vec(&[5i64, 5, 5], 2), 3, None, &no_progress).unwrap();
        check(
            &h,
            &[0, 3, 0],
            &[
                "0x1.2000000000000p+2",
                "0x1.3555555555555p+2",
                "0x1.4aaaaaaaaaaabp+2",
                "0x1.6000000000000p+2",
            ],
            DType::F64,
        );
        let nan = [f64::NAN, 0.5, 1.0, -1.0, 2.0];
        let h = histogram(&MemSource::vec(&nan, 2), 2, Some((0.0, 1.0)), &no_progress).unwrap();
        assert_eq!(h.counts, [0, 2]);
        let big: [i64; 3] = [1 << 62, -(1 << 62), 7];
        let h = histogram(&MemSource::vec(&big, 2), 5, None, &no_progress).unwrap();
        check(
            &h,
            &[1, 0, 1, 0, 1],
            &[
                "-0x1.0000000000000p+62",
                "-0x1.3333333333333p+61",
                "-0x1.9999999999998p+59",
                "0x1.99999999999a0p+59",
                "0x1.3333333333334p+61",
                "0x1.0000000000000p+62",
            ],
            DType::F64,
        );
        // NumPy converts bools to uint8.
        let b = [Bool(1), Bool(0), Bool(1)];
        let h = histogram(&MemSource::vec(&b, 2), 3, None, &no_progress).unwrap();
        assert_eq!(h.counts, [1, 0, 2]);
        // Empty: range (0, 1).
        let h = histogram(&MemSource::vec::<f64>(&[], 2), 2, None, &no_progress).unwrap();
        assert_eq!((h.counts, h.edges), (vec![0, 0], vec![0.0, 0.5, 1.0]));
    }

    #[test]
    fn errors_name_the_problem() {
        let s = MemSource::vec(&[1.0, f64::NAN], 1);
        let e = histogram(&s, 3, None, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[nan, nan] is not finite"), "{e}");
        let s = MemSource::vec(&[1.0, f64::INFINITY], 1);
        let e = histogram(&s, 3, None, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[1.0, inf] is not finite"), "{e}");
        let e = histogram(&s, 0, None, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not 0"), "{e}");
        let e = histogram(&s, 3, Some((2.0, 1.0)), &no_progress)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[2.0, 1.0]") && e.contains("max must be larger"),
            "{e}"
        );
        let e = histogram(&s, 3, Some((0.0, f64::NAN)), &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[0.0, nan]"), "{e}");
        let e = histogram(&s, 1000, Some((1.0, 1.0 + 1e-14)), &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot create 1000 finite-sized bins"), "{e}");
        // Distinct integers with equal float64 values: NumPy raises the same error.
        let s2 = MemSource::vec(&[i64::MAX, i64::MAX - 1], 1);
        let e = histogram(&s2, 8, None, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot create 8 finite-sized bins"), "{e}");
        let y = MemSource::vec(&[1.0, 2.0, 3.0], 1);
        let e = histogram2d(&s, &y, (2, 2), None, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(2,)") && e.contains("(3,)"), "{e}");
    }

    // Expected values obtained by running NumPy 2.4.6 by hand (`np.histogram2d`).
    #[test]
    fn numpy_fixtures_2d() {
        let x = [0., 0.5, 1., 1., 0.25, f64::NAN];
        let y = [1., 2., 3., 3., 2.5, 1.];
        let (sx, sy) = (MemSource::vec(&x, 4), MemSource::vec(&y, 5));
        let r = Some(((0.0, 1.0), (1.0, 3.0)));
        let h = histogram2d(&sx, &sy, (3, 2), r, &no_progress).unwrap();
        assert_eq!(h.counts, [1, 1, 0, 1, 0, 2]);
        assert_eq!(h.y_edges, [1.0, 2.0, 3.0]);
        let (sx, sy) = (MemSource::vec(&x[..5], 2), MemSource::vec(&y[..5], 3));
        let h = histogram2d(&sx, &sy, (3, 2), None, &no_progress).unwrap();
        assert_eq!(h.counts, [1, 1, 0, 1, 0, 2]);
        assert_eq!(
            hex(&h.x_edges),
            hex(&from_hex(&[
                "0x0.0p+0",
                "0x1.5555555555555p-2",
                "0x1.5555555555555p-1",
                "0x1.0p+0"
            ]))
        );
        let sx = MemSource::vec(&[0.1f32, 0.2, 0.7], 2);
        let sy = MemSource::vec(&[1i16, 2, 3], 1);
        let h = histogram2d(&sx, &sy, (3, 2), None, &no_progress).unwrap();
        assert_eq!(h.counts, [1, 1, 0, 0, 0, 1]);
        assert_eq!(h.edges_dtype, DType::F32);
        assert_eq!(
            hex(&h.x_edges),
            hex(&from_hex(&[
                "0x1.99999a0000000p-4",
                "0x1.3333320000000p-2",
                "0x1.fffffe0000000p-2",
                "0x1.6666660000000p-1"
            ]))
        );
        let sx = MemSource::vec(&x, 3);
        let sy = MemSource::vec(&y, 3);
        let e = histogram2d(&sx, &sy, (3, 2), None, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[nan, nan]"), "{e}");
    }

    /// Reference: bins by `searchsorted` on the (NumPy-checked) edges, no index arithmetic.
    fn naive(values: &[f64], edges: &[f64]) -> Vec<u64> {
        let n = edges.len() - 1;
        let mut c = vec![0u64; n];
        for &v in values {
            if !(v >= edges[0] && v <= edges[n]) {
                continue;
            }
            let r = edges.partition_point(|&e| e <= v);
            c[if v == edges[n] { n - 1 } else { r - 1 }] += 1;
        }
        c
    }

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    /// Values with ties, edges hit exactly, NaN and infinities.
    fn values() -> impl Strategy<Value = Vec<f64>> {
        let v = prop_oneof![
            4 => -1000.0..1000.0f64,
            2 => (-8i32..8).prop_map(|i| i as f64 * 0.125),
            1 => Just(0.1),
            1 => Just(0.3),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
        ];
        // Long enough for chunks that span several blocks of the binning loop.
        prop::collection::vec(v, 0..1200)
    }

    fn cast<T: Element>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::from_f64(x)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn matches_naive(vals in values(), chunk in prop_oneof![1u64..70, 400u64..1300],
                         bins in prop_oneof![1usize..40, 120usize..135, 250usize..260, 1000usize..1100],
                         dt in 0usize..5, explicit in any::<bool>(),
                         lo in -3.0..1.0f64, w in 0.0..4.0f64) {
            let range = explicit.then_some((lo, lo + w));
            let (src, conv): (MemSource, Vec<f64>) = match dt {
                0 => (MemSource::vec(&vals, chunk), vals.clone()),
                1 => { let v = cast::<f32>(&vals); (MemSource::vec(&v, chunk), v.iter().map(|&x| x as f64).collect()) }
                2 => { let v = cast::<i16>(&vals); (MemSource::vec(&v, chunk), v.iter().map(|&x| x as f64).collect()) }
                3 => { let v = cast::<u8>(&vals); (MemSource::vec(&v, chunk), v.iter().map(|&x| x as f64).collect()) }
                _ => { let v: Vec<i64> = vals.iter().map(|&x| x.clamp(-1e15, 1e15) as i64).collect(); (MemSource::vec(&v, chunk), v.iter().map(|&x| x as f64).collect()) }
            };
            let results: Vec<_> = [1, 2, 7].iter().map(|&t| pool(t).install(|| histogram(&src, bins, range, &no_progress))).collect();
            let finite = conv.iter().all(|v| v.is_finite());
            if range.is_none() && !finite && !conv.is_empty() {
                for r in &results { prop_assert!(r.is_err()); }
                return Ok(());
            }
            let h = results[0].as_ref().unwrap();
            for r in &results[1..] { prop_assert_eq!(r.as_ref().unwrap(), h); }
            prop_assert_eq!(h.edges.len(), bins + 1);
            prop_assert_eq!(&h.counts, &naive(&conv, &h.edges));
            if range.is_none() {
                prop_assert_eq!(h.counts.iter().sum::<u64>(), conv.len() as u64);
            }
            // 2-D against the same reference on each axis, y a shuffled copy of x.
            let mut ys = conv.clone();
            ys.reverse();
            let sy = MemSource::vec(&ys, chunk + 1);
            let sx = MemSource::vec(&conv, chunk);
            let r2 = range.map(|r| (r, r));
            let h2: Vec<_> = [1, 7].iter().map(|&t| pool(t).install(|| histogram2d(&sx, &sy, (bins, 3), r2, &no_progress))).collect();
            if range.is_none() && !finite && !conv.is_empty() {
                prop_assert!(h2[0].is_err());
                return Ok(());
            }
            let g = h2[0].as_ref().unwrap();
            prop_assert_eq!(h2[1].as_ref().unwrap(), g);
            let mut want = vec![0u64; bins * 3];
            for (&a, &b) in conv.iter().zip(&ys) {
                let ca = naive(&[a], &g.x_edges);
                let cb = naive(&[b], &g.y_edges);
                if let (Some(i), Some(j)) = (ca.iter().position(|&c| c == 1), cb.iter().position(|&c| c == 1)) {
                    want[i * 3 + j] += 1;
                }
            }
            prop_assert_eq!(&g.counts, &want);
        }
    }

    /// Counters flushed many times per worker (`FLUSH_EVERY` is 64 Ki values in tests), and
    /// every kind of counter: byte tables (up to 254 bins), 4 lanes, and 1 lane past 16 Ki bins.
    #[test]
    fn flushes_and_every_counter_kind_match_naive() {
        let mut state = 11u64;
        let vals: Vec<f64> = (0..300_000)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                // Ties on a coarse grid for every fourth value, spread values otherwise.
                if i % 4 == 0 {
                    ((state >> 40) % 64) as f64 * 0.125 - 4.0
                } else {
                    (state >> 11) as f64 / (1u64 << 53) as f64 * 9.0 - 4.5
                }
            })
            .collect();
        let src = MemSource::vec(&vals, 150_000);
        for bins in [100, 254, 300, 16_383, 16_384, 20_000, 70_000] {
            for range in [None, Some((-3.0, 3.5))] {
                for t in [1, 3] {
                    let h = pool(t)
                        .install(|| histogram(&src, bins, range, &no_progress))
                        .unwrap();
                    assert_eq!(h.counts, naive(&vals, &h.edges), "{bins} bins, {range:?}");
                }
            }
        }
    }

    /// The counts of bins `0..n` and of values outside, with every edge `i * step + start`.
    fn arith_counts<G: Guess>(data: &[f64], guess: G, edges: &[f64], short: bool) -> Vec<u32> {
        let n = edges.len() - 1;
        let mut pairs: Vec<[f64; 2]> = edges.windows(2).map(|w| [w[0], w[1]]).collect();
        pairs[n - 1][1] = f64::NAN;
        pairs.push([f64::NAN; 2]);
        let step = (edges[n] - edges[0]) / n as f64;
        let b = Bins {
            guess,
            pairs: &pairs,
            arith: Some((step, edges[0])),
            keep_lo: edges[0],
            keep_hi: edges[n],
            margin: if short {
                Some(margin(edges[0], edges[n], step, n).unwrap())
            } else {
                None
            },
        };
        let mut lanes = Lanes::<4>(vec![0u32; (n + 2) * 4]);
        count_slice::<f64, G, _>(data, &b, &mut lanes);
        let mut c = vec![0u64; n + 2];
        lanes.drain_into(&mut c);
        if n + 2 <= ByteTables::SLOTS {
            // The byte tables count the same.
            let mut t = ByteTables::new();
            count_slice::<f64, G, _>(data, &b, &mut t);
            let mut d = vec![0u64; n + 2];
            t.drain_into(&mut d);
            assert_eq!(c, d);
        }
        if n + 2 <= PairTable::SLOTS {
            // So does the pair table.
            let mut t = PairTable::new(n + 2);
            count_slice::<f64, G, _>(data, &b, &mut t);
            let mut d = vec![0u64; n + 2];
            t.drain_into(&mut d);
            assert_eq!(c, d);
        }
        let mut out: Vec<u32> = c[1..=n].iter().map(|&c| c as u32).collect();
        out.push((c[0] + c[n + 1]) as u32);
        out
    }

    /// A histogram whose range comes from a statistics pass is the one that finds the range
    /// itself, for every kind of element (integers past 2^53 included), NaN (the same error),
    /// constant data and several bin counts; statistics of another array are refused.
    #[test]
    fn histogram_with_stats_is_the_histogram() {
        use crate::expr::reduction::stats_pass;
        use crate::reduce::Need;
        fn check<T: Element>(name: &str, vals: &[T]) {
            let src = MemSource::vec(vals, 777);
            let st = stats_pass(&src, Need::EXTREMES, &no_progress).unwrap();
            for bins in [1, 7, 100, 200, 3000] {
                let want = histogram(&src, bins, None, &no_progress);
                let got = histogram_with_stats(&src, bins, &st, &no_progress);
                match (want, got) {
                    (Ok(w), Ok(g)) => assert_eq!(w, g, "{name}, {bins} bins"),
                    (Err(w), Err(g)) => {
                        assert_eq!(w.to_string(), g.to_string(), "{name}, {bins} bins")
                    }
                    (w, g) => panic!("{name}, {bins} bins: {w:?} against {g:?}"),
                }
            }
        }
        let normal: Vec<f64> = (0..20_000)
            .map(|i| ((i * 7919) % 20_011) as f64 / 3001.0 - 3.3)
            .collect();
        check("f64", &normal);
        let mut with_nan = normal.clone();
        with_nan[12_345] = f64::NAN;
        check("f64 with NaN", &with_nan);
        let mut with_inf = normal.clone();
        with_inf[5] = f64::INFINITY;
        check("f64 with inf", &with_inf);
        check("constant f64", &[2.5f64; 1000]);
        let f32s: Vec<f32> = normal.iter().map(|&x| x as f32 * 1.37).collect();
        check("f32", &f32s);
        let big: Vec<i64> = (0..5000i64)
            .map(|i| (1i64 << 62) - (i * 1_000_003) * if i % 2 == 0 { 1 } else { -1 })
            .collect();
        check("i64 past 2^53", &big);
        let ubig: Vec<u64> = (0..5000u64).map(|i| u64::MAX - i * 999_983).collect();
        check("u64 past 2^53", &ubig);
        let small: Vec<i8> = (0..3000).map(|i| (i % 251 - 125) as i8).collect();
        check("i8", &small);
        let bools: Vec<Bool> = (0..3000).map(|i| Bool(u8::from(i % 3 == 0))).collect();
        check("bool", &bools);
        check("constant u16", &[7u16; 100]);
        let mixed: Vec<i64> = (0..4000i64).map(|i| (i * 7_919) % 8_191 - 4_000).collect();
        check(
            "i16",
            &cast::<i16>(&mixed.iter().map(|&v| v as f64).collect::<Vec<_>>()),
        );
        check(
            "i32",
            &mixed.iter().map(|&v| v as i32 * 1000).collect::<Vec<_>>(),
        );
        check(
            "u8",
            &mixed.iter().map(|&v| (v & 0xff) as u8).collect::<Vec<_>>(),
        );
        check(
            "u32",
            &mixed
                .iter()
                .map(|&v| (v + 5000) as u32 * 777)
                .collect::<Vec<_>>(),
        );
        check(
            "negative i64",
            &mixed.iter().map(|&v| v - (1 << 60)).collect::<Vec<_>>(),
        );
        let mut with_ninf = normal.clone();
        with_ninf[77] = f64::NEG_INFINITY;
        check("f64 with -inf", &with_ninf);
        check("all NaN", &[f64::NAN; 50]);
        check("empty f64", &[] as &[f64]);
        // Zeros of both signs as the maximum: the counts agree and the edges are equal as
        // numbers (which zero each pass keeps as the maximum may differ, see the doc).
        let zeros: Vec<f64> = (0..1000)
            .map(|i| {
                if i % 3 == 0 {
                    -0.0
                } else if i % 3 == 1 {
                    0.0
                } else {
                    -(i as f64)
                }
            })
            .collect();
        check("zeros of both signs", &zeros);
        // Statistics of another array are refused.
        let src = MemSource::vec(&normal, 777);
        let other = MemSource::vec(&f32s, 777);
        let st = stats_pass(&other, Need::EXTREMES, &no_progress).unwrap();
        let e = histogram_with_stats(&src, 10, &st, &no_progress).unwrap_err();
        assert!(e.to_string().contains("not this array's"), "{e}");
        let st = stats_pass(&src, Need::SUM, &no_progress).unwrap();
        let e = histogram_with_stats(&src, 10, &st, &no_progress).unwrap_err();
        assert!(e.to_string().contains("without extremes"), "{e}");
    }

    /// The pair table counts what the byte tables count, for odd and even lengths, every slot
    /// count it takes, and runs of one slot.
    #[test]
    fn pair_table_counts_as_byte_tables() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for slots in [1, 2, 3, 17, 102, 127, PairTable::SLOTS] {
            for len in [0, 1, 2, 7, 511, 512, 513, 1000, 4097] {
                let idx: Vec<u8> = (0..len)
                    .map(|i| {
                        if i % 97 < 40 {
                            (slots - 1) as u8
                        } else {
                            (next() % slots as u64) as u8
                        }
                    })
                    .collect();
                let mut p = PairTable::new(slots);
                let mut b = ByteTables::new();
                for piece in idx.chunks(BLOCK) {
                    p.count(piece);
                    b.count(piece);
                }
                // A second round counts the whole slice at once: the drain must have zeroed the
                // counters, and the pair table must take more than a block.
                for round in 0..2 {
                    let (mut got, mut want) = (vec![0u64; slots], vec![0u64; slots]);
                    p.drain_into(&mut got);
                    b.drain_into(&mut want);
                    assert_eq!(got, want, "{slots} slots, {len} indices, round {round}");
                    assert_eq!(got.iter().sum::<u64>(), len as u64);
                    p.count(&idx);
                    b.count(&idx);
                }
            }
        }
    }

    /// Ranges with edges `i * step + start` where [`scaled_is_exact`] holds, as `(edges, step)`.
    fn scaled_ranges() -> Vec<(Vec<f64>, f64)> {
        let ranges = [
            (-6.0, 6.0, 100),
            (0.0, 1.0, 10),
            (-1e-300, 3e-300, 7),
            (1e15, 1e15 + 4096.0, 64),
            (0.1, 0.7, 3),
            (-2.5, 1e6, 1000),
            (1.0, 1.0 + 2f64.powi(-20), 5),
        ];
        let mut out = Vec::new();
        for (lo, hi, n) in ranges {
            let edges = linspace_f64(lo, hi, n + 1);
            let step = (edges[n] - edges[0]) / n as f64;
            let arith = edges[..n]
                .iter()
                .enumerate()
                .all(|(i, &e)| e == i as f64 * step + lo);
            if arith && scaled_is_exact(lo, hi, step, n) {
                out.push((edges, step));
            }
        }
        assert!(
            out.len() >= 5,
            "only {} ranges took the scaled path",
            out.len()
        );
        out
    }

    /// The short path (the floor of a guess far from every integer) against the corrections, on
    /// blocks of values spread over the range and a bin beyond, some sitting at and next to the
    /// edges, so blocks take each path and runs of them switch the short path off.
    #[test]
    fn short_path_bins_like_the_corrections() {
        // splitmix64: uniform u64s from a seed.
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for (edges, step) in scaled_ranges() {
            let n = edges.len() - 1;
            let (lo, hi) = (edges[0], edges[n]);
            let scaled = GuessScaled {
                first: lo,
                scale: n as f64 / (hi - lo),
            };
            // Runs of clean blocks, of blocks with one value on or next to an edge, and of
            // blocks made of such values, then NaN and infinities.
            let mut data = Vec::new();
            for run in 0..40 {
                for _ in 0..64 * 70 {
                    let near = match run % 4 {
                        0 | 1 => false,
                        2 => next() % 64 == 0,
                        _ => true,
                    };
                    let v = if near {
                        let mut e = edges[next() as usize % (n + 1)];
                        for _ in 0..next() % 4 {
                            e = if next() % 2 == 0 {
                                e.next_up()
                            } else {
                                e.next_down()
                            };
                        }
                        e
                    } else {
                        let u = (next() >> 11) as f64 * 2f64.powi(-53);
                        (lo - step) + u * (hi - lo + 2.0 * step)
                    };
                    data.push(v);
                }
            }
            data.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -1e308]);
            let want = arith_counts(&data, scaled, &edges, false);
            let mut naive_want: Vec<u32> = naive(&data, &edges).iter().map(|&c| c as u32).collect();
            naive_want.push(data.len() as u32 - naive_want.iter().sum::<u32>());
            assert_eq!(want, naive_want, "range ({lo}, {hi}), {n} bins");
            for from in [0, 1, 13, 64 * 70] {
                assert_eq!(
                    arith_counts(&data[from..], scaled, &edges, true),
                    arith_counts(&data[from..], scaled, &edges, false),
                    "range ({lo}, {hi}), {n} bins, from {from}"
                );
            }
        }
    }

    /// Counts `data` with NumPy's divide and with the multiply [`run`] uses where
    /// [`scaled_is_exact`] holds: the same counts for every edge and its neighbours.
    #[test]
    fn scaled_guess_bins_like_numpys_divide() {
        for (edges, step) in scaled_ranges() {
            let n = edges.len() - 1;
            let (lo, hi) = (edges[0], edges[n]);
            let mut data = vec![f64::NAN, f64::INFINITY, lo - step, hi + step];
            for &e in &edges {
                let mut v = e;
                for _ in 0..3 {
                    v = v.next_down();
                }
                for _ in 0..7 {
                    data.push(v);
                    v = v.next_up();
                }
                data.push(e + step / 2.0);
            }
            let divide = GuessF64 {
                first: lo,
                denom: hi - lo,
                n: n as f64,
            };
            let scaled = GuessScaled {
                first: lo,
                scale: n as f64 / (hi - lo),
            };
            let want = arith_counts(&data, divide, &edges, false);
            for short in [false, true] {
                assert_eq!(
                    arith_counts(&data, scaled, &edges, short),
                    want,
                    "range ({lo}, {hi}), {n} bins, short path {short}"
                );
            }
            assert_eq!(
                want[..n],
                naive(&data, &edges)
                    .iter()
                    .map(|&c| c as u32)
                    .collect::<Vec<_>>()[..]
            );
        }
        // A bin narrower than 2^40 units in the last place of the range keeps NumPy's divide.
        let (lo, hi) = (1e15, 1e15 + 1.0);
        assert!(!scaled_is_exact(lo, hi, (hi - lo) / 8.0, 8));
    }

    #[test]
    fn two_d_regions_follow_x_chunks() {
        // x chunked by rows, y by columns: y is read region by region.
        let x: Vec<f64> = (0..24).map(|i| (i % 5) as f64).collect();
        let y: Vec<i32> = (0..24).map(|i| i / 5).collect();
        let sx = MemSource::new(&x, &[4, 6], &[1, 6]);
        let sy = MemSource::new(&y, &[4, 6], &[4, 1]);
        let h = histogram2d(&sx, &sy, (5, 5), None, &no_progress).unwrap();
        let mut want = vec![0u64; 25];
        for i in 0..24 {
            let yb = ((y[i] as f64) / 4.0 * 5.0).min(4.0) as usize;
            want[(x[i] as usize) * 5 + yb] += 1;
        }
        assert_eq!(h.counts, want);
        assert_eq!(sx.dtype(), DType::F64);
    }
}
