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
    physical_memory, return_large_frees_to_system,
};

/// For tests that change the process-wide [`global`] budget: run outside the child this starts,
/// it re-runs the test named `name` (its full path) alone in a child process, fails if the child
/// fails or runs no test, and returns `false` (the caller then returns); in that child it returns
/// `true` and the caller runs the test's body.
#[cfg(test)]
pub(crate) fn in_own_process(name: &str) -> bool {
    const CHILD: &str = "CHUNKHEAP_TEST_CHILD";
    if std::env::var(CHILD).is_ok_and(|v| v == name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, name)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
    false
}
