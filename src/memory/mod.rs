//! Memory accounting: one [`MemoryBudget`] covers every byte that grows with the data — owned
//! chunk buffers, decoded chunks, recycled buffers and resident memory-mapped windows.
//!
//! Reservations are taken *before* memory is allocated or mapped and released when the RAII
//! [`Reservation`] guard drops. At the limit the budget first asks its reclaimers (the buffer pool,
//! the heap's clean and dirty chunks) to give memory back, then waits for other holders to release
//! (backpressure), and only fails — naming the limit, the request and the largest holders — when a
//! request can never fit or nothing has been released for [`MemoryBudget::stall_timeout`].

mod budget;

pub use budget::{
    MemoryBudget, Reclaim, Reservation, default_limit, global, human as human_bytes,
    physical_memory,
};
