//! The grouped path of a flat [`sort`](super::sort): splitters instead of spilled runs.
//!
//! A strided sample of the keys (at most [`SAMPLE`], taken at fixed positions of each chunk)
//! cuts the key space into ranges, *groups*, each expected to hold a small share of a wave
//! buffer; a key frequent in the sample gets a single-key group of its own, which is only
//! counted, never stored. One scan counts every group exactly; consecutive groups are then packed
//! into *waves* that fit a buffer. For each wave, one more scan of the input copies the wave's
//! keys into their groups' places in the buffer (keys classified 8 at a time by
//! `simd::classify`). The first two waves need no scan of their own: the counting scan also
//! copies the keys of the first groups (all of them when everything fits one buffer; else as
//! many as fill both wave buffers) into *rooms* sized from the sample with slack; should a room
//! overflow (the sample misled), those keys are gathered by ordinary scans instead. Each
//! wave's groups are sorted independently in the caller's thread pool (one per thread, a lone
//! large one with all threads; 64-bit keys by the vector quicksort of `simd.rs`), and the
//! buffer goes to an output thread that converts keys back to values
//! (straight into the writer's staging memory when it takes chunks in place) and writes them,
//! while the next wave is gathered into the other buffer. When there is a single wave (every
//! stored key fits one buffer) it is sorted a batch of one group per thread at a time, each
//! batch written while the next is sorted. Waves are gathered by re-reading the input, mapped
//! or page-cached, which is far cheaper than writing and reading a spill file of most of it;
//! but when the keys left after the counting scan's two waves are expected to be one wave and
//! at most half the input, that scan writes them to a spill file and the last wave is gathered
//! from it, sparing a scan of the whole input.
//!
//! The path is taken when the input is at most [`MAX_WAVES`] buffers (and no group overflows a
//! buffer once counted); otherwise the caller falls back to the external merge. The output is
//! the sorted multiset of the keys, so its bytes do not depend on how groups, waves, chunks or
//! threads fell.

use std::sync::mpsc::{channel, sync_channel};

use bytemuck::Pod;
use rayon::prelude::*;

use super::simd::{self, SortSlice};
use super::{Ctx, SortKey, SortReport, max_chunk_elems, recast, writer_gone};
use crate::error::{Error, Result};
use crate::kernels::prefetch;
use crate::memory::{self, Reservation};
use crate::pipeline::{map_chunks, no_progress};
use crate::storage::{ArrayWriter, Buffer, Chunk};

/// Keys sampled to choose the groups.
const SAMPLE: usize = 1 << 16;
/// Most waves (scans of the input after the counting one) before the external merge is cheaper.
pub(super) const MAX_WAVES: u64 = 8;
/// Groups per thread in a full wave, so the parallel group sorts balance.
const GROUPS_PER_THREAD: usize = 2;
/// Keys a count-scan job stages (over all early groups and the trash slot, give or take 64)
/// before copying them to their rooms.
const STAGE_KEYS: usize = 1 << 18;
/// Keys classified at a time (in a stack block) by the count and gather scans.
const BLOCK: usize = 512;
/// Most groups (the classification is a binary search over their bounds).
const MAX_GROUPS: usize = 4096;
/// When everything fits one buffer, groups are sized as if it were this many waves, so the
/// output thread's batches (a group per thread) are small and the last batch's write, which
/// nothing overlaps, is short.
const WAVES_IN_MEMORY: u64 = 4;
/// Smallest notional wave (elements) an in-memory sort is cut into groups by.
const MIN_WAVE: u64 = 1 << 16;

/// Unsigned key types, widened to `u64` for the group bounds.
pub(super) trait KeyBits: Pod + SortSlice + Sync {
    /// The key as a `u64` (order preserving).
    fn to_u64(self) -> u64;
    /// The inverse of [`to_u64`](Self::to_u64) for values in range.
    fn from_u64(v: u64) -> Self;
}

macro_rules! key_bits {
    ($($t:ty),*) => {$(
        impl KeyBits for $t {
            #[inline]
            fn to_u64(self) -> u64 { self as u64 }
            #[inline]
            fn from_u64(v: u64) -> $t { v as $t }
        }
    )*};
}
key_bits!(u8, u16, u32, u64);

/// One group of a wave, in key order.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// `len` keys stored in the wave buffer (at an offset the wave's message gives).
    Stored(usize),
    /// `count` copies of one key, never stored.
    Repeat(u64, u64),
}

/// A range of consecutive groups whose stored keys fit one buffer.
struct Wave {
    /// First group and one past the last.
    groups: std::ops::Range<usize>,
    /// Stored elements.
    stored: usize,
}

/// The key-range groups: group `g` holds keys in `lowers[g]..lowers[g + 1]` (the last one up to
/// the largest key); `single[g]` when it holds exactly one key.
pub(super) struct Groups {
    pub(super) lowers: Vec<u64>,
    pub(super) single: Vec<bool>,
    /// `lowers` padded to a power of two with `u64::MAX`, for [`of`](Self::of).
    padded: Vec<u64>,
}

impl Groups {
    /// Chooses groups of about `per_group` sample keys from the sorted `sample`; a key that fills
    /// at least half a group by itself gets a group of its own.
    pub(super) fn from_sample(sample: &[u64], per_group: usize) -> Groups {
        let per_group = per_group.max(1);
        let heavy = (per_group / 2).max(2);
        let mut lowers = vec![0u64];
        let mut single = vec![false];
        let mut acc = 0usize;
        let mut i = 0;
        while i < sample.len() {
            let k = sample[i];
            let mut j = i + 1;
            while j < sample.len() && sample[j] == k {
                j += 1;
            }
            let run = j - i;
            if run >= heavy {
                // Close the current group below k (unless it starts at k), then [k, k + 1).
                if *lowers.last().expect("one group") != k {
                    lowers.push(k);
                    single.push(true);
                } else {
                    *single.last_mut().expect("one group") = true;
                }
                if k != u64::MAX {
                    lowers.push(k + 1);
                    single.push(false);
                }
                acc = 0;
            } else {
                acc += run;
                if acc >= per_group && j < sample.len() && lowers.len() < MAX_GROUPS {
                    // The next distinct key starts a new group.
                    lowers.push(sample[j]);
                    single.push(false);
                    acc = 0;
                }
            }
            i = j;
        }
        // A group [k, k + 1) is single even when not marked heavy.
        for g in 0..lowers.len() {
            let next = lowers.get(g + 1).copied();
            if next == lowers[g].checked_add(1) || (next.is_none() && lowers[g] == u64::MAX) {
                single[g] = true;
            }
        }
        let mut padded = lowers.clone();
        padded.resize(lowers.len().next_power_of_two(), u64::MAX);
        Groups {
            lowers,
            single,
            padded,
        }
    }

    fn len(&self) -> usize {
        self.lowers.len()
    }

    /// The group of key `k`: the last bound at most `k` (bound 0 is 0), by a branchless search
    /// over the bounds padded to a power of two with `u64::MAX` (a key of `u64::MAX` lands in
    /// the last real group).
    #[cfg(test)]
    pub(super) fn of(&self, k: u64) -> usize {
        simd::classify_one(&self.padded, self.last(), k) as usize
    }

    /// The groups of `keys`, into `out` (the same length); [`of`](Self::of) of each, 8 keys
    /// at a time where the CPU has AVX-512.
    pub(super) fn classify(&self, keys: &[u64], out: &mut [u32]) {
        simd::classify(&self.padded, self.last(), keys, out);
    }

    fn last(&self) -> u32 {
        (self.lowers.len() - 1) as u32
    }
}

/// Sizes of the grouped path: wave buffer elements and group size target.
struct GroupPlan {
    /// Elements of the one buffer used when every stored key fits it.
    all_elems: usize,
    /// Elements of each of the two wave buffers otherwise.
    wave_elems: usize,
    /// Elements per group wanted.
    per_group: usize,
}

/// Plans the grouped path, or `None` when the input is too large for it (more than
/// [`MAX_WAVES`] buffers).
fn group_plan<E>(ctx: &Ctx<'_>, n: u64, out_chunk_bytes: u64) -> Option<GroupPlan> {
    let esize = size_of::<E>() as u64;
    let limit = ctx.budget.limit();
    let threads = rayon::current_num_threads().max(1);
    // Input chunks in flight, the output chunks, the sample, and the counting scan's staging
    // (at most `STAGE_KEYS + 64` keys per thread).
    let staging = threads as u64 * (STAGE_KEYS as u64 + 64) * esize;
    let fixed = ctx.input_in_flight() + 3 * out_chunk_bytes + 2 * (SAMPLE as u64) * 8 + staging;
    let left = limit.checked_sub(fixed)?;
    let cap = ctx.opts.run_bytes.map_or(left, |r| r.min(left));
    let all = cap / esize;
    // Otherwise two buffers: one gathered while the other is sorted and written.
    let buf = cap / 2 / esize;
    if buf == 0 || n > MAX_WAVES * buf {
        return None;
    }
    // When it all fits, groups are still small enough for the sorting and writing to overlap.
    let sort_wave = (n.div_ceil(WAVES_IN_MEMORY) * 5 / 4).max(MIN_WAVE);
    let wave = if n <= all { sort_wave } else { buf };
    // Groups fill ~85 % of a wave, so the sample's errors rarely split a wave.
    let per_group = ((wave as f64 * 0.85) as usize / (GROUPS_PER_THREAD * threads)).max(1);
    Some(GroupPlan {
        all_elems: all as usize,
        wave_elems: buf as usize,
        per_group,
    })
}

/// Sorts the flattened source through key-range groups (see the [module docs](self)); `None`
/// when the input is too large for this path, before anything is written.
pub(super) fn grouped_sort<T: SortKey>(
    ctx: &Ctx<'_>,
    writer: &dyn ArrayWriter,
) -> Result<Option<SortReport>>
where
    T::Key: KeyBits,
{
    let info = ctx.src.info();
    let n = info.numel();
    let layout = writer.layout().clone();
    let out_chunk = max_chunk_elems(&layout) as usize;
    let Some(plan) = group_plan::<T::Key>(ctx, n, (out_chunk * size_of::<T>()) as u64) else {
        return Ok(None);
    };
    if n == 0 {
        return Ok(None);
    }
    let _meta = ctx.budget.reserve(2 * (SAMPLE as u64) * 8, "sort sample")?;
    // 1. Sample: `m` keys at fixed positions spread over the chunks in proportion to their sizes.
    let m = (SAMPLE as u64).min(n);
    let nchunks = info.layout.num_chunks();
    let mut starts = Vec::with_capacity(nchunks + 1);
    let mut acc = 0u64;
    for i in 0..nchunks {
        starts.push(acc);
        acc += info.layout.chunk_region(i).numel();
    }
    starts.push(acc);
    let mut sample: Vec<u64> = Vec::with_capacity(m as usize);
    let batch = rayon::current_num_threads().max(1);
    let mut first = 0;
    while first < nchunks {
        let last = (first + batch).min(nchunks);
        let parts: Vec<Vec<u64>> = (first..last)
            .into_par_iter()
            .map(|i| {
                let (a, b) = (starts[i], starts[i + 1]);
                let lo = (a as u128 * m as u128 / n as u128) as u64;
                let hi = (b as u128 * m as u128 / n as u128) as u64;
                if hi == lo {
                    return Ok(Vec::new());
                }
                let c = ctx.src.read_chunk_sparse(i)?;
                let vals = c.as_slice::<T>();
                let len = (b - a) as u128;
                let s = (hi - lo) as u128;
                Ok((0..s)
                    .map(|j| {
                        let p = ((2 * j + 1) * len / (2 * s)) as usize;
                        vals[p].to_key().to_u64()
                    })
                    .collect())
            })
            .collect::<Result<_>>()?;
        for p in parts {
            sample.extend(p);
        }
        first = last;
    }
    simd::sort(&mut sample);
    // Scale: `per_group` elements are about `per_group * m / n` sample keys.
    let per_sample = ((plan.per_group as u128 * m as u128).div_ceil(n as u128) as usize).max(1);
    let groups = Groups::from_sample(&sample, per_sample);
    let g = groups.len();
    // Room for each group's keys, from its sample keys with slack for the sample's error (the
    // sample is all keys when there are at most `SAMPLE`).
    let room: Vec<(usize, usize)> = (0..g)
        .map(|gi| {
            let lo = sample.partition_point(|&k| k < groups.lowers[gi]);
            let hi = groups
                .lowers
                .get(gi + 1)
                .map_or(sample.len(), |&h| sample.partition_point(|&k| k < h));
            let s = (hi - lo) as f64;
            let slack = s + s / 16.0 + 8.0 * s.sqrt() + 8.0;
            let scale = n as f64 / m as f64;
            ((slack * scale).ceil() as usize, (s * scale) as usize)
        })
        .collect();
    // (Room, expected keys) of the stored groups.
    let (room, expected): (Vec<usize>, Vec<usize>) = room.into_iter().unzip();
    drop(sample);
    // 2. Count every group of every chunk exactly (the table gives each chunk its places). The
    // same scan collects the keys of the first groups, as many as their rooms let fit one
    // buffer when everything does, else both wave buffers, so those waves need no gather scan.
    let table_bytes = (nchunks * g * 8) as u64;
    if table_bytes > ctx.budget.limit() / 16 {
        return Ok(None);
    }
    let _table_res = ctx.budget.reserve(table_bytes, "sort group counts")?;
    let stored_room: usize = (0..g).filter(|&i| !groups.single[i]).map(|i| room[i]).sum();
    let expected_stored: usize = (0..g)
        .filter(|&i| !groups.single[i])
        .map(|i| expected[i])
        .sum();
    // Everything collected early, into one buffer, when the rooms fit it; nothing when only the
    // keys themselves are expected to (one gather scan into an exact buffer is then better than
    // waves); otherwise the groups that fit the two wave buffers, so two waves need no gather
    // scan of their own.
    let (early_cap, early_all, early_bufs_max) = if stored_room <= plan.all_elems {
        (stored_room, true, 1)
    } else if expected_stored <= plan.all_elems {
        (0, false, 0)
    } else {
        (plan.wave_elems, false, 2)
    };
    // (group, room) of the groups collected early, in key order; `early_start[b]` is the first
    // of them in early buffer `b`; `early_end` is the first group after them.
    let mut early: Vec<(usize, usize)> = Vec::new();
    let mut early_start: Vec<usize> = Vec::new();
    let mut early_end = g;
    let mut used = 0usize;
    for gi in 0..g {
        if groups.single[gi] {
            continue;
        }
        let r = room[gi];
        let full = used + r > early_cap || early_start.is_empty();
        if full || early.len() == MAX_GROUPS {
            // The next buffer, if there is one and the group fits it by itself.
            if early_start.len() < early_bufs_max && r <= early_cap && early.len() < MAX_GROUPS {
                early_start.push(early.len());
                used = 0;
            } else {
                early_end = gi;
                break;
            }
        }
        early.push((gi, r));
        used += r;
    }
    if early.is_empty() {
        early_end = 0;
        early_start.clear();
    }
    let esize = size_of::<T::Key>();
    let early_len = if early_all { used } else { plan.wave_elems };
    // The stored keys left after the early groups, when they are expected to fill at most one
    // wave buffer and half the input: the counting scan then writes them to a spill file, and
    // their wave is gathered from it instead of from another scan of the whole input.
    let left_expected: usize = (early_end..g)
        .filter(|&i| !groups.single[i])
        .map(|i| expected[i])
        .sum();
    let mut spill = if !early_all
        && !early.is_empty()
        && left_expected > 0
        && left_expected <= plan.wave_elems
        && (left_expected as u64) <= n / 2
    {
        // More than a wave buffer's keys could not be gathered from it anyway.
        Spill::create(
            &ctx.temp_dir(),
            (plan.wave_elems * size_of::<T::Key>()) as u64,
        )
    } else {
        None
    };
    // At most `STAGE_KEYS + 64` keys in all (early groups are at most `MAX_GROUPS`), the spill
    // slot included, and the trash slot's one key.
    let slots = early.len() + 1 + usize::from(spill.is_some());
    let stage_keys = (STAGE_KEYS / slots).clamp(64, 4096);
    // The early groups' and the spill's slots, then the trash's one key.
    let staged_len = (early.len() + 1) * stage_keys + 1;
    let stage_bytes = (rayon::current_num_threads().max(1) * staged_len * esize) as u64;
    let mut early_res = Vec::with_capacity(early_start.len());
    let mut early_bufs: Vec<Vec<T::Key>> = Vec::with_capacity(early_start.len());
    for _ in &early_start {
        early_res.push(
            ctx.budget
                .reserve((early_len * esize) as u64, "sort group buffer")?,
        );
        early_bufs.push(vec![<T::Key as bytemuck::Zeroable>::zeroed(); early_len]);
    }
    let stage_res = ctx.budget.reserve(stage_bytes, "sort staging")?;
    let ((table, counts), early_ok) = {
        // Each early group's unfilled room, handed out a staged batch at a time.
        let mut rooms = Rooms::default();
        for (b, buf) in early_bufs.iter_mut().enumerate() {
            let span = buffer_span(&early_start, early.len(), b);
            rooms.cut(buf, early[span].iter().map(|&(_, r)| r));
        }
        // Early group -> its staging slot; a later stored group -> the spill slot `nearly`
        // when spilling; every other group -> the trash slot `nearly + 1`.
        let nearly = early.len();
        let trash = nearly + 1;
        let mut early_of = vec![trash as u32; g];
        for (j, &(gi, _)) in early.iter().enumerate() {
            early_of[gi] = j as u32;
        }
        if spill.is_some() {
            for gi in early_end..g {
                if !groups.single[gi] {
                    early_of[gi] = nearly as u32;
                }
            }
        }
        let spill = spill.as_ref();
        let overflow = std::sync::atomic::AtomicBool::new(false);
        // Copies `staged` to early group `j`'s room (or notes that it is full), or slot
        // `nearly`'s keys to the spill file.
        let flush = |j: usize, staged: &[T::Key]| {
            if j == nearly {
                if let Some(sp) = spill {
                    sp.append(bytemuck::cast_slice(staged));
                }
            } else if !rooms.fill(j, staged) {
                overflow.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        // Staging: `stage_keys` slots per early group, the spill slot, and one trash slot for
        // the other groups' keys (so a key is staged without a branch), recycled across chunks.
        let spare: std::sync::Mutex<Vec<Vec<T::Key>>> = std::sync::Mutex::new(Vec::new());
        // One row of `g` counts per chunk.
        let table: Vec<Vec<u64>> = map_chunks(ctx.src, &no_progress, |c: Chunk| {
            let mut cnt = vec![0u64; g];
            if g == 1 && nearly == 0 {
                cnt[0] = c.region.numel();
                return cnt;
            }
            let mut staged = spare
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_else(|| vec![<T::Key as bytemuck::Zeroable>::zeroed(); staged_len]);
            let mut lens = vec![0usize; nearly + 2];
            let mut keys = [0u64; BLOCK];
            let mut idx = [0u32; BLOCK];
            for block in c.as_slice::<T>().chunks(BLOCK) {
                let m = stage::<T>(&groups, block, None, &mut keys, &mut idx);
                for &gi in &idx[..m] {
                    cnt[gi as usize] += 1;
                }
                if nearly == 0 && spill.is_none() {
                    continue;
                }
                for (&u, &gi) in keys[..m].iter().zip(&idx[..m]) {
                    let j = early_of[gi as usize] as usize;
                    let l = lens[j];
                    staged[j * stage_keys + l] = T::Key::from_u64(u);
                    let l = l + usize::from(j != trash);
                    lens[j] = l;
                    if l == stage_keys {
                        flush(j, &staged[j * stage_keys..(j + 1) * stage_keys]);
                        lens[j] = 0;
                    }
                }
            }
            for (j, &l) in lens[..trash].iter().enumerate() {
                if l > 0 {
                    flush(j, &staged[j * stage_keys..j * stage_keys + l]);
                }
            }
            spare.lock().unwrap_or_else(|e| e.into_inner()).push(staged);
            cnt
        })?;
        // Every early group's room must now hold exactly its keys; otherwise (the sample lied
        // by more than the slack) those keys are gathered again like any other wave's.
        let mut counts = vec![0u64; g];
        for row in &table {
            for (a, b) in counts.iter_mut().zip(row) {
                *a += b;
            }
        }
        let ok = !overflow.load(std::sync::atomic::Ordering::Relaxed)
            && early
                .iter()
                .enumerate()
                .all(|(j, &(gi, r))| (r - rooms.left(j)) as u64 == counts[gi]);
        ((table, counts), ok)
    };
    drop(stage_res);
    if !early_ok {
        early.clear();
        early_start.clear();
        early_end = 0;
        early_bufs.clear();
        early_res.clear();
        spill = None;
    }
    // Bytes the counting scan spilled (reported whether or not they are used).
    let spill_written = spill
        .as_ref()
        .map_or(0, |sp| sp.bytes.load(std::sync::atomic::Ordering::Relaxed));
    // The spill file holds exactly the later stored groups' keys, or it is not used.
    let later_stored: u64 = (early_end..g)
        .filter(|&i| !groups.single[i])
        .map(|i| counts[i])
        .sum();
    let spill = spill.filter(|sp| sp.keys(esize) == Some(later_stored));
    let nearly_bufs = early_start.len();
    // 3. Pack groups into waves: the early groups (if any) are the first wave or two, already
    // gathered; the rest go into waves that fit a buffer, one gather scan each. A stored group
    // larger than a buffer means the sample lied: fall back (nothing has been written yet).
    let total_stored: u64 = (0..g)
        .filter(|&i| !groups.single[i])
        .map(|i| counts[i])
        .sum();
    // (Early groups that are only some of them took one or both of the two buffers.)
    let all_in_one = (nearly_bufs == 1 && early_end == g)
        || (early_end == 0 && total_stored <= plan.all_elems as u64);
    let wave_cap = if all_in_one {
        usize::MAX
    } else {
        plan.wave_elems
    };
    let mut waves: Vec<Wave> = Vec::new();
    for b in 0..nearly_bufs {
        // From the first group (singles included) after the previous buffer's groups.
        let lo = if b == 0 { 0 } else { early[early_start[b]].0 };
        let hi = early_start.get(b + 1).map_or(early_end, |&e| early[e].0);
        waves.push(Wave {
            groups: lo..hi,
            stored: early[buffer_span(&early_start, early.len(), b)]
                .iter()
                .map(|&(gi, _)| counts[gi] as usize)
                .sum(),
        });
    }
    let mut start = early_end;
    let mut stored = 0usize;
    for gi in early_end..g {
        if groups.single[gi] {
            continue;
        }
        let c = counts[gi] as usize;
        if c > wave_cap {
            return Ok(None);
        }
        if stored > 0 && stored + c > wave_cap {
            waves.push(Wave {
                groups: start..gi,
                stored,
            });
            start = gi;
            stored = 0;
        }
        stored += c;
    }
    if start < g || waves.is_empty() {
        waves.push(Wave {
            groups: start..g,
            stored,
        });
    }
    let gather_scans = waves
        .iter()
        .skip(nearly_bufs)
        .filter(|w| w.stored > 0)
        .count() as u64;
    // The spill file stands in for the scan of the one later wave, if there is just one.
    let spill = spill.filter(|_| gather_scans == 1 && later_stored > 0);
    let gather_scans = gather_scans - u64::from(spill.is_some());
    if gather_scans > MAX_WAVES {
        return Ok(None);
    }
    // Elements of each buffer allocated for the gathered waves.
    let buf_elems = waves
        .iter()
        .skip(nearly_bufs)
        .map(|w| w.stored)
        .max()
        .unwrap_or(0);
    let mut report = SortReport {
        elements: n,
        runs: waves.len() as u64,
        run_bytes: (waves.iter().map(|w| w.stored).max().unwrap_or(0) * esize) as u64,
        groups: g as u64,
        scans: 2 + gather_scans,
        spilled_bytes: spill_written,
        peak_spill_bytes: spill_written,
        ..SortReport::default()
    };
    // A wave's parts in key order, the stored ones' (group, count) and their offsets in the
    // wave's buffer: back to back, or at the rooms of early buffer `b`.
    let slots_of =
        |w: &Wave, at_rooms: Option<usize>| -> (Vec<Part>, Vec<(usize, usize)>, Vec<usize>) {
            let mut parts = Vec::with_capacity(w.groups.len());
            let mut bounds = Vec::new();
            let mut offsets = Vec::new();
            let mut at = 0usize;
            let mut rooms =
                early[at_rooms.map_or(0..0, |b| buffer_span(&early_start, early.len(), b))].iter();
            for gi in w.groups.clone() {
                if groups.single[gi] {
                    parts.push(Part::Repeat(groups.lowers[gi], counts[gi]));
                } else {
                    let c = counts[gi] as usize;
                    parts.push(Part::Stored(c));
                    bounds.push((gi, c));
                    offsets.push(at);
                    at += if at_rooms.is_some() {
                        rooms.next().expect("a room per early group").1
                    } else {
                        c
                    };
                }
            }
            (parts, bounds, offsets)
        };
    // 4. Gather and sort wave by wave (in the caller's pool); the output thread writes each wave
    // while the next one is gathered into the other buffer (a single wave: each batch while the
    // next is sorted).
    let nbytes = info.nbytes();
    let mut done = 0u64;
    let mut reported = 0u64;
    let mut tick = |w: &Wave| {
        done += w.groups.clone().map(|gi| counts[gi]).sum::<u64>();
        let upto = (nbytes as u128 * done as u128 / n as u128) as u64;
        (ctx.progress)(upto - reported);
        reported = upto;
    };
    let table = &table;
    let threads = rayon::current_num_threads().max(1);
    // A single wave is sorted and written a batch at a time from one buffer that outlives the
    // output thread: the early one, or one gathered into now.
    let single = waves.len() == 1 && waves[0].stored > 0;
    let (_one_res, mut one_buf) = if single && early_end == 0 {
        (
            Some(
                ctx.budget
                    .reserve((buf_elems * esize) as u64, "sort group buffer")?,
            ),
            vec![<T::Key as bytemuck::Zeroable>::zeroed(); buf_elems],
        )
    } else if single {
        (None, early_bufs.pop().expect("the early buffer"))
    } else {
        (None, Vec::new())
    };
    let mut one_slice: &mut [T::Key] = &mut one_buf;
    let rescans = std::cell::Cell::new(0u64);
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = sync_channel::<(WaveBuf<'_, T::Key>, Vec<Part>, Vec<usize>)>(1);
        let (back_tx, back_rx) = channel::<Vec<T::Key>>();
        let layout = &layout;
        let sink = s.spawn(move || -> Result<()> {
            let mut out = Emit::<T>::new(writer, layout, ctx, out_chunk)?;
            for (mut buf, parts, offsets) in rx {
                emit_parts(buf.slice(), &parts, &offsets, &mut out)?;
                if let WaveBuf::Owned(v) = buf {
                    // The main thread may be done already.
                    let _ = back_tx.send(v);
                }
            }
            out.finish()
        });
        // Scans made after all because the spill file could not be read.
        let rescans = &rescans;
        // Set when a wave could not be handed to (or back from) the output thread.
        let sink_gone = std::cell::Cell::new(false);
        let gone = || {
            sink_gone.set(true);
            writer_gone()
        };
        let body = || -> Result<()> {
            if single {
                // Sorted (with this pool's threads) a batch of one group per thread at a time,
                // each batch written by the output thread while the next is sorted.
                let w = &waves[0];
                let all = std::mem::take(&mut one_slice);
                let (parts, bounds, offsets) = slots_of(w, (early_end > 0).then_some(0));
                if early_end == 0 {
                    gather::<T>(ctx, &groups, table, &bounds, all)?;
                }
                tick(w);
                let mut rest: &mut [T::Key] = all;
                let mut pos = 0usize;
                let mut stored = bounds.iter().zip(&offsets);
                let mut first = 0;
                while first < parts.len() {
                    // This batch: parts up to and including the `threads`-th stored one.
                    let mut last = first;
                    let mut n = 0;
                    while last < parts.len() {
                        n += usize::from(matches!(parts[last], Part::Stored(_)));
                        last += 1;
                        if n == threads {
                            break;
                        }
                    }
                    let mine: Vec<(usize, usize)> = stored
                        .by_ref()
                        .take(n)
                        .map(|(&(_, c), &at)| (at, c))
                        .collect();
                    let end = mine.last().map_or(pos, |&(at, c)| at + c);
                    let (region, tail) = std::mem::take(&mut rest).split_at_mut(end - pos);
                    rest = tail;
                    let rel: Vec<usize> = mine.iter().map(|&(at, _)| at - pos).collect();
                    let lens: Vec<usize> = mine.iter().map(|&(_, c)| c).collect();
                    sort_groups(&mut slices_at(region, &rel, &lens));
                    pos = end;
                    tx.send((WaveBuf::Borrowed(region), parts[first..last].to_vec(), rel))
                        .map_err(|_| gone())?;
                    first = last;
                }
                drop(tx);
                // The output thread holds slices of the buffer until it is done.
                return Ok(());
            }
            let mut res: Vec<Reservation> = Vec::new();
            let mut bufs = 0;
            let mut early_bufs = std::mem::take(&mut early_bufs).into_iter();
            for (wi, w) in waves.iter().enumerate() {
                let early_wave = wi < nearly_bufs;
                let (parts, bounds, offsets) = slots_of(w, early_wave.then_some(wi));
                let mut buf = if early_wave {
                    bufs += 1;
                    early_bufs.next().expect("an early buffer per early wave")
                } else if w.stored == 0 {
                    Vec::new()
                } else if bufs < 2 {
                    bufs += 1;
                    res.push(
                        ctx.budget
                            .reserve((buf_elems * esize) as u64, "sort wave buffer")?,
                    );
                    vec![<T::Key as bytemuck::Zeroable>::zeroed(); buf_elems]
                } else {
                    loop {
                        // Buffers of empty waves come back too; wait for a real one.
                        let b = back_rx.recv().map_err(|_| gone())?;
                        if b.len() >= w.stored {
                            break b;
                        }
                    }
                };
                if w.stored > 0 && !early_wave {
                    // The one later wave's keys are the spill file's, if there is one and the
                    // budget has room to read it now.
                    let from_spill = match spill.as_ref() {
                        Some(sp) => {
                            gather_spill::<T>(ctx, sp, &groups, &bounds, &mut buf[..w.stored])?
                        }
                        None => false,
                    };
                    if !from_spill {
                        rescans.set(rescans.get() + u64::from(spill.is_some()));
                        gather::<T>(ctx, &groups, table, &bounds, &mut buf[..w.stored])?;
                    }
                }
                let lens: Vec<usize> = bounds.iter().map(|&(_, c)| c).collect();
                sort_groups(&mut slices_at(&mut buf, &offsets, &lens));
                tick(w);
                tx.send((WaveBuf::Owned(buf), parts, offsets))
                    .map_err(|_| gone())?;
            }
            drop(tx);
            Ok(())
        };
        let r = body();
        let w = sink.join().expect("sort output thread panicked");
        match (r, w) {
            // The output thread stopped first: its error is the cause.
            (Err(_), Err(e)) if sink_gone.get() => Err(e),
            // Otherwise the output's shortfall is only a consequence of this thread's error.
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    })?;
    report.scans += rescans.get();
    Ok(Some(report))
}

/// The early groups (indices into their list of `total`) of early buffer `b`, given the first
/// one of each buffer.
fn buffer_span(starts: &[usize], total: usize, b: usize) -> std::ops::Range<usize> {
    starts[b]..starts.get(b + 1).map_or(total, |&e| e)
}

/// A wave's keys for the output thread: its own buffer (handed back for reuse) or a part of the
/// single wave's buffer.
enum WaveBuf<'a, K> {
    Owned(Vec<K>),
    Borrowed(&'a mut [K]),
}

impl<K> WaveBuf<'_, K> {
    fn slice(&mut self) -> &mut [K] {
        match self {
            WaveBuf::Owned(v) => v,
            WaveBuf::Borrowed(s) => s,
        }
    }
}

/// The slices of `keys` of lengths `lens` at increasing `offsets`.
fn slices_at<'k, K>(keys: &'k mut [K], offsets: &[usize], lens: &[usize]) -> Vec<&'k mut [K]> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rest = keys;
    let mut pos = 0usize;
    for (&at, &c) in offsets.iter().zip(lens) {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(at - pos);
        let (mine, tail) = tail.split_at_mut(c);
        rest = tail;
        pos = at + c;
        out.push(mine);
    }
    out
}

/// Writes sorted `parts` in order, the `i`-th stored one from `keys` at `offsets[i]`.
fn emit_parts<T: SortKey>(
    keys: &mut [T::Key],
    parts: &[Part],
    offsets: &[usize],
    out: &mut Emit<'_, T>,
) -> Result<()>
where
    T::Key: KeyBits,
{
    let lens: Vec<usize> = parts
        .iter()
        .filter_map(|p| match *p {
            Part::Stored(c) => Some(c),
            Part::Repeat(..) => None,
        })
        .collect();
    let mut slices = slices_at(keys, offsets, &lens).into_iter();
    for p in parts {
        match *p {
            Part::Stored(_) => out.keys(slices.next().expect("a slice per stored part"))?,
            Part::Repeat(k, count) => out.repeat(T::from_key(T::Key::from_u64(k)), count)?,
        }
    }
    Ok(())
}

/// One scan of the input: copies the keys of the stored groups `bounds` (group, count, in key
/// order) into their places in `dst`, each chunk into the places the count `table` gives it.
fn gather<T: SortKey>(
    ctx: &Ctx<'_>,
    groups: &Groups,
    table: &[Vec<u64>],
    bounds: &[(usize, usize)],
    dst: &mut [T::Key],
) -> Result<()>
where
    T::Key: KeyBits,
{
    let g = groups.len();
    let nslots = bounds.len();
    // Group -> slot; `nslots` (a one-element trash slot) for groups not gathered now.
    let mut slot = vec![nslots; g];
    for (s, &(gi, _)) in bounds.iter().enumerate() {
        slot[gi] = s;
    }
    // Each slot's unfilled places, handed out chunk by chunk in chunk order.
    let mut rest: Vec<&mut [T::Key]> = Vec::with_capacity(nslots);
    let mut tail = dst;
    for &(_, c) in bounds {
        let (a, b) = std::mem::take(&mut tail).split_at_mut(c);
        rest.push(a);
        tail = b;
    }
    let nchunks = ctx.src.info().layout.num_chunks();
    let mut jobs: Vec<(usize, Vec<&mut [T::Key]>)> = Vec::with_capacity(nchunks);
    for ci in 0..nchunks {
        let row = &table[ci];
        let mut mine = Vec::with_capacity(nslots);
        for (r, &(gi, _)) in rest.iter_mut().zip(bounds) {
            let (a, b) = std::mem::take(r).split_at_mut(row[gi] as usize);
            mine.push(a);
            *r = b;
        }
        jobs.push((ci, mine));
    }
    let changed = || {
        Error::Invalid(format!(
            "{}: the input changed while it was sorted (a chunk's keys differ between scans)",
            ctx.src.info().name
        ))
    };
    // The key range of the groups gathered now, when it is a strict part of all keys.
    let first_g = bounds.first().map_or(0, |b| b.0);
    let last_g = bounds.last().map_or(0, |b| b.0);
    let range = (first_g > 0 || last_g + 1 < g).then(|| {
        let lo = groups.lowers[first_g];
        let hi = groups.lowers.get(last_g + 1).map_or(u64::MAX, |&h| h - 1);
        (lo, hi)
    });
    let batch = rayon::current_num_threads().max(1);
    let slot = &slot;
    let mut jobs = jobs.into_iter();
    loop {
        let now: Vec<_> = jobs.by_ref().take(batch).collect();
        if now.is_empty() {
            break;
        }
        now.into_par_iter()
            .map(|(ci, mut mine)| -> Result<()> {
                let c = ctx.src.read_chunk(ci)?;
                let mut trash = [<T::Key as bytemuck::Zeroable>::zeroed()];
                mine.push(&mut trash);
                let mut pos = vec![0usize; nslots + 1];
                let mut put = |k: T::Key, gi: u32| -> Result<()> {
                    let s = slot[gi as usize];
                    let p = pos[s];
                    let Some(d) = mine[s].get_mut(p) else {
                        return Err(changed());
                    };
                    *d = k;
                    pos[s] = p + usize::from(s != nslots);
                    Ok(())
                };
                let mut keys = [0u64; BLOCK];
                let mut idx = [0u32; BLOCK];
                for block in c.as_slice::<T>().chunks(BLOCK) {
                    let m = stage::<T>(groups, block, range, &mut keys, &mut idx);
                    for (&u, &gi) in keys[..m].iter().zip(&idx[..m]) {
                        put(T::Key::from_u64(u), gi)?;
                    }
                }
                if pos[..nslots].iter().zip(&mine).any(|(&p, m)| p != m.len()) {
                    return Err(changed());
                }
                Ok(())
            })
            .collect::<Result<()>>()?;
    }
    Ok(())
}

/// Keys appended from any thread to an anonymous temporary file (deleted when dropped), up to
/// a cap. A failed write or one past the cap is only noted, and nothing more is written: the
/// keys are then gathered from the input instead.
struct Spill {
    file: std::fs::File,
    max_bytes: u64,
    bytes: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicBool,
}

impl Spill {
    /// A spill file in `dir` for at most `max_bytes`, or `None` (the input is scanned instead)
    /// when it cannot be made.
    fn create(dir: &std::path::Path, max_bytes: u64) -> Option<Spill> {
        Some(Spill {
            file: tempfile::tempfile_in(dir).ok()?,
            max_bytes,
            bytes: Default::default(),
            failed: Default::default(),
        })
    }

    fn append(&self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::Ordering::Relaxed;
        if self.failed.load(Relaxed) {
            return;
        }
        let at = self.bytes.fetch_add(bytes.len() as u64, Relaxed);
        if at + bytes.len() as u64 > self.max_bytes || self.file.write_all_at(bytes, at).is_err() {
            self.failed.store(true, Relaxed);
        }
    }

    /// Keys of `esize` bytes written, unless a write failed.
    fn keys(&self, esize: usize) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        (!self.failed.load(Relaxed)).then(|| self.bytes.load(Relaxed) / esize as u64)
    }
}

/// [`gather`] from the spill file, which holds exactly the keys of the stored groups `bounds`
/// (in any order): read a block per thread at a time, each key copied into its group's part of
/// `dst` a staged batch at a time. Its memory is what the counting scan's staging had (the plan
/// counts it); `Ok(false)` when the budget does not have it now, and nothing was read.
fn gather_spill<T: SortKey>(
    ctx: &Ctx<'_>,
    spill: &Spill,
    groups: &Groups,
    bounds: &[(usize, usize)],
    dst: &mut [T::Key],
) -> Result<bool>
where
    T::Key: KeyBits,
{
    use std::os::unix::fs::FileExt;
    // Half the staging allowance reads, half stages.
    let read_keys = STAGE_KEYS / 2;
    let esize = size_of::<T::Key>();
    let total = spill.bytes.load(std::sync::atomic::Ordering::Relaxed) as usize;
    let nslots = bounds.len();
    let mut slot = vec![nslots as u32; groups.len()];
    for (s, &(gi, _)) in bounds.iter().enumerate() {
        slot[gi] = s as u32;
    }
    let mut rooms = Rooms::default();
    rooms.cut(dst, bounds.iter().map(|&(_, c)| c));
    let stage_keys = (STAGE_KEYS / 2 / nslots).clamp(64, 4096);
    let threads = rayon::current_num_threads().max(1);
    let Some(_res) = ctx.budget.try_reserve(
        (threads * (read_keys + nslots * stage_keys) * esize) as u64,
        "sort spill read",
    ) else {
        return Ok(false);
    };
    let bad = || {
        Error::Invalid(format!(
            "{}: the sort's spill file does not hold the keys its counting scan wrote (a damaged \
             temporary file?)",
            ctx.src.info().name
        ))
    };
    let flush = |s: usize, staged: &[T::Key]| -> Result<()> {
        if rooms.fill(s, staged) {
            Ok(())
        } else {
            Err(bad())
        }
    };
    let nblocks = total.div_ceil(read_keys * esize);
    (0..nblocks).into_par_iter().try_for_each_init(
        || {
            (
                vec![<T::Key as bytemuck::Zeroable>::zeroed(); read_keys],
                vec![<T::Key as bytemuck::Zeroable>::zeroed(); nslots * stage_keys],
            )
        },
        |(buf, staged), bi| -> Result<()> {
            let at = bi * read_keys * esize;
            let len = (total - at).min(read_keys * esize) / esize;
            spill
                .file
                .read_exact_at(bytemuck::cast_slice_mut(&mut buf[..len]), at as u64)
                .map_err(|e| Error::io(ctx.temp_dir(), "read sort spill file", e))?;
            let mut lens = vec![0usize; nslots];
            let mut keys = [0u64; BLOCK];
            let mut idx = [0u32; BLOCK];
            for block in buf[..len].chunks(BLOCK) {
                for (k, &v) in keys.iter_mut().zip(block) {
                    *k = v.to_u64();
                }
                groups.classify(&keys[..block.len()], &mut idx[..block.len()]);
                for (&v, &gi) in block.iter().zip(&idx) {
                    let s = slot[gi as usize] as usize;
                    if s == nslots {
                        return Err(bad());
                    }
                    let l = lens[s];
                    staged[s * stage_keys + l] = v;
                    lens[s] = l + 1;
                    if l + 1 == stage_keys {
                        flush(s, &staged[s * stage_keys..(s + 1) * stage_keys])?;
                        lens[s] = 0;
                    }
                }
            }
            for (s, &l) in lens.iter().enumerate() {
                if l > 0 {
                    flush(s, &staged[s * stage_keys..s * stage_keys + l])?;
                }
            }
            Ok(())
        },
    )?;
    if (0..nslots).any(|s| rooms.left(s) > 0) {
        return Err(bad());
    }
    Ok(true)
}

/// Places for groups' keys, each filled a staged batch at a time from any thread.
struct Rooms<'a, K> {
    /// Each room's part not filled yet.
    left: Vec<std::sync::Mutex<&'a mut [K]>>,
}

impl<K> Default for Rooms<'_, K> {
    fn default() -> Self {
        Rooms { left: Vec::new() }
    }
}

impl<'a, K: Copy> Rooms<'a, K> {
    /// Adds rooms of `sizes` cut from the front of `buf`, in order.
    fn cut(&mut self, buf: &'a mut [K], sizes: impl Iterator<Item = usize>) {
        let mut tail = buf;
        for n in sizes {
            let (a, rest) = std::mem::take(&mut tail).split_at_mut(n);
            self.left.push(std::sync::Mutex::new(a));
            tail = rest;
        }
    }

    /// Copies `keys` into room `j`; `false` (and nothing copied) when they do not fit.
    fn fill(&self, j: usize, keys: &[K]) -> bool {
        let mut room = self.left[j].lock().unwrap_or_else(|e| e.into_inner());
        if room.len() < keys.len() {
            return false;
        }
        let (dst, rest) = std::mem::take(&mut *room).split_at_mut(keys.len());
        *room = rest;
        drop(room);
        dst.copy_from_slice(keys);
        true
    }

    /// Places room `j` has left.
    fn left(&self, j: usize) -> usize {
        self.left[j].lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Stages the keys of `vals` (at most [`BLOCK`]) into `keys`, only those within `range`
/// (inclusive, branchless) when there is one, classifies them into `idx`, and returns how many
/// were staged.
#[inline]
fn stage<T: SortKey>(
    groups: &Groups,
    vals: &[T],
    range: Option<(u64, u64)>,
    keys: &mut [u64; BLOCK],
    idx: &mut [u32; BLOCK],
) -> usize
where
    T::Key: KeyBits,
{
    // The input is read through fresh mappings of page-cached files, where the hardware
    // prefetchers barely help (see `prefetch`): each piece asks for the bytes a little ahead.
    let mut m = 0;
    match range {
        None => {
            for piece in prefetch::pieces(vals) {
                for (k, &v) in keys[m..].iter_mut().zip(piece) {
                    *k = v.to_key().to_u64();
                }
                m += piece.len();
            }
        }
        Some((lo, hi)) => {
            for piece in prefetch::pieces(vals) {
                for &v in piece {
                    let u = v.to_key().to_u64();
                    keys[m] = u;
                    m += usize::from(u >= lo && u <= hi);
                }
            }
        }
    }
    groups.classify(&keys[..m], &mut idx[..m]);
    m
}

/// Sorts each stored group of a batch independently: one per thread, except that a group over
/// 1.5 times a thread's share (a lone one, say) is sorted with all threads.
fn sort_groups<K: SortSlice>(slices: &mut [&mut [K]]) {
    let threads = rayon::current_num_threads().max(1);
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let big = (total * 3).div_ceil(2 * threads) + 1;
    let (large, small): (Vec<_>, Vec<_>) = slices.iter_mut().partition(|s| s.len() >= big);
    for s in large {
        K::par_sort_slice(s);
    }
    small.into_par_iter().for_each(|s| K::sort_slice(s));
}

/// Encodes and writes output chunk `*next` (in place when the writer is `positional`) and moves
/// on.
fn write_chunk(
    writer: &dyn ArrayWriter,
    positional: bool,
    next: &mut usize,
    bytes: &[u8],
) -> Result<()> {
    let enc = writer.encode(*next, bytes)?;
    if positional {
        writer.write_at(*next, &enc)?;
    } else {
        writer.write(*next, &enc)?;
    }
    *next += 1;
    Ok(())
}

/// Converts `keys` back to values into `dst`, the bytes of `keys.len()` values.
fn keys_to_bytes<T: SortKey>(keys: &[T::Key], dst: &mut [u8]) {
    match bytemuck::try_cast_slice_mut::<u8, T>(dst) {
        Ok(d) => {
            for (d, &k) in d.iter_mut().zip(keys) {
                *d = T::from_key(k);
            }
        }
        // A staging buffer not aligned for `T` (not expected): value by value.
        Err(_) => {
            for (d, &k) in dst.chunks_exact_mut(size_of::<T>()).zip(keys) {
                d.copy_from_slice(bytemuck::bytes_of(&T::from_key(k)));
            }
        }
    }
}

/// Writes values to the output's chunks in order: whole chunks straight from the caller's slice,
/// the pieces across wave boundaries through one carry buffer.
struct Emit<'a, T> {
    writer: &'a dyn ArrayWriter,
    /// Whether the writer takes chunks in place ([`ArrayWriter::fill_at`]): whole chunks are then
    /// converted from keys straight into its staging memory.
    positional: bool,
    layout: &'a crate::shape::ChunkLayout,
    next: usize,
    nchunks: usize,
    carry: Buffer,
    filled: usize,
    _t: std::marker::PhantomData<T>,
}

impl<'a, T: SortKey> Emit<'a, T> {
    fn new(
        writer: &'a dyn ArrayWriter,
        layout: &'a crate::shape::ChunkLayout,
        ctx: &Ctx<'_>,
        out_chunk: usize,
    ) -> Result<Self> {
        let bytes = out_chunk * size_of::<T>();
        let carry = if ctx.budget.same(memory::global()) {
            Buffer::for_overwrite(bytes)?
        } else {
            Buffer::zeroed_in(bytes, ctx.budget)?
        };
        Ok(Emit {
            writer,
            positional: writer.positional(),
            layout,
            next: 0,
            nchunks: layout.num_chunks(),
            carry,
            filled: 0,
            _t: std::marker::PhantomData,
        })
    }

    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        write_chunk(self.writer, self.positional, &mut self.next, bytes)
    }

    /// The elements the next non-empty chunk wants (writing empty chunks on the way).
    fn want(&mut self) -> Result<usize> {
        loop {
            if self.next >= self.nchunks {
                return Err(Error::Invalid(format!(
                    "sort produced more elements than the output's {} chunks hold",
                    self.nchunks
                )));
            }
            let w = self.layout.chunk_region(self.next).numel() as usize;
            if w > 0 {
                return Ok(w);
            }
            self.write_chunk(&[])?;
        }
    }

    fn flush_carry(&mut self, want: usize) -> Result<()> {
        if self.filled == want {
            self.filled = 0;
            let bytes = &self.carry.bytes()[..want * size_of::<T>()];
            write_chunk(self.writer, self.positional, &mut self.next, bytes)?;
        }
        Ok(())
    }

    fn values(&mut self, mut v: &[T]) -> Result<()> {
        while !v.is_empty() {
            let want = self.want()?;
            if self.filled == 0 && v.len() >= want {
                self.write_chunk(bytemuck::cast_slice(&v[..want]))?;
                v = &v[want..];
                continue;
            }
            let take = (want - self.filled).min(v.len());
            self.carry.as_mut_slice::<T>()[self.filled..self.filled + take]
                .copy_from_slice(&v[..take]);
            self.filled += take;
            v = &v[take..];
            self.flush_carry(want)?;
        }
        Ok(())
    }

    /// Writes the values of sorted `keys`: converted straight into the writer's staging memory
    /// when it is positional, else in place and then written from `keys`.
    fn keys(&mut self, mut keys: &mut [T::Key]) -> Result<()> {
        if !self.positional {
            for k in keys.iter_mut() {
                *k = recast::<T, T::Key>(T::from_key(*k));
            }
            return self.values(bytemuck::cast_slice::<T::Key, T>(keys));
        }
        while !keys.is_empty() {
            let want = self.want()?;
            let take = if self.filled == 0 {
                want.min(keys.len())
            } else {
                (want - self.filled).min(keys.len())
            };
            let (now, rest) = std::mem::take(&mut keys).split_at_mut(take);
            keys = rest;
            if self.filled == 0 && take == want {
                self.writer
                    .fill_at(self.next, want * size_of::<T>(), &mut |dst| {
                        keys_to_bytes::<T>(now, dst);
                        Ok(())
                    })?;
                self.next += 1;
                continue;
            }
            let carry = &mut self.carry.as_mut_slice::<T>()[self.filled..self.filled + take];
            for (d, &k) in carry.iter_mut().zip(now.iter()) {
                *d = T::from_key(k);
            }
            self.filled += take;
            self.flush_carry(want)?;
        }
        Ok(())
    }

    fn repeat(&mut self, x: T, mut count: u64) -> Result<()> {
        while count > 0 {
            let want = self.want()?;
            let take = ((want - self.filled) as u64).min(count) as usize;
            self.carry.as_mut_slice::<T>()[self.filled..self.filled + take].fill(x);
            self.filled += take;
            count -= take as u64;
            self.flush_carry(want)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        while self.filled == 0
            && self.next < self.nchunks
            && self.layout.chunk_region(self.next).numel() == 0
        {
            self.write_chunk(&[])?;
        }
        if self.filled != 0 || self.next != self.nchunks {
            return Err(Error::Invalid(format!(
                "sort filled {} of the output's {} chunks",
                self.next, self.nchunks
            )));
        }
        Ok(())
    }
}
