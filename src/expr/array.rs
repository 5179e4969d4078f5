//! The library's front door: a [`Session`] (memory limit, threads, temp dir, managed heap) and
//! lazy [`Array`]s built with operators and methods, evaluated to a scalar, a small in-memory
//! array, a file, or a spillable heap array.
//!
//! ```
//! use chunkheap::expr::{Session, SessionConfig};
//! let s = Session::new(SessionConfig::default()).unwrap();
//! let a = s.arange(10, chunkheap::DType::F64).unwrap();
//! let b = ((&a * 2.0).unwrap() + 1.0).unwrap(); // lazy: nothing computed yet
//! assert_eq!(b.sum().unwrap().to_f64(), 100.0); // one fused pass
//! assert_eq!(b.to_vec::<f64>().unwrap()[3], 7.0);
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use super::lazy::{ConstValue, Node, Src, as_node};
use super::mem::MemArray;
use super::ops::{BinOp, UnOp, Weak};
use super::reduction::{RedOp, Reduction, reduce_all, reduce_axis, reduce_from_stats, stats_pass};
use super::scan::{Scan, ScanOp};
use super::views::{Concatenated, Generated, Index, Reshaped, Sliced};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::generate::Dist;
use crate::heap::{Handle, Heap, HeapConfig};
use crate::memory::{self, human_bytes as human};
use crate::pipeline::{Progress, no_progress};
use crate::reduce::{Need, Scalar, Stats};
use crate::shape::{Region, numel, shape_str};
use crate::storage::{ChunkSource, WriteOptions};

/// How to open a [`Session`].
#[derive(Clone, Debug, Default)]
pub struct SessionConfig {
    /// Memory budget for everything the engine holds (default: half the machine's RAM). This sets
    /// the process-wide budget, [`memory::global`].
    pub memory_limit: Option<u64>,
    /// Worker threads (default: one per core).
    pub threads: Option<usize>,
    /// Where spill files and sort runs go (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
}

struct SessionInner {
    heap: Heap,
    pool: Option<rayon::ThreadPool>,
    temp_dir: Option<PathBuf>,
}

/// An engine session: the managed heap every array lives on, the thread pool and the budget.
/// Cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

/// A value an operator accepts: an array or a Python-style scalar (NEP 50 "weak": `a * 2` keeps
/// `a`'s dtype).
#[derive(Clone)]
pub enum Operand {
    /// An array.
    Array(Array),
    /// A scalar.
    Scalar(Weak),
}

impl From<&Array> for Operand {
    fn from(a: &Array) -> Operand {
        Operand::Array(a.clone())
    }
}
impl From<Array> for Operand {
    fn from(a: Array) -> Operand {
        Operand::Array(a)
    }
}
impl From<f64> for Operand {
    fn from(v: f64) -> Operand {
        Operand::Scalar(Weak::Float(v))
    }
}
impl From<i64> for Operand {
    fn from(v: i64) -> Operand {
        Operand::Scalar(Weak::Int(i128::from(v)))
    }
}
impl From<bool> for Operand {
    fn from(v: bool) -> Operand {
        Operand::Scalar(Weak::Bool(v))
    }
}

impl Session {
    /// Opens a session.
    pub fn new(config: SessionConfig) -> Result<Session> {
        if let Some(l) = config.memory_limit {
            memory::global().set_limit(l);
        }
        let heap = Heap::with_config(&HeapConfig {
            budget: None,
            temp_dir: config.temp_dir.clone(),
        })?;
        let pool = match config.threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build()
                    .map_err(|e| Error::Invalid(format!("cannot start {n} threads: {e}")))?,
            ),
            None => None,
        };
        Ok(Session {
            inner: Arc::new(SessionInner {
                heap,
                pool,
                temp_dir: config.temp_dir,
            }),
        })
    }

    /// A session over an existing heap (the script interpreter's), on the global thread pool.
    pub fn with_heap(heap: Heap, temp_dir: Option<PathBuf>) -> Session {
        Session {
            inner: Arc::new(SessionInner {
                heap,
                pool: None,
                temp_dir,
            }),
        }
    }

    /// The managed heap.
    pub fn heap(&self) -> &Heap {
        &self.inner.heap
    }

    /// The temp dir for spills and sort runs, if one was configured.
    pub fn temp_dir(&self) -> Option<&std::path::Path> {
        self.inner.temp_dir.as_deref()
    }

    /// Runs `f` on the session's thread pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.inner.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Worker threads computations use.
    pub fn threads(&self) -> usize {
        match &self.inner.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Wraps a source as an array on the heap.
    pub fn wrap(&self, src: Src) -> Array {
        let handle = self.inner.heap.array(src.clone());
        Array {
            src,
            handle,
            session: self.clone(),
        }
    }

    /// An array from a heap object of kind array or expression, ready to be read from any
    /// thread: a deferred matrix product ([`Product`](super::product::Product)) is computed now.
    pub fn from_handle(&self, handle: &Handle) -> Result<Array> {
        let a = self.deferred_handle(handle)?;
        if let Some(p) = super::product::Product::of(&a.src) {
            self.install(|| p.settle())?;
        }
        Ok(a)
    }

    /// [`from_handle`](Self::from_handle) without computing a deferred product: for saving it
    /// ([`Array::save`] computes a product straight into a `.npy` output) or reading its shape.
    /// Settle it (or use `from_handle`) before reading it from parallel code.
    pub fn deferred_handle(&self, handle: &Handle) -> Result<Array> {
        let src = self.inner.heap.array_source(handle)?;
        Ok(Array {
            src,
            handle: handle.clone(),
            session: self.clone(),
        })
    }

    /// An array computed from `parent` by `op` (the heap records the dependency).
    pub fn wrap_derived(&self, op: &str, parent: &Array, src: Src) -> Array {
        self.derived(op, &[&parent.handle], src)
    }

    fn derived(&self, op: &str, args: &[&Handle], src: Src) -> Array {
        let handle = self.inner.heap.expr_array(op, args, src.clone());
        Array {
            src,
            handle,
            session: self.clone(),
        }
    }

    /// Opens a `.npy`, Zarr or Arrow source (`PATH#COLUMN` for Arrow columns).
    pub fn open(&self, name: &str) -> Result<Array> {
        Ok(self.wrap(Arc::from(crate::formats::open(name)?)))
    }

    /// An in-memory array of typed values.
    pub fn from_vec<T: Element>(&self, shape: &[u64], values: &[T]) -> Result<Array> {
        if numel(shape) as usize != values.len() {
            return Err(Error::Invalid(format!(
                "{} values cannot fill shape {}",
                values.len(),
                shape_str(shape)
            )));
        }
        let m = MemArray::from_vec("array", shape.to_vec(), values)?;
        Ok(self.wrap(Arc::new(m)))
    }

    /// A 0-d array holding a scalar of `dtype`.
    pub fn scalar(&self, value: ConstValue, dtype: DType) -> Array {
        self.wrap(Node::constant(dtype, value))
    }

    /// `arange(n)` as `dtype`, generated on demand.
    pub fn arange(&self, n: u64, dtype: DType) -> Result<Array> {
        Ok(self.wrap(Generated::build(vec![n], dtype, Dist::Arange, 0)?))
    }

    /// Seeded random data, identical for any thread count and chunking.
    pub fn random(&self, shape: &[u64], dtype: DType, dist: Dist, seed: u64) -> Result<Array> {
        Ok(self.wrap(Generated::build(shape.to_vec(), dtype, dist, seed)?))
    }

    /// An array of `shape` filled with `value` (`zeros`, `ones`, `full`), computed on demand.
    pub fn full(&self, shape: &[u64], value: ConstValue, dtype: DType) -> Result<Array> {
        crate::shape::checked_numel(shape)?;
        let c = Node::constant(dtype, value);
        // Broadcast the constant by adding a zero-filled... simply: where(True, c, c) over a
        // generated shape is wasteful; a broadcast view of the constant is exact and free.
        let b = Broadcast::build(c, shape.to_vec())?;
        Ok(self.wrap(b))
    }

    /// `where(cond, a, b)`.
    pub fn where_(
        &self,
        cond: &Array,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Result<Array> {
        let (a, b) = (a.into(), b.into());
        let other = |o: &Operand, peer: &Operand| -> Result<Array> {
            match o {
                Operand::Array(x) => Ok(x.clone()),
                Operand::Scalar(w) => {
                    let d = match peer {
                        Operand::Array(p) => w.resolve(p.dtype())?,
                        Operand::Scalar(_) => w.default_dtype(),
                    };
                    Ok(self.scalar(weak_value(*w), d))
                }
            }
        };
        let x = other(&a, &b)?;
        let y = other(&b, &a)?;
        let src = Node::select(&cond.src, &x.src, &y.src)?;
        Ok(self.derived("where", &[&cond.handle, &x.handle, &y.handle], src))
    }

    /// Joins arrays along `axis` (promoting to a common dtype).
    pub fn concatenate(&self, parts: &[Array], axis: isize) -> Result<Array> {
        let Some(first) = parts.first() else {
            return Err(Error::Invalid(
                "need at least one array to concatenate".into(),
            ));
        };
        let dtype = parts
            .iter()
            .fold(first.dtype(), |d, p| super::ops::promote(d, p.dtype()));
        let ax = norm_axis(axis, first.ndim())?;
        let srcs: Vec<Src> = parts.iter().map(|p| Node::cast(&p.src, dtype)).collect();
        let src = Concatenated::build(srcs, ax)?;
        let hs: Vec<&Handle> = parts.iter().map(|p| &p.handle).collect();
        Ok(self.derived("concatenate", &hs, src))
    }
}

fn weak_value(w: Weak) -> ConstValue {
    match w {
        Weak::Bool(b) => ConstValue::Bool(b),
        Weak::Int(i) => ConstValue::Int(i),
        Weak::Float(f) => ConstValue::Float(f),
    }
}

/// Normalises a possibly negative axis.
pub fn norm_axis(axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        return Err(Error::Invalid(format!(
            "axis {axis} is out of bounds for array of dimension {ndim}"
        )));
    }
    Ok(a as usize)
}

/// A lazy array on the managed heap.
#[derive(Clone)]
pub struct Array {
    src: Src,
    handle: Handle,
    session: Session,
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Array({}, {}, {})",
            self.src.info().name,
            self.dtype(),
            shape_str(self.shape())
        )
    }
}

impl Array {
    /// The source that computes (or stores) the values.
    pub fn source(&self) -> &Src {
        &self.src
    }

    /// The heap object standing for this array.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Shape.
    pub fn shape(&self) -> &[u64] {
        &self.src.info().shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.src.info().dtype
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn size(&self) -> u64 {
        numel(self.shape())
    }

    /// What the array is (an expression's text, or the source name).
    pub fn name(&self) -> &str {
        &self.src.info().name
    }

    fn operand(&self, o: Operand) -> Result<Array> {
        Ok(match o {
            Operand::Array(a) => a,
            Operand::Scalar(w) => {
                let d = w.resolve(self.dtype())?;
                self.session.scalar(weak_value(w), d)
            }
        })
    }

    /// `self op rhs`.
    pub fn binary(&self, op: BinOp, rhs: impl Into<Operand>) -> Result<Array> {
        let b = match rhs.into() {
            // NumPy's `ndarray.__pow__` takes `b ** 2` as `np.square`, whose bool loop gives
            // int8 (every other Python int exponent goes through `np.power`: int64).
            Operand::Scalar(w @ Weak::Int(2))
                if op == BinOp::Pow && self.dtype() == DType::Bool =>
            {
                self.session.scalar(weak_value(w), DType::I8)
            }
            o => self.operand(o)?,
        };
        let src = Node::binary(op, &self.src, &b.src)?;
        Ok(self
            .session
            .derived(op.name(), &[&self.handle, &b.handle], src))
    }

    /// `lhs op self` (a scalar on the left: `2 - a`).
    pub fn rbinary(&self, op: BinOp, lhs: impl Into<Operand>) -> Result<Array> {
        let a = self.operand(lhs.into())?;
        let src = Node::binary(op, &a.src, &self.src)?;
        Ok(self
            .session
            .derived(op.name(), &[&a.handle, &self.handle], src))
    }

    /// `op(self)`.
    pub fn unary(&self, op: UnOp) -> Result<Array> {
        let src = Node::unary(op, &self.src)?;
        Ok(self.session.derived(op.name(), &[&self.handle], src))
    }

    /// `astype(dtype)`.
    pub fn astype(&self, dtype: DType) -> Array {
        let src = Node::cast(&self.src, dtype);
        self.session.derived("astype", &[&self.handle], src)
    }

    /// `clip(self, lo, hi)` (either bound may be omitted).
    pub fn clip(&self, lo: Option<Operand>, hi: Option<Operand>) -> Result<Array> {
        let mut x = self.clone();
        if let Some(lo) = lo {
            x = x.binary(BinOp::Maximum, lo)?;
        }
        if let Some(hi) = hi {
            x = x.binary(BinOp::Minimum, hi)?;
        }
        Ok(x)
    }

    /// Reduces every element.
    pub fn reduce(&self, r: &Reduction) -> Result<Scalar> {
        self.reduce_with_progress(r, &no_progress)
    }

    /// [`reduce`](Self::reduce) with a progress callback (bytes processed).
    pub fn reduce_with_progress(&self, r: &Reduction, progress: Progress<'_>) -> Result<Scalar> {
        self.check_budget()?;
        self.session
            .install(|| reduce_all(self.src.as_ref(), r, progress))
    }

    /// One whole-array statistics pass computing `need` (fused for lazy expressions); turn it
    /// into reductions with [`reduce_from_stats`](Self::reduce_from_stats).
    pub fn stats_pass(&self, need: Need, progress: Progress<'_>) -> Result<Stats> {
        self.check_budget()?;
        self.session
            .install(|| stats_pass(self.src.as_ref(), need, progress))
    }

    /// The whole-array reduction `r` from a pass `s` over this array (see
    /// [`reduction::reduce_from_stats`](super::reduction::reduce_from_stats)).
    pub fn reduce_from_stats(
        &self,
        r: &Reduction,
        s: &Stats,
        progress: Progress<'_>,
    ) -> Result<Scalar> {
        self.check_budget()?;
        self.session
            .install(|| reduce_from_stats(self.src.as_ref(), r, s, progress))
    }

    /// Reduces along `axis` (negative counts from the end) into a small in-memory array.
    pub fn reduce_axis(&self, r: &Reduction, axis: isize) -> Result<Array> {
        self.reduce_axis_with_progress(r, axis, &no_progress)
    }

    /// [`reduce_axis`](Self::reduce_axis) with a progress callback.
    pub fn reduce_axis_with_progress(
        &self,
        r: &Reduction,
        axis: isize,
        progress: Progress<'_>,
    ) -> Result<Array> {
        let ax = norm_axis(axis, self.ndim())?;
        self.check_budget()?;
        let m = self
            .session
            .install(|| reduce_axis(self.src.as_ref(), r, ax, progress))?;
        Ok(self
            .session
            .derived(&r.name(), &[&self.handle], Arc::new(m)))
    }

    fn simple(&self, op: RedOp) -> Result<Scalar> {
        self.reduce(&Reduction {
            op,
            skip_nan: false,
            ddof: 0,
        })
    }

    /// Sum of all elements.
    pub fn sum(&self) -> Result<Scalar> {
        self.simple(RedOp::Sum)
    }

    /// Mean of all elements.
    pub fn mean(&self) -> Result<Scalar> {
        self.simple(RedOp::Mean)
    }

    /// Standard deviation of all elements with `ddof`.
    pub fn std(&self, ddof: u64) -> Result<Scalar> {
        self.reduce(&Reduction {
            op: RedOp::Std,
            skip_nan: false,
            ddof,
        })
    }

    /// Minimum.
    pub fn min(&self) -> Result<Scalar> {
        self.simple(RedOp::Min)
    }

    /// Maximum.
    pub fn max(&self) -> Result<Scalar> {
        self.simple(RedOp::Max)
    }

    /// Flat index of the first maximum.
    pub fn argmax(&self) -> Result<Scalar> {
        self.simple(RedOp::ArgMax)
    }

    /// `cumsum` / `cumprod`, flattened (`None`) or along an axis.
    pub fn scan(&self, op: ScanOp, axis: Option<isize>) -> Result<Array> {
        let ax = axis.map(|a| norm_axis(a, self.ndim())).transpose()?;
        let src = Scan::build(&self.src, op, ax)?;
        let name = match op {
            ScanOp::CumSum => "cumsum",
            ScanOp::CumProd => "cumprod",
        };
        Ok(self.session.derived(name, &[&self.handle], src))
    }

    /// Basic indexing: `a[1000:2000]`, `a[:, 3]`, steps (negative too).
    pub fn slice(&self, index: &[Index]) -> Result<Array> {
        let src = Sliced::build(self.src.clone(), index)?;
        Ok(self.session.derived("getitem", &[&self.handle], src))
    }

    /// C-order reshape (one `-1` entry is inferred).
    pub fn reshape(&self, shape: &[i64]) -> Result<Array> {
        let src = Reshaped::build(self.src.clone(), shape)?;
        Ok(self.session.derived("reshape", &[&self.handle], src))
    }

    /// A view of the array broadcast to `shape`.
    pub fn broadcast_to(&self, shape: &[u64]) -> Result<Array> {
        let src = Broadcast::build(self.src.clone(), shape.to_vec())?;
        Ok(self.session.derived("broadcast_to", &[&self.handle], src))
    }

    /// Bytes one worker holds per chunk while evaluating this array, if it is an expression.
    pub fn bytes_per_chunk(&self) -> u64 {
        let info = self.src.info();
        let elems = info.layout.max_chunk_elems();
        match as_node(&self.src).and_then(|n| n.plan().ok()) {
            Some(p) => p.bytes_per_region(elems),
            None => elems * info.dtype.size() as u64,
        }
    }

    /// Predicted peak memory of evaluating this array: one chunk's working set per thread.
    pub fn predicted_peak(&self) -> u64 {
        self.bytes_per_chunk() * self.session.threads() as u64
    }

    /// Fails before any work starts when even one chunk's working set exceeds the budget.
    pub fn check_budget(&self) -> Result<()> {
        let one = self.bytes_per_chunk();
        let budget = memory::global();
        let limit = budget.limit();
        if one > limit {
            return Err(Error::OutOfMemoryBudget {
                limit,
                used: budget.used(),
                asked: one,
                what: "one chunk of the expression".to_string(),
                why: format!(
                    "evaluating {} needs {} per chunk in flight; raise --memory-limit or use \
                     smaller chunks",
                    self.name(),
                    human(one)
                ),
                holders: {
                    let h: Vec<String> = budget
                        .holders()
                        .iter()
                        .map(|(k, v)| format!("{k} {}", human(*v)))
                        .collect();
                    if h.is_empty() {
                        "none".into()
                    } else {
                        h.join(", ")
                    }
                },
            });
        }
        Ok(())
    }

    /// The evaluation plan: fused steps, what is read, chunking and the predicted peak memory
    /// against the budget.
    pub fn explain(&self) -> String {
        let info = self.src.info();
        let mut s = format!(
            "{}\n  result: {} {}, {} ({} chunks of up to {} elements)\n",
            info.name,
            info.dtype,
            shape_str(&info.shape),
            human(numel(&info.shape) * info.dtype.size() as u64),
            info.layout.num_chunks(),
            info.layout.max_chunk_elems()
        );
        match as_node(&self.src).map(|n| n.plan()) {
            Some(Ok(p)) => {
                s.push_str(&format!(
                    "  fused into one pass of {} element-wise step(s), {}-element tiles:\n",
                    p.num_steps(),
                    super::lazy::TILE
                ));
                s.push_str(&p.describe());
            }
            Some(Err(e)) => s.push_str(&format!("  cannot plan: {e}\n")),
            None => s.push_str(&format!("  read from {} source\n", info.format.name())),
        }
        let threads = self.session.threads();
        let per = self.bytes_per_chunk();
        let budget = memory::global();
        let inflight = (budget.limit() / per.max(1)).min(threads as u64);
        s.push_str(&format!(
            "  memory: {} per chunk in flight x {} thread(s) = {} predicted peak; budget {} \
             ({} chunk(s) in flight fit){}\n",
            human(per),
            threads,
            human(per * threads as u64),
            human(budget.limit()),
            inflight,
            if inflight == 0 {
                " -- WOULD NOT FIT"
            } else {
                ""
            }
        ));
        s
    }

    /// Evaluates the whole array into memory as typed values (the result must fit the budget).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::Invalid(format!(
                "to_vec::<{}>() on a {} array; use astype first",
                T::DTYPE,
                self.dtype()
            )));
        }
        let full = Region::full(self.shape());
        let buf = self.session.install(|| self.src.read_region(&full))?;
        Ok(buf.as_slice::<T>().to_vec())
    }

    /// Evaluates into memory as an in-memory array (the result must fit the budget).
    pub fn compute(&self) -> Result<Array> {
        self.check_budget()?;
        let full = Region::full(self.shape());
        let buf = self.session.install(|| self.src.read_region(&full))?;
        let m = MemArray::new(self.name(), self.dtype(), self.shape().to_vec(), buf)?;
        Ok(self
            .session
            .derived("compute", &[&self.handle], Arc::new(m)))
    }

    /// Streams the array into a new file (format from the extension), written beside the target
    /// and renamed into place only when complete.
    pub fn save(&self, path: &str, options: &WriteOptions, progress: Progress<'_>) -> Result<()> {
        self.check_budget()?;
        let writer = crate::formats::create(path, self.dtype(), self.shape(), options)?;
        if let Some(p) = super::product::Product::of(&self.src) {
            // A deferred product may compute straight into the output.
            return self.session.install(|| p.save_into(writer, progress));
        }
        self.session
            .install(|| crate::pipeline::copy(self.src.as_ref(), writer, progress))
    }

    /// Materialises the array as chunk objects on the managed heap: it stays resident while the
    /// budget allows, and its chunks are spilled to temp files (and read back on use) when the
    /// budget needs the room.
    pub fn persist(&self) -> Result<Array> {
        self.check_budget()?;
        let src = self
            .session
            .install(|| super::persist::HeapArray::build(self.session.heap(), &self.src))?;
        Ok(self.session.derived("persist", &[&self.handle], src))
    }
}

/// A source broadcast to a larger shape (NumPy `broadcast_to`), read without copying the source.
pub struct Broadcast {
    src: Src,
    info: crate::storage::SourceInfo,
}

impl Broadcast {
    /// Broadcasts `src` to `shape` (NumPy's rules).
    pub fn build(src: Src, shape: Vec<u64>) -> Result<Src> {
        let s = &src.info().shape;
        let b = super::lazy::broadcast_shapes(s, &shape)?;
        if b != shape {
            return Err(Error::Invalid(format!(
                "cannot broadcast an array of shape {} to shape {}",
                shape_str(s),
                shape_str(&shape)
            )));
        }
        let dtype = src.info().dtype;
        let layout = crate::shape::ChunkLayout::contiguous(
            &shape,
            dtype.size(),
            crate::formats::DEFAULT_CHUNK_BYTES,
        );
        let name = format!("broadcast_to({}, {})", src.info().name, shape_str(&shape));
        let info = super::lazy::computed_source_info(name, dtype, shape, layout);
        Ok(Arc::new(Broadcast { src, info }))
    }
}

impl ChunkSource for Broadcast {
    fn info(&self) -> &crate::storage::SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<crate::storage::Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<crate::storage::Buffer> {
        super::lazy::read_broadcast(&self.src, region, &self.info.shape)
    }
}

macro_rules! op_impl {
    ($tr:ident, $m:ident, $op:expr) => {
        impl<R: Into<Operand>> std::ops::$tr<R> for &Array {
            type Output = Result<Array>;
            fn $m(self, rhs: R) -> Result<Array> {
                self.binary($op, rhs)
            }
        }
        impl<R: Into<Operand>> std::ops::$tr<R> for Array {
            type Output = Result<Array>;
            fn $m(self, rhs: R) -> Result<Array> {
                self.binary($op, rhs)
            }
        }
    };
}
op_impl!(Add, add, BinOp::Add);
op_impl!(Sub, sub, BinOp::Sub);
op_impl!(Mul, mul, BinOp::Mul);
op_impl!(Div, div, BinOp::Div);
op_impl!(Rem, rem, BinOp::Mod);
op_impl!(BitAnd, bitand, BinOp::BitAnd);
op_impl!(BitOr, bitor, BinOp::BitOr);
op_impl!(BitXor, bitxor, BinOp::BitXor);

impl std::ops::Neg for &Array {
    type Output = Result<Array>;
    fn neg(self) -> Result<Array> {
        self.unary(UnOp::Neg)
    }
}
