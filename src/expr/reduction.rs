//! Reductions over all elements or along one axis, with NumPy's result types and NaN rules:
//! `sum, prod, mean, var, std, min, max, argmin, argmax, count_nonzero, any, all` and the
//! NaN-skipping `nan*` variants.
//!
//! Whole-array `sum/mean/var/std/min/max/argmin/argmax` use one [`crate::reduce::stats_for`] pass
//! specialised to the figures they need ([`stats_need`]: pairwise float sums, exact integer sums,
//! vectorised extremes); [`PassCache`] lets several of them share one pass. Everything else runs through one
//! chunked engine: each chunk is reduced along the axis into a partial result for the part of the
//! output it covers (the chunk viewed as `outer x n x inner`, so the inner loop runs over
//! contiguous rows), and partials are folded into the output in chunk order, a few batches at a
//! time — results are identical for any thread count and memory stays at the output plus a few
//! chunk partials.

use rayon::prelude::*;

use super::mem::MemArray;
use super::num::Num;
use crate::dtype::{Bool, DType, Element};
use crate::error::{Error, Result};
use crate::pipeline::Progress;
use crate::reduce::{Need, Scalar, Stats};
use crate::shape::{Region, c_strides, numel};
use crate::storage::{Buffer, ChunkSource};

/// What to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedOp {
    /// Sum (integers wrap in 64 bits like NumPy).
    Sum,
    /// Product.
    Prod,
    /// Arithmetic mean.
    Mean,
    /// Variance (with `ddof`).
    Var,
    /// Standard deviation (with `ddof`).
    Std,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Index of the first minimum.
    ArgMin,
    /// Index of the first maximum.
    ArgMax,
    /// Number of non-zero elements.
    CountNonzero,
    /// Whether any element is non-zero.
    Any,
    /// Whether every element is non-zero.
    All,
}

/// A reduction: the operation, NaN handling and the degrees of freedom for `var`/`std`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reduction {
    /// The operation.
    pub op: RedOp,
    /// Skip NaNs (`nansum`, `nanmean`, ...).
    pub skip_nan: bool,
    /// Delta degrees of freedom for `var`/`std`.
    pub ddof: u64,
}

impl Reduction {
    /// Parses a NumPy function name: `sum`, `nanmean`, `argmax`, `count_nonzero`, ...
    pub fn from_name(name: &str) -> Option<Reduction> {
        let (base, skip_nan) = match name.strip_prefix("nan") {
            Some(b) if !b.is_empty() => (b, true),
            _ => (name, false),
        };
        let op = match base {
            "sum" => RedOp::Sum,
            "prod" => RedOp::Prod,
            "mean" => RedOp::Mean,
            "var" => RedOp::Var,
            "std" => RedOp::Std,
            "min" | "amin" => RedOp::Min,
            "max" | "amax" => RedOp::Max,
            "argmin" => RedOp::ArgMin,
            "argmax" => RedOp::ArgMax,
            "count_nonzero" if !skip_nan => RedOp::CountNonzero,
            "any" if !skip_nan => RedOp::Any,
            "all" if !skip_nan => RedOp::All,
            _ => return None,
        };
        Some(Reduction {
            op,
            skip_nan,
            ddof: 0,
        })
    }

    /// The NumPy name of the reduction.
    pub fn name(&self) -> String {
        let base = match self.op {
            RedOp::Sum => "sum",
            RedOp::Prod => "prod",
            RedOp::Mean => "mean",
            RedOp::Var => "var",
            RedOp::Std => "std",
            RedOp::Min => "min",
            RedOp::Max => "max",
            RedOp::ArgMin => "argmin",
            RedOp::ArgMax => "argmax",
            RedOp::CountNonzero => "count_nonzero",
            RedOp::Any => "any",
            RedOp::All => "all",
        };
        if self.skip_nan {
            format!("nan{base}")
        } else {
            base.to_string()
        }
    }

    /// NumPy's result dtype for an input of `dtype`.
    pub fn result_dtype(&self, dtype: DType) -> DType {
        match self.op {
            RedOp::Sum | RedOp::Prod => match dtype {
                DType::U8 | DType::U16 | DType::U32 | DType::U64 => DType::U64,
                DType::F32 | DType::F64 => dtype,
                _ => DType::I64,
            },
            RedOp::Mean | RedOp::Var | RedOp::Std => {
                if dtype == DType::F32 {
                    DType::F32
                } else {
                    DType::F64
                }
            }
            RedOp::Min | RedOp::Max => dtype,
            RedOp::ArgMin | RedOp::ArgMax | RedOp::CountNonzero => DType::I64,
            RedOp::Any | RedOp::All => DType::Bool,
        }
    }
}

/// The figures of a [`crate::reduce::stats_for`] pass a whole-array reduction reads, or `None`
/// when it runs through the general engine. `mean` asks for the squared deviations too: they cost
/// a second sweep over each L1-resident block, not a second read of the data, and make a
/// following `std`/`var` of the same source free (see [`PassCache`]).
pub fn stats_need(r: &Reduction) -> Option<Need> {
    match r.op {
        RedOp::Sum => Some(Need::SUM),
        RedOp::Mean | RedOp::Var | RedOp::Std => Some(Need::MOMENTS),
        RedOp::Min | RedOp::Max | RedOp::ArgMin | RedOp::ArgMax => Some(Need::EXTREMES),
        _ => None,
    }
}

/// One whole-array statistics pass over `src` computing `need`: fused tile by tile when `src` is
/// a lazy element-wise expression, chunk by chunk otherwise.
pub fn stats_pass(src: &dyn ChunkSource, need: Need, progress: Progress<'_>) -> Result<Stats> {
    let any: &dyn std::any::Any = src;
    match any.downcast_ref::<super::lazy::Node>() {
        // Fused: tiles of the expression are reduced as they are computed.
        Some(node) if node.plan().is_ok() => crate::reduce::stats_of_expr_for(node, need, progress),
        _ => crate::reduce::stats_for(src, need, progress),
    }
}

/// Reduces every element of `src` to one value.
pub fn reduce_all(src: &dyn ChunkSource, r: &Reduction, progress: Progress<'_>) -> Result<Scalar> {
    let Some(need) = stats_need(r) else {
        let m = reduce_impl(src, r, None, progress)?;
        return Ok(scalar_of(&m));
    };
    let s = stats_pass(src, need, progress)?;
    reduce_from_stats(src, r, &s, progress)
}

/// The value of the whole-array reduction `r` from a statistics pass `s` over `src` (which must
/// cover [`stats_need`]`(r)`; a pass that does not is redone with the figures `r` needs). `src` is
/// read again only for `argmin`/`argmax` of data with NaNs (the first NaN's position).
pub fn reduce_from_stats(
    src: &dyn ChunkSource,
    r: &Reduction,
    s: &Stats,
    progress: Progress<'_>,
) -> Result<Scalar> {
    let Some(need) = stats_need(r) else {
        return reduce_all(src, r, progress);
    };
    if !s.need.covers(need) {
        let s = stats_pass(src, need, progress)?;
        return reduce_from_stats(src, r, &s, progress);
    }
    let dtype = src.info().dtype;
    let out = r.result_dtype(dtype);
    let total = s.count + s.nan_count;
    let nan = s.nan_count > 0 && !r.skip_nan;
    let float = |v: f64| {
        if out == DType::F32 {
            Scalar::F32(v as f32)
        } else {
            Scalar::F64(v)
        }
    };
    Ok(match r.op {
        RedOp::Sum => {
            if nan {
                float(f64::NAN)
            } else {
                match s.sum {
                    Scalar::Int(i) if out == DType::U64 => Scalar::Int(i as u64 as i128),
                    Scalar::Int(i) => Scalar::Int(i as i64 as i128),
                    other => float(other.to_f64()),
                }
            }
        }
        RedOp::Mean => float(if nan {
            f64::NAN
        } else {
            s.mean().unwrap_or(f64::NAN)
        }),
        RedOp::Var | RedOp::Std => {
            let v = if nan || s.count <= r.ddof {
                f64::NAN
            } else {
                s.m2 / (s.count - r.ddof) as f64
            };
            float(if r.op == RedOp::Std { v.sqrt() } else { v })
        }
        RedOp::Min | RedOp::Max => {
            if total == 0 {
                return Err(Error::Invalid(format!(
                    "zero-size array to reduction operation {} which has no identity",
                    if r.op == RedOp::Min {
                        "minimum"
                    } else {
                        "maximum"
                    }
                )));
            }
            let v = if r.op == RedOp::Min { s.min } else { s.max };
            match v {
                Some(v) if !nan => v,
                _ => float(f64::NAN),
            }
        }
        RedOp::ArgMin | RedOp::ArgMax => {
            if total == 0 {
                return Err(Error::Invalid(format!(
                    "attempt to get {} of an empty sequence",
                    r.name()
                )));
            }
            if nan {
                // The first NaN wins; found by the general engine.
                let m = reduce_impl(src, r, None, progress)?;
                return Ok(scalar_of(&m));
            }
            match if r.op == RedOp::ArgMin {
                s.argmin
            } else {
                s.argmax
            } {
                Some(i) => Scalar::Int(i as i128),
                None => return Err(Error::Invalid("All-NaN slice encountered".into())),
            }
        }
        _ => unreachable!(),
    })
}

/// The last whole-array statistics passes of a session (one per source, the
/// [`PassCache::ENTRIES`] most recent), so several reductions of one source (`mean(a), std(a)`;
/// `min(a), max(a), argmax(a)`, also with reductions of other sources between them) read it
/// once.
///
/// An entry is keyed on the identity of the source object: it holds a [`std::sync::Weak`] to
/// it, which keeps the allocation (not the data) alive, so no other source can take its address
/// while the entry exists. Sources are immutable (files are only ever replaced by renaming, which
/// leaves open sources on the old data), so an entry is never stale; writers clear it anyway.
///
/// It also holds what the statement being run is expected to ask of each source
/// ([`expect`](Self::expect)), so the first pass over a source computes the figures of every
/// reduction of it in the statement (`mean(a), max(a)`: moments and extremes in one read).
#[derive(Default)]
pub struct PassCache {
    /// Least recently computed first.
    last: std::sync::Mutex<Vec<(std::sync::Weak<dyn ChunkSource>, Stats)>>,
    expected: std::sync::Mutex<Vec<(std::sync::Weak<dyn ChunkSource>, Need)>>,
}

impl PassCache {
    /// Sources whose last pass is remembered.
    pub const ENTRIES: usize = 16;

    /// The cached pass over `src` if it has the figures in `need`.
    pub fn get(&self, src: &std::sync::Arc<dyn ChunkSource>, need: Need) -> Option<Stats> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let p = std::sync::Arc::as_ptr(src);
        last.iter()
            .find(|(w, s)| std::ptr::addr_eq(w.as_ptr(), p) && s.need.covers(need))
            .map(|(_, s)| s.clone())
    }

    /// Remembers the pass `s` over `src` (replacing the one before over `src`, and forgetting
    /// the least recent source's beyond [`Self::ENTRIES`]).
    pub fn put(&self, src: &std::sync::Arc<dyn ChunkSource>, s: Stats) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let p = std::sync::Arc::as_ptr(src);
        last.retain(|(w, _)| !std::ptr::addr_eq(w.as_ptr(), p));
        if last.len() == Self::ENTRIES {
            last.remove(0);
        }
        last.push((std::sync::Arc::downgrade(src), s));
    }

    /// Forgets every cached pass.
    pub fn clear(&self) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Records the figures reductions about to run will want of each source, added to what is
    /// already expected (until [`forget_expected`](Self::forget_expected)).
    pub fn expect(&self, wants: &[(&std::sync::Arc<dyn ChunkSource>, Need)]) {
        let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        for &(src, need) in wants {
            let p = std::sync::Arc::as_ptr(src);
            match expected
                .iter_mut()
                .find(|(w, _)| std::ptr::addr_eq(w.as_ptr(), p))
            {
                Some((_, n)) => *n = n.union(need),
                None => expected.push((std::sync::Arc::downgrade(src), need)),
            }
        }
    }

    /// Forgets what was expected.
    pub fn forget_expected(&self) {
        self.expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// `need` with what is expected of `src` added (then no longer expected): the figures the
    /// pass about to run over `src` should compute.
    pub fn widen(&self, src: &std::sync::Arc<dyn ChunkSource>, need: Need) -> Need {
        let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        let p = std::sync::Arc::as_ptr(src);
        match expected
            .iter()
            .position(|(w, _)| std::ptr::addr_eq(w.as_ptr(), p))
        {
            Some(i) => need.union(expected.swap_remove(i).1),
            None => need,
        }
    }
}

fn scalar_of(m: &MemArray) -> Scalar {
    let info = m.info();
    crate::with_dtype!(info.dtype, T => {
        let v: T = m.as_slice::<T>()[0];
        match info.dtype {
            DType::Bool => Scalar::Bool(v.to_f64() != 0.0),
            DType::F32 => Scalar::F32(v.to_f64() as f32),
            DType::F64 => Scalar::F64(v.to_f64()),
            _ => Scalar::Int(<T as Num>::to_i128(v)),
        }
    })
}

/// Reduces `src` along `axis`, giving an in-memory array of the remaining axes.
pub fn reduce_axis(
    src: &dyn ChunkSource,
    r: &Reduction,
    axis: usize,
    progress: Progress<'_>,
) -> Result<MemArray> {
    let nd = src.info().shape.len();
    if axis >= nd {
        return Err(Error::Invalid(format!(
            "axis {axis} is out of bounds for array of dimension {nd}"
        )));
    }
    reduce_impl(src, r, Some(axis), progress)
}

/// Per-output-element state for one chunk (or the whole output), only the fields the operation
/// needs are allocated.
struct Partial<T> {
    count: Vec<u64>,
    fsum: Vec<f64>,
    isum: Vec<i128>,
    m2: Vec<f64>,
    best: Vec<T>,
    idx: Vec<i64>,
    nan_idx: Vec<i64>,
    flag: Vec<bool>,
}

impl<T: Num> Partial<T> {
    fn new(op: RedOp, n: usize) -> Self {
        let need = |b: bool, len| if b { len } else { 0 };
        let mean_like = matches!(op, RedOp::Mean | RedOp::Var | RedOp::Std);
        let ext = matches!(op, RedOp::Min | RedOp::Max | RedOp::ArgMin | RedOp::ArgMax);
        let init_best = if matches!(op, RedOp::Min | RedOp::ArgMin) {
            highest::<T>()
        } else {
            lowest::<T>()
        };
        Partial {
            count: vec![0; n],
            fsum: vec![
                if op == RedOp::Prod { 1.0 } else { 0.0 };
                need(
                    !matches!(op, RedOp::CountNonzero | RedOp::Any | RedOp::All)
                        && (T::FLOAT || mean_like),
                    n
                )
            ],
            isum: vec![
                if op == RedOp::Prod { 1 } else { 0 };
                need(!T::FLOAT && matches!(op, RedOp::Sum | RedOp::Prod), n)
            ],
            m2: vec![0.0; need(matches!(op, RedOp::Var | RedOp::Std), n)],
            best: vec![init_best; need(ext, n)],
            idx: vec![-1; need(ext, n)],
            nan_idx: vec![-1; need(ext, n)],
            flag: vec![op == RedOp::All; need(matches!(op, RedOp::Any | RedOp::All), n)],
        }
    }
}

fn highest<T: Num>() -> T {
    if T::FLOAT {
        T::from_f64(f64::INFINITY)
    } else {
        T::from_i128(crate::expr::ops::int_range(T::DTYPE).1)
    }
}

fn lowest<T: Num>() -> T {
    if T::FLOAT {
        T::from_f64(f64::NEG_INFINITY)
    } else {
        T::from_i128(crate::expr::ops::int_range(T::DTYPE).0)
    }
}

/// Reduces one chunk viewed as `outer x n x inner` along the middle axis into `p` (of `outer *
/// inner` entries); `base` is the chunk's offset along the axis.
#[allow(clippy::too_many_arguments)]
fn accumulate<T: Num>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    r: &Reduction,
    base: i64,
    p: &mut Partial<T>,
) {
    let skip = r.skip_nan;
    for o in 0..outer {
        let out = o * inner..(o + 1) * inner;
        match r.op {
            RedOp::Sum | RedOp::Prod | RedOp::Mean | RedOp::Var | RedOp::Std => {
                let prod = r.op == RedOp::Prod;
                if !T::FLOAT && !matches!(r.op, RedOp::Mean | RedOp::Var | RedOp::Std) {
                    let acc = &mut p.isum[out.clone()];
                    for j in 0..n {
                        let row = &x[(o * n + j) * inner..(o * n + j + 1) * inner];
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a = if prod {
                                a.wrapping_mul(v.to_i128())
                            } else {
                                a.wrapping_add(v.to_i128())
                            };
                        }
                    }
                    continue;
                }
                let acc = &mut p.fsum[out.clone()];
                let cnt = &mut p.count[out.clone()];
                if inner == 1 && !prod {
                    let row = &x[o * n..(o + 1) * n];
                    let (s, c) = lane_sum(row, skip);
                    acc[0] += s;
                    cnt[0] += c;
                } else {
                    for j in 0..n {
                        let row = &x[(o * n + j) * inner..(o * n + j + 1) * inner];
                        for ((a, c), &v) in acc.iter_mut().zip(cnt.iter_mut()).zip(row) {
                            let f = v.to_f64();
                            let keep = !(skip && f.is_nan());
                            if prod {
                                *a *= if keep { f } else { 1.0 };
                            } else {
                                *a += if keep { f } else { 0.0 };
                            }
                            *c += u64::from(keep);
                        }
                    }
                }
                if matches!(r.op, RedOp::Var | RedOp::Std) {
                    // Second pass about this chunk's own mean (merged with Chan's update).
                    let m2 = &mut p.m2[out.clone()];
                    for j in 0..n {
                        let row = &x[(o * n + j) * inner..(o * n + j + 1) * inner];
                        for (k, &v) in row.iter().enumerate() {
                            let f = v.to_f64();
                            if skip && f.is_nan() {
                                continue;
                            }
                            let mean = acc[k] / cnt[k] as f64;
                            let d = f - mean;
                            m2[k] += d * d;
                        }
                    }
                }
            }
            RedOp::Min | RedOp::Max | RedOp::ArgMin | RedOp::ArgMax => {
                let is_min = matches!(r.op, RedOp::Min | RedOp::ArgMin);
                for j in 0..n {
                    let row = &x[(o * n + j) * inner..(o * n + j + 1) * inner];
                    let pos = base + j as i64;
                    for (k, &v) in row.iter().enumerate() {
                        let q = o * inner + k;
                        if v.is_nan() {
                            if p.nan_idx[q] < 0 {
                                p.nan_idx[q] = pos;
                            }
                            continue;
                        }
                        let better = if p.idx[q] < 0 {
                            true
                        } else if is_min {
                            v < p.best[q]
                        } else {
                            v > p.best[q]
                        };
                        if better {
                            p.best[q] = v;
                            p.idx[q] = pos;
                        }
                    }
                }
            }
            RedOp::CountNonzero | RedOp::Any | RedOp::All => {
                for j in 0..n {
                    let row = &x[(o * n + j) * inner..(o * n + j + 1) * inner];
                    for (k, &v) in row.iter().enumerate() {
                        let q = o * inner + k;
                        let t = v.truthy() || v.is_nan();
                        match r.op {
                            RedOp::CountNonzero => p.count[q] += u64::from(t),
                            RedOp::Any => p.flag[q] |= t,
                            _ => p.flag[q] &= t,
                        }
                    }
                }
            }
        }
    }
}

/// Sum of a contiguous row in 8 lanes (vectorised), skipping NaNs when asked; with the count of
/// the values summed.
#[inline]
fn lane_sum<T: Num>(row: &[T], skip: bool) -> (f64, u64) {
    let mut lanes = [0.0f64; 8];
    let mut cnt = [0u64; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            let f = c[j].to_f64();
            let keep = !(skip && f.is_nan());
            lanes[j] += if keep { f } else { 0.0 };
            cnt[j] += u64::from(keep);
        }
    }
    let mut s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    let mut c: u64 = cnt.iter().sum();
    for &v in it.remainder() {
        let f = v.to_f64();
        if !(skip && f.is_nan()) {
            s += f;
            c += 1;
        }
    }
    (s, c)
}

/// Folds chunk partial `p` (covering output positions `map[k]`) into the running result `g`.
fn merge<T: Num>(g: &mut Partial<T>, p: &Partial<T>, map: &[usize], r: &Reduction) {
    for (k, &q) in map.iter().enumerate() {
        match r.op {
            RedOp::Sum | RedOp::Prod if !T::FLOAT => {
                g.isum[q] = if r.op == RedOp::Prod {
                    g.isum[q].wrapping_mul(p.isum[k])
                } else {
                    g.isum[q].wrapping_add(p.isum[k])
                };
            }
            RedOp::Sum => {
                g.fsum[q] += p.fsum[k];
                g.count[q] += p.count[k];
            }
            RedOp::Prod => g.fsum[q] *= p.fsum[k],
            RedOp::Mean => {
                g.fsum[q] += p.fsum[k];
                g.count[q] += p.count[k];
            }
            RedOp::Var | RedOp::Std => {
                // Chan et al.: combine (count, sum, m2).
                let (na, nb) = (g.count[q] as f64, p.count[k] as f64);
                if p.count[k] == 0 {
                    continue;
                }
                if g.count[q] == 0 {
                    g.fsum[q] = p.fsum[k];
                    g.m2[q] = p.m2[k];
                    g.count[q] = p.count[k];
                    continue;
                }
                let delta = p.fsum[k] / nb - g.fsum[q] / na;
                g.m2[q] += p.m2[k] + delta * delta * na * nb / (na + nb);
                g.fsum[q] += p.fsum[k];
                g.count[q] += p.count[k];
            }
            RedOp::Min | RedOp::Max | RedOp::ArgMin | RedOp::ArgMax => {
                if p.nan_idx[k] >= 0 && (g.nan_idx[q] < 0 || p.nan_idx[k] < g.nan_idx[q]) {
                    g.nan_idx[q] = p.nan_idx[k];
                }
                if p.idx[k] < 0 {
                    continue;
                }
                let is_min = matches!(r.op, RedOp::Min | RedOp::ArgMin);
                let better = g.idx[q] < 0
                    || if is_min {
                        p.best[k] < g.best[q]
                    } else {
                        p.best[k] > g.best[q]
                    }
                    || (p.best[k] == g.best[q] && p.idx[k] < g.idx[q]);
                if better {
                    g.best[q] = p.best[k];
                    g.idx[q] = p.idx[k];
                }
            }
            RedOp::CountNonzero => g.count[q] += p.count[k],
            RedOp::Any => g.flag[q] |= p.flag[k],
            RedOp::All => g.flag[q] &= p.flag[k],
        }
    }
}

fn reduce_impl(
    src: &dyn ChunkSource,
    r: &Reduction,
    axis: Option<usize>,
    progress: Progress<'_>,
) -> Result<MemArray> {
    let dtype = src.info().dtype;
    crate::with_dtype!(dtype, T => reduce_typed::<T>(src, r, axis, progress))
}

fn reduce_typed<T: Num>(
    src: &dyn ChunkSource,
    r: &Reduction,
    axis: Option<usize>,
    progress: Progress<'_>,
) -> Result<MemArray> {
    let info = src.info();
    let shape = info.shape.clone();
    let out_shape: Vec<u64> = match axis {
        Some(a) => shape
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != a)
            .map(|(_, &d)| d)
            .collect(),
        None => vec![],
    };
    let n_out = numel(&out_shape) as usize;
    let axis_len = match axis {
        Some(a) => shape[a],
        None => numel(&shape),
    };
    if axis_len == 0 && n_out > 0 {
        match r.op {
            RedOp::Min | RedOp::Max => {
                return Err(Error::Invalid(format!(
                    "zero-size array to reduction operation {} which has no identity",
                    if r.op == RedOp::Min {
                        "minimum"
                    } else {
                        "maximum"
                    }
                )));
            }
            RedOp::ArgMin | RedOp::ArgMax => {
                return Err(Error::Invalid(format!(
                    "attempt to get {} of an empty sequence",
                    r.name()
                )));
            }
            _ => {}
        }
    }
    // The running result is reserved in the budget like any other data.
    let state_bytes = n_out as u64 * 48;
    let _res = crate::memory::global().reserve(state_bytes, "reduction state")?;
    let mut g = Partial::<T>::new(r.op, n_out);
    let out_strides = c_strides(&out_shape);
    let layout = info.layout.clone();
    let nchunks = layout.num_chunks();
    let batch = (rayon::current_num_threads() * 2).max(2);
    let mut start = 0;
    while start < nchunks {
        let end = (start + batch).min(nchunks);
        let parts: Vec<(Partial<T>, Vec<usize>)> = (start..end)
            .into_par_iter()
            .map(|i| -> Result<(Partial<T>, Vec<usize>)> {
                let c = src.read_chunk(i)?;
                let x: &[T] = c.data.as_slice();
                let reg = &c.region;
                let (outer, n, inner, base, out_box) = match axis {
                    Some(a) => {
                        let outer = numel(&reg.shape[..a]) as usize;
                        let inner = numel(&reg.shape[a + 1..]) as usize;
                        let mut ob = Region {
                            origin: reg.origin.clone(),
                            shape: reg.shape.clone(),
                        };
                        ob.origin.remove(a);
                        ob.shape.remove(a);
                        (
                            outer,
                            reg.shape[a] as usize,
                            inner,
                            reg.origin[a] as i64,
                            ob,
                        )
                    }
                    None => (1, x.len(), 1, 0, Region::full(&[])),
                };
                let mut p = Partial::<T>::new(r.op, outer * inner);
                accumulate(x, outer, n, inner, r, base, &mut p);
                if axis.is_none() {
                    // Local positions to flat C-order indices of the whole array.
                    for v in p.idx.iter_mut().chain(p.nan_idx.iter_mut()) {
                        if *v >= 0 {
                            *v = reg.global_flat_index(*v as u64, &shape) as i64;
                        }
                    }
                }
                let map = box_positions(&out_box, &out_strides);
                progress(c.data.len() as u64);
                Ok((p, map))
            })
            .collect::<Result<_>>()?;
        for (p, map) in &parts {
            merge(&mut g, p, map, r);
        }
        start = end;
    }
    finish(g, r, r.result_dtype(T::DTYPE), out_shape)
}

/// Flat output positions of every element of `b` (C order).
fn box_positions(b: &Region, strides: &[u64]) -> Vec<usize> {
    let n = b.numel() as usize;
    let mut out = Vec::with_capacity(n);
    if b.shape.is_empty() {
        out.push(0);
        return out;
    }
    let nd = b.shape.len();
    let mut idx = vec![0u64; nd];
    for _ in 0..n {
        let mut q = 0u64;
        for ax in 0..nd {
            q += (b.origin[ax] + idx[ax]) * strides[ax];
        }
        out.push(q as usize);
        for ax in (0..nd).rev() {
            idx[ax] += 1;
            if idx[ax] < b.shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

fn finish<T: Num>(g: Partial<T>, r: &Reduction, out: DType, shape: Vec<u64>) -> Result<MemArray> {
    let n = numel(&shape) as usize;
    let name = r.name();
    let mut buf = Buffer::for_overwrite(n * out.size())?;
    macro_rules! fill {
        ($t:ty, $f:expr) => {{
            let o: &mut [$t] = buf.as_mut_slice();
            for q in 0..n {
                o[q] = $f(q)?;
            }
        }};
    }
    let float_div = |a: f64, b: f64| a / b;
    match r.op {
        RedOp::Sum | RedOp::Prod => {
            if T::FLOAT {
                if out == DType::F32 {
                    fill!(f32, |q| Ok::<_, Error>(g.fsum[q] as f32));
                } else {
                    fill!(f64, |q| Ok::<_, Error>(g.fsum[q]));
                }
            } else if out == DType::U64 {
                fill!(u64, |q| Ok::<_, Error>(g.isum[q] as u64));
            } else {
                fill!(i64, |q| Ok::<_, Error>(g.isum[q] as i64));
            }
        }
        RedOp::Mean | RedOp::Var | RedOp::Std => {
            let val = |q: usize| -> Result<f64> {
                let c = g.count[q];
                Ok(match r.op {
                    RedOp::Mean => float_div(g.fsum[q], c as f64),
                    _ => {
                        let v = if c <= r.ddof {
                            f64::NAN
                        } else {
                            g.m2[q] / (c - r.ddof) as f64
                        };
                        if r.op == RedOp::Std { v.sqrt() } else { v }
                    }
                })
            };
            if out == DType::F32 {
                fill!(f32, |q| val(q).map(|v| v as f32));
            } else {
                fill!(f64, val);
            }
        }
        RedOp::Min | RedOp::Max => {
            let o: &mut [T] = buf.as_mut_slice();
            for q in 0..n {
                o[q] = if g.nan_idx[q] >= 0 && !r.skip_nan || g.idx[q] < 0 {
                    T::from_f64(f64::NAN)
                } else {
                    g.best[q]
                };
            }
        }
        RedOp::ArgMin | RedOp::ArgMax => {
            fill!(i64, |q: usize| {
                if g.nan_idx[q] >= 0 && !r.skip_nan {
                    Ok(g.nan_idx[q])
                } else if g.idx[q] < 0 {
                    Err(Error::Invalid("All-NaN slice encountered".into()))
                } else {
                    Ok(g.idx[q])
                }
            });
        }
        RedOp::CountNonzero => fill!(i64, |q| Ok::<_, Error>(g.count[q] as i64)),
        RedOp::Any | RedOp::All => fill!(Bool, |q| Ok::<_, Error>(Bool(u8::from(g.flag[q])))),
    }
    MemArray::new(&name, out, shape, buf)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kernels::histogram::test_source::{Counting, MemSource};
    use crate::pipeline::no_progress;

    fn red(name: &str) -> Reduction {
        Reduction::from_name(name).unwrap()
    }

    #[test]
    fn cache_shares_one_pass_by_source_identity() {
        let v: Vec<f64> = (0..10_000)
            .map(|i| ((i * 7919) % 1000) as f64 - 500.5)
            .collect();
        let counting = Arc::new(Counting::new(MemSource::vec(&v, 1000)));
        let src: Arc<dyn ChunkSource> = counting.clone();
        let other: Arc<dyn ChunkSource> = Arc::new(MemSource::vec(&v, 1000));
        let cache = PassCache::default();
        // What the script backend does: reuse a covering pass, else run one and remember it.
        let eval = |s: &Arc<dyn ChunkSource>, name: &str| -> Scalar {
            let r = red(name);
            let need = stats_need(&r).unwrap();
            let st = match cache.get(s, need) {
                Some(st) => st,
                None => {
                    let st = stats_pass(s.as_ref(), need, &no_progress).unwrap();
                    cache.put(s, st.clone());
                    st
                }
            };
            let got = reduce_from_stats(s.as_ref(), &r, &st, &no_progress).unwrap();
            assert_eq!(
                got,
                reduce_all(s.as_ref(), &r, &no_progress).unwrap(),
                "{name}"
            );
            got
        };
        let reads = || counting.reads();
        eval(&src, "mean");
        let after_mean = reads();
        eval(&src, "std");
        eval(&src, "var");
        eval(&src, "sum");
        // std/var/sum checked against reduce_all (10 chunks each), but took no pass of their own.
        assert_eq!(
            cache.get(&src, Need::MOMENTS).map(|s| s.need),
            Some(Need::MOMENTS)
        );
        assert_eq!(reads(), after_mean + 30);
        // Another source with equal contents does not hit the entry.
        assert!(cache.get(&other, Need::SUM).is_none());
        // Extremes are not covered by the moments pass: a new pass replaces the entry.
        eval(&src, "argmax");
        assert!(cache.get(&src, Need::EXTREMES).is_some());
        assert!(cache.get(&src, Need::SUM).is_none());
        // Passes over other sources keep it, up to `ENTRIES` sources.
        let others: Vec<Arc<dyn ChunkSource>> = (0..PassCache::ENTRIES)
            .map(|_| Arc::new(MemSource::vec(&v[..10], 5)) as Arc<dyn ChunkSource>)
            .collect();
        for (i, o) in others.iter().enumerate() {
            cache.put(o, stats_pass(o.as_ref(), Need::SUM, &no_progress).unwrap());
            let kept = cache.get(&src, Need::EXTREMES).is_some();
            assert_eq!(kept, i + 1 < PassCache::ENTRIES, "after {} others", i + 1);
        }
        assert!(cache.get(&others[0], Need::SUM).is_some());
        cache.clear();
        assert!(cache.get(&others[0], Need::SUM).is_none());
        // What a statement is expected to ask adds up per source and widens its first pass.
        cache.expect(&[
            (&src, Need::SUM),
            (&other, Need::SUM),
            (&src, Need::EXTREMES),
        ]);
        let both = Need::SUM.union(Need::EXTREMES);
        assert_eq!(cache.widen(&src, Need::SUM), both);
        assert_eq!(cache.widen(&src, Need::SUM), Need::SUM, "used up");
        // Later announcements add to what is still expected, until it is forgotten.
        cache.expect(&[(&other, Need::MOMENTS)]);
        assert_eq!(cache.widen(&other, Need::EXTREMES), Need::ALL, "added up");
        cache.expect(&[(&other, Need::SUM)]);
        cache.forget_expected();
        assert_eq!(
            cache.widen(&other, Need::EXTREMES),
            Need::EXTREMES,
            "forgotten"
        );
    }

    #[test]
    fn reduce_from_stats_redoes_a_pass_that_does_not_cover() {
        let v = [3.0f64, f64::NAN, -1.0, 7.0];
        let src = MemSource::vec(&v, 3);
        let sums = stats_pass(&src, Need::SUM, &no_progress).unwrap();
        for name in [
            "min",
            "max",
            "argmin",
            "nanargmax",
            "std",
            "nanstd",
            "nanmean",
            "sum",
        ] {
            let r = red(name);
            // Compared as text: NaN results must agree too.
            assert_eq!(
                format!(
                    "{:?}",
                    reduce_from_stats(&src, &r, &sums, &no_progress).unwrap()
                ),
                format!("{:?}", reduce_all(&src, &r, &no_progress).unwrap()),
                "{name}"
            );
        }
        assert_eq!(
            reduce_all(&src, &red("argmin"), &no_progress).unwrap(),
            Scalar::Int(1)
        );
        assert_eq!(
            reduce_all(&src, &red("nanargmax"), &no_progress).unwrap(),
            Scalar::Int(3)
        );
    }
}
