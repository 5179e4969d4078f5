//! The managed heap: every array, chunk buffer, expression node and container is an object here,
//! managed the way CPython manages memory.
//!
//! - **Reference counts** free an object the moment its last [`Handle`] (or containing object)
//!   lets go, recursively — no collection is needed for acyclic garbage.
//! - **A generational cycle collector** ([`Heap::collect`], in `collect.rs`) finds unreachable
//!   islands among *tracked* objects (containers: lists, tuples, dicts, expressions) with
//!   CPython's algorithm: copy counts to `gc_refs`, subtract references from inside the candidate
//!   set, keep what the rest reaches, free the remainder. Three generations with thresholds
//!   (700, 10, 10), survivors promoted, and the 25 % long-lived rule before full collections.
//! - **Finalizers** run once, outside every lock; an object a finalizer resurrects survives.
//! - **Chunk objects** hold data that counts against the [`MemoryBudget`]; under pressure the heap
//!   evicts clean chunks (re-read from their source later) and spills dirty ones to temp files.
//!
//! # Thread safety
//! [`Heap`] and [`Handle`] are `Send + Sync`. The object graph (containers, generations) sits
//! behind one mutex, held only for short, allocation-free bookkeeping. Reference counts are
//! atomics beside it (`counts.rs`): cloning a handle, and dropping one that is not the last
//! reference, never take the lock; only a decrement that may reach zero does. Finalizers,
//! callbacks, payload drops (which release memory and delete spill files) and chunk I/O run with
//! it released. Each chunk's data has its own lock, so kernels on rayon workers read and write
//! different chunks concurrently, and the memory reclaimer skips chunks that are in use (pinned).
//! One collection runs at a time.

mod collect;
mod counts;
mod object;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::{Error, Result};
use crate::memory::{self, MemoryBudget, Reclaim};
use crate::storage::{Buffer, ChunkSource};

pub use collect::{GcEvent, GcPhase, GenStats};
use counts::Counts;
pub use object::{ChunkCell, Kind};
use object::{ChunkCellInner, ChunkState, ExprData, FunctionData, ObjId, Payload};

/// A finalizer: runs once, with a handle to the dying object (storing that handle somewhere
/// resurrects the object).
pub type Finalizer = Box<dyn FnOnce(&Handle) + Send>;

/// A collection callback (see [`Heap::add_callback`]).
pub type GcCallback = Arc<dyn Fn(&GcEvent) + Send + Sync>;

/// How to build a heap.
#[derive(Clone, Debug, Default)]
pub struct HeapConfig {
    /// The budget chunk objects draw from (default: the process-wide [`memory::global`]).
    pub budget: Option<MemoryBudget>,
    /// Where spill files go (a private subdirectory is created; default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
}

/// An object: 48 bytes, so that with its tag a slot is 56 (the collector's passes walk the
/// slots of whole generations; at 144 bytes they took twice the memory traffic). Its reference
/// count is kept apart, in [`Counts`], where handles change it without the lock.
pub(crate) struct Obj {
    payload: Payload,
    gc_refs: i64,
    /// Position in its generation's list, when tracked.
    pos: u32,
    /// Its generation, 0-2 or 3 (the permanent, frozen one), for a tracked container;
    /// [`UNTRACKED`] otherwise.
    generation: u8,
    /// Scratch marks used during a collection.
    mark: u8,
    /// Its finalizer has been taken to run.
    finalized: bool,
    /// A finalizer waits for it in [`State::finalizers`] (rare, so kept out of the slot).
    has_finalizer: bool,
}

/// [`Obj::generation`] of an object no generation tracks.
const UNTRACKED: u8 = u8::MAX;

impl Obj {
    /// `Some((generation, position in that generation's list))` for a tracked container.
    fn track(&self) -> Option<(usize, usize)> {
        (self.generation != UNTRACKED).then_some((self.generation as usize, self.pos as usize))
    }

    /// Sets (or, with `None`, clears) the generation and position.
    fn set_track(&mut self, t: Option<(usize, usize)>) {
        match t {
            Some((g, pos)) => {
                self.generation = g as u8;
                self.pos = u32::try_from(pos).expect("fewer objects than ids");
            }
            None => self.generation = UNTRACKED,
        }
    }
}

struct Slot {
    /// Bumped whenever the slot is freed, so weak handles to an old occupant read as gone.
    tag: u32,
    obj: Option<Obj>,
}

pub(crate) struct State {
    slots: Vec<Slot>,
    free: Vec<ObjId>,
    /// Finalizers waiting for their objects (whose `has_finalizer` is set).
    finalizers: HashMap<ObjId, Finalizer>,
    /// Generations 0, 1, 2 and the permanent generation 3.
    gens: [Vec<ObjId>; 4],
    count: [u64; 3],
    threshold: [u64; 3],
    enabled: bool,
    long_lived_total: u64,
    long_lived_pending: u64,
    stats: [GenStats; 3],
    live: usize,
    /// The reference counts (shared with [`HeapInner::counts`]).
    counts: Arc<Counts>,
}

pub(crate) struct HeapInner {
    state: Mutex<State>,
    /// The reference counts, for handles to change without the state lock.
    counts: Arc<Counts>,
    budget: MemoryBudget,
    spill_dir: tempfile::TempDir,
    _live: crate::storage::atomic::LiveTemp,
    callbacks: Mutex<Vec<GcCallback>>,
    collecting: Mutex<()>,
    tick: AtomicU64,
}

/// A private heap of reference-counted objects with a cycle collector. Cheap to clone (shared).
#[derive(Clone)]
pub struct Heap {
    inner: Arc<HeapInner>,
}

/// A strong reference to a heap object. Cloning increments the object's count, dropping
/// decrements it (freeing the object at zero).
pub struct Handle {
    heap: Heap,
    id: ObjId,
}

/// A weak reference: does not keep the object alive; [`upgrade`](Self::upgrade) returns `None`
/// once the object has been freed.
#[derive(Clone)]
pub struct WeakHandle {
    heap: Weak<HeapInner>,
    id: ObjId,
    tag: u32,
}

/// What a drop or collection freed; its finalizers and payload drops run after the state lock
/// is released.
#[derive(Default)]
pub(crate) struct Freed {
    payloads: Vec<Payload>,
    finalize: Vec<(ObjId, Finalizer)>,
    orphans: Vec<Finalizer>,
    pub(crate) objects: u64,
    pub(crate) bytes: u64,
}

/// Figures about a heap, for `--stats` and `heap.stats()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeapStats {
    /// Live objects.
    pub objects: usize,
    /// Live objects per kind.
    pub by_kind: BTreeMap<Kind, usize>,
    /// Tracked containers (all generations, frozen included).
    pub tracked: usize,
    /// Objects in the permanent (frozen) generation.
    pub frozen: usize,
    /// Chunk objects.
    pub chunks: usize,
    /// Bytes of chunk data in memory.
    pub chunk_bytes_resident: u64,
    /// Bytes of chunk data spilled to temp files.
    pub chunk_bytes_spilled: u64,
    /// Chunk objects currently evicted (re-readable from their source).
    pub chunks_evicted: usize,
    /// Chunk objects in use (locked by a reader or writer) when the figures were taken.
    pub chunks_pinned: usize,
    /// Spill files on disk.
    pub spill_files: usize,
    /// The budget's limit, use and peak, in bytes.
    pub budget_limit: u64,
    /// Bytes reserved in the budget now (all holders, not only this heap).
    pub budget_used: u64,
    /// Peak bytes reserved.
    pub budget_peak: u64,
    /// Bytes reserved per category (mapped chunk windows, chunk buffers, ...), largest first.
    pub budget_holders: Vec<(&'static str, u64)>,
    /// Per-generation collector statistics.
    pub gc: [GenStats; 3],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn obj(&self, id: ObjId) -> &Obj {
        self.slots[id as usize].obj.as_ref().expect("live object")
    }

    fn obj_mut(&mut self, id: ObjId) -> &mut Obj {
        self.slots[id as usize].obj.as_mut().expect("live object")
    }

    fn track(&mut self, id: ObjId, generation: usize) {
        let pos = self.gens[generation].len();
        self.gens[generation].push(id);
        self.obj_mut(id).set_track(Some((generation, pos)));
    }

    /// Panics unless every generation's list and its objects' recorded positions agree, and
    /// every tracked object is in one list (a test oracle for the collector's bookkeeping).
    #[cfg(test)]
    pub(crate) fn check_tracking(&self) {
        let mut listed = 0;
        for (g, list) in self.gens.iter().enumerate() {
            for (i, &id) in list.iter().enumerate() {
                assert_eq!(self.obj(id).track(), Some((g, i)), "object #{id}");
                listed += 1;
            }
        }
        let tracked = self
            .slots
            .iter()
            .filter(|s| s.obj.as_ref().is_some_and(|o| o.track().is_some()))
            .count();
        assert_eq!(listed, tracked, "tracked objects outside every list");
        let flagged = self
            .slots
            .iter()
            .filter(|s| s.obj.as_ref().is_some_and(|o| o.has_finalizer))
            .count();
        assert_eq!(
            flagged,
            self.finalizers.len(),
            "finalizers without flags or flags without"
        );
    }

    fn untrack(&mut self, id: ObjId) {
        let o = self.obj_mut(id);
        if let Some((g, pos)) = o.track() {
            o.set_track(None);
            self.gens[g].swap_remove(pos);
            if let Some(&moved) = self.gens[g].get(pos) {
                self.obj_mut(moved).set_track(Some((g, pos)));
            }
        }
    }

    fn move_to(&mut self, id: ObjId, generation: usize) {
        if self.obj(id).track().is_some_and(|(g, _)| g != generation) {
            self.untrack(id);
            self.track(id, generation);
        }
    }

    fn incref(&mut self, id: ObjId) {
        self.counts.incref(id);
    }

    /// The object's reference count.
    fn rc(&self, id: ObjId) -> usize {
        self.counts.load(id)
    }

    /// Drops one reference; frees objects whose count reaches zero (iteratively, so long chains
    /// cannot overflow the stack). Finalizers are queued in `out`, with the object kept alive by
    /// one reference that the finalizer's handle will own.
    fn decref(&mut self, id: ObjId, out: &mut Freed) {
        // The common case, a count that stays above zero, allocates nothing (the work list cost
        // a third of a handle's clone + drop).
        if self.counts.decref_unless_last(id) {
            return;
        }
        let mut work = vec![id];
        while let Some(id) = work.pop() {
            if self.counts.decref(id) > 0 {
                continue;
            }
            let o = self.obj_mut(id);
            if !o.finalized && o.has_finalizer {
                o.has_finalizer = false;
                o.finalized = true;
                self.counts.set(id, 1);
                let f = self.finalizers.remove(&id).expect("a flagged finalizer");
                out.finalize.push((id, f));
                continue;
            }
            let payload = self.remove(id, out);
            payload.for_each_referent(|r| work.push(r));
            out.payloads.push(payload);
        }
    }

    /// Takes an object out of its slot and returns its payload (referents not yet released).
    fn remove(&mut self, id: ObjId, out: &mut Freed) -> Payload {
        self.untrack(id);
        let slot = &mut self.slots[id as usize];
        let o = slot.obj.take().expect("live object");
        slot.tag = slot.tag.wrapping_add(1);
        self.free.push(id);
        self.live -= 1;
        if o.payload.kind().is_container() && self.count[0] > 0 {
            self.count[0] -= 1;
        }
        out.objects += 1;
        out.bytes += payload_bytes(&o.payload);
        if o.has_finalizer
            && let Some(f) = self.finalizers.remove(&id)
        {
            // Attached to the garbage while its finalizers ran: it cannot run without its object,
            // and must not be dropped under the lock (it may own handles).
            out.orphans.push(f);
        }
        o.payload
    }

    fn insert(&mut self, payload: Payload) -> ObjId {
        let container = payload.kind().is_container();
        let obj = Obj {
            payload,
            gc_refs: 0,
            pos: 0,
            generation: UNTRACKED,
            mark: 0,
            finalized: false,
            has_finalizer: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize].obj = Some(obj);
                id
            }
            None => {
                let id = ObjId::try_from(self.slots.len()).expect("fewer objects than ids");
                self.counts.ensure(id);
                self.slots.push(Slot {
                    tag: 0,
                    obj: Some(obj),
                });
                id
            }
        };
        self.counts.set(id, 1);
        self.live += 1;
        if container {
            self.track(id, 0);
            self.count[0] += 1;
        }
        id
    }
}

/// Runs a finalizer; a panic inside it is contained (the object is treated as finalized), so
/// one faulty finalizer cannot leak the garbage it belongs to or poison the heap.
pub(crate) fn run_finalizer(f: Finalizer, h: &Handle) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(h)));
}

/// Memory an object's payload holds (chunk data in memory, string bytes).
fn payload_bytes(p: &Payload) -> u64 {
    match p {
        Payload::Chunk(cell) => match &cell.lock().data {
            ChunkState::Resident(b) => b.len() as u64,
            _ => 0,
        },
        Payload::Str(s) => s.len() as u64,
        _ => 0,
    }
}

impl Freed {
    /// Runs queued finalizers (each with a handle owning the reference `decref` kept), then drops
    /// the payloads — outside the state lock.
    fn finish(self, heap: &Heap) {
        let Freed {
            payloads,
            finalize,
            orphans,
            ..
        } = self;
        drop(payloads);
        drop(orphans);
        for (id, f) in finalize {
            let h = Handle {
                heap: heap.clone(),
                id,
            };
            run_finalizer(f, &h);
        }
    }
}

impl Reclaim for HeapInner {
    fn reclaim(&self, want: u64) -> u64 {
        // Snapshot the chunk cells under the state lock, then work on them without it.
        let mut cells: Vec<Arc<ChunkCell>> = {
            let st = lock(&self.state);
            st.slots
                .iter()
                .filter_map(|s| match s.obj.as_ref().map(|o| &o.payload) {
                    Some(Payload::Chunk(c)) => Some(c.clone()),
                    _ => None,
                })
                .collect()
        };
        // Least recently used first (keys read once: they change under us); cells in use
        // (locked) are pinned and skipped.
        cells.sort_by_cached_key(|c| c.state.try_lock().map(|g| g.last_use).unwrap_or(u64::MAX));
        let mut got = 0u64;
        for c in cells {
            if got >= want {
                break;
            }
            if let Ok(mut g) = c.state.try_lock() {
                got += g.release(self.spill_dir.path()).unwrap_or(0) as u64;
            }
        }
        got
    }
}

impl Heap {
    /// A heap with the default configuration.
    pub fn new() -> Result<Heap> {
        Heap::with_config(&HeapConfig::default())
    }

    /// A heap drawing from `config.budget`, spilling into `config.temp_dir`.
    pub fn with_config(config: &HeapConfig) -> Result<Heap> {
        let budget = config
            .budget
            .clone()
            .unwrap_or_else(|| memory::global().clone());
        let dir = config.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spill_dir = tempfile::Builder::new()
            .prefix("chunkheap-spill-")
            .tempdir_in(&dir)
            .map_err(|e| Error::io(&dir, "create spill directory in", e))?;
        let counts = Arc::new(Counts::new());
        let inner = Arc::new(HeapInner {
            counts: counts.clone(),
            state: Mutex::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                finalizers: HashMap::new(),
                gens: Default::default(),
                count: [0; 3],
                threshold: [700, 10, 10],
                enabled: true,
                long_lived_total: 0,
                long_lived_pending: 0,
                stats: Default::default(),
                live: 0,
                counts,
            }),
            budget: budget.clone(),
            _live: crate::storage::atomic::LiveTemp::register(spill_dir.path()),
            spill_dir,
            callbacks: Mutex::new(Vec::new()),
            collecting: Mutex::new(()),
            tick: AtomicU64::new(0),
        });
        let weak: Weak<dyn Reclaim> = Arc::downgrade(&(inner.clone() as Arc<dyn Reclaim>));
        budget.add_reclaimer(weak);
        Ok(Heap { inner })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// The budget this heap's chunks draw from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.inner.budget
    }

    /// The directory spill files go to (removed with the heap).
    pub fn spill_dir(&self) -> &Path {
        self.inner.spill_dir.path()
    }

    fn check(&self, h: &Handle) {
        assert!(
            Arc::ptr_eq(&self.inner, &h.heap.inner),
            "handle belongs to another heap"
        );
    }

    fn alloc(&self, payload: Payload, refs: &[&Handle]) -> Handle {
        for r in refs {
            self.check(r);
        }
        let container = payload.kind().is_container();
        let id = {
            let mut st = self.state();
            for r in refs {
                st.incref(r.id);
            }
            st.insert(payload)
        };
        let h = Handle {
            heap: self.clone(),
            id,
        };
        if container {
            self.maybe_collect();
        }
        h
    }

    /// `None`.
    pub fn none(&self) -> Handle {
        self.alloc(Payload::None, &[])
    }

    /// A boolean.
    pub fn bool(&self, v: bool) -> Handle {
        self.alloc(Payload::Bool(v), &[])
    }

    /// An integer.
    pub fn int(&self, v: i64) -> Handle {
        self.alloc(Payload::Int(v), &[])
    }

    /// A float.
    pub fn float(&self, v: f64) -> Handle {
        self.alloc(Payload::Float(v), &[])
    }

    /// A string.
    pub fn str(&self, v: &str) -> Handle {
        self.alloc(Payload::Str(v.to_string()), &[])
    }

    /// A list holding `items`.
    pub fn list(&self, items: &[&Handle]) -> Handle {
        self.alloc(Payload::List(items.iter().map(|h| h.id).collect()), items)
    }

    /// A tuple holding `items`.
    pub fn tuple(&self, items: &[&Handle]) -> Handle {
        self.alloc(Payload::Tuple(items.iter().map(|h| h.id).collect()), items)
    }

    /// A dict with string keys (later duplicates replace earlier ones).
    pub fn dict(&self, items: &[(&str, &Handle)]) -> Handle {
        let d = self.alloc(Payload::Dict(Vec::new()), &[]);
        for (k, v) in items {
            self.dict_set(&d, k, v).expect("a new dict");
        }
        d
    }

    /// A lazy expression node `op(args...)`.
    pub fn expr(&self, op: &str, args: &[&Handle]) -> Handle {
        self.alloc(
            Payload::Expr(Box::new(ExprData {
                op: op.to_string(),
                args: args.iter().map(|h| h.id).collect(),
                source: None,
            })),
            args,
        )
    }

    /// A lazy array expression `op(args...)`: a container of its operand objects (so they stay
    /// alive, and the collector and `get_referrers` see the graph) that also carries the
    /// evaluable `source`.
    pub fn expr_array(&self, op: &str, args: &[&Handle], source: Arc<dyn ChunkSource>) -> Handle {
        self.alloc(
            Payload::Expr(Box::new(ExprData {
                op: op.to_string(),
                args: args.iter().map(|h| h.id).collect(),
                source: Some(source),
            })),
            args,
        )
    }

    /// An array object backed by a chunk source (a file).
    pub fn array(&self, source: Arc<dyn ChunkSource>) -> Handle {
        self.alloc(Payload::Array(source), &[])
    }

    /// A zeroed buffer of `len` bytes reserved in this heap's budget, for a new chunk object.
    pub fn alloc_buffer(&self, len: usize) -> Result<Buffer> {
        Buffer::zeroed_in(len, &self.inner.budget)
    }

    /// A chunk object owning `data`. A `dirty` chunk has no other copy: under memory pressure it is
    /// spilled to a temp file, never dropped.
    pub fn chunk(&self, data: Buffer, dirty: bool) -> Result<Handle> {
        // The heap can only give back memory that its own budget accounts for: bytes reserved
        // elsewhere (or borrowed) are copied into this budget first.
        let data = if data.is_reserved_in(&self.inner.budget) {
            data
        } else {
            let mut b = self.alloc_buffer(data.len())?;
            b.bytes_mut().copy_from_slice(data.bytes());
            b
        };
        Ok(self.chunk_cell(data, dirty, None))
    }

    /// A clean chunk object holding chunk `index` of `source` (read now, as an owned copy); under
    /// pressure it is evicted and re-read when used again.
    pub fn chunk_from_source(&self, source: Arc<dyn ChunkSource>, index: usize) -> Result<Handle> {
        let c = source.read_chunk(index)?;
        let mut b = Buffer::zeroed_in(c.data.len(), &self.inner.budget)?;
        b.bytes_mut().copy_from_slice(c.data.bytes());
        drop(c);
        Ok(self.chunk_cell(b, false, Some((source, index))))
    }

    fn chunk_cell(
        &self,
        data: Buffer,
        dirty: bool,
        reload: Option<(Arc<dyn ChunkSource>, usize)>,
    ) -> Handle {
        let cell = ChunkCell {
            state: Mutex::new(ChunkCellInner {
                data: ChunkState::Resident(data),
                dirty,
                reload,
                last_use: self.inner.tick.fetch_add(1, Ordering::Relaxed),
            }),
        };
        self.alloc(Payload::Chunk(Arc::new(cell)), &[])
    }

    fn cell(&self, h: &Handle) -> Result<Arc<ChunkCell>> {
        self.check(h);
        match &self.state().obj(h.id).payload {
            Payload::Chunk(c) => Ok(c.clone()),
            p => Err(Error::Invalid(format!(
                "object #{} is a {}, not a chunk",
                h.id,
                p.kind()
            ))),
        }
    }

    /// Runs `f` on a chunk's bytes, reloading or un-spilling them first. The chunk is pinned (never
    /// evicted) while `f` runs.
    pub fn with_chunk<R>(&self, h: &Handle, f: impl FnOnce(&Buffer) -> R) -> Result<R> {
        let cell = self.cell(h)?;
        let mut g = cell.lock();
        g.last_use = self.inner.tick.fetch_add(1, Ordering::Relaxed);
        let b = g.load(&self.inner.budget)?;
        Ok(f(b))
    }

    /// Runs `f` on a chunk's bytes for writing; the chunk becomes dirty (spilled, not evicted,
    /// under pressure).
    pub fn with_chunk_mut<R>(&self, h: &Handle, f: impl FnOnce(&mut Buffer) -> R) -> Result<R> {
        let cell = self.cell(h)?;
        let mut g = cell.lock();
        g.last_use = self.inner.tick.fetch_add(1, Ordering::Relaxed);
        g.dirty = true;
        let b = g.load(&self.inner.budget)?;
        Ok(f(b))
    }

    /// Gives a chunk's memory back now: evicts it if clean, spills it if dirty. Returns the bytes
    /// released (0 if it is not resident or is in use).
    pub fn release_chunk(&self, h: &Handle) -> Result<u64> {
        let cell = self.cell(h)?;
        // A pinned chunk (in use) cannot be released; that is not an error.
        let Ok(mut g) = cell.state.try_lock() else {
            return Ok(0);
        };
        Ok(g.release(self.spill_dir())? as u64)
    }

    /// Where a chunk's bytes are: `"resident"`, `"evicted"` or `"spilled"` — or `"pinned"` while
    /// a reader or writer holds it.
    pub fn chunk_state(&self, h: &Handle) -> Result<&'static str> {
        let cell = self.cell(h)?;
        let Ok(g) = cell.state.try_lock() else {
            return Ok("pinned");
        };
        Ok(match g.data {
            ChunkState::Resident(_) => "resident",
            ChunkState::Evicted => "evicted",
            ChunkState::Spilled { .. } => "spilled",
        })
    }

    /// The source of an array object.
    pub fn array_source(&self, h: &Handle) -> Result<Arc<dyn ChunkSource>> {
        self.check(h);
        let st = self.state();
        let p = &st.obj(h.id).payload;
        let source = match p {
            Payload::Array(s) => Some(s),
            Payload::Expr(e) => e.source.as_ref(),
            _ => None,
        };
        source.cloned().ok_or_else(|| {
            Error::Invalid(format!("object #{} is a {}, not an array", h.id, p.kind()))
        })
    }

    fn mutate<R>(
        &self,
        h: &Handle,
        f: impl FnOnce(&mut State, &mut Freed) -> Result<R>,
    ) -> Result<R> {
        self.check(h);
        let mut freed = Freed::default();
        let r = {
            let mut st = self.state();
            f(&mut st, &mut freed)
        };
        freed.finish(self);
        r
    }

    fn not_a(st: &State, id: ObjId, what: &str) -> Error {
        Error::Invalid(format!(
            "object #{id} is a {}, not a {what}",
            st.obj(id).payload.kind()
        ))
    }

    /// Appends `item` to list `list`.
    pub fn list_append(&self, list: &Handle, item: &Handle) -> Result<()> {
        self.check(item);
        self.mutate(list, |st, _| {
            st.incref(item.id);
            match &mut st.obj_mut(list.id).payload {
                Payload::List(v) => {
                    v.push(item.id);
                    Ok(())
                }
                _ => {
                    st.counts.decref(item.id);
                    Err(Heap::not_a(st, list.id, "list"))
                }
            }
        })
    }

    /// Replaces element `index` of `list`.
    pub fn list_set(&self, list: &Handle, index: usize, item: &Handle) -> Result<()> {
        self.check(item);
        self.mutate(list, |st, freed| {
            let old = match &mut st.obj_mut(list.id).payload {
                Payload::List(v) if index < v.len() => std::mem::replace(&mut v[index], item.id),
                Payload::List(v) => {
                    return Err(Error::Invalid(format!(
                        "list index {index} out of range (len {})",
                        v.len()
                    )));
                }
                _ => return Err(Heap::not_a(st, list.id, "list")),
            };
            st.incref(item.id);
            st.decref(old, freed);
            Ok(())
        })
    }

    /// Removes and returns the last element of `list`.
    pub fn list_pop(&self, list: &Handle) -> Result<Option<Handle>> {
        let id = self.mutate(list, |st, _| match &mut st.obj_mut(list.id).payload {
            Payload::List(v) => Ok(v.pop()),
            _ => Err(Heap::not_a(st, list.id, "list")),
        })?;
        // The list's reference moves to the returned handle.
        Ok(id.map(|id| Handle {
            heap: self.clone(),
            id,
        }))
    }

    /// Removes every element of a list, tuple-free dict or expression (breaking cycles by hand).
    pub fn clear(&self, h: &Handle) -> Result<()> {
        self.mutate(h, |st, freed| {
            let ids = match &mut st.obj_mut(h.id).payload {
                Payload::List(v) => std::mem::take(v),
                Payload::Expr(e) => std::mem::take(&mut e.args),
                Payload::Dict(v) => std::mem::take(v).into_iter().map(|e| e.1).collect(),
                _ => return Err(Heap::not_a(st, h.id, "list, dict or expression")),
            };
            for id in ids {
                st.decref(id, freed);
            }
            Ok(())
        })
    }

    /// Sets `dict[key] = value`.
    pub fn dict_set(&self, dict: &Handle, key: &str, value: &Handle) -> Result<()> {
        self.check(value);
        self.mutate(dict, |st, freed| {
            if !matches!(st.obj(dict.id).payload, Payload::Dict(_)) {
                return Err(Heap::not_a(st, dict.id, "dict"));
            }
            st.incref(value.id);
            let Payload::Dict(v) = &mut st.obj_mut(dict.id).payload else {
                unreachable!()
            };
            let old = match v.iter_mut().find(|e| e.0 == key) {
                Some(e) => Some(std::mem::replace(&mut e.1, value.id)),
                None => {
                    v.push((key.to_string(), value.id));
                    None
                }
            };
            if let Some(old) = old {
                st.decref(old, freed);
            }
            Ok(())
        })
    }

    /// Removes `dict[key]`, returning it.
    pub fn dict_remove(&self, dict: &Handle, key: &str) -> Result<Option<Handle>> {
        let id = self.mutate(dict, |st, _| match &mut st.obj_mut(dict.id).payload {
            Payload::Dict(v) => Ok(v.iter().position(|e| e.0 == key).map(|p| v.remove(p).1)),
            _ => Err(Heap::not_a(st, dict.id, "dict")),
        })?;
        Ok(id.map(|id| Handle {
            heap: self.clone(),
            id,
        }))
    }

    /// `dict[key]`, if present.
    pub fn dict_get(&self, dict: &Handle, key: &str) -> Result<Option<Handle>> {
        self.check(dict);
        let mut st = self.state();
        let id = match &st.obj(dict.id).payload {
            Payload::Dict(v) => v.iter().find(|e| e.0 == key).map(|e| e.1),
            _ => return Err(Heap::not_a(&st, dict.id, "dict")),
        };
        Ok(id.map(|id| {
            st.incref(id);
            Handle {
                heap: self.clone(),
                id,
            }
        }))
    }

    /// Strong handles to `ids`, one reference each (taken under the caller's lock).
    fn new_handles(&self, st: &mut State, ids: Vec<ObjId>) -> Vec<Handle> {
        ids.into_iter()
            .map(|id| {
                st.incref(id);
                Handle {
                    heap: self.clone(),
                    id,
                }
            })
            .collect()
    }

    /// The objects a container holds, in order (lists, tuples, expression arguments, dict
    /// values). Empty for leaves.
    pub fn items(&self, h: &Handle) -> Vec<Handle> {
        self.check(h);
        let mut st = self.state();
        let ids = st.obj(h.id).payload.referents();
        self.new_handles(&mut st, ids)
    }

    /// Number of elements of a container (0 for leaves).
    pub fn len(&self, h: &Handle) -> usize {
        self.check(h);
        self.state().obj(h.id).payload.referents().len()
    }

    /// The integer value of an `int` object.
    pub fn as_int(&self, h: &Handle) -> Option<i64> {
        self.check(h);
        match self.state().obj(h.id).payload {
            Payload::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The value of a `bool` object.
    pub fn as_bool(&self, h: &Handle) -> Option<bool> {
        self.check(h);
        match self.state().obj(h.id).payload {
            Payload::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value of a `float` object.
    pub fn as_float(&self, h: &Handle) -> Option<f64> {
        self.check(h);
        match self.state().obj(h.id).payload {
            Payload::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The text of a `str` object.
    pub fn as_str(&self, h: &Handle) -> Option<String> {
        self.check(h);
        match &self.state().obj(h.id).payload {
            Payload::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Attaches a finalizer (replacing any previous one). It runs once, when the object is about
    /// to be freed by reference counting or by the collector. A finalizer that panics is treated
    /// as finished.
    pub fn set_finalizer(&self, h: &Handle, f: Finalizer) {
        self.check(h);
        let old = {
            let mut st = self.state();
            let o = st.obj_mut(h.id);
            // A newly attached finalizer runs once too, even on an object finalized before.
            o.finalized = false;
            o.has_finalizer = true;
            st.finalizers.insert(h.id, f)
        };
        // Dropped outside the lock: it may own handles whose drop re-enters the heap.
        drop(old);
    }

    /// Number of live objects.
    pub fn live_objects(&self) -> usize {
        self.state().live
    }

    /// The objects that refer to `h` (containers holding it).
    pub fn get_referrers(&self, h: &Handle) -> Vec<Handle> {
        self.check(h);
        let mut st = self.state();
        let mut ids = Vec::new();
        for g in &st.gens {
            for &c in g {
                let mut hit = false;
                st.obj(c).payload.for_each_referent(|r| hit |= r == h.id);
                if hit {
                    ids.push(c);
                }
            }
        }
        self.new_handles(&mut st, ids)
    }

    /// The objects `h` refers to (one entry per reference).
    pub fn get_referents(&self, h: &Handle) -> Vec<Handle> {
        self.items(h)
    }

    /// "Why is this alive?": the shortest chain of referrers from `h` up to an object held from
    /// outside the heap (by a handle). The handle passed in is not counted (as
    /// `sys.getrefcount`'s argument). Each line names an object and where it holds the previous
    /// one; the last says how many outside references keep the chain alive.
    pub fn why_alive(&self, h: &Handle) -> Vec<String> {
        self.check(h);
        let st = self.state();
        // Reverse edges of the tracked graph.
        let mut back: HashMap<ObjId, Vec<ObjId>> = HashMap::new();
        for g in &st.gens {
            for &c in g {
                let mut seen = HashSet::new();
                st.obj(c).payload.for_each_referent(|r| {
                    if seen.insert(r) {
                        back.entry(r).or_default().push(c);
                    }
                });
            }
        }
        let external = |id: ObjId| {
            let internal: usize = back
                .get(&id)
                .map(|rs| {
                    rs.iter()
                        .map(|&c| {
                            let mut n = 0;
                            st.obj(c)
                                .payload
                                .for_each_referent(|r| n += usize::from(r == id));
                            n
                        })
                        .sum()
                })
                .unwrap_or(0);
            let probe = usize::from(id == h.id);
            st.rc(id).saturating_sub(internal + probe)
        };
        let describe = |id: ObjId| format!("{}#{id}", st.obj(id).payload.kind());
        let mut prev: HashMap<ObjId, ObjId> = HashMap::new();
        let mut queue = VecDeque::from([h.id]);
        let mut seen = HashSet::from([h.id]);
        while let Some(id) = queue.pop_front() {
            let ext = external(id);
            if ext > 0 {
                // Walk back down to `h`.
                let mut chain = vec![format!(
                    "{} is held by {ext} handle(s) outside the heap",
                    describe(id)
                )];
                let mut cur = id;
                while let Some(&child) = prev.get(&cur) {
                    let slot = st.obj(cur).payload.describe_slot(child).unwrap_or_default();
                    chain.push(format!(
                        "{} holds {} at {slot}",
                        describe(cur),
                        describe(child)
                    ));
                    cur = child;
                }
                chain.reverse();
                return chain;
            }
            for &r in back.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
                if seen.insert(r) {
                    prev.insert(r, id);
                    queue.push_back(r);
                }
            }
        }
        vec![format!(
            "{} is not reachable from outside the heap (garbage awaiting collection)",
            describe(h.id)
        )]
    }

    /// Figures about the heap.
    pub fn stats(&self) -> HeapStats {
        let (mut s, cells) = {
            let st = self.state();
            let mut s = HeapStats {
                objects: st.live,
                gc: st.stats.clone(),
                ..Default::default()
            };
            let mut cells = Vec::new();
            for slot in &st.slots {
                if let Some(o) = &slot.obj {
                    *s.by_kind.entry(o.payload.kind()).or_insert(0) += 1;
                    if let Payload::Chunk(c) = &o.payload {
                        cells.push(c.clone());
                    }
                }
            }
            s.tracked = st.gens.iter().map(Vec::len).sum();
            s.frozen = st.gens[3].len();
            (s, cells)
        };
        s.chunks = cells.len();
        for c in cells {
            // A chunk in use (maybe by the caller, inside `with_chunk`) is pinned: counted, not
            // waited for.
            let Ok(g) = c.state.try_lock() else {
                s.chunks_pinned += 1;
                continue;
            };
            match &g.data {
                ChunkState::Resident(b) => s.chunk_bytes_resident += b.len() as u64,
                ChunkState::Evicted => s.chunks_evicted += 1,
                ChunkState::Spilled { len, .. } => {
                    s.chunk_bytes_spilled += *len as u64;
                    s.spill_files += 1;
                }
            }
        }
        s.budget_limit = self.inner.budget.limit();
        s.budget_used = self.inner.budget.used();
        s.budget_peak = self.inner.budget.peak();
        s.budget_holders = self.inner.budget.holders();
        s
    }
}

/// Objects of the script language (`crate::script`): callables, slices, modules, and the element
/// access its interpreter needs.
impl Heap {
    /// A callable object: `code` is opaque to the heap; `refs` (default values, a bound receiver)
    /// are held as references, so a function is a container the cycle collector tracks.
    pub fn function(
        &self,
        name: &str,
        code: Arc<dyn std::any::Any + Send + Sync>,
        refs: &[&Handle],
    ) -> Handle {
        self.alloc(
            Payload::Function(Box::new(FunctionData {
                name: name.to_string(),
                code,
                refs: refs.iter().map(|h| h.id).collect(),
            })),
            refs,
        )
    }

    /// The code of a function object (its references come from [`items`](Self::items)).
    pub fn function_code(&self, h: &Handle) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.check(h);
        match &self.state().obj(h.id).payload {
            Payload::Function(f) => Some(f.code.clone()),
            _ => None,
        }
    }

    /// The name of a function object.
    pub fn function_name(&self, h: &Handle) -> Option<String> {
        self.check(h);
        match &self.state().obj(h.id).payload {
            Payload::Function(f) => Some(f.name.clone()),
            _ => None,
        }
    }

    /// A slice object `start:stop:step` (`None` for an omitted part).
    pub fn slice(&self, parts: [Option<i64>; 3]) -> Handle {
        self.alloc(Payload::Slice(Box::new(parts)), &[])
    }

    /// The parts of a slice object.
    pub fn as_slice(&self, h: &Handle) -> Option<[Option<i64>; 3]> {
        self.check(h);
        match &self.state().obj(h.id).payload {
            Payload::Slice(p) => Some(**p),
            _ => None,
        }
    }

    /// A module object named `name`.
    pub fn module(&self, name: &str) -> Handle {
        self.alloc(Payload::Module(name.to_string()), &[])
    }

    /// The name of a module object.
    pub fn as_module(&self, h: &Handle) -> Option<String> {
        self.check(h);
        match &self.state().obj(h.id).payload {
            Payload::Module(n) => Some(n.clone()),
            _ => None,
        }
    }

    /// True if `h` is a handle to an object of this heap.
    pub fn owns(&self, h: &Handle) -> bool {
        Arc::ptr_eq(&self.inner, &h.heap.inner)
    }

    /// Element `index` of a list or tuple (`None` past the end or for other kinds).
    pub fn item(&self, h: &Handle, index: usize) -> Option<Handle> {
        self.check(h);
        let mut st = self.state();
        let id = match &st.obj(h.id).payload {
            Payload::List(v) | Payload::Tuple(v) => *v.get(index)?,
            _ => return None,
        };
        st.incref(id);
        Some(Handle {
            heap: self.clone(),
            id,
        })
    }

    /// A dict's entries in insertion order.
    pub fn dict_entries(&self, dict: &Handle) -> Result<Vec<(String, Handle)>> {
        self.check(dict);
        let mut st = self.state();
        let entries: Vec<(String, ObjId)> = match &st.obj(dict.id).payload {
            Payload::Dict(v) => v.clone(),
            _ => return Err(Heap::not_a(&st, dict.id, "dict")),
        };
        Ok(entries
            .into_iter()
            .map(|(k, id)| {
                st.incref(id);
                (
                    k,
                    Handle {
                        heap: self.clone(),
                        id,
                    },
                )
            })
            .collect())
    }

    /// Inserts `item` into `list` before position `index` (clamped to the length).
    pub fn list_insert(&self, list: &Handle, index: usize, item: &Handle) -> Result<()> {
        self.check(item);
        self.mutate(list, |st, _| {
            if !matches!(st.obj(list.id).payload, Payload::List(_)) {
                return Err(Heap::not_a(st, list.id, "list"));
            }
            st.incref(item.id);
            if let Payload::List(v) = &mut st.obj_mut(list.id).payload {
                v.insert(index.min(v.len()), item.id);
            }
            Ok(())
        })
    }

    /// Removes and returns element `index` of `list` (`None` past the end).
    pub fn list_remove(&self, list: &Handle, index: usize) -> Result<Option<Handle>> {
        let id = self.mutate(list, |st, _| match &mut st.obj_mut(list.id).payload {
            Payload::List(v) => Ok((index < v.len()).then(|| v.remove(index))),
            _ => Err(Heap::not_a(st, list.id, "list")),
        })?;
        // The list's reference moves to the returned handle.
        Ok(id.map(|id| Handle {
            heap: self.clone(),
            id,
        }))
    }
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Heap({} objects)", self.live_objects())
    }
}

impl Handle {
    /// The heap this handle belongs to.
    pub fn heap(&self) -> &Heap {
        &self.heap
    }

    /// The object's id (its slot; reused after the object is freed).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        self.heap.state().obj(self.id).payload.kind()
    }

    /// The object's reference count (handles plus references from other objects).
    pub fn refcount(&self) -> usize {
        self.heap.inner.counts.load(self.id)
    }

    /// True if the cycle collector tracks this object (containers only).
    pub fn is_tracked(&self) -> bool {
        self.heap.state().obj(self.id).track().is_some()
    }

    /// A weak handle to the same object.
    pub fn downgrade(&self) -> WeakHandle {
        let tag = self.heap.state().slots[self.id as usize].tag;
        WeakHandle {
            heap: Arc::downgrade(&self.heap.inner),
            id: self.id,
            tag,
        }
    }

    /// True if both handles name the same object.
    pub fn same(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.heap.inner, &other.heap.inner) && self.id == other.id
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        // Without the lock: this handle is counted, so the object stays (see `counts.rs`).
        self.heap.inner.counts.incref(self.id);
        Handle {
            heap: self.heap.clone(),
            id: self.id,
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Without the lock unless this may be the last reference.
        if self.heap.inner.counts.decref_unless_last(self.id) {
            return;
        }
        let mut freed = Freed::default();
        self.heap.state().decref(self.id, &mut freed);
        freed.finish(&self.heap);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({}#{})", self.kind(), self.id)
    }
}

impl WeakHandle {
    /// A strong handle if the object is still alive.
    pub fn upgrade(&self) -> Option<Handle> {
        let inner = self.heap.upgrade()?;
        let heap = Heap { inner };
        let mut st = heap.state();
        let slot = st.slots.get(self.id as usize)?;
        if slot.tag != self.tag || slot.obj.is_none() {
            return None;
        }
        st.incref(self.id);
        drop(st);
        Some(Handle { heap, id: self.id })
    }

    /// True once the object has been freed.
    pub fn is_gone(&self) -> bool {
        self.upgrade().is_none()
    }
}
