//! [`Buffer`]: the bytes of one chunk, owned or borrowed from a memory map, always aligned for its
//! element type.

use std::fmt;
use std::sync::Mutex;

use crate::dtype::Element;
use crate::storage::mmap::MmapWindow;

/// Bytes kept alive by someone else (a memory map, an Arrow buffer).
pub trait SharedBytes: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

impl SharedBytes for MmapWindow {
    fn bytes(&self) -> &[u8] {
        MmapWindow::bytes(self)
    }
}

impl SharedBytes for arrow_buffer::Buffer {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

/// The data of a chunk.
///
/// **Invariant:** the bytes start at an address aligned to 8, so they can be viewed as a slice of
/// any [`Element`].
pub struct Buffer {
    repr: Repr,
}

enum Repr {
    /// Owned, 8-byte aligned storage; `len` bytes are in use.
    Owned { words: Vec<u64>, len: usize },
    /// Borrowed bytes (checked aligned at construction).
    Shared(Box<dyn SharedBytes>),
}

/// Recycled chunk-sized allocations.
///
/// Touching freshly mapped memory costs a page fault per 4 KiB (about 1-2 GB/s on our VMs, where
/// freed pages go back to the host), several times the cost of reusing a warm buffer. Owned
/// buffers of at least [`POOL_MIN_BYTES`] go back here when dropped, up to [`POOL_MAX_BUFFERS`]
/// buffers and [`POOL_MAX_BYTES`] in all.
static POOL: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());
/// Smallest allocation worth recycling.
pub const POOL_MIN_BYTES: usize = 256 << 10;
/// Most buffers kept for reuse.
pub const POOL_MAX_BUFFERS: usize = 16;
/// Most bytes kept for reuse.
pub const POOL_MAX_BYTES: usize = 256 << 20;

fn pool_take(words: usize) -> Vec<u64> {
    if words * 8 >= POOL_MIN_BYTES {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest pooled buffer that fits, if it does not waste more than half of itself.
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= words && v.capacity() <= words * 2)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let mut v = pool.swap_remove(i);
            drop(pool);
            v.clear();
            v.resize(words, 0);
            return v;
        }
    }
    vec![0u64; words]
}

fn pool_give(v: Vec<u64>) {
    let bytes = v.capacity() * 8;
    if bytes < POOL_MIN_BYTES {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let held: usize = pool.iter().map(|b| b.capacity() * 8).sum();
    if pool.len() < POOL_MAX_BUFFERS && held + bytes <= POOL_MAX_BYTES {
        pool.push(v);
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Repr::Owned { words, .. } = &mut self.repr {
            pool_give(std::mem::take(words));
        }
    }
}

impl Buffer {
    /// A zero-filled owned buffer of `len` bytes (recycled from earlier chunks when possible).
    pub fn zeroed(len: usize) -> Buffer {
        Buffer {
            repr: Repr::Owned {
                words: pool_take(len.div_ceil(8)),
                len,
            },
        }
    }

    /// An owned copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Buffer {
        let mut b = Buffer::zeroed(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    /// Wraps borrowed bytes without copying when they are 8-byte aligned, and copies otherwise.
    pub fn shared(bytes: Box<dyn SharedBytes>) -> Buffer {
        if bytes.bytes().as_ptr().align_offset(8) == 0 {
            Buffer {
                repr: Repr::Shared(bytes),
            }
        } else {
            Buffer::copy_from(bytes.bytes())
        }
    }

    /// An owned buffer holding `values`.
    pub fn from_elements<T: Element>(values: &[T]) -> Buffer {
        Buffer::copy_from(bytemuck::cast_slice(values))
    }

    /// True when the bytes are borrowed from a map or another owner (no copy was made).
    pub fn is_shared(&self) -> bool {
        matches!(self.repr, Repr::Shared(_))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Owned { words, len } => &bytemuck::cast_slice(words)[..*len],
            Repr::Shared(s) => s.bytes(),
        }
    }

    /// The bytes, mutable; a shared buffer is first copied into owned storage.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if let Repr::Shared(s) = &self.repr {
            let owned = Buffer::copy_from(s.bytes());
            *self = owned;
        }
        match &mut self.repr {
            Repr::Owned { words, len } => &mut bytemuck::cast_slice_mut(words)[..*len],
            Repr::Shared(_) => unreachable!("converted to owned above"),
        }
    }

    /// The elements. Panics if the length is not a multiple of `T`'s size.
    pub fn as_slice<T: Element>(&self) -> &[T] {
        bytemuck::cast_slice(self.bytes())
    }

    /// The elements, mutable (copying a shared buffer first).
    pub fn as_mut_slice<T: Element>(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.bytes_mut())
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len())
            .field("shared", &self.is_shared())
            .finish()
    }
}
