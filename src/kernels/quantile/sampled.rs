//! The sampled path of [`super`]: a sample first, then one exact pass that usually finishes.
//!
//! For 32- and 64-bit data of at least [`MIN_LEN`] elements, runs of [`RUN`] values spread
//! evenly through every chunk (one value in 256, at most [`MAX_SAMPLE`]) are keyed and, for each
//! quantile level `q`, the sample's order statistics `Z` standard deviations either side of
//! `q (m - 1)` bound a bracket of keys (the bracket reaches the end of the key range at the
//! sample's ends). One exact pass then counts the NaNs, the keys below each bracket and inside
//! it, and collects the keys inside into reserved vectors. With the
//! count of non-NaN values known, each rank is either inside a collected bracket, and is selected
//! there, or (an unlucky sample, or a bracket that outgrew its allowance) inside an interval
//! whose bounds and counts the pass has given exactly, which the key-histogram refinement of the
//! main path then resolves. So the result is exact whatever the sample; only the pass count
//! depends on it.
//!
//! The sample reads about 1/256 of the data (for page-cached `.npy` chunks, only the pages it
//! touches); the first pass of the main path counts every key's top 16 bits, which costs about
//! twice a plain read on the machines we measure on. Which values are sampled depends only on the
//! chunk grid, and the brackets only on the sampled values' order statistics, so nothing depends
//! on the thread count.

use std::sync::Mutex;

use super::{
    CLASSIFY_MAX, Found, Interval, LOCAL_KEYS, QBLOCK, QElem, QuantileOptions, QuantileResult,
    Want, finish, group, plan_ranks, rank_plans, refine_open,
};
use crate::error::Result;
use crate::kernels::histogram::{fold_chunks, visit_chunks};
use crate::kernels::prefetch;
use crate::memory;
use crate::pipeline::Progress;
use crate::storage::ChunkSource;

/// Values per sampled run: one prefetch piece of `f64`, so a run touches one or two pages.
const RUN: usize = 64;

/// At least this many values per value sampled.
const EVERY: u64 = 256;

/// Most values sampled (16 MiB of keys).
const MAX_SAMPLE: u64 = 2 << 20;

/// Fewest elements for which the sampled path is taken (128 MiB of `f64`); below this the
/// passes are short and the main path's first pass costs little more than the sample.
pub(super) const MIN_LEN: u64 = 1 << 24;

/// Standard deviations of a sample quantile kept each side of a level's estimate (the variance
/// scaled by the sample's [`design_effect`]); a miss costs passes, never exactness.
const Z: f64 = 6.0;

/// Keys a bracket may collect beyond twice its estimate.
const SLACK: usize = 4 << 10;

/// Tries the sampled path; `Ok(false)` when it does not apply (small or narrow data, too many
/// brackets, or a budget too small for the sample and the collected keys) and the caller
/// should take the main path. On `Ok(true)` `result` is complete.
pub(super) fn try_run<T: QElem>(
    src: &dyn ChunkSource,
    want: &Want,
    opts: &QuantileOptions,
    cap: u64,
    result: &mut QuantileResult,
    progress: Progress<'_>,
) -> Result<bool> {
    let info = src.info();
    let numel = info.numel();
    let every = match opts.sample_every {
        Some(0) => return Ok(false),
        Some(e) => e.min(numel.max(1)),
        None if numel < MIN_LEN => return Ok(false),
        None => EVERY,
    };
    if T::BITS <= 16 {
        return Ok(false);
    }
    // The levels' brackets merge when they overlap; distinct levels bound their number.
    let mut levels: Vec<f64> = match want {
        Want::Quantiles(qs) => qs.clone(),
        Want::Median => vec![0.5],
    };
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    if levels.len() > CLASSIFY_MAX || (levels.len() * SLACK * 8) as u64 > cap {
        return Ok(false);
    }
    let stride = (RUN as u64).saturating_mul(every.max(numel.div_ceil(MAX_SAMPLE)));
    let nchunks = info.layout.num_chunks() as u64;
    let bound = (numel / stride + nchunks) * RUN as u64;
    // The sample and one copy of it.
    let Some(sample_res) = memory::global().try_reserve(bound * 16, "quantile sample") else {
        return Ok(false);
    };
    let (mut sample, runs) = sample_keys::<T>(src, stride, bound as usize)?;
    let m = sample.len();
    if m == 0 {
        return Ok(false);
    }
    let deff = design_effect(&sample, &runs);
    let top = T::from_f64(f64::INFINITY).key(); // the largest key of a non-NaN value
    let last = (m - 1) as f64;
    let mut idx: Vec<(usize, usize)> = levels
        .iter()
        .map(|&q| {
            let w = Z * (deff * m as f64 * q * (1.0 - q)).sqrt() + RUN as f64;
            let c = q * last;
            let lo = (c - w).floor().max(0.0) as usize;
            let hi = ((c + w).ceil().min(last)) as usize;
            (lo, hi)
        })
        .collect();
    idx.sort_unstable();
    let mut wanted: Vec<usize> = idx.iter().flat_map(|&(a, b)| [a, b]).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let at = order_stats(&mut sample, &wanted);
    drop(sample);
    drop(sample_res);
    let key_of = |i: usize| at[wanted.binary_search(&i).expect("selected")];
    // Merge overlapping or touching brackets (in keys), each with its estimated size.
    let mut brackets: Vec<(u64, u64, f64)> = Vec::new();
    for &(a, b) in &idx {
        let lo = if a == 0 { 0 } else { key_of(a) };
        let hi = if b == m - 1 { top } else { key_of(b) };
        let est = (b - a + 1) as f64 / m as f64 * numel as f64;
        match brackets.last_mut() {
            Some(l) if lo <= l.1.saturating_add(1) => {
                l.1 = l.1.max(hi);
                l.2 += est;
            }
            _ => brackets.push((lo, hi, est)),
        }
    }
    resolve::<T>(src, want, opts, cap, &brackets, m as u64, result, progress)
}

/// The exact pass over `brackets` (disjoint, sorted: `(lo, hi, estimated keys inside)`, ends
/// keys of non-NaN values or 0 and the largest such key), then the selection or refinement of
/// every rank. `Ok(false)` (nothing read) when the brackets are too many or their keys would not
/// fit `cap` or the budget.
#[allow(clippy::too_many_arguments)]
fn resolve<T: QElem>(
    src: &dyn ChunkSource,
    want: &Want,
    opts: &QuantileOptions,
    cap: u64,
    brackets: &[(u64, u64, f64)],
    sampled: u64,
    result: &mut QuantileResult,
    progress: Progress<'_>,
) -> Result<bool> {
    let numel = src.info().numel();
    let top = T::from_f64(f64::INFINITY).key();
    // Twice the estimate each and `SLACK` keys more, all of it within the allowance.
    let allow: Vec<u64> = brackets
        .iter()
        .map(|b| (2.0 * b.2) as u64 + SLACK as u64)
        .collect();
    let total: u64 = allow.iter().sum();
    if brackets.len() > CLASSIFY_MAX || total * 8 > cap {
        return Ok(false);
    }
    let Some(collect_res) = memory::global().try_reserve(total * 8, "quantile candidates") else {
        return Ok(false);
    };
    let los: Vec<u64> = brackets.iter().map(|b| b.0).collect();
    let his: Vec<u64> = brackets.iter().map(|b| b.1).collect();
    let t = bracket_pass::<T>(src, &los, &his, &allow, progress)?;
    result.sampled = sampled;
    result.passes = 1;
    result.nan_count = t.nan;
    result.count = numel - t.nan;
    let count = result.count;
    if (t.nan > 0 && !opts.skip_nan) || count == 0 {
        return Ok(true);
    }
    let plans = rank_plans(want, count);
    let ranks = plan_ranks(&plans);
    // Each rank's place: a collected bracket, or an exactly counted interval to refine.
    let mut found = Found::new();
    let mut pending: Vec<(Interval, u64)> = Vec::new();
    let mut collected = t.collected;
    // Per bracket, the keys before this index are at most the last key selected there: ranks
    // ascend, so each selection runs on what lies after the previous one.
    let mut starts = vec![0usize; collected.len()];
    for &r in &ranks {
        let mut below_gap = 0u64; // keys below the gap before bracket `j`
        let mut gap_lo = 0u64;
        let mut placed = false;
        for (j, keys) in collected.iter_mut().enumerate() {
            let (below, inside) = (t.below[j], t.inside[j]);
            if r < below {
                pending.push((
                    Interval {
                        lo: gap_lo,
                        hi: los[j] - 1,
                        below: below_gap,
                        count: below - below_gap,
                    },
                    r,
                ));
                placed = true;
                break;
            }
            if r < below + inside {
                match keys {
                    Some(keys) => {
                        debug_assert_eq!(keys.len() as u64, inside);
                        let k = (r - below) as usize;
                        let (_, v, _) = keys[starts[j]..].select_nth_unstable(k - starts[j]);
                        found.insert(r, *v);
                        starts[j] = k + 1;
                    }
                    None => pending.push((
                        Interval {
                            lo: los[j],
                            hi: his[j],
                            below,
                            count: inside,
                        },
                        r,
                    )),
                }
                placed = true;
                break;
            }
            below_gap = below + inside;
            gap_lo = his[j].saturating_add(1);
        }
        if !placed {
            pending.push((
                Interval {
                    lo: gap_lo,
                    hi: u64::MAX >> (64 - T::BITS),
                    below: below_gap,
                    count: count - below_gap,
                },
                r,
            ));
        }
    }
    drop(collected);
    drop(collect_res);
    // The refinement passes read raw keys, NaN's included, so intervals are held to the keys
    // of non-NaN values (NaN's keys lie beyond those of the infinities).
    let bottom = T::from_f64(f64::NEG_INFINITY).key();
    let pending: Vec<(u64, Interval)> = pending
        .into_iter()
        .map(|(iv, r)| {
            let iv = Interval {
                lo: iv.lo.max(bottom),
                hi: iv.hi.min(top),
                ..iv
            };
            (r, iv)
        })
        .collect();
    let (found, passes) = refine_open::<T>(src, group(pending), found, 1, cap, progress)?;
    result.passes = passes;
    finish::<T>(result, want, opts, &plans, &found);
    Ok(true)
}

/// `k`-th smallest of `v` for each `k` of `ks` (sorted, distinct, each `< v.len()`), selecting
/// each in the part of `v` right of the previous one.
fn order_stats(v: &mut [u64], ks: &[usize]) -> Vec<u64> {
    let mut out = Vec::with_capacity(ks.len());
    let mut start = 0;
    for &k in ks {
        let (_, x, _) = v[start..].select_nth_unstable(k - start);
        out.push(*x);
        start = k + 1;
    }
    out
}

/// Keys of the non-NaN values of runs of [`RUN`] values, one run every `stride` values of each
/// chunk, starting at a phase fixed by the chunk's origin (so a chunk shorter than `stride` holds
/// a run with probability `len / stride`), with the number of keys each run gave, runs in the
/// order of their keys. At most `bound` keys (the caller's reservation).
fn sample_keys<T: QElem>(
    src: &dyn ChunkSource,
    stride: u64,
    bound: usize,
) -> Result<(Vec<u64>, Vec<u32>)> {
    let out = Mutex::new((Vec::with_capacity(bound), Vec::with_capacity(bound / RUN)));
    visit_chunks(
        src,
        true,
        &|_| {},
        || Ok(()),
        |_, c| {
            let data = c.as_slice::<T>();
            // The chunk's phase: a hash of its origin.
            let i = c.region.origin.iter().fold(0u64, |h, &o| {
                (h ^ o).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
            });
            let (mut keys, mut runs) = (Vec::new(), Vec::new());
            let mut p = i % stride;
            while p < data.len() as u64 {
                let run = &data[p as usize..(p as usize + RUN).min(data.len())];
                let before = keys.len();
                keys.extend(run.iter().filter(|v| !v.nan()).map(|v| v.key()));
                runs.push((keys.len() - before) as u32);
                p += stride;
            }
            let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
            o.0.extend_from_slice(&keys);
            o.1.extend_from_slice(&runs);
            Ok(())
        },
    )?;
    Ok(out.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// How much more a quantile of this sample of runs varies than one of as many independent
/// values: the variance, across runs, of the number of keys below the sample's median, over
/// its value for independent values (cluster sampling's design effect), in `[1, RUN]`. Data that
/// is alike within a run (a slowly varying series, repeated blocks) widens the brackets by its
/// square root instead of missing. Integer sums and an exact median, so the same sample in any
/// order gives the same figure.
fn design_effect(keys: &[u64], runs: &[u32]) -> f64 {
    let mut copy = keys.to_vec();
    let mid = copy.len() / 2;
    let (_, &mut pivot, _) = copy.select_nth_unstable(mid);
    drop(copy);
    let (mut b1, mut n1, mut bb, mut bn, mut nn) = (0u128, 0u128, 0u128, 0u128, 0u128);
    let mut at = 0;
    for &len in runs {
        let run = &keys[at..at + len as usize];
        at += len as usize;
        let b = run.iter().filter(|&&k| k < pivot).count() as u128;
        let n = u128::from(len);
        (b1, n1, bb, bn, nn) = (b1 + b, n1 + n, bb + b * b, bn + b * n, nn + n * n);
    }
    let p = b1 as f64 / n1.max(1) as f64;
    if !(p > 0.0 && p < 1.0) {
        return 1.0;
    }
    // Sum over runs of (b - n p)^2.
    let s = bb as f64 - 2.0 * p * bn as f64 + p * p * nn as f64;
    (s / (n1 as f64 * p * (1.0 - p))).clamp(1.0, RUN as f64)
}

/// What the bracket pass found.
struct Tallies {
    nan: u64,
    /// Per bracket: non-NaN keys below it, and inside it.
    below: Vec<u64>,
    inside: Vec<u64>,
    /// Per bracket: the keys inside, or `None` when they outgrew the allowance.
    collected: Vec<Option<Vec<u64>>>,
}

/// Counts of the bracket pass (per worker, then in all).
#[derive(Clone, Copy)]
struct Counts {
    nan: u64,
    below: [u64; CLASSIFY_MAX],
    inside: [u64; CLASSIFY_MAX],
}

impl Counts {
    fn new() -> Counts {
        Counts {
            nan: 0,
            below: [0; CLASSIFY_MAX],
            inside: [0; CLASSIFY_MAX],
        }
    }

    fn add(&mut self, o: &Counts) {
        self.nan += o.nan;
        for j in 0..CLASSIFY_MAX {
            self.below[j] += o.below[j];
            self.inside[j] += o.inside[j];
        }
    }
}

/// Per-worker state of the bracket pass: counts and a local buffer of keys per bracket.
struct Local {
    counts: Counts,
    bufs: Vec<Vec<u64>>,
    _res: memory::Reservation,
}

/// One pass: [`Tallies`] for the disjoint sorted brackets `[los[j], his[j]]`, collecting at most
/// `allow[j]` keys for bracket `j`.
fn bracket_pass<T: QElem>(
    src: &dyn ChunkSource,
    los: &[u64],
    his: &[u64],
    allow: &[u64],
    progress: Progress<'_>,
) -> Result<Tallies> {
    let nb = los.len();
    let shared: Vec<Mutex<Option<Vec<u64>>>> = allow
        .iter()
        .map(|&a| Mutex::new(Some(Vec::with_capacity(a as usize))))
        .collect();
    // Appends to bracket `j`'s keys, or drops them all once they would outgrow the allowance.
    let append = |j: usize, keys: &[u64]| {
        let mut g = shared[j].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = g.as_mut() {
            if (v.len() + keys.len()) as u64 > allow[j] {
                *g = None;
            } else {
                v.extend_from_slice(keys);
            }
        }
    };
    let totals = Mutex::new(Counts::new());
    fold_chunks(
        src,
        progress,
        || {
            // A buffer may grow to twice `LOCAL_KEYS` before it is handed on.
            let bytes = (nb * 2 * LOCAL_KEYS * 8) as u64;
            Ok(Local {
                counts: Counts::new(),
                bufs: (0..nb).map(|_| Vec::with_capacity(LOCAL_KEYS)).collect(),
                _res: memory::global().reserve(bytes, "quantile key buffers")?,
            })
        },
        |s, c| {
            let bufs = &mut s.bufs;
            bracket_chunk::<T, _>(c.as_slice::<T>(), los, his, &mut s.counts, |j, keys| {
                let buf = &mut bufs[j];
                buf.extend_from_slice(keys);
                if buf.len() >= LOCAL_KEYS {
                    append(j, buf);
                    buf.clear();
                }
            });
            Ok(())
        },
        |s| {
            totals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&s.counts);
            for (j, b) in s.bufs.iter().enumerate() {
                if !b.is_empty() {
                    append(j, b);
                }
            }
            Ok(())
        },
    )?;
    let t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Tallies {
        nan: t.nan,
        below: t.below[..nb].to_vec(),
        inside: t.inside[..nb].to_vec(),
        collected: shared
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect(),
    })
}

/// Counts one chunk into `counts` and hands the keys inside bracket `j` to `out(j, keys)`.
/// Keys are computed a piece at a time with NaN's key replaced by `u64::MAX` (above every
/// bracket, whose ends are keys of non-NaN values, so NaN is neither below nor inside one);
/// the counts are loops of compares that vectorise.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn bracket_chunk<T: QElem, F: FnMut(usize, &[u64])>(
    data: &[T],
    los: &[u64],
    his: &[u64],
    counts: &mut Counts,
    mut out: F,
) {
    let mut keys = [0u64; QBLOCK];
    let mut hits = [0u64; 64];
    for piece in prefetch::pieces(data) {
        let keys = &mut keys[..piece.len()];
        for (k, &v) in keys.iter_mut().zip(piece) {
            let is_nan = v.nan();
            counts.nan += u64::from(is_nan);
            *k = v.key() | u64::from(is_nan).wrapping_neg();
        }
        for (j, (&l, &h)) in los.iter().zip(his).enumerate() {
            counts.below[j] += keys.iter().map(|&k| u64::from(k < l)).sum::<u64>();
            // The keys inside as a bit mask per 64 (a loop of compares that vectorises), so
            // the few keys inside are picked out by their set bits, not by a serial compaction
            // of every key (which took half the pass with 0.4 % of keys inside).
            for ks in keys.chunks(64) {
                let mut bits = 0u64;
                for (i, &k) in ks.iter().enumerate() {
                    bits |= u64::from((k >= l) & (k <= h)) << i;
                }
                if bits == 0 {
                    continue;
                }
                counts.inside[j] += u64::from(bits.count_ones());
                let mut m = 0;
                while bits != 0 {
                    hits[m] = ks[bits.trailing_zeros() as usize];
                    m += 1;
                    bits &= bits - 1;
                }
                out(j, &hits[..m]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::histogram::test_source::MemSource;
    use crate::kernels::quantile::tests::naive;
    use crate::pipeline::no_progress;

    /// `(lo, hi, estimated keys inside)`.
    type Bracket = (u64, u64, f64);

    /// A result for `n` quantiles before [`resolve`] fills it.
    fn blank(n: usize) -> QuantileResult {
        QuantileResult {
            values: vec![f64::NAN; n],
            dtype: crate::dtype::DType::F64,
            passes: 1,
            sampled: 0,
            count: 0,
            nan_count: 0,
        }
    }

    /// Brackets that miss the ranks (below, above, between them) or outgrow their allowance
    /// still give exact results, through refinement passes over exactly counted intervals.
    #[test]
    fn misplaced_and_overflowing_brackets_are_refined() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut v: Vec<f64> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 100.0
            })
            .collect();
        v[7] = f64::NAN;
        v[9] = -f64::NAN;
        v[11] = f64::INFINITY;
        v[13] = 25.0; // ties
        v[14] = 25.0;
        let src = MemSource::vec(&v, 4096);
        let qs = [0.0, 0.1, 0.5, 0.9, 1.0];
        let opts = QuantileOptions {
            skip_nan: true,
            ..Default::default()
        };
        let want = naive(&v, &qs, &opts);
        let k = |f: f64| f.key();
        let top = f64::INFINITY.key();
        let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        s.sort_by(f64::total_cmp);
        let cases: Vec<(&str, Vec<Bracket>)> = vec![
            (
                "right",
                vec![
                    (0, k(-79.0), 1e4),
                    (k(-1.0), k(1.0), 1e3),
                    (k(79.0), top, 1e4),
                ],
            ),
            ("below all", vec![(k(-99.0), k(-98.0), 1e3)]),
            ("above all", vec![(k(98.0), k(99.0), 1e3)]),
            (
                "between",
                vec![(k(-50.0), k(-40.0), 1e4), (k(10.0), k(20.0), 1e4)],
            ),
            ("overflowing", vec![(0, top, 0.0)]),
            ("ends only", vec![(0, k(-99.9), 10.0), (k(99.9), top, 10.0)]),
            // Ends on data values, the ranks of q = 0.1 and 0.5 exactly on them, and a tie.
            (
                "on data",
                vec![
                    (k(s[4999]), k(s[5000]), 10.0),
                    (k(s[24998]), k(s[24999]), 10.0),
                    (k(25.0), k(25.0), 10.0),
                ],
            ),
        ];
        for (name, brackets) in cases {
            let mut r = blank(qs.len());
            let w = Want::Quantiles(qs.to_vec());
            let done = resolve::<f64>(&src, &w, &opts, 1 << 30, &brackets, 1, &mut r, &no_progress)
                .unwrap();
            assert!(done, "{name}");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&r.values), bits(&want), "{name}");
            assert_eq!((r.count, r.nan_count), (49_998, 2), "{name}");
            if name == "right" {
                assert_eq!(r.passes, 1, "{name}");
            } else {
                assert!(r.passes > 1, "{name}: {} passes", r.passes);
            }
        }
    }

    /// The same for `i64` with both extremes present (the largest key is `u64::MAX`), on 1, 2
    /// and 7 threads.
    #[test]
    fn integer_brackets_at_the_key_range_ends() {
        let mut v: Vec<i64> = (0..30_000i64).map(|i| i * 7919 % 30_011 - 15_000).collect();
        v[3] = i64::MAX;
        v[4] = i64::MIN;
        v[5] = i64::MAX;
        let qs = [0.0, 0.25, 0.5, 1.0];
        let opts = QuantileOptions::default();
        let want = naive(&v, &qs, &opts);
        let src = MemSource::vec(&v, 1000);
        let k = |x: i64| x.key();
        for brackets in [
            vec![(k(100), k(200), 1e3)],
            vec![(0, u64::MAX, 0.0)],
            vec![(0, k(-14_000), 1e3), (k(14_000), u64::MAX, 1e3)],
        ] {
            for threads in [1, 2, 7] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut r = blank(qs.len());
                let w = Want::Quantiles(qs.to_vec());
                let done = pool.install(|| {
                    resolve::<i64>(&src, &w, &opts, 1 << 30, &brackets, 1, &mut r, &no_progress)
                });
                assert!(done.unwrap());
                assert_eq!(r.values, want, "{brackets:?} on {threads} threads");
            }
        }
    }
}
