//! Out-of-core sorting: [`sort`], [`argsort`] and [`top_k`] for any [`ChunkSource`] of any dtype,
//! with NumPy's ordering.
//!
//! # Ordering
//! Ascending, as `np.sort`: integers in their natural order, `bool` by its stored byte, floats
//! with every NaN last. `-0.0` and `0.0` compare equal for [`argsort`] and [`top_k`] (ties keep
//! index order, as `np.argsort(kind="stable")`, and NaNs are all equal). [`sort`] emits values,
//! so among elements NumPy calls equal it must still pick an order of their bit patterns: it
//! puts `-0.0` before `0.0`, and NaNs (after `+inf`) by sign then payload. The values are
//! therefore `==` to `np.sort`'s at every position, NaNs in the same places, and the bytes are a
//! pure function of the input's multiset of bit patterns (any chunking, run size, thread count).
//!
//! # Algorithm
//! Each element becomes an unsigned integer key of its own width whose natural order is the
//! order above (a bijection for [`sort`]; for [`argsort`] the key of the NumPy equivalence class
//! packed with the flat index into a `u128`, so all keys are distinct).
//!
//! A flat [`sort`] first tries the grouped path (`grouped.rs`): key ranges chosen from a sample,
//! counted in one scan, gathered wave by wave in further scans of the input (or, for a last wave
//! of at most half the input, from a spill file the counting scan wrote) and sorted per group
//! while the previous wave is written, when the input is at most a few wave buffers. Otherwise, and for [`argsort`], keys are gathered into a run buffer sized from the
//! memory budget; when the whole input fits it is sorted in memory (64-bit keys by the AVX-512
//! quicksort of `simd.rs`, [`par_sort_keys`]; other widths by rayon's `par_sort_unstable`) and
//! streamed to the writer. (A parallel LSD radix sort was measured
//! at half that speed here: its scattered writes are slow in this VM.) Otherwise runs of half the
//! room are gathered, sorted in parallel and appended to an anonymous temporary file (in [`SortOptions::temp_dir`] or the
//! system temp dir; unlinked from the start, so nothing is left behind on error or crash) by a
//! helper thread while the next run is gathered in the other buffer; a large sort's spill files
//! bypass the page cache (`O_DIRECT`) both ways. Runs are then merged (`merge.rs`) through
//! per-run read buffers in rounds, each merging in parallel everything the buffers hold up to
//! and including the smallest last buffered key of a run not yet read to its end, by
//! branch-free loser trees. When
//! there are more runs than that memory allows readers for, groups of runs are merged into longer
//! runs in a new file first (a merge pass), and the older file is closed (deleted) once the pass
//! is done. Output chunks are filled in order and handed to a writer thread (encode + write)
//! while the merge goes on.
//!
//! Sorting along the last axis ([`Axis::Last`]) reads bands of whole rows covering one row of
//! output chunks, sorts the rows in parallel and writes the band's chunks. When such a band does
//! not fit the budget but single rows do, the rows go through a temporary `.npy` first.
//!
//! **Memory:** run buffers, merge buffers, output chunks and top-k candidates are reserved in
//! [`SortOptions::budget`] (default: [`memory::global`]) before they are allocated; input chunks
//! are reserved by their source as always. The plan leaves room for one input chunk per worker
//! and three output chunks, and, when spill files bypass the page cache (only under the global
//! budget, which their writer's staging buffers are reserved in), for one staging buffer.

use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};

use bytemuck::Pod;
use rayon::prelude::*;

use crate::dtype::{Bool, DType, Element};
use crate::error::{Error, Result};
use crate::memory::{self, MemoryBudget, Reservation, human_bytes};
use crate::pipeline::Progress;
use crate::shape::{ChunkLayout, Region, copy_box, shape_str};
use crate::storage::direct::{self, DirectFile};
use crate::storage::{ArrayWriter, Buffer, Chunk, ChunkSource};

/// Which elements are sorted together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Axis {
    /// The whole array flattened in C order (NumPy `axis=None`); the output is 1-D.
    #[default]
    Flat,
    /// Each row along the last axis independently (NumPy `axis=-1`); the output has the input's
    /// shape. Every row must fit the memory budget.
    Last,
}

/// How to sort.
#[derive(Clone, Debug, Default)]
pub struct SortOptions {
    /// Which elements are sorted together.
    pub axis: Axis,
    /// Where spilled runs go (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
    /// The budget the sort's own buffers are reserved in (default: [`memory::global`]).
    pub budget: Option<MemoryBudget>,
    /// An upper bound on the bytes of one sorted run (and of the merge buffers), below what the
    /// budget allows: smaller runs force the external path (useful for tests and measurements).
    pub run_bytes: Option<u64>,
}

/// What a sort did, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortReport {
    /// Elements sorted.
    pub elements: u64,
    /// Sorted runs formed (1 when sorted in memory; bands of rows for [`Axis::Last`]).
    pub runs: u64,
    /// Passes over spilled data (0 in memory, 1 for a single final merge).
    pub merge_passes: u32,
    /// Bytes written to temporary files over all passes.
    pub spilled_bytes: u64,
    /// Most bytes of temporary files alive at once.
    pub peak_spill_bytes: u64,
    /// Bytes of one run buffer (also the merge buffers' total).
    pub run_bytes: u64,
    /// Most runs merged at once.
    pub fan_in: u64,
    /// Key-range groups of the grouped (splitter) path; 0 when it was not taken. Its waves of
    /// groups are counted in [`runs`](Self::runs).
    pub groups: u64,
    /// Passes over the input of the grouped path (sample, count, one per wave).
    pub scans: u64,
}

impl SortReport {
    /// True when the data was spilled to temporary files.
    pub fn spilled(&self) -> bool {
        self.spilled_bytes > 0
    }
}

impl fmt::Display for SortReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.groups > 0 {
            write!(
                f,
                "{} elements sorted in memory: {} key-range groups in {} wave(s) of up to {}, {} \
                 scans of the input, ",
                self.elements,
                self.groups,
                self.runs,
                human_bytes(self.run_bytes),
                self.scans
            )?;
            if self.spilled() {
                write!(f, "{} of keys spilled", human_bytes(self.spilled_bytes))
            } else {
                write!(f, "no spill")
            }
        } else if self.spilled() {
            write!(
                f,
                "{} elements: {} runs of up to {}, {} merge pass(es) (fan-in {}), {} spilled \
                 (peak {} on disk)",
                self.elements,
                self.runs,
                human_bytes(self.run_bytes),
                self.merge_passes,
                self.fan_in,
                human_bytes(self.spilled_bytes),
                human_bytes(self.peak_spill_bytes)
            )
        } else {
            write!(
                f,
                "{} elements sorted in memory ({} run(s), buffer {})",
                self.elements,
                self.runs,
                human_bytes(self.run_bytes)
            )
        }
    }
}

/// Smallest read buffer per run during a merge (its share of the output block comes on top; a
/// direct read buffer also holds up to three 4 KiB blocks of alignment slack).
const MIN_MERGE_BUF: u64 = 16 << 10;
/// Most runs merged at once (beyond this a loser tree's replay costs more than another pass
/// saves).
const MAX_FAN_IN: u64 = 512;
/// Elements per rayon task when converting.
const PAR_MIN: usize = 1 << 14;

// ---------------------------------------------------------------------------------------------
// Keys

/// Maps elements to unsigned keys whose natural order is NumPy's sort order.
trait SortKey: Element {
    /// An unsigned integer of the element's width.
    type Key: grouped::KeyBits;
    /// A bijection onto `Key`, monotone in the sort order (NaNs last, `-0.0` before `0.0`).
    fn to_key(self) -> Self::Key;
    /// The inverse of [`to_key`](Self::to_key).
    fn from_key(k: Self::Key) -> Self;
    /// The key of the NumPy equivalence class: `-0.0 == 0.0`, all NaNs equal and last.
    fn arg_key(self) -> u64;
}

macro_rules! unsigned_key {
    ($($t:ty),*) => {$(
        impl SortKey for $t {
            type Key = $t;
            #[inline]
            fn to_key(self) -> $t { self }
            #[inline]
            fn from_key(k: $t) -> $t { k }
            #[inline]
            fn arg_key(self) -> u64 { self as u64 }
        }
    )*};
}
unsigned_key!(u8, u16, u32, u64);

macro_rules! signed_key {
    ($($t:ty => $u:ty),*) => {$(
        impl SortKey for $t {
            type Key = $u;
            #[inline]
            fn to_key(self) -> $u { (self as $u) ^ (1 << (<$u>::BITS - 1)) }
            #[inline]
            fn from_key(k: $u) -> $t { (k ^ (1 << (<$u>::BITS - 1))) as $t }
            #[inline]
            fn arg_key(self) -> u64 { self.to_key() as u64 }
        }
    )*};
}
signed_key!(i8 => u8, i16 => u16, i32 => u32, i64 => u64);

impl SortKey for Bool {
    type Key = u8;
    #[inline]
    fn to_key(self) -> u8 {
        self.0
    }
    #[inline]
    fn from_key(k: u8) -> Bool {
        Bool(k)
    }
    #[inline]
    fn arg_key(self) -> u64 {
        u64::from(self.0)
    }
}

/// Floats: the usual sign-flip key (`total_cmp`'s order), rotated so that negative NaNs, which it
/// puts below `-inf`, land after the positive ones: every NaN sorts after `+inf`.
macro_rules! float_key {
    ($t:ty, $u:ty, $mant:expr) => {
        impl SortKey for $t {
            type Key = $u;
            #[inline]
            fn to_key(self) -> $u {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                // Keys 0..NEG_NANS are the negative NaNs; -inf is key NEG_NANS.
                const NEG_NANS: $u = (1 << $mant) - 1;
                let b = self.to_bits();
                let k = if b & SIGN != 0 { !b } else { b | SIGN };
                k.wrapping_sub(NEG_NANS)
            }
            #[inline]
            fn from_key(k: $u) -> $t {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                const NEG_NANS: $u = (1 << $mant) - 1;
                let k = k.wrapping_add(NEG_NANS);
                <$t>::from_bits(if k & SIGN != 0 { k ^ SIGN } else { !k })
            }
            #[inline]
            fn arg_key(self) -> u64 {
                if self.is_nan() {
                    u64::MAX
                } else if self == 0.0 {
                    (0.0 as $t).to_key() as u64
                } else {
                    self.to_key() as u64
                }
            }
        }
    };
}
float_key!(f32, u32, 23);
float_key!(f64, u64, 52);

/// Converts a value of one Pod type to another of the same size (element <-> key).
#[inline]
fn recast<A: Pod, B: Pod>(a: A) -> B {
    bytemuck::cast(a)
}

/// The (class key, flat index) pair of an argsort, as one `u128` ordered like the tuple.
#[inline]
fn pair(key: u64, index: u64) -> u128 {
    (u128::from(key) << 64) | u128::from(index)
}

// ---------------------------------------------------------------------------------------------
// Public entry points

/// Sorts `src` ascending (NumPy order, NaNs last) into `writer` and reports what it did.
///
/// With [`Axis::Flat`] the writer's layout must be 1-D of `numel` elements (the flattened array,
/// as `np.sort(a, axis=None)`); with [`Axis::Last`] it must have the input's shape. Create it with
/// [`formats::create`](crate::formats::create) and the source's dtype. `progress` is told the
/// input bytes read. See the [module docs](self) for the order of equal-comparing values and the
/// memory plan.
pub fn sort(
    src: &dyn ChunkSource,
    writer: Box<dyn ArrayWriter>,
    opts: &SortOptions,
    progress: Progress<'_>,
) -> Result<SortReport> {
    with_dtype_sort(src, writer, opts, progress, Kind::Sort)
}

/// Writes the indices (`i64`, NumPy's dtype) that sort `src` stably: ties keep index order, as
/// `np.argsort(a, kind="stable")`; `-0.0 == 0.0`; NaNs are last, in index order.
///
/// With [`Axis::Flat`] the indices are flat C-order indices and the writer is 1-D of `numel`
/// elements (`np.argsort(a, axis=None)`); with [`Axis::Last`] they are positions within each row
/// and the writer has the input's shape (`np.argsort(a, axis=-1)`). Create the writer with dtype
/// [`DType::I64`].
pub fn argsort(
    src: &dyn ChunkSource,
    writer: Box<dyn ArrayWriter>,
    opts: &SortOptions,
    progress: Progress<'_>,
) -> Result<SortReport> {
    with_dtype_sort(src, writer, opts, progress, Kind::Argsort)
}

/// Sorts `u64` keys ascending in memory on the calling thread: the kernel behind the in-memory
/// step of every flat [`sort`] of a 64-bit dtype (whose values map onto `u64` keys in order).
/// Where the CPU has AVX-512F it is a vectorised quicksort (8 keys per instruction, a bitonic
/// network for slices of at most 128 keys), otherwise `sort_unstable`; the result is the same.
pub fn sort_keys(keys: &mut [u64]) {
    simd::sort(keys);
}

/// [`sort_keys`] with all of rayon's threads: the top levels are partitioned on one thread and
/// the two sides sorted in parallel.
pub fn par_sort_keys(keys: &mut [u64]) {
    simd::par_sort(keys);
}

/// The `k` largest (`largest`) or smallest elements of `src` and their flat C-order indices, in
/// one streaming parallel pass: largest (or smallest) first, ties to the smaller index, `-0.0 ==
/// 0.0`, NaN larger than everything (as in NumPy's sort order). The values buffer holds `k`
/// elements of the source's dtype. The result does not depend on chunking or thread count.
///
/// Memory: about `(threads + 2) * 2k` candidates of 16 bytes plus the element, reserved in the
/// global budget; a `k` beyond that is refused.
pub fn top_k(src: &dyn ChunkSource, k: usize, largest: bool) -> Result<(Buffer, Vec<i64>)> {
    crate::with_dtype!(src.info().dtype, T => top_k_typed::<T>(src, k, largest))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sort,
    Argsort,
}

fn with_dtype_sort(
    src: &dyn ChunkSource,
    writer: Box<dyn ArrayWriter>,
    opts: &SortOptions,
    progress: Progress<'_>,
    kind: Kind,
) -> Result<SortReport> {
    let info = src.info();
    let shape = info.shape.clone();
    let n = crate::shape::checked_numel(&shape)?;
    let what = match kind {
        Kind::Sort => "sort",
        Kind::Argsort => "argsort",
    };
    // A 1-D array has one row: the last axis is the flattened array. NumPy's argsort of a 0-d
    // array also gives `[0]`; its sort along an axis refuses.
    let flat = match opts.axis {
        Axis::Flat => true,
        Axis::Last if shape.is_empty() && kind == Kind::Sort => {
            return Err(Error::Invalid(format!(
                "{}: cannot sort a 0-d array along its last axis (it has none); sort it \
                 flattened",
                info.name
            )));
        }
        Axis::Last => shape.len() <= 1,
    };
    let out_shape = if flat { vec![n] } else { shape.clone() };
    let got = writer.layout().shape();
    if got != out_shape {
        return Err(Error::Invalid(format!(
            "{}: {what} of shape {} ({}) writes shape {}, but the output was created with shape {}",
            info.name,
            shape_str(&shape),
            if flat {
                "flattened"
            } else {
                "along the last axis"
            },
            shape_str(&out_shape),
            shape_str(&got)
        )));
    }
    let budget = opts
        .budget
        .clone()
        .unwrap_or_else(|| memory::global().clone());
    let ctx = Ctx {
        src,
        budget: &budget,
        opts,
        progress,
    };
    let report = crate::with_dtype!(info.dtype, T => {
        match (flat, kind) {
            (true, Kind::Sort) => {
                if let Some(r) = grouped::grouped_sort::<T>(&ctx, writer.as_ref())? {
                    writer.finish()?;
                    return Ok(r);
                }
                let fill = |c: &Chunk, lo: usize, out: &mut [<T as SortKey>::Key]| {
                    let vals = &c.as_slice::<T>()[lo..lo + out.len()];
                    out.par_iter_mut()
                        .zip(vals.par_iter())
                        .with_min_len(PAR_MIN)
                        .for_each(|(o, &v)| *o = v.to_key());
                };
                flat_sort::<<T as SortKey>::Key, T>(&ctx, writer.as_ref(), &fill, &|k| T::from_key(k))?
            }
            (true, Kind::Argsort) => {
                let shape = &shape;
                let fill = |c: &Chunk, lo: usize, out: &mut [u128]| {
                    let vals = c.as_slice::<T>();
                    fill_pairs(&c.region, shape, lo, out, |i| vals[i].arg_key());
                };
                flat_sort::<u128, i64>(&ctx, writer.as_ref(), &fill, &|p| p as u64 as i64)?
            }
            (false, kind) => last_axis::<T>(&ctx, writer.as_ref(), kind)?,
        }
    });
    writer.finish()?;
    Ok(report)
}

/// Fills `out` with the argsort pairs of chunk elements `lo..lo + out.len()` (chunk C order),
/// keyed by `key(local index)`, in parallel.
fn fill_pairs(
    region: &Region,
    shape: &[u64],
    lo: usize,
    out: &mut [u128],
    key: impl Fn(usize) -> u64 + Sync,
) {
    const BLOCK: usize = 1 << 15;
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, dst)| {
        let start = (lo + b * BLOCK) as u64;
        flat_segments(
            region,
            shape,
            start,
            start + dst.len() as u64,
            |p, flat, len| {
                let off = (p - start) as usize;
                for j in 0..len as usize {
                    dst[off + j] = pair(key(p as usize + j), flat + j as u64);
                }
            },
        );
    });
}

/// Calls `f(local, flat, len)` for each maximal run of consecutive flat C-order indices among the
/// region's elements `lo..hi` (positions in the region's own C order).
fn flat_segments(
    region: &Region,
    shape: &[u64],
    lo: u64,
    hi: u64,
    mut f: impl FnMut(u64, u64, u64),
) {
    // Trailing axes the region covers fully, plus the first one it does not, are contiguous.
    let mut seg = 1u64;
    for ax in (0..shape.len()).rev() {
        seg *= region.shape[ax];
        if region.shape[ax] != shape[ax] {
            break;
        }
    }
    let seg = seg.max(1);
    let mut p = lo;
    while p < hi {
        let s = p / seg;
        let off = p % seg;
        let len = (seg - off).min(hi - p);
        f(p, region.global_flat_index(s * seg, shape) + off, len);
        p += len;
    }
}

struct Ctx<'a> {
    src: &'a dyn ChunkSource,
    budget: &'a MemoryBudget,
    opts: &'a SortOptions,
    progress: Progress<'a>,
}

impl Ctx<'_> {
    fn is_global(&self) -> bool {
        self.budget.same(memory::global())
    }

    /// Bytes of input chunks the source may have in flight while we read (reserved by the source,
    /// in the global budget: they only count against ours when ours is the global one).
    fn input_in_flight(&self) -> u64 {
        if !self.is_global() {
            return 0;
        }
        let info = self.src.info();
        rayon::current_num_threads() as u64
            * crate::storage::mmap::window_bytes_bound(
                max_chunk_elems(&info.layout) * info.dtype.size() as u64,
            )
    }

    fn temp_dir(&self) -> PathBuf {
        self.opts
            .temp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }
}

/// The most elements any chunk of `layout` holds.
fn max_chunk_elems(layout: &ChunkLayout) -> u64 {
    match layout {
        ChunkLayout::Regular { shape, chunk_shape } => shape
            .iter()
            .zip(chunk_shape)
            .map(|(&d, &c)| d.min(c))
            .product(),
        ChunkLayout::Ranges { bounds } => bounds.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// Fills the writer's chunks in order and hands them to the writer thread.
struct OutStream<'a, O> {
    layout: &'a ChunkLayout,
    budget: &'a MemoryBudget,
    tx: SyncSender<(usize, Buffer)>,
    nchunks: usize,
    next: usize,
    cur: Option<(Buffer, usize, usize)>, // buffer, filled, wanted (elements)
    _o: PhantomData<O>,
}

/// The error an [`OutStream`] returns when the writer thread stopped; the thread's own error is
/// reported instead.
fn writer_gone() -> Error {
    Error::Invalid("the output writer stopped".into())
}

impl<'a, O: Element> OutStream<'a, O> {
    fn new(
        layout: &'a ChunkLayout,
        budget: &'a MemoryBudget,
        tx: SyncSender<(usize, Buffer)>,
    ) -> Self {
        OutStream {
            layout,
            budget,
            tx,
            nchunks: layout.num_chunks(),
            next: 0,
            cur: None,
            _o: PhantomData,
        }
    }

    /// Starts the next chunk, sending empty chunks straight away.
    fn open(&mut self) -> Result<()> {
        while self.cur.is_none() {
            if self.next >= self.nchunks {
                return Err(Error::Invalid(format!(
                    "sort produced more elements than the output's {} chunks hold",
                    self.nchunks
                )));
            }
            let want = self.layout.chunk_region(self.next).numel() as usize;
            // `push` overwrites every element before the chunk is sent.
            let buf = if self.budget.same(memory::global()) {
                Buffer::for_overwrite(want * size_of::<O>())?
            } else {
                Buffer::zeroed_in(want * size_of::<O>(), self.budget)?
            };
            if want == 0 {
                self.send(buf)?;
            } else {
                self.cur = Some((buf, 0, want));
            }
        }
        Ok(())
    }

    fn send(&mut self, buf: Buffer) -> Result<()> {
        self.tx.send((self.next, buf)).map_err(|_| writer_gone())?;
        self.next += 1;
        Ok(())
    }

    /// Appends `items` converted by `conv`.
    fn push<E: Copy + Sync>(
        &mut self,
        mut items: &[E],
        conv: &(dyn Fn(E) -> O + Sync),
    ) -> Result<()> {
        while !items.is_empty() {
            self.open()?;
            let (buf, filled, want) = self.cur.as_mut().expect("opened");
            let take = (*want - *filled).min(items.len());
            let dst = &mut buf.as_mut_slice::<O>()[*filled..*filled + take];
            dst.par_iter_mut()
                .zip(items[..take].par_iter())
                .with_min_len(PAR_MIN)
                .for_each(|(d, &s)| *d = conv(s));
            *filled += take;
            items = &items[take..];
            if *filled == *want {
                let (buf, _, _) = self.cur.take().expect("opened");
                self.send(buf)?;
            }
        }
        Ok(())
    }

    /// Checks every chunk was filled (sending trailing empty ones).
    fn finish(mut self) -> Result<()> {
        while self.cur.is_none() && self.next < self.nchunks {
            if self.layout.chunk_region(self.next).numel() != 0 {
                break;
            }
            self.open()?;
        }
        if self.cur.is_some() || self.next != self.nchunks {
            return Err(Error::Invalid(format!(
                "sort filled {} of the output's {} chunks",
                self.next, self.nchunks
            )));
        }
        Ok(())
    }
}

/// Runs `body` with a channel to a thread that encodes and writes chunks in order; the writer's
/// error, if any, wins over the body's.
fn with_writer_thread<R>(
    writer: &dyn ArrayWriter,
    body: impl FnOnce(SyncSender<(usize, Buffer)>) -> Result<R>,
) -> Result<R> {
    let (tx, rx) = sync_channel::<(usize, Buffer)>(1);
    std::thread::scope(|s| {
        let sink = s.spawn(move || -> Result<()> {
            for (i, buf) in rx {
                let enc = writer.encode(i, buf.bytes())?;
                writer.write(i, &enc)?;
            }
            Ok(())
        });
        let r = body(tx);
        let w = sink.join().expect("sort writer thread panicked");
        match (r, w) {
            (_, Err(e)) => Err(e),
            (r, Ok(())) => r,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Flat sort: runs, spills, merges

/// Plan of a flat sort's memory.
struct Plan {
    /// Elements per run.
    run_elems: usize,
    /// Whether a second run-sized buffer is reserved, for gathering the next run while the
    /// previous one is spilled.
    two_buffers: bool,
    /// Bytes shared by the merge buffers (the run buffers', reused).
    merge_bytes: u64,
    /// Most runs merged at once.
    fan_in: usize,
    /// Whether spill files bypass the page cache (room for a staging buffer is left).
    direct_spill: bool,
}

fn plan<E: Pod>(ctx: &Ctx<'_>, n: u64, out_layout: &ChunkLayout, out_elem: usize) -> Result<Plan> {
    let esize = size_of::<E>() as u64;
    let limit = ctx.budget.limit();
    let inflight = ctx.input_in_flight();
    let out = 3 * max_chunk_elems(out_layout) * out_elem as u64;
    let left = limit.saturating_sub(inflight).saturating_sub(out);
    let need = 3 * MIN_MERGE_BUF;
    if left < need {
        return Err(Error::Invalid(format!(
            "{}: memory budget of {} too small to sort: input chunks in flight ({}) and three \
             output chunks ({}) leave {}, need at least {}",
            ctx.src.info().name,
            human_bytes(limit),
            human_bytes(inflight),
            human_bytes(out),
            human_bytes(left),
            human_bytes(need)
        )));
    }
    let total = n.saturating_mul(esize);
    // Spill files of a large sort bypass the page cache: their writer's first staging buffer
    // must find room in the budget while the run buffers hold the rest.
    let stage = direct::STAGE_BYTES as u64;
    let spills = total > ctx.opts.run_bytes.map_or(left, |r| r.min(left));
    let direct_spill = spills
        && ctx.is_global()
        && total >= direct_spill_min()
        && direct::enabled()
        && left >= need + stage;
    let left = if direct_spill { left - stage } else { left };
    let cap = ctx.opts.run_bytes.map_or(left, |r| r.min(left)).max(esize);
    // In memory if it fits; otherwise runs of half the room, so one is gathered while the
    // previous one is spilled.
    let (run_elems, two_buffers) = if total <= cap {
        (n, false)
    } else {
        (cap / 2 / esize, true)
    };
    let run_elems = run_elems.max(1) as usize;
    let merge_bytes = cap.max(need);
    // A merge gives half its memory to the runs' read buffers and half to its output block.
    let per_run = (2 * MIN_MERGE_BUF).max(merge::min_reader_bytes::<E>(direct_spill));
    let fan_in = (merge_bytes / per_run).clamp(2, MAX_FAN_IN) as usize;
    Ok(Plan {
        run_elems,
        two_buffers,
        merge_bytes,
        fan_in,
        direct_spill,
    })
}

/// Spill files at least this large bypass the page cache ([`direct::DIRECT_MIN_BYTES`]; tests
/// lower it to reach the direct path with small inputs).
fn direct_spill_min() -> u64 {
    #[cfg(test)]
    if let Some(v) = tests::DIRECT_SPILL_MIN.with(|v| v.get()) {
        return v;
    }
    direct::DIRECT_MIN_BYTES
}

/// A sorted run: `len` elements at element offset `start` of a spill file.
struct Run {
    file: Arc<SpillFile>,
    start: u64,
    len: u64,
}

/// An anonymous temporary file (deleted when the last handle closes).
struct SpillFile {
    file: File,
    /// The same file opened for `O_DIRECT` reads, when it is written that way.
    direct: Option<File>,
    /// Set when a direct read was refused: reads go through `file` from then on.
    direct_failed: std::sync::atomic::AtomicBool,
    dir: PathBuf,
}

/// Spill bookkeeping for the report.
#[derive(Default)]
struct SpillStats {
    written: u64,
    live: u64,
    peak: u64,
}

impl SpillStats {
    fn add(&mut self, bytes: u64) {
        self.written += bytes;
        self.live += bytes;
        self.peak = self.peak.max(self.live);
    }
}

/// Creates an anonymous spill file in `dir` for `len` bytes, and its writer, which bypasses the
/// page cache when `large` (and the file system allows it).
fn new_spill_file(
    dir: &std::path::Path,
    len: u64,
    large: bool,
) -> Result<(Arc<SpillFile>, SpillWriter)> {
    let file =
        tempfile::tempfile_in(dir).map_err(|e| Error::io(dir, "create sort spill file", e))?;
    let name = dir.join("<sort spill file>");
    // The anonymous file is reopened through its descriptor's `/proc` link for `O_DIRECT`;
    // where that fails, it is written and read through the ordinary handle.
    let link = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let (writer, reader) = if large {
        let plain = file
            .try_clone()
            .map_err(|e| Error::io(dir, "open sort spill file", e))?;
        let w = DirectFile::open(&link, plain, &name, len)?;
        let r = if w.is_direct() {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&link)
                .ok()
        } else {
            None
        };
        (Some(w), r)
    } else {
        (None, None)
    };
    let file = Arc::new(SpillFile {
        file,
        direct: reader,
        direct_failed: Default::default(),
        dir: dir.to_path_buf(),
    });
    let writer = SpillWriter {
        file: Arc::clone(&file),
        direct: writer,
    };
    Ok((file, writer))
}

/// Writes a spill file: large ones bypass the page cache (`O_DIRECT`, see
/// [`direct`](crate::storage::direct)), as a spill is read back once and, on a VM, each fresh
/// page-cache page is first-touch memory (buffered spill writes of a 4 GiB sort ran at about
/// 0.5 GB/s of CPU time in the kernel's copy on the machine of `benches/RESULTS.md`).
struct SpillWriter {
    file: Arc<SpillFile>,
    direct: Option<DirectFile>,
}

impl SpillWriter {
    /// Writes `items` at element offset `start`.
    fn write<E: Pod>(&self, start: u64, items: &[E]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(items);
        let at = start * size_of::<E>() as u64;
        match &self.direct {
            Some(d) => d.write_at(bytes, at),
            None => self
                .file
                .file
                .write_all_at(bytes, at)
                .map_err(|e| Error::io(&self.file.dir, "write sort spill file", e)),
        }
    }

    /// Waits until everything written is in the file, ready to be read.
    fn finish(self) -> Result<()> {
        match &self.direct {
            Some(d) => d.finish(),
            None => Ok(()),
        }
    }
}

/// Appends `items` to a spill file at element offset `*at`.
fn spill<E: Pod>(
    file: &SpillWriter,
    at: &mut u64,
    items: &[E],
    stats: &mut SpillStats,
) -> Result<()> {
    file.write(*at, items)?;
    *at += items.len() as u64;
    stats.add(size_of_val(items) as u64);
    Ok(())
}

/// A vector whose bytes are reserved in a budget.
fn reserved_vec<E>(
    budget: &MemoryBudget,
    cap: usize,
    what: &'static str,
) -> Result<(Vec<E>, Reservation)> {
    let res = budget.reserve((cap * size_of::<E>()) as u64, what)?;
    Ok((Vec::with_capacity(cap), res))
}

type Fill<'a, E> = dyn Fn(&Chunk, usize, &mut [E]) + Sync + 'a;

/// Sorts the flattened source into `writer`: keys `E` made by `fill`, written as `conv(E)`.
fn flat_sort<E: Pod + SortSlice + Sync, O: Element>(
    ctx: &Ctx<'_>,
    writer: &dyn ArrayWriter,
    fill: &Fill<'_, E>,
    conv: &(dyn Fn(E) -> O + Sync),
) -> Result<SortReport> {
    let info = ctx.src.info();
    let n = info.numel();
    let layout = writer.layout().clone();
    let plan = plan::<E>(ctx, n, &layout, size_of::<O>())?;
    let mut report = SortReport {
        elements: n,
        run_bytes: (plan.run_elems * size_of::<E>()) as u64,
        ..SortReport::default()
    };
    let mut stats = SpillStats::default();
    let dir = ctx.temp_dir();
    with_writer_thread(writer, |tx| {
        let mut out = OutStream::<O>::new(&layout, ctx.budget, tx);
        if n == 0 {
            return out.finish();
        }
        let (mut run, res) = reserved_vec::<E>(ctx.budget, plan.run_elems, "sort run")?;
        let mut second = if plan.two_buffers {
            Some(reserved_vec::<E>(ctx.budget, plan.run_elems, "sort run")?)
        } else {
            None
        };
        let runs = gather_runs(ctx, &plan, fill, &mut run, &mut second, &dir, &mut stats)?;
        if runs.is_empty() {
            // Everything fit in one run: sort it in memory and stream it out.
            report.runs = 1;
            E::par_sort_slice(&mut run);
            drop(second);
            out.push(&run, conv)?;
            drop((run, res));
            return out.finish();
        }
        drop((run, res, second));
        report.runs = runs.len() as u64;
        report.fan_in = plan.fan_in.min(runs.len()) as u64;
        let mut runs = runs;
        while runs.len() > plan.fan_in {
            // A merge pass: groups of `fan_in` runs into longer runs in a new file.
            report.merge_passes += 1;
            let total: u64 = runs.iter().map(|r| r.len).sum();
            let (f, w) = new_spill_file(&dir, total * size_of::<E>() as u64, plan.direct_spill)?;
            let mut at = 0;
            let mut next = Vec::new();
            let mut rest = runs.into_iter().peekable();
            while rest.peek().is_some() {
                let group: Vec<Run> = rest.by_ref().take(plan.fan_in).collect();
                let start = at;
                let len = group.iter().map(|r| r.len).sum();
                merge::<E>(group, plan.merge_bytes, ctx.budget, &mut |items| {
                    spill(&w, &mut at, items, &mut stats)
                })?;
                next.push(Run {
                    file: f.clone(),
                    start,
                    len,
                });
            }
            w.finish()?;
            // The previous pass's file is closed (deleted) with its last run.
            stats.live = at * size_of::<E>() as u64;
            runs = next;
        }
        report.merge_passes += 1;
        merge::<E>(runs, plan.merge_bytes, ctx.budget, &mut |items| {
            out.push(items, conv)
        })?;
        out.finish()
    })?;
    report.spilled_bytes = stats.written;
    report.peak_spill_bytes = stats.peak;
    Ok(report)
}

/// Reads the source's keys into `run`; whenever it is full and more input follows, sorts it and
/// spills it on a helper thread while the next run is gathered in the second buffer (handed back
/// when the spill is done). Returns the spilled runs; none when the
/// whole input is left in `run`, unsorted.
fn gather_runs<E: Pod + SortSlice + Sync>(
    ctx: &Ctx<'_>,
    plan: &Plan,
    fill: &Fill<'_, E>,
    run: &mut Vec<E>,
    second: &mut Option<(Vec<E>, Reservation)>,
    dir: &std::path::Path,
    stats: &mut SpillStats,
) -> Result<Vec<Run>> {
    let info = ctx.src.info();
    let mut runs: Vec<Run> = Vec::new();
    let mut file: Option<(Arc<SpillFile>, Arc<SpillWriter>)> = None;
    let mut at = 0u64;
    let total = info.numel() * size_of::<E>() as u64;
    std::thread::scope(|scope| -> Result<()> {
        // The spill in flight, which hands its buffer back.
        let mut pending = None;
        // `run[..filled]` holds the keys gathered so far; past `filled` are stale keys of an
        // earlier run (buffers are zeroed once, not per run).
        let mut flush = |run: &mut Vec<E>,
                         filled: usize,
                         second: &mut Option<(Vec<E>, Reservation)>|
         -> Result<()> {
            join_spill(pending.take(), second)?;
            let Some((spare, _)) = second.as_mut() else {
                unreachable!("runs are only spilled with two buffers planned")
            };
            let keys = &mut run[..filled];
            E::par_sort_slice(keys);
            let (f, w) = match &file {
                Some((f, w)) => (f.clone(), w.clone()),
                None => {
                    let (f, w) = new_spill_file(dir, total, plan.direct_spill)?;
                    file.insert((f, Arc::new(w))).clone()
                }
            };
            let start = at;
            at += filled as u64;
            stats.add((filled * size_of::<E>()) as u64);
            runs.push(Run {
                file: f,
                start,
                len: filled as u64,
            });
            // Spill the sorted run on a helper thread; gather the next one in the spare buffer.
            let mut full = std::mem::take(spare);
            std::mem::swap(run, &mut full);
            pending = Some(scope.spawn(move || -> Result<Vec<E>> {
                w.write(start, &full[..filled])?;
                Ok(full)
            }));
            Ok(())
        };
        let nchunks = info.layout.num_chunks();
        let batch = rayon::current_num_threads().max(1);
        let mut spilled = false;
        let mut filled = 0;
        let mut first = 0;
        while first < nchunks {
            let last = (first + batch).min(nchunks);
            let chunks: Vec<Chunk> = (first..last)
                .into_par_iter()
                .map(|i| ctx.src.read_chunk(i))
                .collect::<Result<_>>()?;
            for c in &chunks {
                let m = c.region.numel() as usize;
                let mut lo = 0;
                while lo < m {
                    if filled == plan.run_elems {
                        flush(run, filled, second)?;
                        filled = 0;
                        spilled = true;
                    }
                    let take = (m - lo).min(plan.run_elems - filled);
                    if run.len() < filled + take {
                        run.resize(plan.run_elems, E::zeroed());
                    }
                    fill(c, lo, &mut run[filled..filled + take]);
                    filled += take;
                    lo += take;
                }
                (ctx.progress)(c.data.len() as u64);
            }
            first = last;
        }
        if spilled && filled > 0 {
            flush(run, filled, second)?;
        } else if !spilled {
            run.truncate(filled);
        }
        join_spill(pending.take(), second)
    })?;
    if let Some((_, w)) = file {
        Arc::into_inner(w)
            .expect("the spill threads have finished")
            .finish()?;
    }
    Ok(runs)
}

/// Waits for the spill in flight, if any, and puts its buffer back as the second buffer.
fn join_spill<E>(
    pending: Option<std::thread::ScopedJoinHandle<'_, Result<Vec<E>>>>,
    second: &mut Option<(Vec<E>, Reservation)>,
) -> Result<()> {
    if let Some(h) = pending {
        let buf = h.join().expect("sort spill thread panicked")?;
        if let Some((s, _)) = second.as_mut() {
            *s = buf;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Along the last axis

/// Bytes of work memory per element of a band of rows: the input, and for argsort the `i64`
/// output and the `u128` pair scratch.
fn band_cost<T>(kind: Kind) -> u64 {
    match kind {
        Kind::Sort => size_of::<T>() as u64,
        Kind::Argsort => (size_of::<T>() + 8 + 16) as u64,
    }
}

/// Reads `band` (whole rows of length `row`) and sorts or argsorts each row; returns the output
/// band (the source's dtype or `i64`) and its element size.
fn sort_band<T: SortKey>(
    ctx: &Ctx<'_>,
    band: &Region,
    row: u64,
    kind: Kind,
) -> Result<(Buffer, usize)> {
    let mut data = ctx.src.read_region(band)?;
    (ctx.progress)(data.len() as u64);
    let rows = band.numel() / row.max(1);
    match kind {
        Kind::Sort => {
            sort_rows::<T>(data.as_mut_slice::<T>(), row as usize, rows as usize);
            Ok((data, size_of::<T>()))
        }
        Kind::Argsort => {
            let mut idx = Buffer::zeroed_in(band.numel() as usize * 8, ctx.budget)?;
            let threads = rayon::current_num_threads() as u64;
            let _scratch = ctx
                .budget
                .reserve(threads.min(rows) * row * 16, "sort row scratch")?;
            argsort_rows::<T>(
                data.as_slice::<T>(),
                idx.as_mut_slice::<i64>(),
                row as usize,
            );
            Ok((idx, 8))
        }
    }
}

/// Sorts (or argsorts) each row along the last axis of an N-d source (N >= 2) into `writer`, one
/// band of rows per row of output chunks (or through a staging file when such a band does not
/// fit the budget).
fn last_axis<T: SortKey>(
    ctx: &Ctx<'_>,
    writer: &dyn ArrayWriter,
    kind: Kind,
) -> Result<SortReport> {
    let info = ctx.src.info();
    let shape = info.shape.clone();
    let nd = shape.len();
    let row = shape[nd - 1];
    let n = info.numel();
    let layout = writer.layout().clone();
    let ChunkLayout::Regular { chunk_shape, .. } = &layout else {
        return Err(Error::Invalid(format!(
            "sorting {} along the last axis needs an output with a regular chunk grid",
            info.name
        )));
    };
    let out_size = match kind {
        Kind::Sort => size_of::<T>(),
        Kind::Argsort => 8,
    } as u64;
    let band_rows = chunk_shape[..nd - 1]
        .iter()
        .zip(&shape)
        .map(|(&c, &d)| c.min(d))
        .product::<u64>();
    let fixed = max_chunk_elems(&layout) * out_size * 3
        + if ctx.is_global() {
            max_chunk_elems(&info.layout) * size_of::<T>() as u64
        } else {
            0
        };
    let need = |rows: u64| rows * row * band_cost::<T>(kind) + fixed;
    let limit = ctx.budget.limit();
    let mut report = SortReport {
        elements: n,
        run_bytes: need(band_rows) - fixed,
        ..SortReport::default()
    };
    if n == 0 {
        with_writer_thread(writer, |tx| {
            OutStream::<T>::new(&layout, ctx.budget, tx).finish()
        })?;
        return Ok(report);
    }
    if need(band_rows) > limit {
        if need(1) > limit {
            return Err(Error::Invalid(format!(
                "{}: sorting along the last axis needs whole rows in memory: a row of {} \
                 elements needs {} with its buffers, more than the memory budget of {}; sort the \
                 flattened array instead or raise the limit",
                info.name,
                row,
                human_bytes(need(1)),
                human_bytes(limit)
            )));
        }
        let rows_per = ((limit - fixed) / (row * band_cost::<T>(kind))).max(1);
        return staged_last_axis::<T>(ctx, writer, kind, rows_per, report);
    }
    let grid = layout.grid_shape();
    let per_band = grid[nd - 1] as usize;
    let nbands = layout.num_chunks() / per_band;
    report.runs = nbands as u64;
    with_writer_thread(writer, |tx| {
        for b in 0..nbands {
            let mut band = layout.chunk_region(b * per_band);
            band.origin[nd - 1] = 0;
            band.shape[nd - 1] = row;
            let (out, elem) = sort_band::<T>(ctx, &band, row, kind)?;
            if per_band == 1 {
                tx.send((b, out)).map_err(|_| writer_gone())?;
                continue;
            }
            for c in b * per_band..(b + 1) * per_band {
                let region = layout.chunk_region(c);
                let mut buf = Buffer::zeroed_in(region.numel() as usize * elem, ctx.budget)?;
                copy_box(out.bytes(), &band, buf.bytes_mut(), &region, &region, elem);
                tx.send((c, buf)).map_err(|_| writer_gone())?;
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// Sorts each of the `rows` rows of `data` (length `row`) in place.
fn sort_rows<T: SortKey>(data: &mut [T], row: usize, rows: usize) {
    let keys: &mut [T::Key] = bytemuck::cast_slice_mut(data);
    keys.par_iter_mut()
        .with_min_len(PAR_MIN)
        .for_each(|k| *k = recast::<T::Key, T>(*k).to_key());
    if rows < rayon::current_num_threads() {
        keys.chunks_mut(row).for_each(T::Key::par_sort_slice);
    } else {
        keys.par_chunks_mut(row).for_each(T::Key::sort_slice);
    }
    keys.par_iter_mut()
        .with_min_len(PAR_MIN)
        .for_each(|k| *k = recast::<T, T::Key>(T::from_key(*k)));
}

/// Writes the stable argsort of each row of `data` (length `row`) into `out`.
fn argsort_rows<T: SortKey>(data: &[T], out: &mut [i64], row: usize) {
    let one = |vals: &[T], out: &mut [i64], scratch: &mut Vec<u128>, par: bool| {
        scratch.clear();
        scratch.extend(
            vals.iter()
                .enumerate()
                .map(|(j, v)| pair(v.arg_key(), j as u64)),
        );
        if par {
            scratch.par_sort_unstable();
        } else {
            scratch.sort_unstable();
        }
        for (o, p) in out.iter_mut().zip(scratch.iter()) {
            *o = *p as u64 as i64;
        }
    };
    let rows = data.len() / row.max(1);
    if rows < rayon::current_num_threads() {
        let mut scratch = Vec::with_capacity(row);
        for (v, o) in data.chunks(row).zip(out.chunks_mut(row)) {
            one(v, o, &mut scratch, true);
        }
    } else {
        data.par_chunks(row)
            .zip(out.par_chunks_mut(row))
            .for_each_init(|| Vec::with_capacity(row), |s, (v, o)| one(v, o, s, false));
    }
}

/// The fallback when a band of rows covering one row of output chunks does not fit the budget:
/// sorts bands of `rows_per` rows into a temporary `.npy` (C order), then reads the output's
/// chunks back from it.
fn staged_last_axis<T: SortKey>(
    ctx: &Ctx<'_>,
    writer: &dyn ArrayWriter,
    kind: Kind,
    rows_per: u64,
    mut report: SortReport,
) -> Result<SortReport> {
    use crate::formats::npy;
    let info = ctx.src.info();
    let shape = &info.shape;
    let nd = shape.len();
    let row = shape[nd - 1];
    let dtype = match kind {
        Kind::Sort => info.dtype,
        Kind::Argsort => DType::I64,
    };
    let dir = ctx.temp_dir();
    let tmp = tempfile::Builder::new()
        .prefix("chunkheap-sort-")
        .tempdir_in(&dir)
        .map_err(|e| Error::io(&dir, "create sort staging dir", e))?;
    let path = tmp.path().join("rows.npy");
    let file = File::create(&path).map_err(|e| Error::io(&path, "create", e))?;
    let header = npy::header_bytes(dtype, shape);
    file.write_all_at(&header, 0)
        .map_err(|e| Error::io(&path, "write", e))?;
    // Bands are boxes of whole rows along the second-to-last axis, one outer index at a time.
    let outer: u64 = shape[..nd - 2].iter().product();
    let mid = shape[nd - 2];
    let rows_per = rows_per.min(mid);
    let mut bands = 0u64;
    for o in 0..outer {
        let mut origin = vec![0u64; nd];
        let mut rem = o;
        for ax in (0..nd - 2).rev() {
            origin[ax] = rem % shape[ax];
            rem /= shape[ax];
        }
        let mut r0 = 0;
        while r0 < mid {
            let r1 = (r0 + rows_per).min(mid);
            origin[nd - 2] = r0;
            let mut bshape = vec![1u64; nd];
            bshape[nd - 2] = r1 - r0;
            bshape[nd - 1] = row;
            let band = Region {
                origin: origin.clone(),
                shape: bshape,
            };
            let (out, elem) = sort_band::<T>(ctx, &band, row, kind)?;
            let at = header.len() as u64 + band.global_flat_index(0, shape) * elem as u64;
            file.write_all_at(out.bytes(), at)
                .map_err(|e| Error::io(&path, "write", e))?;
            bands += 1;
            r0 = r1;
        }
    }
    drop(file);
    let bytes = info.numel() * dtype.size() as u64;
    report.runs = bands;
    report.spilled_bytes = bytes;
    report.peak_spill_bytes = bytes;
    report.merge_passes = 1;
    let layout = writer.layout().clone();
    let out_chunk = max_chunk_elems(&layout) * dtype.size() as u64;
    let read_chunk = (ctx.budget.limit().saturating_sub(3 * out_chunk) / 4).clamp(4096, 8 << 20);
    let staged = npy::NpySource::open_with_chunk_bytes(&path, &info.name, read_chunk)?;
    with_writer_thread(writer, |tx| {
        for i in 0..layout.num_chunks() {
            let buf = staged.read_region(&layout.chunk_region(i))?;
            tx.send((i, buf)).map_err(|_| writer_gone())?;
        }
        Ok(())
    })?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Top-k

/// The best `k` of a stream of `(order key, value)` candidates (smallest order key first).
struct Best<T> {
    k: usize,
    items: Vec<(u128, T)>,
    /// The worst order key kept once `items` has been cut to `k`: anything above is skipped.
    bound: Option<u128>,
}

impl<T: Copy> Best<T> {
    fn new(k: usize) -> Self {
        Best {
            k,
            items: Vec::with_capacity(2 * k),
            bound: None,
        }
    }

    #[inline]
    fn offer(&mut self, ord: u128, v: T) {
        if self.bound.is_some_and(|b| ord > b) {
            return;
        }
        self.items.push((ord, v));
        if self.items.len() == 2 * self.k {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.items.len() > self.k {
            self.items.select_nth_unstable_by_key(self.k - 1, |e| e.0);
            self.items.truncate(self.k);
            self.bound = self.items.iter().map(|e| e.0).max();
        }
    }

    fn sorted(mut self) -> Vec<(u128, T)> {
        self.items.sort_unstable_by_key(|e| e.0);
        self.items.truncate(self.k);
        self.items
    }
}

fn top_k_typed<T: SortKey>(
    src: &dyn ChunkSource,
    k: usize,
    largest: bool,
) -> Result<(Buffer, Vec<i64>)> {
    let info = src.info();
    let n = info.numel();
    if k as u64 > n {
        return Err(Error::Invalid(format!(
            "{}: k = {k} is more than the {n} elements of the array (shape {})",
            info.name,
            shape_str(&info.shape)
        )));
    }
    if k == 0 {
        return Ok((Buffer::zeroed(0)?, Vec::new()));
    }
    let threads = rayon::current_num_threads();
    let item = size_of::<(u128, T)>() as u64;
    let need = (threads as u64 + 2) * 2 * k as u64 * item;
    let budget = memory::global();
    if need > budget.limit() {
        return Err(Error::Invalid(format!(
            "{}: top-k with k = {k} keeps {} of candidates on {threads} threads, more than the \
             memory budget of {}",
            info.name,
            human_bytes(need),
            human_bytes(budget.limit())
        )));
    }
    let _res = budget.reserve(need, "top-k candidates")?;
    let shape = &info.shape;
    let nchunks = info.layout.num_chunks();
    let mut best = Best::<T>::new(k);
    let mut first = 0;
    while first < nchunks {
        let last = (first + threads).min(nchunks);
        let partials: Vec<Vec<(u128, T)>> = (first..last)
            .into_par_iter()
            .map(|i| {
                let c = src.read_chunk(i)?;
                let vals = c.as_slice::<T>();
                let mut b = Best::new(k);
                flat_segments(&c.region, shape, 0, vals.len() as u64, |p, flat, len| {
                    for j in 0..len {
                        let v = vals[(p + j) as usize];
                        let key = if largest { !v.arg_key() } else { v.arg_key() };
                        b.offer(pair(key, flat + j), v);
                    }
                });
                b.cut();
                Ok(b.items)
            })
            .collect::<Result<_>>()?;
        for p in partials {
            for (o, v) in p {
                best.offer(o, v);
            }
        }
        first = last;
    }
    let items = best.sorted();
    let mut values = Buffer::zeroed(k * size_of::<T>())?;
    let out = values.as_mut_slice::<T>();
    let mut idx = Vec::with_capacity(k);
    for (slot, (o, v)) in out.iter_mut().zip(items) {
        *slot = v;
        idx.push(o as u64 as i64);
    }
    Ok((values, idx))
}

mod grouped;
mod merge;
mod simd;

use merge::merge;

use simd::SortSlice;

#[cfg(test)]
mod tests;
