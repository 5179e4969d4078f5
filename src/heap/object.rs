//! What lives on the heap: object kinds, payloads, and chunk cells (chunk data that can be
//! evicted, spilled to a temp file and reloaded).

use std::any::Any;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::memory::MemoryBudget;
use crate::storage::{Buffer, ChunkSource};

/// Index of an object's slot.
pub(crate) type ObjId = u32;

/// The kinds of heap objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `None`.
    None,
    /// A boolean.
    Bool,
    /// A 64-bit integer.
    Int,
    /// A double.
    Float,
    /// A string.
    Str,
    /// A list of objects (a container).
    List,
    /// A tuple of objects (a container).
    Tuple,
    /// A string-keyed dict of objects (a container).
    Dict,
    /// An array backed by a chunk source (a file).
    Array,
    /// One chunk of data in memory, evictable or spillable.
    Chunk,
    /// A lazy expression node over other objects (a container).
    Expr,
    /// A callable (a script function, builtin or bound method) holding code opaque to the heap
    /// and references (default values, the bound receiver): a container.
    Function,
    /// A slice `start:stop:step` of optional integers.
    Slice,
    /// A named module (`gc`, `sys`, ...) of the script language.
    Module,
}

impl Kind {
    /// Lower-case name (`list`, `chunk`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Str => "str",
            Kind::List => "list",
            Kind::Tuple => "tuple",
            Kind::Dict => "dict",
            Kind::Array => "array",
            Kind::Chunk => "chunk",
            Kind::Expr => "expr",
            Kind::Function => "function",
            Kind::Slice => "slice",
            Kind::Module => "module",
        }
    }

    /// True for kinds that can hold references (tracked by the cycle collector).
    pub const fn is_container(self) -> bool {
        matches!(
            self,
            Kind::List | Kind::Tuple | Kind::Dict | Kind::Expr | Kind::Function
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An object's contents. Containers hold raw ids whose references the heap counts.
pub(crate) enum Payload {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<ObjId>),
    Tuple(Vec<ObjId>),
    Dict(Vec<(String, ObjId)>),
    Array(Arc<dyn ChunkSource>),
    Chunk(Arc<ChunkCell>),
    /// A lazy expression (boxed, as are the other rare variants wider than a `Vec`, so that a
    /// payload is 32 bytes and a heap slot 64: the collector walks every slot of a generation).
    Expr(Box<ExprData>),
    Function(Box<FunctionData>),
    Slice(Box<[Option<i64>; 3]>),
    Module(String),
}

/// A lazy expression's operation, operand objects, and (for array expressions) the evaluable
/// source.
pub(crate) struct ExprData {
    pub(crate) op: String,
    pub(crate) args: Vec<ObjId>,
    pub(crate) source: Option<Arc<dyn ChunkSource>>,
}

/// A callable's name, code (opaque to the heap) and the objects it holds.
pub(crate) struct FunctionData {
    pub(crate) name: String,
    pub(crate) code: Arc<dyn Any + Send + Sync>,
    pub(crate) refs: Vec<ObjId>,
}

impl Payload {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Payload::None => Kind::None,
            Payload::Bool(_) => Kind::Bool,
            Payload::Int(_) => Kind::Int,
            Payload::Float(_) => Kind::Float,
            Payload::Str(_) => Kind::Str,
            Payload::List(_) => Kind::List,
            Payload::Tuple(_) => Kind::Tuple,
            Payload::Dict(_) => Kind::Dict,
            Payload::Array(_) => Kind::Array,
            Payload::Chunk(_) => Kind::Chunk,
            Payload::Expr(_) => Kind::Expr,
            Payload::Function(_) => Kind::Function,
            Payload::Slice(_) => Kind::Slice,
            Payload::Module(_) => Kind::Module,
        }
    }

    /// The ids this object refers to (with repetition: one per reference).
    pub(crate) fn referents(&self) -> Vec<ObjId> {
        match self {
            Payload::List(v) | Payload::Tuple(v) => v.clone(),
            Payload::Expr(e) => e.args.clone(),
            Payload::Function(f) => f.refs.clone(),
            Payload::Dict(v) => v.iter().map(|e| e.1).collect(),
            _ => Vec::new(),
        }
    }

    /// Calls `f` for every referent without allocating.
    pub(crate) fn for_each_referent(&self, mut f: impl FnMut(ObjId)) {
        match self {
            Payload::List(v) | Payload::Tuple(v) => v.iter().for_each(|&i| f(i)),
            Payload::Expr(e) => e.args.iter().for_each(|&i| f(i)),
            Payload::Function(func) => func.refs.iter().for_each(|&i| f(i)),
            Payload::Dict(v) => v.iter().for_each(|e| f(e.1)),
            _ => {}
        }
    }

    /// Where `target` sits inside this container (`[3]`, `['key']`, `arg 0`), for referrer
    /// chains.
    pub(crate) fn describe_slot(&self, target: ObjId) -> Option<String> {
        match self {
            Payload::List(v) | Payload::Tuple(v) => v
                .iter()
                .position(|&i| i == target)
                .map(|p| format!("[{p}]")),
            Payload::Dict(v) => v
                .iter()
                .find(|e| e.1 == target)
                .map(|e| format!("[{:?}]", e.0)),
            Payload::Expr(e) => e
                .args
                .iter()
                .position(|&i| i == target)
                .map(|p| format!("{} arg {p}", e.op)),
            Payload::Function(f) => f
                .refs
                .iter()
                .position(|&i| i == target)
                .map(|p| format!("{} ref {p}", f.name)),
            _ => None,
        }
    }
}

/// Where a chunk's bytes are.
pub(crate) enum ChunkState {
    /// In memory.
    Resident(Buffer),
    /// Dropped; `reload` can read it again from its source.
    Evicted,
    /// Written to a temp file (deleted when the chunk is freed).
    Spilled {
        file: tempfile::TempPath,
        len: usize,
    },
}

/// A chunk object's data, with its own lock so eviction and reads never hold the heap's lock.
pub struct ChunkCell {
    pub(crate) state: Mutex<ChunkCellInner>,
}

pub(crate) struct ChunkCellInner {
    pub(crate) data: ChunkState,
    /// Modified since loaded: must be spilled, not evicted.
    pub(crate) dirty: bool,
    /// Where a clean chunk can be read again.
    pub(crate) reload: Option<(Arc<dyn ChunkSource>, usize)>,
    /// Last access tick (for least-recently-used reclaiming).
    pub(crate) last_use: u64,
}

impl ChunkCell {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ChunkCellInner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ChunkCellInner {
    /// Makes the data resident (reloading or un-spilling it) and returns it.
    pub(crate) fn load(&mut self, budget: &MemoryBudget) -> Result<&mut Buffer> {
        match &self.data {
            ChunkState::Resident(_) => {}
            ChunkState::Evicted => {
                let (src, index) = self.reload.as_ref().ok_or_else(|| {
                    Error::Invalid("evicted chunk has no source to reload from".into())
                })?;
                let chunk = src.read_chunk(*index)?;
                // Own the bytes: a borrowed map window would not be evictable memory.
                let mut b = Buffer::zeroed_in(chunk.data.len(), budget)?;
                b.bytes_mut().copy_from_slice(chunk.data.bytes());
                self.data = ChunkState::Resident(b);
            }
            ChunkState::Spilled { file, len } => {
                let mut b = Buffer::zeroed_in(*len, budget)?;
                let path: &Path = file;
                let bytes =
                    std::fs::read(path).map_err(|e| Error::io(path, "read spill file", e))?;
                if bytes.len() != *len {
                    return Err(Error::corrupt(
                        path,
                        format!("spill file has {} bytes, expected {len}", bytes.len()),
                    ));
                }
                b.bytes_mut().copy_from_slice(&bytes);
                self.data = ChunkState::Resident(b);
            }
        }
        match &mut self.data {
            ChunkState::Resident(b) => Ok(b),
            _ => unreachable!("made resident above"),
        }
    }

    /// Gives the memory back: evicts a clean chunk, spills a dirty one into `dir`. Returns the
    /// bytes released (0 if not resident or not possible).
    pub(crate) fn release(&mut self, dir: &Path) -> Result<usize> {
        let ChunkState::Resident(b) = &self.data else {
            return Ok(0);
        };
        let n = b.len();
        let next = if !self.dirty && self.reload.is_some() {
            ChunkState::Evicted
        } else {
            let mut f = tempfile::Builder::new()
                .prefix("spill-")
                .tempfile_in(dir)
                .map_err(|e| Error::io(dir, "create spill file in", e))?;
            f.write_all(b.bytes())
                .map_err(|e| Error::io(f.path(), "write spill file", e))?;
            ChunkState::Spilled {
                file: f.into_temp_path(),
                len: n,
            }
        };
        // The memory goes back for real, not into the buffer pool (whose bytes would stay
        // reserved), so what the reclaimer reports is what the budget regains.
        if let ChunkState::Resident(b) = std::mem::replace(&mut self.data, next) {
            b.discard();
        }
        Ok(n)
    }
}
