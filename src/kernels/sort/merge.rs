//! The k-way merge of sorted spilled runs, in rounds that use every thread.
//!
//! Each run is read through a buffer of its own. A *round* merges everything the buffers hold
//! that is at most the smallest last buffered key of any run not yet read to its end: nothing
//! still on disk can come before those elements, and the run whose buffer ends with that key
//! gives its whole buffer, so every round makes progress. The round's slices are cut into
//! pieces by splitter keys (sampled from every slice), each piece's place in the output is known
//! from binary searches, and the pieces are merged in parallel, each by a loser tree whose
//! matches are decided without branches (`select_unpredictable`, so random keys do not stall
//! the pipeline on mispredictions). The round's output goes to `emit` in order; then buffers
//! that have fallen below half full are topped up from their runs, in parallel.
//!
//! Equal keys are identical bits (the sort keys are a bijection; argsort pairs are distinct),
//! so ties may go either way without changing a byte of the output.

use std::hint::select_unpredictable;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;

use bytemuck::Pod;
use rayon::prelude::*;

use super::{Run, reserved_vec};
use crate::error::{Error, Result};
use crate::kernels::prefetch;
use crate::memory::MemoryBudget;
use crate::storage::direct::{Aligned, BLOCK};

/// Merged elements below which a round is merged on one thread.
const PAR_ROUND: usize = 1 << 16;
/// Pieces per thread in a parallel round, so uneven pieces still balance.
const PIECES_PER_THREAD: usize = 4;
/// Keys sampled from each slice to choose a round's splitters.
const SAMPLES_PER_SLICE: usize = 32;

/// Reads a run through a buffer. Byte `i` of `data` is byte `base + i` of the spill file; the
/// run's unmerged elements are `data[lo..hi]`. `base` and every read are aligned to `align`:
/// [`BLOCK`] when the file is read with `O_DIRECT`, else the element's alignment (at least 8
/// bytes). Reads are rounded out to it, so they may take bytes of the neighbouring runs, which
/// are never looked at. Every key size (1 to 16 bytes) divides the alignment, so elements stay
/// aligned in `data`.
struct RunReader<E> {
    run: Run,
    data: Aligned,
    base: u64,
    lo: usize,
    /// Bytes of `data` read from the file.
    filled: usize,
    /// Where the run ends in the file (bytes).
    end: u64,
    align: usize,
    /// Elements the buffer holds when full.
    cap: usize,
    _e: std::marker::PhantomData<E>,
}

impl<E: Pod> RunReader<E> {
    fn new(run: Run, cap: usize) -> RunReader<E> {
        let esize = size_of::<E>();
        let (align, len) = Self::layout(cap, run.file.direct.is_some());
        let start = run.start * esize as u64;
        let base = start / align as u64 * align as u64;
        RunReader {
            end: start + run.len * esize as u64,
            run,
            data: Aligned::with_align(len, align),
            base,
            lo: (start - base) as usize,
            filled: 0,
            align,
            cap,
            _e: std::marker::PhantomData,
        }
    }

    /// The alignment of reads and the buffer's length for `cap` elements: two alignment units
    /// more, so that however the unmerged elements sit in their first unit, a buffer less than
    /// half full has room for a whole unit.
    fn layout(cap: usize, direct: bool) -> (usize, usize) {
        let align = if direct {
            BLOCK as usize
        } else {
            align_of::<E>().max(8)
        };
        (
            align,
            (cap * size_of::<E>()).next_multiple_of(align) + 2 * align,
        )
    }

    /// Bytes the buffer takes (for the budget).
    fn bytes(cap: usize, direct: bool) -> u64 {
        let (align, len) = Self::layout(cap, direct);
        (len + align) as u64
    }

    /// End of the run's whole elements in `data`.
    fn hi(&self) -> usize {
        let end = ((self.end - self.base) as usize)
            .min(self.filled)
            .max(self.lo);
        self.lo + (end - self.lo) / size_of::<E>() * size_of::<E>()
    }

    fn left_unread(&self) -> bool {
        self.base + (self.filled as u64) < self.end
    }

    fn buffered(&self) -> &[E] {
        bytemuck::cast_slice(&self.data.get()[self.lo..self.hi()])
    }

    fn consume(&mut self, n: usize) {
        self.lo += n * size_of::<E>();
    }

    /// Whether the buffer should be topped up before the next round.
    fn wants_refill(&self) -> bool {
        let have = (self.hi() - self.lo) / size_of::<E>();
        self.left_unread() && (have == 0 || have * 2 < self.cap)
    }

    /// Moves the unmerged elements to the front (keeping the alignment) and fills the rest of
    /// the buffer from the run.
    fn refill(&mut self) -> Result<()> {
        let keep = self.lo.min(self.filled) / self.align * self.align;
        let filled = self.filled;
        self.data.get_mut().copy_within(keep..filled, 0);
        self.base += keep as u64;
        self.lo -= keep;
        self.filled -= keep;
        let want = (self.end - self.base).next_multiple_of(self.align as u64);
        let to = (self.data.len() as u64).min(want) as usize / self.align * self.align;
        let f = &self.run.file;
        let mut direct = f.direct.as_ref().filter(|_| !f.direct_failed.load(Relaxed));
        while self.filled < to {
            let at = self.base + self.filled as u64;
            let buf = &mut self.data.get_mut()[self.filled..to];
            let got = match direct {
                Some(d) => {
                    debug_assert!(
                        at.is_multiple_of(BLOCK)
                            && buf.len().is_multiple_of(BLOCK as usize)
                            && (buf.as_ptr() as usize).is_multiple_of(BLOCK as usize),
                        "unaligned direct read"
                    );
                    match d.read_at(buf, at) {
                        // A file system that takes direct writes but not these reads: the
                        // ordinary handle from now on, for every reader of the file.
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            f.direct_failed.store(true, Relaxed);
                            direct = None;
                            continue;
                        }
                        r => r,
                    }
                }
                None => f.file.read_at(buf, at),
            };
            match got {
                Ok(0) => break,
                Ok(n) => {
                    #[cfg(test)]
                    if direct.is_some() {
                        super::tests::DIRECT_READS.fetch_add(1, Relaxed);
                    }
                    self.filled += n;
                    // A short direct read is the end of the file (the next offset would be
                    // unaligned).
                    if direct.is_some() && !n.is_multiple_of(self.align) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&f.dir, "read sort spill file", e)),
            }
        }
        let at = self.base + self.filled as u64;
        if self.filled < to && at < self.end {
            return Err(Error::Invalid(format!(
                "{}: sort spill file ended early (at byte {at}, the run goes to byte {})",
                f.dir.display(),
                self.end
            )));
        }
        Ok(())
    }
}

/// K-way merges sorted `runs`, emitting their elements in order in blocks; `mem` bytes are split
/// between the runs' read buffers with their alignment slack (half) and the round's output block
/// (as long as the buffers together), all reserved in `budget`. `mem` must give each run at
/// least [`min_reader_bytes`] (the plan's fan-in sees to it); below that the buffers exceed it.
pub(super) fn merge<E: Pod + Ord + Send + Sync>(
    runs: Vec<Run>,
    mem: u64,
    budget: &MemoryBudget,
    emit: &mut dyn FnMut(&[E]) -> Result<()>,
) -> Result<()> {
    let k = runs.len();
    if k == 0 {
        return Ok(());
    }
    // Each reader's buffer, with its alignment slack, in half the memory (a whole number of
    // alignment units: a buffer never holds more elements than `out` has room for).
    let direct = runs.iter().any(|r| r.file.direct.is_some());
    let slack = RunReader::<E>::bytes(0, direct);
    let unit = RunReader::<E>::layout(0, direct).0 as u64;
    let share = (mem / (2 * k as u64)).saturating_sub(slack) / unit * unit;
    let per = (share / size_of::<E>() as u64).max(1) as usize;
    let mut readers = Vec::with_capacity(k);
    let mut reservations = Vec::with_capacity(k + 1);
    for run in runs {
        let bytes = RunReader::<E>::bytes(per, run.file.direct.is_some());
        reservations.push(budget.reserve(bytes, "sort merge buffer")?);
        readers.push(RunReader::new(run, per));
    }
    // A round merges at most what the buffers hold.
    let most: usize = readers.iter().map(|r| r.data.len() / size_of::<E>()).sum();
    let (mut out, res) = reserved_vec::<E>(budget, most, "sort merge buffer")?;
    reservations.push(res);
    out.resize(most, E::zeroed());
    loop {
        readers
            .par_iter_mut()
            .filter(|r| r.wants_refill())
            .try_for_each(|r| r.refill())?;
        // Nothing left on disk sorts before the smallest last buffered key of a run with more
        // to read.
        let bound = readers
            .iter()
            .filter(|r| r.left_unread())
            .filter_map(|r| r.buffered().last().copied())
            .min();
        let slices: Vec<&[E]> = readers
            .iter()
            .map(|r| {
                let b = r.buffered();
                match bound {
                    Some(v) => &b[..b.partition_point(|x| *x <= v)],
                    None => b,
                }
            })
            .collect();
        let m: usize = slices.iter().map(|s| s.len()).sum();
        if m == 0 {
            debug_assert!(readers.iter().all(|r| !r.left_unread()));
            return Ok(());
        }
        let taken: Vec<usize> = slices.iter().map(|s| s.len()).collect();
        merge_slices(&slices, &mut out[..m]);
        emit(&out[..m])?;
        for (r, t) in readers.iter_mut().zip(taken) {
            r.consume(t);
        }
    }
}

/// The least memory a merge should have per run: one alignment unit of elements plus the
/// alignment slack, for the read buffer and again for its share of the output block.
pub(super) fn min_reader_bytes<E: Pod>(direct: bool) -> u64 {
    let (unit, _) = RunReader::<E>::layout(0, direct);
    2 * (RunReader::<E>::bytes(0, direct) + unit as u64)
}

/// Merges the sorted `slices` into `out` (exactly their total length), in parallel pieces when
/// there is enough to share. Equal keys must be identical bits (sort keys; argsort pairs are
/// all distinct): ties are broken in any order.
pub(super) fn merge_slices<E: Pod + Ord + Send + Sync>(slices: &[&[E]], out: &mut [E]) {
    merge_slices_from(slices, out, PAR_ROUND);
}

/// [`merge_slices`], in parallel from `par_min` elements.
pub(super) fn merge_slices_from<E: Pod + Ord + Send + Sync>(
    slices: &[&[E]],
    out: &mut [E],
    par_min: usize,
) {
    let m = out.len();
    assert_eq!(m, slices.iter().map(|s| s.len()).sum::<usize>());
    let threads = rayon::current_num_threads();
    if threads <= 1 || m < par_min.max(1) {
        merge_piece(slices, out);
        return;
    }
    // Splitters: evenly spaced keys of a sample taken evenly from every slice.
    let mut sample: Vec<E> = slices
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            let step = s.len().div_ceil(SAMPLES_PER_SLICE);
            s.iter().step_by(step).copied()
        })
        .collect();
    sample.sort_unstable();
    let pieces = threads * PIECES_PER_THREAD;
    // Piece p takes, from every slice, the keys in [splitter p - 1, splitter p).
    let mut cuts: Vec<Vec<usize>> = Vec::with_capacity(pieces + 1);
    cuts.push(vec![0; slices.len()]);
    for p in 1..pieces {
        let s = sample[p * sample.len() / pieces];
        cuts.push(
            slices
                .iter()
                .map(|x| x.partition_point(|y| *y < s))
                .collect(),
        );
    }
    cuts.push(slices.iter().map(|s| s.len()).collect());
    let mut jobs = Vec::with_capacity(pieces);
    let mut rest = out;
    for w in cuts.windows(2) {
        let parts: Vec<&[E]> = slices
            .iter()
            .zip(w[0].iter().zip(&w[1]))
            .map(|(s, (&a, &b))| &s[a..b])
            .collect();
        let len = parts.iter().map(|s| s.len()).sum();
        let (head, tail) = rest.split_at_mut(len);
        rest = tail;
        jobs.push((parts, head));
    }
    debug_assert!(rest.is_empty());
    jobs.into_par_iter()
        .for_each(|(parts, o)| merge_piece(&parts, o));
}

/// Merges `slices` into `out` on this thread.
fn merge_piece<E: Pod + Ord>(slices: &[&[E]], out: &mut [E]) {
    let live: Vec<&[E]> = slices.iter().copied().filter(|s| !s.is_empty()).collect();
    match live.len() {
        0 => {}
        1 => out.copy_from_slice(live[0]),
        2 => merge_two(live[0], live[1], out),
        _ => merge_tree(&live, out),
    }
}

/// Two-way merge without data-dependent branches.
fn merge_two<E: Pod + Ord>(a: &[E], b: &[E], out: &mut [E]) {
    let (mut i, mut j) = (0, 0);
    let mut o = 0;
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let take_b = y < x;
        out[o] = select_unpredictable(take_b, y, x);
        i += usize::from(!take_b);
        j += usize::from(take_b);
        o += 1;
    }
    out[o..o + a.len() - i].copy_from_slice(&a[i..]);
    o += a.len() - i;
    out[o..].copy_from_slice(&b[j..]);
}

/// K-way merge (k >= 3 non-empty slices) with a loser tree padded to a power of two: every
/// element replays the same number of matches, each decided by selects, not branches. The
/// nodes hold the losers' keys beside their slice indices, so a match reads no slice. A drained
/// slice's head is the all-ones key, which no key exceeds; exactly `out.len()` elements are
/// taken, so it can only win a tie with a real all-ones key, whose bits it shares.
fn merge_tree<E: Pod + Ord>(slices: &[&[E]], out: &mut [E]) {
    let k = slices.len();
    let kp = k.next_power_of_two();
    let levels = kp.trailing_zeros();
    let mut sentinel = E::zeroed();
    bytemuck::bytes_of_mut(&mut sentinel).fill(0xff);
    let mut pos = vec![0usize; kp];
    let head = |i: usize, p: usize| -> E {
        slices
            .get(i)
            .and_then(|s| s.get(p))
            .copied()
            .unwrap_or(sentinel)
    };
    // Build: winners bottom-up; node j keeps the loser of its match.
    let mut win_key = vec![sentinel; 2 * kp];
    let mut win_run = vec![0usize; 2 * kp];
    let mut lose_key = vec![sentinel; kp];
    let mut lose_run = vec![0usize; kp];
    for i in 0..kp {
        win_key[kp + i] = head(i, 0);
        win_run[kp + i] = i;
    }
    for j in (1..kp).rev() {
        let (a, b) = (2 * j, 2 * j + 1);
        let b_wins = win_key[b] < win_key[a];
        let (w, l) = if b_wins { (b, a) } else { (a, b) };
        win_key[j] = win_key[w];
        win_run[j] = win_run[w];
        lose_key[j] = win_key[l];
        lose_run[j] = win_run[l];
    }
    let (mut w, mut hw) = (win_run[1], win_key[1]);
    for o in out.iter_mut() {
        *o = hw;
        pos[w] += 1;
        hw = head(w, pos[w]);
        if let Some(s) = slices.get(w).and_then(|s| s.get(pos[w]..pos[w] + 1)) {
            prefetch::ahead(s);
        }
        let mut j = (kp + w) >> 1;
        for _ in 0..levels {
            let (lk, lr) = (lose_key[j], lose_run[j]);
            let swap = lk < hw;
            lose_key[j] = select_unpredictable(swap, hw, lk);
            lose_run[j] = select_unpredictable(swap, w, lr);
            hw = select_unpredictable(swap, lk, hw);
            w = select_unpredictable(swap, lr, w);
            j >>= 1;
        }
    }
}
