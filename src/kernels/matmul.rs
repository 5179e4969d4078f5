//! Out-of-core matrix products with NumPy's `@` semantics: `(m, k) @ (k, n) -> (m, n)`, and the
//! 1-D cases (`(k,) @ (k, n) -> (n,)`, `(m, k) @ (k,) -> (m,)`, `(k,) @ (k,) -> ()`).
//!
//! **Blocking.** The output is produced one writer chunk at a time by [`write_all`] (chunks in
//! parallel, written in order). When the right operand (converted to the result dtype) takes at
//! most half the budget and what is left still gives every worker A panels of at least
//! `RESIDENT_MIN_ROWS` rows (or a whole chunk's), B is read once and shared by all workers
//! ("resident B"): each chunk is then computed in bands of rows, one `rows x k` A panel and one
//! product over all of `k` per band, so B is neither re-read nor re-copied per chunk. Otherwise a
//! chunk covering rows `r` and columns `c` of the result is computed in sub-tiles of at most
//! `rows x cols`, walking the inner dimension in blocks of `bk`:
//! for every block the worker reads the A panel `A[r, kb]` and the B panel `B[kb, c]` with
//! [`ChunkSource::read_region`], converts them to the result dtype if needed, and accumulates
//! into the output chunk. Tile sizes come from the memory budget: the output chunks that
//! `write_all` may hold (three batches of one chunk per worker), one input chunk per worker (what
//! `read_region` maps while assembling a panel) and two panels per worker must fit, so operands
//! and results far larger than the budget stream through it.
//!
//! **Kernels.** `f64` blocks go through our own packed GEMM (`packed.rs`: a 6x8 FMA micro-kernel,
//! each tile kept contiguous while it is summed) on x86-64 CPUs with AVX2 and FMA, and through
//! `matrixmultiply`'s `dgemm` elsewhere; `f32` always through `matrixmultiply`'s `sgemm` (both via
//! `ndarray`'s safe `general_mat_mul`, single-threaded; we parallelise over output chunks).
//! A result kept in memory ([`matmul_to_buffer`]) from `f64` operands, with B within the budget,
//! packs B once for all workers instead of once per tile and streams bands of A through it.
//! Integers use a cache-blocked loop with wrapping arithmetic (what NumPy's integer `matmul`
//! does), `bool` the logical or-of-ands.
//!
//! **Determinism.** Each output element is summed over `k` in order, in slices (of [`KB`] on the
//! packed `f64` path; of `matrixmultiply`'s `kc`, 256, for `f32` and for `f64` without AVX2, 256
//! dividing [`KB`]), each slice's result added into the output. Our `k` blocks are multiples of
//! [`KB`] (or all of `k`, as with resident B), so
//! every element is summed exactly as one in-memory product over the whole operands would:
//! results do not depend on the thread count, the tiling, the budget or the chunking. Integer
//! and bool products are exact.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use crate::dtype::{Bool, DType, Element};
use crate::error::{Error, Result};
use crate::kernels::transpose::square_tile;
use crate::memory::{self, human_bytes};
use crate::pipeline::{Progress, no_progress, write_all};
use crate::shape::{ChunkLayout, Region, checked_numel, copy_box, shape_str};
use crate::storage::{ArrayWriter, Buffer, ChunkSource};

mod packed;

/// Inner-dimension granularity: the packed `f64` GEMM's block, twice `matrixmultiply`'s `kc`
/// (256 for `f32` and `f64`). Our `k` blocks are multiples of it, so float results equal one
/// whole-operand product bit for bit, whatever the path.
pub const KB: usize = 512;

/// Most bytes one worker spends on its two operand panels (A and B, converted) even when the
/// budget allows more: larger panels only cost fresh page faults, the arithmetic per byte read
/// is set by the output tile, not by `bk`.
const PANEL_CAP: u64 = 64 << 20;

/// Fewest A-panel rows (or a whole output chunk's) that make reading B once worth it.
const RESIDENT_MIN_ROWS: usize = 32;

/// Most bytes of the output chunks [`suggested_chunks`] proposes (and [`matmul_to_buffer`]
/// computes in on its tiled path): 1448² `f64` tiles read each operand half as often as 724²
/// ones. An 8192² product under a 512 MiB budget took 21.5 s against 26.0 s with this and the
/// 64 MiB [`PANEL_CAP`] (both changed together).
const OUT_TILE_BYTES: u64 = 16 << 20;

/// How to run a product.
#[derive(Clone, Debug, Default)]
pub struct MatmulOptions {
    /// Plan tiles for at most this many bytes (still reserved in [`memory::global`]); `None` plans
    /// for the global budget's limit.
    pub memory_limit: Option<u64>,
}

/// What a product did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulReport {
    /// Shape of the result (`()` for vector @ vector).
    pub shape: Vec<u64>,
    /// Element type of the result.
    pub dtype: DType,
    /// Largest output sub-tile computed at once, `[rows, cols]`.
    pub tile: [u64; 2],
    /// Inner-dimension block `bk`: each A panel is `rows x bk`, each B panel `bk x cols`.
    pub k_block: u64,
    /// Floating-point (or integer) operations: `2 m n k`.
    pub flops: u64,
    /// Bytes of operand panels read (A and B together, in their stored dtypes); divided by the
    /// operands' size it is the re-read factor of the blocking.
    pub bytes_read: u64,
    /// Column blocks of B packed once each and shared by all workers, A streamed through each
    /// (the packed path); 0 where the product took the tiled path.
    pub b_blocks: u64,
}

/// The dtype of `a @ b`: NumPy's `np.result_type(a, b)` for our dtypes (same dtype: itself; bool
/// with anything: the other; signed with unsigned: the smallest signed type holding both, `f64`
/// for `u64`; integers of up to 16 bits with `f32`: `f32`; wider ones: `f64`).
pub fn result_dtype(a: DType, b: DType) -> DType {
    use DType::*;
    fn unsigned_to_signed(u: DType) -> DType {
        match u {
            U8 => I16,
            U16 => I32,
            U32 => I64,
            _ => F64,
        }
    }
    let signed = |d: DType| matches!(d, I8 | I16 | I32 | I64);
    let unsigned = |d: DType| matches!(d, U8 | U16 | U32 | U64);
    match (a, b) {
        _ if a == b => a,
        (Bool, o) | (o, Bool) => o,
        (F64, _) | (_, F64) => F64,
        (F32, o) | (o, F32) => {
            if o.size() <= 2 {
                F32
            } else {
                F64
            }
        }
        (x, y) if signed(x) == signed(y) => {
            if x.size() >= y.size() {
                x
            } else {
                y
            }
        }
        (x, y) => {
            let (s, u) = if signed(x) { (x, y) } else { (y, x) };
            debug_assert!(unsigned(u));
            if u.size() < s.size() {
                s
            } else {
                unsigned_to_signed(u)
            }
        }
    }
}

/// The shape of `a @ b` for operands of 1 or 2 dimensions, with NumPy's error messages.
pub fn result_shape(a: &[u64], b: &[u64]) -> Result<Vec<u64>> {
    Ok(Spec::shapes(a, b)?.shape)
}

/// An output chunk shape that suits [`matmul`] for a result of `shape`: square-ish tiles of up to
/// 16 MiB, and of at most a 32nd of the global memory budget (at least 1 MiB), so that the
/// chunks in flight leave room for the operand panels. The operands are read once per tile
/// column and row, so the bytes read fall as the tile's sides grow. Pass it as
/// [`WriteOptions::chunks`](crate::storage::WriteOptions) when creating a chunked (Zarr) output.
pub fn suggested_chunks(shape: &[u64], dtype: DType) -> Vec<u64> {
    let target = (memory::global().limit() / 32).clamp(1 << 20, OUT_TILE_BYTES);
    square_tile(shape, dtype.size(), target)
}

/// How a 1-D or 2-D operand is seen as a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// A 2-D array.
    Matrix,
    /// A 1-D array of length `k` as a `1 x k` row (the left operand).
    Row,
    /// A 1-D array of length `k` as a `k x 1` column (the right operand).
    Col,
}

/// How the `m x n` result maps to the output's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutKind {
    /// `(m, n)`.
    Matrix,
    /// `(n,)`: vector @ matrix.
    Row,
    /// `(m,)`: matrix @ vector.
    Col,
    /// `()`: vector @ vector.
    Scalar,
}

/// Operand shapes resolved into a matrix product.
#[derive(Clone, Debug)]
struct Spec {
    m: usize,
    k: usize,
    n: usize,
    a_view: View,
    b_view: View,
    out: OutKind,
    shape: Vec<u64>,
}

impl Spec {
    fn shapes(a: &[u64], b: &[u64]) -> Result<Spec> {
        const SIG: &str = "(n?,k),(k,m?)->(n?,m?)";
        for (i, s) in [a, b].iter().enumerate() {
            if s.is_empty() {
                return Err(Error::Invalid(format!(
                    "matmul: Input operand {i} does not have enough dimensions (has 0, gufunc \
                     core with signature {SIG} requires 1)"
                )));
            }
            if s.len() > 2 {
                return Err(Error::Invalid(format!(
                    "matmul: operand {i} has shape {} ({} dimensions); stacks of matrices (more \
                     than 2 dimensions) are not supported",
                    shape_str(s),
                    s.len()
                )));
            }
        }
        let (m, ka, a_view) = match *a {
            [k] => (1, k, View::Row),
            [m, k] => (m, k, View::Matrix),
            _ => unreachable!("checked above"),
        };
        let (kb, n, b_view) = match *b {
            [k] => (k, 1, View::Col),
            [k, n] => (k, n, View::Matrix),
            _ => unreachable!("checked above"),
        };
        if ka != kb {
            return Err(Error::Invalid(format!(
                "matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc \
                 signature {SIG} (size {kb} is different from {ka}): shapes {} and {}",
                shape_str(a),
                shape_str(b)
            )));
        }
        let (out, shape) = match (a_view, b_view) {
            (View::Row, View::Col) => (OutKind::Scalar, vec![]),
            (View::Row, _) => (OutKind::Row, vec![n]),
            (_, View::Col) => (OutKind::Col, vec![m]),
            _ => (OutKind::Matrix, vec![m, n]),
        };
        let too_big = |d: u64| usize::try_from(d).is_err();
        checked_numel(a)?;
        checked_numel(b)?;
        let numel = checked_numel(&shape)?;
        if too_big(m) || too_big(ka) || too_big(n) || too_big(numel) {
            return Err(Error::Invalid(format!(
                "matmul: shapes {} and {} are too large for this platform",
                shape_str(a),
                shape_str(b)
            )));
        }
        Ok(Spec {
            m: m as usize,
            k: ka as usize,
            n: n as usize,
            a_view,
            b_view,
            out,
            shape,
        })
    }

    /// The `(row0, rows, col0, cols)` box of the `m x n` result that output `region` covers.
    fn region_2d(&self, region: &Region) -> (usize, usize, usize, usize) {
        let o = |i: usize| region.origin[i] as usize;
        let s = |i: usize| region.shape[i] as usize;
        match self.out {
            OutKind::Matrix => (o(0), s(0), o(1), s(1)),
            OutKind::Row => (0, 1, o(0), s(0)),
            OutKind::Col => (o(0), s(0), 0, 1),
            OutKind::Scalar => (0, 1, 0, 1),
        }
    }

    /// The largest `(rows, cols)` of any chunk of `layout` (an output of this product's shape).
    fn max_chunk_2d(&self, layout: &ChunkLayout) -> (usize, usize) {
        let ext: Vec<u64> = match layout {
            ChunkLayout::Regular { shape, chunk_shape } => chunk_shape
                .iter()
                .zip(shape)
                .map(|(&c, &d)| c.min(d))
                .collect(),
            ChunkLayout::Ranges { bounds } => {
                vec![bounds.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)]
            }
        };
        let region = Region {
            origin: vec![0; ext.len()],
            shape: ext,
        };
        let (_, r, _, c) = self.region_2d(&region);
        (r, c)
    }
}

/// An operand seen as a matrix.
struct Operand<'a> {
    src: &'a dyn ChunkSource,
    view: View,
}

impl Operand<'_> {
    fn dtype(&self) -> DType {
        self.src.info().dtype
    }

    /// Reads the `rows x cols` box at `(r0, c0)` of the operand's matrix view (dense C order, in
    /// the stored dtype).
    fn read(&self, r0: usize, rows: usize, c0: usize, cols: usize) -> Result<Buffer> {
        let u = |x: usize| x as u64;
        let region = match self.view {
            View::Matrix => Region {
                origin: vec![u(r0), u(c0)],
                shape: vec![u(rows), u(cols)],
            },
            View::Row => Region {
                origin: vec![u(c0)],
                shape: vec![u(cols)],
            },
            View::Col => Region {
                origin: vec![u(r0)],
                shape: vec![u(rows)],
            },
        };
        self.src.read_region(&region)
    }

    /// Bytes of the largest chunk `read_region` may hold while assembling a panel.
    fn chunk_bytes(&self) -> u64 {
        let info = self.src.info();
        let elems = match &info.layout {
            ChunkLayout::Regular { chunk_shape, .. } => crate::shape::numel(chunk_shape),
            ChunkLayout::Ranges { bounds } => {
                bounds.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
            }
        };
        elems.min(info.numel()) * info.dtype.size() as u64
    }
}

/// Tile sizes for one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    rows: usize,
    cols: usize,
    bk: usize,
    /// The whole right operand (converted) is read once and shared by every worker: each output
    /// sub-tile is then one product over all of `k` (`bk == k`).
    resident: bool,
    /// Column blocks of B on the packed path (0: the tiled path).
    b_blocks: usize,
}

/// Everything a worker needs to compute any box of the result.
struct Ctx<'a> {
    a: Operand<'a>,
    b: Operand<'a>,
    spec: Spec,
    dtype: DType,
    plan: Plan,
    bytes_read: AtomicU64,
}

/// Bytes this product plans for: the global budget's whole limit (or `memory_limit` if lower).
/// What others hold is not subtracted: much of it is reclaimable (the buffer pool, evictable heap
/// chunks), and the rest is waited for by the budget's backpressure when we reserve.
fn available(opts: &MatmulOptions) -> u64 {
    let limit = memory::global().limit();
    opts.memory_limit.map_or(limit, |l| l.min(limit))
}

impl<'a> Ctx<'a> {
    fn new(a: &'a dyn ChunkSource, b: &'a dyn ChunkSource) -> Result<Ctx<'a>> {
        let spec = Spec::shapes(&a.info().shape, &b.info().shape).map_err(|e| match e {
            Error::Invalid(msg) => {
                Error::Invalid(format!("{msg} ({} @ {})", a.info().name, b.info().name))
            }
            other => other,
        })?;
        let dtype = result_dtype(a.info().dtype, b.info().dtype);
        Ok(Ctx {
            a: Operand {
                src: a,
                view: spec.a_view,
            },
            b: Operand {
                src: b,
                view: spec.b_view,
            },
            spec,
            dtype,
            plan: Plan {
                rows: 1,
                cols: 1,
                bk: 0,
                resident: false,
                b_blocks: 0,
            },
            bytes_read: AtomicU64::new(0),
        })
    }

    /// Chooses tiles so that `workers` workers fit in `avail` bytes besides `outputs` bytes of
    /// output held elsewhere; sub-tiles are at most `max_rows x max_cols` (an output chunk).
    fn plan(
        &mut self,
        avail: u64,
        workers: usize,
        outputs: u64,
        max_rows: usize,
        max_cols: usize,
    ) -> Result<()> {
        let (m, k, n) = (self.spec.m, self.spec.k, self.spec.n);
        let e = self.dtype.size() as u64;
        // A converted panel briefly coexists with the stored-dtype panel it came from.
        let per_elem = |op: &Operand| {
            let s = op.dtype().size() as u64;
            if op.dtype() == self.dtype { s } else { s + e }
        };
        let (ca, cb) = (per_elem(&self.a), per_elem(&self.b));
        let src_chunk = self.a.chunk_bytes().max(self.b.chunk_bytes());
        // On the packed `f64` path each block product packs its `bk x cols` B panel and sums
        // into a band scratch, per worker (`Kernel::gemm`).
        let packs = self.dtype == DType::F64 && packed::available() && k > 0;
        let extra = |rows: usize, cols: usize, bk: usize| {
            if packs {
                packed::PackedB::bytes(bk, cols) + packed::Scratch::bytes(rows, cols)
            } else {
                0
            }
        };
        // Resident B: read (and convert) the right operand once, then every sub-tile is one call
        // over all of `k` with a `rows x k` A panel. Worth it when B takes at most half the
        // budget and what is left gives every worker A panels of a useful height.
        let b_bytes = (k as u64 * n as u64).saturating_mul(cb);
        let left = avail.saturating_sub(outputs).saturating_sub(b_bytes) / workers as u64;
        let a_room = left.saturating_sub(src_chunk);
        let want_rows = max_rows.clamp(1, m.max(1));
        let want_cols = max_cols.clamp(1, n.max(1));
        // The tallest A panel, at most `want_rows`, that fits `a_room` with its extras.
        let panel_cost =
            |rows: usize| (rows as u64 * k as u64).saturating_mul(ca) + extra(rows, want_cols, k);
        let (mut lo, mut hi) = (0, want_rows);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if panel_cost(mid) <= a_room {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let a_rows = lo;
        if b_bytes <= avail / 2 && a_rows >= want_rows.min(RESIDENT_MIN_ROWS) {
            self.plan = Plan {
                rows: a_rows.max(1),
                cols: want_cols,
                bk: k,
                resident: true,
                b_blocks: 0,
            };
            return Ok(());
        }
        let per_worker = (avail.saturating_sub(outputs) / workers as u64).saturating_sub(src_chunk);
        let room = per_worker.min(PANEL_CAP);
        let cost = |rows: usize, cols: usize, bk: usize| {
            (rows as u64 * ca + cols as u64 * cb).saturating_mul(bk as u64) + extra(rows, cols, bk)
        };
        let mut rows = max_rows.clamp(1, m.max(1));
        let mut cols = max_cols.clamp(1, n.max(1));
        let bk_min = k.min(KB);
        while cost(rows, cols, bk_min) > room {
            if rows == 1 && cols == 1 {
                return Err(Error::Invalid(format!(
                    "matmul {} @ {}: the memory budget leaves {} for this product, too little for \
                     {workers} workers: output chunks in flight take {}, and each worker needs {} \
                     for one input chunk plus at least {} for its operand panels; raise the \
                     memory limit, use fewer threads or smaller output chunks",
                    shape_str(&self.a.src.info().shape),
                    shape_str(&self.b.src.info().shape),
                    human_bytes(avail),
                    human_bytes(outputs),
                    human_bytes(src_chunk),
                    human_bytes(cost(1, 1, bk_min)),
                )));
            }
            if rows >= cols {
                rows = rows.div_ceil(2);
            } else {
                cols = cols.div_ceil(2);
            }
        }
        let bk = if cost(rows, cols, k) <= room {
            k
        } else {
            // Both the panels and the packed B panel grow with `bk`; the band scratch does not.
            let fixed = cost(rows, cols, 0);
            let per_k = (cost(rows, cols, KB) - fixed) / KB as u64;
            ((room.saturating_sub(fixed) / per_k) as usize / KB * KB).max(bk_min)
        };
        self.plan = Plan {
            rows,
            cols,
            bk,
            resident: false,
            b_blocks: 0,
        };
        Ok(())
    }

    /// Reads an operand panel and converts it to `T`.
    fn panel<T: Element>(
        &self,
        op: &Operand,
        r0: usize,
        rows: usize,
        c0: usize,
        cols: usize,
    ) -> Result<Buffer> {
        let raw = op.read(r0, rows, c0, cols)?;
        self.bytes_read
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        if op.dtype() == T::DTYPE {
            return Ok(raw);
        }
        let mut out = Buffer::for_overwrite(rows * cols * T::DTYPE.size())?;
        crate::with_dtype!(op.dtype(), S => convert::<S, T>(raw.as_slice(), out.as_mut_slice()));
        Ok(out)
    }

    /// Computes the box `rows x cols` of the result into `out` (row stride `ldc`), from the
    /// resident B (`k x n`, dense) if there is one.
    fn compute<T: Kernel>(
        &self,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        out: &mut [T],
        ldc: usize,
        b_all: Option<&[T]>,
    ) -> Result<()> {
        let (r0, rows, c0, cols) = (rows.start, rows.len(), cols.start, cols.len());
        let Plan {
            rows: tr,
            cols: tc,
            bk,
            ..
        } = self.plan;
        let k = self.spec.k;
        if k == 0 || rows == 0 || cols == 0 {
            return Ok(()); // the output is zero-filled: an empty sum is 0 (False)
        }
        if let Some(b_all) = b_all {
            // B is resident (k x n, dense): one call over all of k per band of rows.
            let ldb = self.spec.n;
            let b = &b_all[c0..(k - 1) * ldb + c0 + cols];
            for rs in (0..rows).step_by(tr) {
                let h = tr.min(rows - rs);
                let a = self.panel::<T>(&self.a, r0 + rs, h, 0, k)?;
                let start = rs * ldc;
                let c = &mut out[start..start + (h - 1) * ldc + cols];
                let d = Dims {
                    h,
                    k,
                    w: cols,
                    ldb,
                    ldc,
                };
                T::gemm(d, a.as_slice(), b, c, false)?;
            }
            return Ok(());
        }
        for rs in (0..rows).step_by(tr) {
            let h = tr.min(rows - rs);
            for ks in (0..k).step_by(bk) {
                let kw = bk.min(k - ks);
                let a = self.panel::<T>(&self.a, r0 + rs, h, ks, kw)?;
                for cs in (0..cols).step_by(tc) {
                    let w = tc.min(cols - cs);
                    let b = self.panel::<T>(&self.b, ks, kw, c0 + cs, w)?;
                    let start = rs * ldc + cs;
                    let c = &mut out[start..start + (h - 1) * ldc + w];
                    T::gemm(
                        Dims {
                            h,
                            k: kw,
                            w,
                            ldb: w,
                            ldc,
                        },
                        a.as_slice(),
                        b.as_slice(),
                        c,
                        ks > 0,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn report(&self) -> MatmulReport {
        let (m, k, n) = (self.spec.m as u64, self.spec.k as u64, self.spec.n as u64);
        MatmulReport {
            shape: self.spec.shape.clone(),
            dtype: self.dtype,
            tile: [self.plan.rows as u64, self.plan.cols as u64],
            k_block: self.plan.bk as u64,
            flops: 2u64.saturating_mul(m).saturating_mul(n).saturating_mul(k),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            b_blocks: self.plan.b_blocks as u64,
        }
    }
}

/// Converts elements as NumPy's `astype` does for the promotions [`result_dtype`] makes. Going
/// through `f64` is exact for all of them: integer results only come from integers of at most 32
/// bits or of the same type, and `i64`/`u64` to `f64` rounds to nearest like NumPy's cast.
fn convert<S: Element, T: Element>(src: &[S], dst: &mut [T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = T::from_f64(s.to_f64());
    }
}

/// Sizes of one block product: `C[h x w] (+)= A[h x k] B[k x w]`, A dense, B with row stride
/// `ldb`, C with row stride `ldc`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    h: usize,
    k: usize,
    w: usize,
    ldb: usize,
    ldc: usize,
}

/// The in-block product for one element type.
trait Kernel: Element {
    /// `C = A B` (or `C += A B` when `accumulate`), with `b` and `c` starting at their block's
    /// first element and ending at its last.
    fn gemm(d: Dims, a: &[Self], b: &[Self], c: &mut [Self], accumulate: bool) -> Result<()>;
}

fn shape_error(e: ndarray::ShapeError) -> Error {
    Error::Invalid(format!("matmul: internal block shape error: {e}"))
}

macro_rules! float_kernel {
    ($($t:ty),*) => {$(
        impl Kernel for $t {
            fn gemm(d: Dims, a: &[Self], b: &[Self], c: &mut [Self], accumulate: bool) -> Result<()> {
                let a = ArrayView2::from_shape((d.h, d.k), a).map_err(shape_error)?;
                let b = ArrayView2::from_shape((d.k, d.w).strides((d.ldb, 1)), b)
                    .map_err(shape_error)?;
                let mut c =
                    ArrayViewMut2::from_shape((d.h, d.w).strides((d.ldc, 1)), c).map_err(shape_error)?;
                let beta = if accumulate { 1.0 } else { 0.0 };
                ndarray::linalg::general_mat_mul(1.0, &a, &b, beta, &mut c);
                Ok(())
            }
        }
    )*};
}
float_kernel!(f32);

impl Kernel for f64 {
    fn gemm(d: Dims, a: &[Self], b: &[Self], c: &mut [Self], accumulate: bool) -> Result<()> {
        if packed::available() {
            let mut scratch = packed::Scratch::default();
            return packed::gemm(
                (d.h, d.k, d.w),
                a,
                (b, d.ldb),
                (c, d.ldc),
                accumulate,
                &mut scratch,
            );
        }
        let a = ArrayView2::from_shape((d.h, d.k), a).map_err(shape_error)?;
        let b = ArrayView2::from_shape((d.k, d.w).strides((d.ldb, 1)), b).map_err(shape_error)?;
        let mut c =
            ArrayViewMut2::from_shape((d.h, d.w).strides((d.ldc, 1)), c).map_err(shape_error)?;
        let beta = if accumulate { 1.0 } else { 0.0 };
        ndarray::linalg::general_mat_mul(1.0, &a, &b, beta, &mut c);
        Ok(())
    }
}

/// Columns of C (and B) per cache block of the integer kernel.
const INT_NB: usize = 256;
/// Inner-dimension slice of the integer kernel (`INT_KB x INT_NB` of B stays in L2).
const INT_KB: usize = 128;

/// Integer arithmetic that wraps on overflow, like NumPy's integer loops.
trait Wrapping: Element + Default {
    fn mul_add(self, a: Self, b: Self) -> Self;
}

macro_rules! int_kernel {
    ($($t:ty),*) => {$(
        impl Wrapping for $t {
            #[inline]
            fn mul_add(self, a: Self, b: Self) -> Self {
                self.wrapping_add(a.wrapping_mul(b))
            }
        }
        impl Kernel for $t {
            fn gemm(d: Dims, a: &[Self], b: &[Self], c: &mut [Self], accumulate: bool) -> Result<()> {
                int_gemm(d, a, b, c, accumulate);
                Ok(())
            }
        }
    )*};
}
int_kernel!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Cache-blocked integer product: for each block of `INT_NB` columns and `INT_KB` inner indices,
/// every row of C is updated from a row of A times the L2-resident block of B (the inner loop
/// runs along contiguous rows of B and C, which vectorises).
fn int_gemm<T: Wrapping>(d: Dims, a: &[T], b: &[T], c: &mut [T], accumulate: bool) {
    if !accumulate {
        for i in 0..d.h {
            c[i * d.ldc..i * d.ldc + d.w].fill(T::default());
        }
    }
    for j0 in (0..d.w).step_by(INT_NB) {
        let jw = INT_NB.min(d.w - j0);
        for p0 in (0..d.k).step_by(INT_KB) {
            let pw = INT_KB.min(d.k - p0);
            for i in 0..d.h {
                let crow = &mut c[i * d.ldc + j0..i * d.ldc + j0 + jw];
                let arow = &a[i * d.k + p0..i * d.k + p0 + pw];
                for (p, &av) in arow.iter().enumerate() {
                    let brow = &b[(p0 + p) * d.ldb + j0..(p0 + p) * d.ldb + j0 + jw];
                    for (cv, &bv) in crow.iter_mut().zip(brow) {
                        *cv = cv.mul_add(av, bv);
                    }
                }
            }
        }
    }
}

impl Kernel for Bool {
    /// `C[i, j] = any(A[i, p] and B[p, j])`, stored as 0 or 1 (NumPy's `bool` matmul).
    fn gemm(d: Dims, a: &[Self], b: &[Self], c: &mut [Self], accumulate: bool) -> Result<()> {
        let a: &[u8] = bytemuck::cast_slice(a);
        let b: &[u8] = bytemuck::cast_slice(b);
        let c: &mut [u8] = bytemuck::cast_slice_mut(c);
        if !accumulate {
            for i in 0..d.h {
                c[i * d.ldc..i * d.ldc + d.w].fill(0);
            }
        }
        for j0 in (0..d.w).step_by(INT_NB) {
            let jw = INT_NB.min(d.w - j0);
            for p0 in (0..d.k).step_by(INT_KB) {
                let pw = INT_KB.min(d.k - p0);
                for i in 0..d.h {
                    let crow = &mut c[i * d.ldc + j0..i * d.ldc + j0 + jw];
                    let arow = &a[i * d.k + p0..i * d.k + p0 + pw];
                    for (p, &av) in arow.iter().enumerate() {
                        if av == 0 {
                            continue;
                        }
                        let brow = &b[(p0 + p) * d.ldb + j0..(p0 + p) * d.ldb + j0 + jw];
                        for (cv, &bv) in crow.iter_mut().zip(brow) {
                            *cv |= u8::from(bv != 0);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Number of output chunks `write_all` may hold at once with `workers` workers.
fn chunks_in_flight(workers: usize, chunks: usize) -> u64 {
    (3 * workers).min(chunks) as u64
}

/// Computes `a @ b` into `writer` (whose shape must be the result's, see [`result_shape`]; its
/// dtype should be [`result_dtype`]`(a, b)`), one writer chunk per worker at a time, reporting
/// written bytes to `progress`. Operands and result may be far larger than the memory budget.
/// `f64` products on AVX2/FMA CPUs pack B once per column block and stream A through it: into
/// a writer that takes spans (`.npy`) in bands of 240 rows whatever its chunks, into another
/// positional writer (Zarr) by blocks of chunk columns (chunk the output with
/// [`product_chunks`]); the others are computed tile by tile, re-reading operand panels as the
/// budget requires.
///
/// Errors name both shapes on a mismatch (NumPy's message), and the budget's shares when it is
/// too small for even the smallest tiles.
pub fn matmul(
    a: &dyn ChunkSource,
    b: &dyn ChunkSource,
    writer: Box<dyn ArrayWriter>,
    opts: &MatmulOptions,
    progress: Progress<'_>,
) -> Result<MatmulReport> {
    let mut ctx = Ctx::new(a, b)?;
    let layout = writer.layout().clone();
    if layout.shape() != ctx.spec.shape {
        return Err(Error::Invalid(format!(
            "matmul {} @ {}: the result has shape {} but the output has shape {}",
            shape_str(&a.info().shape),
            shape_str(&b.info().shape),
            shape_str(&ctx.spec.shape),
            shape_str(&layout.shape())
        )));
    }
    let workers = rayon::current_num_threads().max(1);
    let (max_rows, max_cols) = ctx.spec.max_chunk_2d(&layout);
    let chunk_bytes = (max_rows * max_cols * ctx.dtype.size()) as u64;
    let outputs = chunks_in_flight(workers, layout.num_chunks()) * chunk_bytes;
    if let Some(plan) = packed_spans(&ctx, writer.as_ref(), available(opts), workers, progress)? {
        writer.finish()?;
        ctx.plan = plan;
        return Ok(ctx.report());
    }
    if let Some(plan) = packed_stream(&ctx, writer.as_ref(), available(opts), workers, progress)? {
        writer.finish()?;
        ctx.plan = plan;
        return Ok(ctx.report());
    }
    ctx.plan(available(opts), workers, outputs, max_rows, max_cols)?;
    let ctx = &ctx;
    crate::with_dtype!(ctx.dtype, T => {
        let (k, n) = (ctx.spec.k, ctx.spec.n);
        // Reserved in the budget by `read_region` (and the conversion) like any panel.
        let b_all = if ctx.plan.resident && k > 0 && n > 0 {
            Some(ctx.panel::<T>(&ctx.b, 0, k, 0, n)?)
        } else {
            None
        };
        let b_all = b_all.as_ref().map(|b| b.as_slice::<T>());
        write_all(writer, progress, |region| {
            let (r0, rows, c0, cols) = ctx.spec.region_2d(region);
            let mut buf = Buffer::zeroed(rows * cols * std::mem::size_of::<T>())?;
            let out = buf.as_mut_slice::<T>();
            ctx.compute::<T>(r0..r0 + rows, c0..c0 + cols, out, cols, b_all)?;
            Ok(buf)
        })
    })?;
    Ok(ctx.report())
}

/// Computes `a @ b` into one buffer (dense C order, dtype [`result_dtype`], shape
/// [`result_shape`]); the result must fit the memory budget (use [`matmul`] with a file writer
/// otherwise). The operands may be larger than the budget.
pub fn matmul_to_buffer(
    a: &dyn ChunkSource,
    b: &dyn ChunkSource,
    opts: &MatmulOptions,
) -> Result<Buffer> {
    let ctx = Ctx::new(a, b)?;
    let out_bytes = ctx.spec.m as u64 * ctx.spec.n as u64 * ctx.dtype.size() as u64;
    let avail = available(opts);
    if out_bytes > avail {
        return Err(Error::Invalid(format!(
            "matmul {} @ {}: the {} result of shape {} takes {}, more than the {} the memory \
             budget leaves; write it to a file instead",
            shape_str(&a.info().shape),
            shape_str(&b.info().shape),
            ctx.dtype,
            shape_str(&ctx.spec.shape),
            human_bytes(out_bytes),
            human_bytes(avail)
        )));
    }
    let workers = rayon::current_num_threads().max(1);
    if let Some(rows) = packed_band_rows(&ctx, avail - out_bytes, workers) {
        let mut out = Buffer::zeroed(out_bytes as usize)?;
        packed_product(&ctx, rows, out.as_mut_slice::<f64>())?;
        return Ok(out);
    }
    let out = Arc::new(Mutex::new(Some(Buffer::zeroed(out_bytes as usize)?)));
    let shape = ctx.spec.shape.clone();
    let mut tile = suggested_chunks(&shape, ctx.dtype);
    // Enough tiles to keep every worker busy (tiles never change the numbers).
    while ChunkLayout::regular(&shape, &tile).map_or(0, |l| l.num_chunks()) < 2 * workers {
        let Some(ax) = (0..tile.len())
            .filter(|&i| tile[i] > 16)
            .max_by_key(|&i| tile[i])
        else {
            break;
        };
        tile[ax] = tile[ax].div_ceil(2);
    }
    let layout = ChunkLayout::regular(&shape, &tile)?;
    let writer = BufferWriter {
        layout,
        elem: ctx.dtype.size(),
        out: Arc::clone(&out),
    };
    drop(ctx);
    let opts = MatmulOptions {
        memory_limit: Some(avail - out_bytes),
    };
    matmul(a, b, Box::new(writer), &opts, &no_progress)?;
    let buf = out
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| Error::Invalid("matmul: the result buffer was already taken".into()))?;
    Ok(buf)
}

/// Rows per band when the product can take the packed path ([`packed`]): an `f64` result from
/// `f64` operands on a CPU with FMA, at least one micro-tile each way, and room in `avail` for
/// the packed B (shared), plus per worker an A band and the input chunk `read_region` maps while
/// assembling it (or, while B is packed, one block of B rows).
fn packed_band_rows(ctx: &Ctx<'_>, avail: u64, workers: usize) -> Option<usize> {
    let (m, k, n) = (ctx.spec.m, ctx.spec.k, ctx.spec.n);
    let f64_operands = ctx.a.dtype() == DType::F64 && ctx.b.dtype() == DType::F64;
    if !f64_operands || m < packed::MR || n < packed::NR || k == 0 || !packed::available() {
        return None;
    }
    let packed_b = packed::PackedB::bytes(k, n);
    let src_chunk = ctx.a.chunk_bytes().max(ctx.b.chunk_bytes());
    let per_worker = avail.checked_sub(packed_b)? / workers as u64;
    let room = per_worker.checked_sub(src_chunk)?;
    if room < (packed::KC * n * 8) as u64 {
        return None;
    }
    let band = |rows: usize| rows as u64 * k as u64 * 8 + packed::Scratch::bytes(rows, n);
    let mut rows = packed::MC;
    while rows > packed::MR && band(rows) > room {
        rows -= packed::MR;
    }
    (band(rows) <= room).then_some(rows)
}

/// `C = A @ B` through the packed path into the dense `m x n` buffer `out`: B packed once, then
/// bands of `rows` rows of A through it, each worker taking the next band (with its own scratch,
/// reserved in the budget).
fn packed_product(ctx: &Ctx<'_>, rows: usize, out: &mut [f64]) -> Result<()> {
    let (k, n) = (ctx.spec.k, ctx.spec.n);
    let b = packed::PackedB::pack(k, n, |k0, kc| ctx.panel::<f64>(&ctx.b, k0, kc, 0, n))?;
    let bands = Mutex::new(out.chunks_mut(rows * n).enumerate());
    let workers = rayon::current_num_threads().max(1);
    (0..workers).into_par_iter().try_for_each(|_| {
        let mut scratch = packed::Scratch::default();
        loop {
            let next = bands.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((i, c)) = next else {
                return Ok(());
            };
            let h = c.len() / n;
            let a = ctx.panel::<f64>(&ctx.a, i * rows, h, 0, k)?;
            b.band(a.as_slice(), h, (0, n), (c, n), false, &mut scratch)?;
        }
    })
}

/// Whether a product can take the packed path ([`packed`]) at all: `f64` operands, a matrix
/// result of at least one micro-tile each way, and a CPU with FMA.
fn packed_applies(ctx: &Ctx<'_>) -> bool {
    let (m, k, n) = (ctx.spec.m, ctx.spec.k, ctx.spec.n);
    ctx.a.dtype() == DType::F64
        && ctx.b.dtype() == DType::F64
        && ctx.spec.out == OutKind::Matrix
        && m >= packed::MR
        && n >= packed::NR
        && k > 0
        && packed::available()
}

/// Rows of A per band on [`packed_stream`] for output chunks of `cr` rows.
fn stream_rows(cr: usize) -> usize {
    cr.min(2 * packed::MC)
}

/// Chunk columns per packed block of B on [`packed_stream`] for `cr x cw` output chunks of an
/// `m x n` product over `k`: as many as fit half of `avail` and what `workers` workers leave
/// (each holds an A band, its scratch, an input chunk being read and the chunk it computes, and
/// while B is packed, a block of [`KB`] rows of the group's columns), or `None` if not even one
/// does.
fn stream_group(
    k: usize,
    n: usize,
    (cr, cw): (usize, usize),
    workers: usize,
    avail: u64,
    src_chunk: u64,
) -> Option<usize> {
    let rows = stream_rows(cr);
    let per_worker =
        (rows * k * 8) as u64 + packed::Scratch::bytes(rows, cw) + src_chunk + (cr * cw * 8) as u64;
    (1..=n.div_ceil(cw)).rev().find(|&g| {
        let nc = (g * cw).min(n);
        let packing = (packed::KC.min(k) * nc * 8) as u64;
        avail
            .checked_sub((per_worker + packing).saturating_mul(workers as u64))
            .is_some_and(|left| packed::PackedB::bytes(k, nc) <= left.min(avail / 2))
    })
}

/// Output chunks that suit [`matmul`] for `a @ b` under the global memory budget: where the
/// packed path applies, bands of rows (about 8 MiB) as wide as a block of B that fits half the
/// budget, so that B is read once and A once per block; otherwise [`suggested_chunks`]. Pass it
/// as [`WriteOptions::chunks`](crate::storage::WriteOptions) when creating a Zarr output. Call it
/// in the thread pool that will run the product (the budget is shared by its workers).
pub fn product_chunks(a: &dyn ChunkSource, b: &dyn ChunkSource) -> Result<Vec<u64>> {
    let ctx = Ctx::new(a, b)?;
    let (m, k, n) = (ctx.spec.m, ctx.spec.k, ctx.spec.n);
    if packed_applies(&ctx) {
        let avail = memory::global().limit();
        let workers = rayon::current_num_threads().max(1);
        let src_chunk = ctx.a.chunk_bytes().max(ctx.b.chunk_bytes());
        let mut cw = n;
        loop {
            let mut cr = (STREAM_CHUNK_BYTES / (cw as u64 * 8)) as usize;
            // Whole A blocks, or else whole pairs of A panels (the wide micro-kernel's height:
            // a band of 128 rows would compute 132).
            if cr >= packed::MC {
                cr -= cr % packed::MC;
            } else if cr >= 2 * packed::MR {
                cr -= cr % (2 * packed::MR);
            }
            let cr = cr.clamp(packed::MR, m);
            if stream_group(k, n, (cr, cw), workers, avail, src_chunk).is_some() {
                return Ok(vec![cr as u64, cw as u64]);
            }
            if cw <= 64 {
                break;
            }
            cw = (cw / 2).next_multiple_of(64).min(cw - 64).max(64);
        }
    }
    Ok(suggested_chunks(&ctx.spec.shape, ctx.dtype))
}

/// About the bytes of one output chunk [`product_chunks`] proposes.
const STREAM_CHUNK_BYTES: u64 = 8 << 20;

/// The packed path ([`packed`]) into a positional writer (Zarr; `.npy` takes [`packed_spans`]
/// first, and this path where that one does not apply): B is packed in column
/// blocks of whole chunk columns, as wide as half the budget allows (all of B when it fits), and
/// for each block the workers take its rows of output chunks one by one, compute each chunk from
/// bands of A rows straight into the memory the writer provides, and store it at its place. B is
/// read once, A once per block (chunks of more than [`stream_rows`] rows read it once per chunk).
/// Returns the tiles it used (band rows, block columns), or `None`, having done nothing, where the
/// path does not apply: other dtypes, vector operands, a sequential writer, chunks narrower than
/// a micro-tile that do not span the columns, or too small a budget; the tiled path then computes
/// the product.
fn packed_stream(
    ctx: &Ctx<'_>,
    writer: &dyn ArrayWriter,
    avail: u64,
    workers: usize,
    progress: Progress<'_>,
) -> Result<Option<Plan>> {
    let (m, k, n) = (ctx.spec.m, ctx.spec.k, ctx.spec.n);
    if !packed_applies(ctx) || !writer.positional() {
        return Ok(None);
    }
    let layout = writer.layout();
    let ChunkLayout::Regular { chunk_shape, .. } = layout else {
        return Ok(None);
    };
    let [cr, cw] = chunk_shape[..] else {
        return Ok(None);
    };
    let (cr, cw) = ((cr as usize).min(m), (cw as usize).min(n));
    if cr == 0 || cw == 0 || (cw < n && cw % packed::NR != 0) {
        return Ok(None);
    }
    let rows = stream_rows(cr);
    let src_chunk = ctx.a.chunk_bytes().max(ctx.b.chunk_bytes());
    let Some(group) = stream_group(k, n, (cr, cw), workers, avail, src_chunk) else {
        return Ok(None);
    };
    let grid_cols = n.div_ceil(cw);
    let grid_rows = m.div_ceil(cr);
    let scratch: Vec<Mutex<packed::Scratch>> = (0..workers).map(|_| Mutex::default()).collect();
    for jb in (0..grid_cols).step_by(group) {
        let c0 = jb * cw;
        let nc = (group * cw).min(n - c0);
        let b = packed::PackedB::pack(k, nc, |k0, kc| ctx.panel::<f64>(&ctx.b, k0, kc, c0, nc))?;
        let jb_end = (jb + group).min(grid_cols);
        let todo = Mutex::new(0..grid_rows);
        (0..workers)
            .into_par_iter()
            .try_for_each(|w| -> Result<()> {
                let mut scratch = scratch[w].lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let next = todo.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(i) = next else {
                        return Ok(());
                    };
                    // Chunk `(i, j)` of the grid is chunk `i * grid_cols + j` (C order). A chunk row
                    // of at most `rows` rows is one A band for every chunk of the block; taller ones
                    // are computed band by band, chunk by chunk.
                    let (r0, h, _, _) = ctx.spec.region_2d(&layout.chunk_region(i * grid_cols));
                    let whole = if h <= rows {
                        Some(ctx.panel::<f64>(&ctx.a, r0, h, 0, k)?)
                    } else {
                        None
                    };
                    for j in jb..jb_end {
                        let index = i * grid_cols + j;
                        let (_, _, cc0, wc) = ctx.spec.region_2d(&layout.chunk_region(index));
                        let mut compute = |out: &mut [f64]| -> Result<()> {
                            for rs in (0..h).step_by(rows) {
                                let hb = rows.min(h - rs);
                                let read;
                                let a = match &whole {
                                    Some(a) => a,
                                    None => {
                                        read = ctx.panel::<f64>(&ctx.a, r0 + rs, hb, 0, k)?;
                                        &read
                                    }
                                };
                                let c = &mut out[rs * wc..(rs + hb) * wc];
                                let cols = (cc0 - c0, wc);
                                b.band(a.as_slice(), hb, cols, (c, wc), false, &mut scratch)?;
                            }
                            Ok(())
                        };
                        writer.fill_at(index, h * wc * 8, &mut |bytes| {
                            fill_f64(bytes, &mut compute)
                        })?;
                        progress((h * wc * 8) as u64);
                    }
                }
            })?;
    }
    Ok(Some(Plan {
        rows,
        cols: (group * cw).min(n),
        bk: k,
        resident: group >= grid_cols,
        b_blocks: grid_cols.div_ceil(group),
    }))
}

/// Has `fill` write `f64` values into a writer's `bytes`: in place, or, where the writer's
/// memory is not 8-byte aligned, into a buffer aside that is then copied in.
fn fill_f64(bytes: &mut [u8], fill: &mut dyn FnMut(&mut [f64]) -> Result<()>) -> Result<()> {
    match bytemuck::try_cast_slice_mut::<u8, f64>(bytes) {
        Ok(out) => fill(out),
        Err(_) => {
            let mut out = Buffer::for_overwrite(bytes.len())?;
            fill(out.as_mut_slice::<f64>())?;
            bytes.copy_from_slice(out.bytes());
            Ok(())
        }
    }
}

/// Bytes of one span [`packed_spans`] hands the writer at most: a direct-I/O staging buffer.
const SPAN_BYTES: u64 = 8 << 20;

/// Bytes the writer's staging may hold while [`packed_spans`] runs with `workers` workers: a
/// direct-write `.npy` keeps up to four staging buffers (reserved by the writer); through the
/// page cache, each worker's batch of spans is staged in a pooled buffer of its own.
fn span_staging(workers: usize) -> u64 {
    workers.max(4) as u64 * (SPAN_BYTES + 4096)
}

/// Columns per packed block of B on [`packed_spans`], for bands of `rows` rows: the widest of
/// `n` (all of B), `n / 2`, `n / 3`, ... whose packed block fits half of `avail` and what
/// `workers` workers leave (each holds an A band, its tiles and an input chunk being read, and
/// while B is packed, a block of its rows), or `None` if not even a block of 512 columns does.
/// Blocks narrower than `n` are multiples of 512 columns, and only offered when a row of the
/// output is whole 4 KiB blocks (`n` a multiple of 512): then each row's piece of a block is
/// whole blocks of a direct-write `.npy` (whose data starts on a block boundary). Otherwise a
/// piece would share its end blocks with pieces of blocks computed in later passes over B, and
/// the writer would hold about two partial blocks per output row until then, outside the
/// budget.
fn span_block(
    (k, n): (usize, usize),
    rows: usize,
    workers: usize,
    avail: u64,
    src_chunk: u64,
) -> Option<usize> {
    let fits = |nc: usize| {
        let packing = (packed::KC * nc * 8) as u64;
        let per_worker =
            (rows * k * 8) as u64 + packed::Scratch::bytes(rows, nc) + src_chunk + packing;
        let left = avail
            .checked_sub(per_worker.saturating_mul(workers as u64))
            .and_then(|l| l.checked_sub(span_staging(workers)));
        left.is_some_and(|l| packed::PackedB::bytes(k, nc) <= l.min(avail / 2))
    };
    if fits(n) {
        return Some(n);
    }
    if n % 512 != 0 {
        return None;
    }
    (2..=n.div_ceil(512))
        .map(|blocks| n.div_ceil(blocks).next_multiple_of(512))
        .find(|&nc| nc < n && fits(nc))
}

/// Whether [`matmul`] computes `a @ b` straight into `writer` in spans of elements (its fastest
/// way to a file, B read once per column block): the writer takes spans (`.npy`) and the
/// packed path applies with the global budget (call it in the pool that will run the product).
pub fn writes_in_spans(
    a: &dyn ChunkSource,
    b: &dyn ChunkSource,
    writer: &dyn ArrayWriter,
) -> Result<bool> {
    let ctx = Ctx::new(a, b)?;
    if !packed_applies(&ctx) || !writer.spans() || writer.layout().shape() != ctx.spec.shape {
        return Ok(false);
    }
    let (m, k, n) = (ctx.spec.m, ctx.spec.k, ctx.spec.n);
    let workers = rayon::current_num_threads().max(1);
    let src_chunk = ctx.a.chunk_bytes().max(ctx.b.chunk_bytes());
    let avail = available(&MatmulOptions::default());
    Ok(span_block((k, n), packed::MC.min(m), workers, avail, src_chunk).is_some())
}

/// The packed path ([`packed`]) into a writer that takes spans of elements (`.npy`): B is
/// packed in column blocks as wide as half the budget allows (all of B when it fits), and for
/// each block the workers take bands of [`packed::MC`] rows of A, compute the band's tiles and
/// hand the writer its rows: whole rows in spans of up to [`SPAN_BYTES`] when the block spans
/// every column, else the rows' pieces of the block, batches of up to [`SPAN_BYTES`] of them in
/// one [`ArrayWriter::fill_rows`] (a direct-write `.npy` stages a batch in one buffer; one
/// staging buffer per 32 KiB piece left the workers waiting on the device: an 8192² product
/// under 512 MiB took 7.32-7.56 s instead of 7.77-8.39). Bands are as tall as the packed kernel
/// wants whatever the writer's chunks. B is read once, A once per block. `None`, having done
/// nothing, where the path does not apply.
fn packed_spans(
    ctx: &Ctx<'_>,
    writer: &dyn ArrayWriter,
    avail: u64,
    workers: usize,
    progress: Progress<'_>,
) -> Result<Option<Plan>> {
    let (m, k, n) = (ctx.spec.m, ctx.spec.k, ctx.spec.n);
    if !packed_applies(ctx) || !writer.spans() {
        return Ok(None);
    }
    let rows = packed::MC.min(m);
    let src_chunk = ctx.a.chunk_bytes().max(ctx.b.chunk_bytes());
    let Some(nc) = span_block((k, n), rows, workers, avail, src_chunk) else {
        return Ok(None);
    };
    let bands = m.div_ceil(rows);
    let scratch: Vec<Mutex<packed::Scratch>> = (0..workers).map(|_| Mutex::default()).collect();
    for c0 in (0..n).step_by(nc) {
        let w = nc.min(n - c0);
        let b = packed::PackedB::pack(k, w, |k0, kc| ctx.panel::<f64>(&ctx.b, k0, kc, c0, w))?;
        let todo = Mutex::new(0..bands);
        (0..workers)
            .into_par_iter()
            .try_for_each(|wk| -> Result<()> {
                let mut scratch = scratch[wk].lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let next = todo.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(i) = next else {
                        return Ok(());
                    };
                    let (r0, h) = (i * rows, rows.min(m - i * rows));
                    let a = ctx.panel::<f64>(&ctx.a, r0, h, 0, k)?;
                    b.compute(a.as_slice(), h, (0, w), false, &mut scratch)?;
                    // Whole rows, or the rows' pieces of this block of columns, in batches
                    // of up to `SPAN_BYTES`.
                    let per = ((SPAN_BYTES / (w as u64 * 8)) as usize).max(1);
                    for rs in (0..h).step_by(per) {
                        let hr = per.min(h - rs);
                        let start = ((r0 + rs) * n + c0) as u64;
                        let scratch = &*scratch;
                        let mut put = |bytes: &mut [u8]| {
                            fill_f64(bytes, &mut |out| {
                                scratch.rows_to(rs..rs + hr, out, w);
                                Ok(())
                            })
                        };
                        if w == n {
                            writer.fill_span(start, hr * n, &mut put)?;
                        } else {
                            writer.fill_rows(start, (w, n as u64, hr), 8, &mut put)?;
                        }
                    }
                    progress((h * w * 8) as u64);
                }
            })?;
    }
    Ok(Some(Plan {
        rows,
        cols: nc.min(n),
        bk: k,
        resident: nc >= n,
        b_blocks: n.div_ceil(nc),
    }))
}

/// An [`ArrayWriter`] that assembles chunks into one in-memory buffer.
struct BufferWriter {
    layout: ChunkLayout,
    elem: usize,
    out: Arc<Mutex<Option<Buffer>>>,
}

impl ArrayWriter for BufferWriter {
    fn layout(&self) -> &ChunkLayout {
        &self.layout
    }

    fn encode<'a>(&self, _index: usize, data: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        Ok(Cow::Borrowed(data))
    }

    fn write(&self, index: usize, encoded: &[u8]) -> Result<()> {
        let region = self.layout.chunk_region(index);
        let full = Region::full(&self.layout.shape());
        let mut guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let out = guard
            .as_mut()
            .ok_or_else(|| Error::Invalid("matmul: the result buffer is gone".into()))?;
        copy_box(encoded, &region, out.bytes_mut(), &full, &region, self.elem);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL_DTYPES;
    use crate::kernels::transpose::tests::{MemSource, MemWriter};
    use proptest::prelude::*;

    /// `np.result_type` for every pair, printed by NumPy 2.4 (rows: left operand, columns: right,
    /// both in `ALL_DTYPES` order).
    const NUMPY_RESULT_TYPES: [[&str; 11]; 11] = [
        [
            "bool", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64",
        ],
        [
            "i8", "i8", "i16", "i32", "i64", "i16", "i32", "i64", "f64", "f32", "f64",
        ],
        [
            "i16", "i16", "i16", "i32", "i64", "i16", "i32", "i64", "f64", "f32", "f64",
        ],
        [
            "i32", "i32", "i32", "i32", "i64", "i32", "i32", "i64", "f64", "f64", "f64",
        ],
        [
            "i64", "i64", "i64", "i64", "i64", "i64", "i64", "i64", "f64", "f64", "f64",
        ],
        [
            "u8", "i16", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64",
        ],
        [
            "u16", "i32", "i32", "i32", "i64", "u16", "u16", "u32", "u64", "f32", "f64",
        ],
        [
            "u32", "i64", "i64", "i64", "i64", "u32", "u32", "u32", "u64", "f64", "f64",
        ],
        [
            "u64", "f64", "f64", "f64", "f64", "u64", "u64", "u64", "u64", "f64", "f64",
        ],
        [
            "f32", "f32", "f32", "f64", "f64", "f32", "f32", "f64", "f64", "f32", "f64",
        ],
        [
            "f64", "f64", "f64", "f64", "f64", "f64", "f64", "f64", "f64", "f64", "f64",
        ],
    ];

    #[test]
    fn result_dtype_matches_numpy() {
        for (i, &a) in ALL_DTYPES.iter().enumerate() {
            for (j, &b) in ALL_DTYPES.iter().enumerate() {
                assert_eq!(
                    result_dtype(a, b).name(),
                    NUMPY_RESULT_TYPES[i][j],
                    "{a} @ {b}"
                );
            }
        }
    }

    /// An operand: its dtype and values (as `f64`, exact for the values tests use, or raw bits
    /// for wrapping tests), shape and chunking.
    #[derive(Clone, Debug)]
    struct Arr {
        dtype: DType,
        bits: Vec<u64>,
        /// Integers in -100..=100 (0..=200 unsigned), so float results are exact.
        small: bool,
        shape: Vec<u64>,
        chunks: Vec<u64>,
    }

    impl Arr {
        fn source(&self) -> MemSource {
            crate::with_dtype!(self.dtype, T => {
                let vals: Vec<T> = self.bits.iter().map(|&b| from_bits::<T>(b, self.small)).collect();
                MemSource::new(&vals, &self.shape, &self.chunks)
            })
        }
    }

    /// An element from test bits: floats take `bits` as a small signed integer in eighths
    /// (exact in every sum the tests make), integers take the low bits (wrapping exercised) or,
    /// when `small`, a value in -100..=100 (0..=200 unsigned), bool the low bit.
    fn from_bits<T: Element>(bits: u64, small: bool) -> T {
        let signed = matches!(T::DTYPE, DType::I8 | DType::I16 | DType::I32 | DType::I64);
        match T::DTYPE {
            DType::F32 | DType::F64 => T::from_f64(((bits % 65) as f64 - 32.0) / 8.0),
            DType::Bool => T::from_f64((bits & 1) as f64),
            _ if small => T::from_f64((bits % 201) as f64 - if signed { 100.0 } else { 0.0 }),
            _ => bytemuck::cast_slice::<u64, T>(&[bits])[0],
        }
    }

    /// Naive triple loop in the result type `T` (wrapping for integers, or-of-ands for bool).
    fn naive<S: Element, U: Element, T: Element>(
        a: &[S],
        b: &[U],
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc_f = 0.0f64;
                let mut acc_i = 0u64;
                let mut any = false;
                for p in 0..k {
                    let (x, y) = (a[i * k + p], b[p * n + j]);
                    match T::DTYPE {
                        DType::Bool => any |= x.to_f64() != 0.0 && y.to_f64() != 0.0,
                        DType::F32 | DType::F64 => {
                            let (x, y) = (T::from_f64(x.to_f64()), T::from_f64(y.to_f64()));
                            acc_f += x.to_f64() * y.to_f64();
                        }
                        // Integer results: the operands' values modulo 2^64, wrapping.
                        _ => acc_i = acc_i.wrapping_add(as_u64(x).wrapping_mul(as_u64(y))),
                    }
                }
                out.push(match T::DTYPE {
                    DType::Bool => T::from_f64(f64::from(u8::from(any))),
                    DType::F32 | DType::F64 => T::from_f64(acc_f),
                    _ => bytemuck::cast_slice::<u64, T>(&[acc_i])[0],
                });
            }
        }
        out
    }

    /// Sign-extended (for signed types) bits of an integer: its value modulo 2^64, so products
    /// and sums wrap to the right low bits.
    fn as_u64<T: Element>(x: T) -> u64 {
        if T::DTYPE == DType::Bool {
            return u64::from(x.to_f64() != 0.0);
        }
        let b = bytemuck::bytes_of(&x);
        let signed = matches!(T::DTYPE, DType::I8 | DType::I16 | DType::I32 | DType::I64);
        let fill = if signed && b[b.len() - 1] & 0x80 != 0 {
            0xFF
        } else {
            0
        };
        let mut w = [fill; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    }

    /// The expected bytes of `a @ b` (values read back through the stored dtypes).
    fn expected(a: &Arr, b: &Arr) -> Vec<u8> {
        let spec = Spec::shapes(&a.shape, &b.shape).unwrap();
        let out = result_dtype(a.dtype, b.dtype);
        crate::with_dtype!(a.dtype, S => crate::with_dtype!(b.dtype, U => crate::with_dtype!(out, T => {
            let av: Vec<S> = a.bits.iter().map(|&x| from_bits::<S>(x, a.small)).collect();
            let bv: Vec<U> = b.bits.iter().map(|&x| from_bits::<U>(x, b.small)).collect();
            let r: Vec<T> = naive(&av, &bv, spec.m, spec.k, spec.n);
            bytemuck::cast_slice(&r).to_vec()
        })))
    }

    /// Runs `matmul` into an in-memory writer with `chunks` and returns the result's bytes.
    fn run(
        a: &Arr,
        b: &Arr,
        chunks: &[u64],
        opts: &MatmulOptions,
    ) -> Result<(Vec<u8>, MatmulReport)> {
        let (sa, sb) = (a.source(), b.source());
        let shape = result_shape(&a.shape, &b.shape)?;
        let chunks: Vec<u64> = chunks
            .iter()
            .zip(&shape)
            .map(|(&c, &d)| c.clamp(1, d.max(1)))
            .collect();
        let (w, out) = MemWriter::create(result_dtype(a.dtype, b.dtype), &shape, &chunks);
        let rep = matmul(&sa, &sb, w, opts, &no_progress)?;
        let bytes = out.lock().unwrap().1.clone();
        Ok((bytes, rep))
    }

    fn arr(dtype: DType, small: bool, shape: &[u64], chunks: &[u64], seed: u64) -> Arr {
        let n = crate::shape::numel(shape);
        Arr {
            dtype,
            small,
            bits: (0..n)
                .map(|i| {
                    let z = (seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z ^ (z >> 29)
                })
                .collect(),
            shape: shape.to_vec(),
            chunks: chunks
                .iter()
                .zip(shape)
                .map(|(&c, &d)| c.clamp(1, d.max(1)))
                .collect(),
        }
    }

    /// A budget just big enough for `workers` workers with the given output chunk bytes, plus
    /// `extra` panel bytes per worker: tiles come out tiny, so there are many of them.
    fn tight_limit(
        a: &Arr,
        b: &Arr,
        out_chunk: u64,
        chunks: usize,
        workers: usize,
        extra: u64,
    ) -> u64 {
        let e = result_dtype(a.dtype, b.dtype).size() as u64;
        let k = if a.shape.len() == 2 {
            a.shape[1]
        } else {
            a.shape[0]
        } as usize;
        let src_chunk = [a, b]
            .iter()
            .map(|x| crate::shape::numel(&x.chunks) * x.dtype.size() as u64)
            .max()
            .unwrap();
        let min_panels = 2 * (e + 8) * k.min(KB) as u64;
        let packs = if e == 8 && result_dtype(a.dtype, b.dtype) == DType::F64 {
            packed_floor(1, k)
        } else {
            0
        };
        chunks_in_flight(workers, chunks) * out_chunk
            + workers as u64 * (src_chunk + min_panels + packs + extra)
    }

    /// What `workers` workers of the packed `f64` path need at the least besides their panels
    /// for a product over `k`: the packed copy of a one-column B panel and a one-row band's
    /// scratch each (nothing where the packed path is not available).
    fn packed_floor(workers: usize, k: usize) -> u64 {
        if !packed::available() || k == 0 {
            return 0;
        }
        workers as u64 * (packed::PackedB::bytes(k.min(KB), 1) + packed::Scratch::bytes(1, 1))
    }

    fn dtype() -> impl Strategy<Value = DType> {
        prop::sample::select(ALL_DTYPES.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(120))]

        #[test]
        fn matches_naive_product(
            (m, k, n) in (0u64..9, prop_oneof![0u64..12, 250u64..600], 0u64..9),
            da in dtype(), db in dtype(),
            (ca, cb, co) in ((1u64..6, 1u64..300), (1u64..300, 1u64..6), (1u64..5, 1u64..5)),
            vec_a in any::<bool>(), vec_b in any::<bool>(),
            threads in prop::sample::select(vec![1usize, 2, 7]),
            extra in 0u64..4096, seed in any::<u64>(),
        ) {
            let a_shape = if vec_a { vec![k] } else { vec![m, k] };
            let b_shape = if vec_b { vec![k] } else { vec![k, n] };
            let small = result_dtype(da, db).is_float();
            let a = arr(da, small, &a_shape, &if vec_a { vec![ca.1] } else { vec![ca.0, ca.1] }, seed);
            let b = arr(db, small, &b_shape, &if vec_b { vec![cb.0] } else { vec![cb.0, cb.1] }, !seed);
            let shape = result_shape(&a_shape, &b_shape).unwrap();
            let out_chunks: Vec<u64> = match shape.len() { 2 => vec![co.0, co.1], 1 => vec![co.0], _ => vec![] };
            let oc: Vec<u64> = out_chunks.iter().zip(&shape).map(|(&c, &d)| c.clamp(1, d.max(1))).collect();
            let nchunks = ChunkLayout::regular(&shape, &oc).unwrap().num_chunks();
            let e = result_dtype(da, db).size() as u64;
            let limit = tight_limit(&a, &b, crate::shape::numel(&oc) * e, nchunks, threads, extra);
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let opts = MatmulOptions { memory_limit: Some(limit) };
            let (got, rep) = pool.install(|| run(&a, &b, &out_chunks, &opts)).unwrap();
            prop_assert_eq!(&got, &expected(&a, &b), "report {:?}", rep);
            prop_assert_eq!(rep.shape, shape);
            prop_assert_eq!(rep.dtype, result_dtype(da, db));
            // The buffer variant agrees.
            let buf = pool.install(|| matmul_to_buffer(&a.source(), &b.source(), &MatmulOptions::default())).unwrap();
            prop_assert_eq!(buf.bytes(), &got[..]);
        }
    }

    /// One in-memory product of row-major `a` (m x k) and `b` (k x n), summed as the packed
    /// GEMM promises (where it runs; elsewhere one `matrixmultiply` call): the reference bytes.
    fn gemm_f64(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        if packed::available() {
            packed::blocked_sums((m, k, n), a, (b, n), (&mut out, n), false);
            return out;
        }
        let a = ArrayView2::from_shape((m, k), a).unwrap();
        let b = ArrayView2::from_shape((k, n), b).unwrap();
        let mut c = ArrayViewMut2::from_shape((m, n), &mut out[..]).unwrap();
        ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        out
    }

    /// Random (inexact) floats: the same bytes for 1, 2 and 7 threads and tiny tiles as one
    /// in-memory `gemm` over the whole operands, and close to the naive sum.
    #[test]
    fn floats_are_independent_of_threads_and_tiling() {
        let (m, k, n) = (37usize, 1300usize, 29usize);
        let av: Vec<f64> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f64 / 997.0 - 0.5)
            .collect();
        let bv: Vec<f64> = (0..k * n)
            .map(|i| ((i * 104_729) % 1013) as f64 / 1009.0 - 0.3)
            .collect();
        let sa = MemSource::new(&av, &[m as u64, k as u64], &[1, 300]);
        let sb = MemSource::new(&bv, &[k as u64, n as u64], &[64, 7]);
        let one_shot = gemm_f64(&av, &bv, (m, k, n));
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
                assert!(
                    (s - one_shot[i * n + j]).abs() <= 1e-12 * k as f64,
                    "({i}, {j})"
                );
            }
        }
        let want: &[u8] = bytemuck::cast_slice(&one_shot);
        for threads in [1, 2, 7] {
            for (chunks, limit) in [
                (vec![4u64, 3], 1u64 << 20),
                (vec![37, 29], 1 << 30),
                (vec![1, 29], (100 << 10) + packed_floor(threads, k)),
            ] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (w, out) = MemWriter::create(DType::F64, &[m as u64, n as u64], &chunks);
                let opts = MatmulOptions {
                    memory_limit: Some(limit),
                };
                let rep = pool
                    .install(|| matmul(&sa, &sb, w, &opts, &no_progress))
                    .unwrap();
                assert_eq!(
                    &out.lock().unwrap().1[..],
                    want,
                    "{threads} threads, {chunks:?}, {rep:?}"
                );
                if limit == 100 << 10 {
                    // The tight budget split k: several panels per output tile.
                    assert!(rep.k_block < k as u64, "{rep:?}");
                    assert_eq!(rep.k_block % KB as u64, 0, "{rep:?}");
                }
                assert_eq!(rep.flops, 2 * (m * n * k) as u64);
            }
        }
        // f32 goes through sgemm in f32, like NumPy's BLAS call.
        let af: Vec<f32> = av.iter().map(|&x| x as f32).collect();
        let bf: Vec<f32> = bv.iter().map(|&x| x as f32).collect();
        let got = matmul_to_buffer(
            &MemSource::new(&af, &[m as u64, k as u64], &[8, 100]),
            &MemSource::new(&bf, &[k as u64, n as u64], &[100, 8]),
            &MatmulOptions::default(),
        )
        .unwrap();
        for (g, w) in got.as_slice::<f32>().iter().zip(&one_shot) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{g} vs {w}"
            );
        }
    }

    /// With room for B, it is read once (operand bytes read = A + B) and each chunk is one
    /// product over all of `k`; with a tight budget B is re-read per row band. Both give the
    /// bytes of one in-memory `gemm`, for 1, 2 and 7 threads.
    #[test]
    fn resident_b_reads_each_operand_once() {
        let (m, k, n) = (96usize, 300usize, 40usize);
        let av: Vec<f64> = (0..m * k)
            .map(|i| ((i * 31) % 97) as f64 / 7.0 - 3.0)
            .collect();
        let bv: Vec<f32> = (0..k * n)
            .map(|i| ((i * 17) % 89) as f32 / 5.0 - 8.0)
            .collect();
        let bw: Vec<f64> = bv.iter().map(|&x| f64::from(x)).collect();
        let want = gemm_f64(&av, &bw, (m, k, n));
        let sa = MemSource::new(&av, &[m as u64, k as u64], &[4, 100]);
        let sb = MemSource::new(&bv, &[k as u64, n as u64], &[16, 40]);
        let operands = (m * k * 8 + k * n * 4) as u64;
        for threads in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let tight = (200 << 10) + packed_floor(threads, k);
            for (limit, resident) in [(64u64 << 20, true), (tight, false)] {
                let (w, out) = MemWriter::create(DType::F64, &[m as u64, n as u64], &[16, 40]);
                let opts = MatmulOptions {
                    memory_limit: Some(limit),
                };
                let rep = pool
                    .install(|| matmul(&sa, &sb, w, &opts, &no_progress))
                    .unwrap();
                let got = out.lock().unwrap().1.clone();
                assert_eq!(got, bytemuck::cast_slice::<f64, u8>(&want), "{rep:?}");
                if resident {
                    assert_eq!(rep.bytes_read, operands, "{threads} threads {rep:?}");
                    assert_eq!(rep.k_block, k as u64);
                } else {
                    assert!(rep.bytes_read > operands, "{threads} threads {rep:?}");
                }
            }
        }
    }

    /// Operands for the packed-path tests: A (`m x k`) with `special` and `-0.0` sprinkled in,
    /// B (`k x n`) with exponents across 30 binades, so the order of the additions shows.
    fn operands((m, k, n): (usize, usize, usize), special: f64) -> (Vec<f64>, Vec<f64>) {
        let a = (0..m * k)
            .map(|i| match i % 251 {
                0 => special,
                1 => -0.0,
                _ => ((i * 7919) % 1000) as f64 / 997.0 - 0.5,
            })
            .collect();
        let b = (0..k * n)
            .map(|i| ((i * 104_729) % 1013) as f64 / 1009.0 * 2f64.powi((i % 30) as i32 - 15))
            .collect();
        (a, b)
    }

    /// The packed path into a positional (Zarr) output: B packed in column blocks of whole chunk
    /// columns, A streamed once per block. Every budget, chunking and thread count gives the
    /// bytes of one in-memory `gemm` (special values included); where the blocks split the
    /// columns, B is read once and A once per block.
    #[test]
    fn column_blocks_into_a_positional_writer() {
        if !packed::available() {
            return;
        }
        let (m, k, n) = (50usize, 600usize, 72usize);
        let (av, bv) = operands((m, k, n), f64::INFINITY);
        let want = gemm_f64(&av, &bv, (m, k, n));
        let sa = MemSource::new(&av, &[m as u64, k as u64], &[7, 600]);
        let sb = MemSource::new(&bv, &[k as u64, n as u64], &[100, 72]);
        let dir = tempfile::tempdir().unwrap();
        let (a_bytes, b_bytes) = ((m * k * 8) as u64, (k * n * 8) as u64);
        let mut blocked = 0;
        for threads in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // 16-column chunks: blocks of 1 to 5 chunk columns; 20 columns: not a whole number of
            // micro-tiles, so the tiled path; whole rows: B packed whole.
            for chunks in [[13u64, 16], [50, 16], [13, 20], [8, 72]] {
                for limit in [1200u64 << 10, 1600 << 10, 2 << 20, 64 << 20] {
                    let path = dir
                        .path()
                        .join(format!("c{threads}-{chunks:?}-{limit}.zarr"));
                    let opts = crate::WriteOptions {
                        chunks: Some(chunks.to_vec()),
                        ..Default::default()
                    };
                    let path = path.to_str().unwrap();
                    let w = crate::formats::create(path, DType::F64, &[m as u64, n as u64], &opts)
                        .unwrap();
                    let run = MatmulOptions {
                        memory_limit: Some(limit),
                    };
                    // Every one of these budgets must suffice (`budget_errors_name_the_shares`
                    // tests one that does not).
                    let rep = pool
                        .install(|| matmul(&sa, &sb, w, &run, &no_progress))
                        .unwrap_or_else(|e| panic!("{threads} threads {chunks:?} {limit}: {e}"));
                    let c = crate::formats::open(path).unwrap();
                    let got = c.read_region(&Region::full(&[m as u64, n as u64])).unwrap();
                    let what = format!("{threads} threads, chunks {chunks:?}, {limit} B: {rep:?}");
                    assert_eq!(
                        got.bytes(),
                        bytemuck::cast_slice::<f64, u8>(&want),
                        "{what}"
                    );
                    if chunks[1] == 20 {
                        assert_eq!(rep.b_blocks, 0, "{what}");
                        continue;
                    }
                    if limit == 64 << 20 {
                        assert_eq!(rep.b_blocks, 1, "{what}");
                    }
                    if rep.b_blocks > 0 {
                        assert_eq!(rep.k_block, k as u64, "{what}");
                        let blocks = (n as u64).div_ceil(rep.tile[1]);
                        assert_eq!(rep.b_blocks, blocks, "{what}");
                        assert_eq!(rep.bytes_read, blocks * a_bytes + b_bytes, "{what}");
                    }
                    if rep.b_blocks > 1 {
                        blocked += 1;
                    }
                }
            }
        }
        assert!(blocked > 0, "no budget split B into column blocks");
    }

    /// The packed path into a `.npy` output in spans: bands of whole rows when B fits, rows of
    /// column blocks (multiples of 512 columns) when it does not, through the page cache and
    /// with direct writes; every budget and thread count gives the bytes of one in-memory
    /// `gemm`, with B read once and A once per block. A row that is not whole 4 KiB blocks
    /// (1100 columns) is never cut into blocks (their pieces would leave partial blocks waiting
    /// for later passes): such a product takes another path, with the same bytes.
    #[test]
    fn spans_into_npy() {
        if !packed::available() {
            return;
        }
        let mut widths = std::collections::BTreeSet::new();
        for (m, k, n) in [(250usize, 300usize, 1536usize), (250, 300, 1100)] {
            let (av, bv) = operands((m, k, n), f64::NEG_INFINITY);
            let want = gemm_f64(&av, &bv, (m, k, n));
            let sa = MemSource::new(&av, &[m as u64, k as u64], &[7, 300]);
            let sb = MemSource::new(&bv, &[k as u64, n as u64], &[64, n as u64]);
            let dir = tempfile::tempdir().unwrap();
            let (a_bytes, b_bytes) = ((m * k * 8) as u64, (k * n * 8) as u64);
            for threads in [1, 2, 7] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                // The smallest budgets (in 64 KiB steps) that give each block width, and one
                // that gives none.
                let src_chunk = (64 * n * 8) as u64;
                let mut limits = std::collections::BTreeMap::new();
                let mut none = None;
                for limit in (span_staging(1)..span_staging(1) + (128 << 20)).step_by(64 << 10) {
                    match span_block((k, n), packed::MC, threads, limit, src_chunk) {
                        Some(nc) => {
                            limits.entry(nc).or_insert(limit);
                        }
                        None => none = Some(limit),
                    }
                }
                let ncs: Vec<usize> = limits.keys().copied().collect();
                let want_ncs: &[usize] = if n == 1536 {
                    &[512, 1024, 1536]
                } else {
                    &[1100]
                };
                assert_eq!(ncs, want_ncs, "{n} columns, {threads} threads");
                let none = none.expect("a budget too small for the spans");
                for limit in limits.values().copied().chain([none]) {
                    for direct in [false, true] {
                        let path = dir.path().join(format!("c{threads}-{limit}-{direct}.npy"));
                        let min = if direct { 0 } else { u64::MAX };
                        let w = crate::formats::npy::NpyWriter::create_with(
                            &path,
                            DType::F64,
                            &[m as u64, n as u64],
                            min,
                        )
                        .unwrap();
                        let run = MatmulOptions {
                            memory_limit: Some(limit),
                        };
                        let what =
                            format!("{n} columns, {threads} threads, {limit} B, direct {direct}");
                        let Ok(rep) =
                            pool.install(|| matmul(&sa, &sb, Box::new(w), &run, &no_progress))
                        else {
                            assert_eq!(limit, none, "{what}");
                            continue;
                        };
                        let c = crate::formats::open(path.to_str().unwrap()).unwrap();
                        let got = c.read_region(&Region::full(&[m as u64, n as u64])).unwrap();
                        let what = format!("{what}: {rep:?}");
                        assert_eq!(
                            got.bytes(),
                            bytemuck::cast_slice::<f64, u8>(&want),
                            "{what}"
                        );
                        if limit == none {
                            assert_ne!(rep.tile[0], packed::MC as u64, "{what}");
                            continue;
                        }
                        assert_eq!(rep.tile[0], packed::MC as u64, "{what}");
                        let blocks = (n as u64).div_ceil(rep.tile[1]);
                        assert_eq!(rep.b_blocks, blocks, "{what}");
                        assert_eq!(rep.bytes_read, blocks * a_bytes + b_bytes, "{what}");
                        widths.insert(rep.tile[1]);
                    }
                }
            }
        }
        assert_eq!(
            widths.into_iter().collect::<Vec<_>>(),
            [512, 1024, 1100, 1536]
        );
    }

    /// NumPy answers checked by hand (NumPy 2.4).
    #[test]
    fn numpy_cases() {
        // np.array([[100, 100]], np.int8) @ [[100], [100]] (int8) == [[32]]: wraps in int8.
        let a = MemSource::new(&[100i8, 100], &[1, 2], &[1, 2]);
        let b = MemSource::new(&[100i8, 100], &[2, 1], &[1, 1]);
        assert_eq!(
            matmul_to_buffer(&a, &b, &MatmulOptions::default())
                .unwrap()
                .as_slice::<i8>(),
            &[32]
        );
        // ... @ uint8 promotes to int16: 20000.
        let bu = MemSource::new(&[100u8, 100], &[2, 1], &[2, 1]);
        assert_eq!(
            matmul_to_buffer(&a, &bu, &MatmulOptions::default())
                .unwrap()
                .as_slice::<i16>(),
            &[20000]
        );
        // [[True, False]] @ [[False], [True]] == [[False]]; [[True, True]] @ [[True], [True]] == [[True]].
        let t = |v: &[u8], s: &[u64]| {
            let v: Vec<Bool> = v.iter().map(|&x| Bool(x)).collect();
            MemSource::new(&v, s, s)
        };
        let f = |a: &MemSource, b: &MemSource| {
            matmul_to_buffer(a, b, &MatmulOptions::default())
                .unwrap()
                .bytes()
                .to_vec()
        };
        assert_eq!(f(&t(&[1, 0], &[1, 2]), &t(&[0, 1], &[2, 1])), vec![0]);
        assert_eq!(f(&t(&[1, 1], &[1, 2]), &t(&[1, 1], &[2, 1])), vec![1]);
        // (2, 0) @ (0, 3) is zeros; np.ones(3) @ np.ones(3) == 3.0 with shape ().
        let z = MemSource::new::<i32>(&[], &[2, 0], &[1, 1]);
        let z2 = MemSource::new::<i32>(&[], &[0, 3], &[1, 1]);
        assert_eq!(f(&z, &z2), vec![0u8; 24]);
        let ones = MemSource::new(&[1.0f64; 3], &[3], &[2]);
        let (w, out) = MemWriter::create(DType::F64, &[], &[]);
        let rep = matmul(&ones, &ones, w, &MatmulOptions::default(), &no_progress).unwrap();
        assert_eq!(rep.shape, Vec::<u64>::new());
        assert_eq!(out.lock().unwrap().1, 3.0f64.to_ne_bytes().to_vec());
        // Mixed i32 @ f32 is computed in f64.
        let ai = MemSource::new(&[16_777_217i32, 1], &[1, 2], &[1, 2]);
        let bf = MemSource::new(&[1.0f32, 0.5], &[2, 1], &[2, 1]);
        assert_eq!(
            matmul_to_buffer(&ai, &bf, &MatmulOptions::default())
                .unwrap()
                .as_slice::<f64>(),
            &[16_777_217.5]
        );
    }

    #[test]
    fn shape_errors_name_both_shapes() {
        let s = |shape: &[u64]| {
            let n = crate::shape::numel(shape) as usize;
            let c: Vec<u64> = shape.iter().map(|&d| d.max(1)).collect();
            MemSource::new(&vec![0.0f64; n], shape, &c)
        };
        let err = |a: &[u64], b: &[u64]| {
            matmul_to_buffer(&s(a), &s(b), &MatmulOptions::default())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&[2, 3], &[4, 5]),
            "matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc signature \
             (n?,k),(k,m?)->(n?,m?) (size 4 is different from 3): shapes (2, 3) and (4, 5) (mem @ mem)"
        );
        assert!(err(&[3], &[4]).contains("(size 4 is different from 3): shapes (3,) and (4,)"));
        assert!(err(&[2, 3], &[4]).contains("shapes (2, 3) and (4,)"));
        assert!(err(&[], &[3]).starts_with(
            "matmul: Input operand 0 does not have enough dimensions (has 0, gufunc core with \
             signature (n?,k),(k,m?)->(n?,m?) requires 1)"
        ));
        assert!(err(&[2, 2, 2], &[2, 2]).contains("operand 0 has shape (2, 2, 2) (3 dimensions)"));
        // The writer must have the result's shape.
        let (w, _) = MemWriter::create(DType::F64, &[2, 4], &[1, 1]);
        let e = matmul(
            &s(&[2, 3]),
            &s(&[3, 5]),
            w,
            &MatmulOptions::default(),
            &no_progress,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "matmul (2, 3) @ (3, 5): the result has shape (2, 5) but the output has shape (2, 4)"
        );
    }

    #[test]
    fn budget_errors_name_the_shares() {
        let a = MemSource::new(&vec![1.0f64; 64 * 64], &[64, 64], &[8, 64]);
        let (w, _) = MemWriter::create(DType::F64, &[64, 64], &[16, 16]);
        let opts = MatmulOptions {
            memory_limit: Some(10_000),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let e = pool
            .install(|| matmul(&a, &a, w, &opts, &no_progress))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("matmul (64, 64) @ (64, 64): the memory budget leaves 9.8 KiB"),
            "{e}"
        );
        assert!(
            e.contains("too little for 2 workers: output chunks in flight take 12.0 KiB"),
            "{e}"
        );
        let opts = MatmulOptions {
            memory_limit: Some(30_000),
        };
        let e = matmul_to_buffer(&a, &a, &opts).unwrap_err().to_string();
        assert_eq!(
            e,
            "matmul (64, 64) @ (64, 64): the f64 result of shape (64, 64) takes 32.0 KiB, more than \
             the 29.3 KiB the memory budget leaves; write it to a file instead"
        );
    }

    /// Operands in .npy files (the formats' own chunking) under a budget smaller than either
    /// operand, written to a chunked Zarr output.
    #[test]
    fn files_under_a_small_budget() {
        use crate::generate::{Dist, GenSpec, generate};
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let spec = |shape: Vec<u64>, dtype, seed| GenSpec {
            shape,
            dtype,
            dist: Dist::Uniform {
                low: Some(-50.0),
                high: Some(50.0),
            },
            seed,
            options: Default::default(),
        };
        generate(&p("a.npy"), &spec(vec![96, 300], DType::I32, 1)).unwrap();
        generate(&p("b.npy"), &spec(vec![300, 80], DType::I16, 2)).unwrap();
        let a =
            crate::formats::npy::NpySource::open_with_chunk_bytes(p("a.npy").as_ref(), "a", 4096)
                .unwrap();
        let b =
            crate::formats::npy::NpySource::open_with_chunk_bytes(p("b.npy").as_ref(), "b", 4096)
                .unwrap();
        let opts = crate::WriteOptions {
            chunks: Some(vec![32, 32]),
            ..Default::default()
        };
        let w = crate::formats::create(&p("c.zarr"), DType::I32, &[96, 80], &opts).unwrap();
        let limit = 60_000; // a is 115 KB, b 48 KB
        let rep = matmul(
            &a,
            &b,
            w,
            &MatmulOptions {
                memory_limit: Some(limit),
            },
            &no_progress,
        )
        .unwrap();
        assert!(
            rep.bytes_read > (96 * 300 * 4 + 300 * 80 * 2) as u64,
            "{rep:?}"
        );
        let c = crate::formats::open(&p("c.zarr")).unwrap();
        let got = c.read_region(&Region::full(&[96, 80])).unwrap();
        let av = a.read_region(&Region::full(&[96, 300])).unwrap();
        let bv = b.read_region(&Region::full(&[300, 80])).unwrap();
        let want: Vec<i32> = naive(av.as_slice::<i32>(), bv.as_slice::<i16>(), 96, 300, 80);
        assert_eq!(got.as_slice::<i32>(), &want[..]);
    }

    /// Writes a seeded standard-normal `f64` `.npy` of `shape` to `path`.
    pub(super) fn normal_npy(path: &str, shape: &[u64], seed: u64) {
        let spec = crate::generate::GenSpec {
            shape: shape.to_vec(),
            dtype: DType::F64,
            dist: crate::generate::Dist::NORMAL,
            seed,
            options: Default::default(),
        };
        crate::generate::generate(path, &spec).unwrap();
    }

    /// Under a global budget (set in a child process running only this test, since the budget
    /// is process-wide): an `f64` product from `.npy` files into `.npy`, B (17 MiB) within half
    /// of most of these budgets, so the plan keeps it resident or tiles, and each worker's block
    /// products pack their own copy of B's panel and sum into band scratch, which the plan must
    /// count. Every budget completes (at 40 MiB this used to wait for 17 MiB that never came and
    /// fail), with the bytes of an in-memory product and the budget's peak under the limit.
    #[test]
    fn packed_copies_fit_a_global_budget() {
        if !packed::available()
            || !memory::in_own_process("kernels::matmul::tests::packed_copies_fit_a_global_budget")
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let (m, k, n) = (600usize, 2048usize, 1100usize);
        normal_npy(&p("a.npy"), &[m as u64, k as u64], 1);
        normal_npy(&p("b.npy"), &[k as u64, n as u64], 2);
        let a = crate::formats::open(&p("a.npy")).unwrap();
        let b = crate::formats::open(&p("b.npy")).unwrap();
        let av = a.read_region(&Region::full(&[m as u64, k as u64])).unwrap();
        let bv = b.read_region(&Region::full(&[k as u64, n as u64])).unwrap();
        let want = gemm_f64(av.as_slice(), bv.as_slice(), (m, k, n));
        drop((av, bv));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let budget = memory::global();
        for mib in (24u64..=56).step_by(4) {
            let limit = mib << 20;
            budget.set_limit(limit);
            budget.reset_peak();
            let out = p(&format!("c{mib}.npy"));
            let w = crate::formats::create(
                &out,
                DType::F64,
                &[m as u64, n as u64],
                &Default::default(),
            )
            .unwrap();
            let opts = MatmulOptions::default();
            let rep = pool
                .install(|| matmul(a.as_ref(), b.as_ref(), w, &opts, &no_progress))
                .unwrap_or_else(|e| panic!("{mib} MiB: {e}"));
            let peak = budget.peak();
            budget.set_limit(crate::memory::default_limit());
            assert!(peak <= limit, "{mib} MiB: budget peak {peak}, {rep:?}");
            let c = crate::formats::open(&out).unwrap();
            let got = c.read_region(&Region::full(&[m as u64, n as u64])).unwrap();
            assert!(
                got.bytes() == bytemuck::cast_slice::<f64, u8>(&want),
                "{mib} MiB: {rep:?}"
            );
        }
    }
}

/// Throughput against in-memory `dgemm` (run alone: it sets the global budget):
/// `cargo test --release --lib kernels::matmul::bench -- --ignored --nocapture`.
#[cfg(test)]
mod bench {
    use super::*;
    use std::time::Instant;

    fn best(runs: usize, mut f: impl FnMut()) -> f64 {
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Stages of one product on existing files: `CHUNKHEAP_MM_A`, `CHUNKHEAP_MM_B` (2-D f64
    /// `.npy` paths), `CHUNKHEAP_MM_LIMIT` (bytes, default 512 MiB):
    /// `cargo test --release --lib kernels::matmul::bench::files -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark: needs CHUNKHEAP_MM_A / CHUNKHEAP_MM_B"]
    fn files() {
        let (Ok(pa), Ok(pb)) = (
            std::env::var("CHUNKHEAP_MM_A"),
            std::env::var("CHUNKHEAP_MM_B"),
        ) else {
            println!("set CHUNKHEAP_MM_A and CHUNKHEAP_MM_B");
            return;
        };
        let limit: u64 = std::env::var("CHUNKHEAP_MM_LIMIT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(512 << 20);
        let a = crate::formats::open(&pa).unwrap();
        let b = crate::formats::open(&pb).unwrap();
        let (m, k) = (a.info().shape[0], a.info().shape[1]);
        let n = b.info().shape[1];
        let flops = 2.0 * (m * n * k) as f64;
        let budget = memory::global();
        budget.set_limit(limit);
        let gf = |t: f64| flops / t / 1e9;
        for threads in [2usize, 1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // Reading both operands once, whole rows (the copy floor of any blocking).
            let t_read = best(1, || {
                for src in [&a, &b] {
                    let s = &src.info().shape;
                    for r in (0..s[0]).step_by(256) {
                        let h = 256.min(s[0] - r);
                        let reg = Region {
                            origin: vec![r, 0],
                            shape: vec![h, s[1]],
                        };
                        std::hint::black_box(src.read_region(&reg).unwrap());
                    }
                }
            });
            let t_buf = best(1, || {
                pool.install(|| {
                    std::hint::black_box(
                        matmul_to_buffer(a.as_ref(), b.as_ref(), &MatmulOptions::default())
                            .unwrap(),
                    );
                })
            });
            let dir = tempfile::tempdir_in(std::path::Path::new(&pa).parent().unwrap()).unwrap();
            let out = dir.path().join("c.npy");
            let out = out.to_str().unwrap();
            let mut rep = None;
            let t_file = best(1, || {
                let w =
                    crate::formats::create(out, DType::F64, &[m, n], &Default::default()).unwrap();
                rep = Some(
                    pool.install(|| {
                        matmul(
                            a.as_ref(),
                            b.as_ref(),
                            w,
                            &MatmulOptions::default(),
                            &no_progress,
                        )
                    })
                    .unwrap(),
                );
            });
            println!(
                "{threads} threads, limit {}: read operands once {t_read:.3} s; \
                 matmul_to_buffer {t_buf:.3} s ({:.1} GFLOP/s); matmul -> .npy {t_file:.3} s \
                 ({:.1} GFLOP/s) {:?}",
                human_bytes(limit),
                gf(t_buf),
                gf(t_file),
                rep.unwrap()
            );
        }
        budget.set_limit(crate::memory::default_limit());
    }

    #[test]
    #[ignore = "benchmark: 2048x2048 f64 operands, prints figures"]
    fn npy_2048_vs_in_memory_dgemm() {
        let n = 2048u64;
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
        for (name, seed) in [("a.npy", 1), ("b.npy", 2)] {
            super::tests::normal_npy(&p(name), &[n, n], seed);
        }
        let a = crate::formats::open(&p("a.npy")).unwrap();
        let b = crate::formats::open(&p("b.npy")).unwrap();
        let flops = 2.0 * (n * n * n) as f64;
        let threads = rayon::current_num_threads();

        // Baseline: the same data fully in memory, one dgemm call (and one per row half).
        let full = Region::full(&[n, n]);
        // Plain vectors, outside the budget (the in-memory baseline has no budget).
        let av: Vec<f64> = a.read_region(&full).unwrap().as_slice().to_vec();
        let bv: Vec<f64> = b.read_region(&full).unwrap().as_slice().to_vec();
        let (av, bv) = (&av[..], &bv[..]);
        let nu = n as usize;
        let mut want = vec![0.0f64; nu * nu];
        let gemm = |rows: std::ops::Range<usize>, c: &mut [f64]| {
            let a = ArrayView2::from_shape((rows.len(), nu), &av[rows.start * nu..rows.end * nu])
                .unwrap();
            let b = ArrayView2::from_shape((nu, nu), bv).unwrap();
            let mut c = ArrayViewMut2::from_shape((rows.len(), nu), c).unwrap();
            ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        };
        let band = nu.div_ceil(threads);
        let baseline = |want: &mut [f64]| {
            let t1 = best(2, || gemm(0..nu, want));
            let tp = best(2, || {
                use rayon::prelude::*;
                want.par_chunks_mut(band * nu)
                    .enumerate()
                    .for_each(|(i, c)| gemm(i * band..i * band + c.len() / nu, c));
            });
            println!(
                "in-memory dgemm: 1 thread {t1:.3} s ({:.1} GFLOP/s); {threads} threads {tp:.3} s \
                 ({:.1} GFLOP/s)",
                flops / t1 / 1e9,
                flops / tp / 1e9
            );
            (t1, tp)
        };

        let budget = memory::global();
        for (limit_mib, out_name, chunks) in [
            (40u64, "c.zarr", Some(vec![512u64, 512])),
            (24, "d.zarr", Some(vec![256, 256])),
        ] {
            let (t1, tp) = baseline(&mut want);
            budget.set_limit(limit_mib << 20);
            // Empty the buffer pool (earlier reads) so the peak is this product's.
            drop(budget.reserve(limit_mib << 20, "bench probe").unwrap());
            let mut rep = None;
            budget.reset_peak();
            let t = best(3, || {
                let opts = crate::WriteOptions {
                    chunks: chunks.clone(),
                    ..Default::default()
                };
                let w = crate::formats::create(&p(out_name), DType::F64, &[n, n], &opts).unwrap();
                rep = Some(
                    matmul(
                        a.as_ref(),
                        b.as_ref(),
                        w,
                        &MatmulOptions::default(),
                        &no_progress,
                    )
                    .unwrap(),
                );
            });
            let peak = budget.peak();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let t_one = best(2, || {
                let opts = crate::WriteOptions {
                    chunks: chunks.clone(),
                    ..Default::default()
                };
                let w = crate::formats::create(&p(out_name), DType::F64, &[n, n], &opts).unwrap();
                pool.install(|| {
                    matmul(
                        a.as_ref(),
                        b.as_ref(),
                        w,
                        &MatmulOptions::default(),
                        &no_progress,
                    )
                })
                .unwrap();
            });
            budget.set_limit(crate::memory::default_limit());
            let c = crate::formats::open(&p(out_name)).unwrap();
            let got = c.read_region(&full).unwrap();
            if packed::available() {
                // The reference bytes: one packed product over all of `k` per band of rows
                // (the sums the packed GEMM promises; `matrixmultiply` sums in shorter blocks).
                use rayon::prelude::*;
                want.par_chunks_mut(band * nu)
                    .enumerate()
                    .for_each(|(i, c)| {
                        let rows = c.len() / nu;
                        let a = &av[i * band * nu..(i * band + rows) * nu];
                        let mut scratch = packed::Scratch::default();
                        packed::gemm((rows, nu, nu), a, (bv, nu), (c, nu), false, &mut scratch)
                            .unwrap();
                    });
            }
            assert_eq!(
                got.as_slice::<f64>(),
                &want[..],
                "bit-identical to one in-memory product"
            );
            let rep = rep.unwrap();
            println!(
                "out-of-core -> {out_name} under {limit_mib} MiB (operands 2 x 32 MiB, result 32 MiB): \
                 {t:.3} s ({:.1} GFLOP/s), {:.2}x the {threads}-thread in-memory time, {:.2}x the \
                 1-thread; 1 thread: {t_one:.3} s ({:.1} GFLOP/s), {:.2}x the 1-thread in-memory \
                 time; budget peak {}; tile {:?} k-block {}; operand bytes read {:.1}x their size",
                flops / t / 1e9,
                t / tp,
                t / t1,
                flops / t_one / 1e9,
                t_one / t1,
                human_bytes(peak),
                rep.tile,
                rep.k_block,
                rep.bytes_read as f64 / (2.0 * (n * n * 8) as f64)
            );
        }
    }
}
