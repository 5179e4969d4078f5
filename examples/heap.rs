//! The managed heap: reference counts, a cycle, the collector, and chunks spilled under a budget.
//!
//! `cargo run --release --example heap`

use chunkheap::heap::{Heap, HeapConfig};
use chunkheap::memory::MemoryBudget;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A 32 MiB budget for 64 MiB of intermediate chunks: half of them will be spilled.
    let budget = MemoryBudget::new(32 << 20);
    let heap = Heap::with_config(&HeapConfig {
        budget: Some(budget.clone()),
        temp_dir: None,
    })?;
    let mut chunks = Vec::new();
    for i in 0..8u64 {
        let mut b = heap.alloc_buffer(8 << 20)?;
        b.as_mut_slice::<u64>().iter_mut().for_each(|v| *v = i);
        chunks.push(heap.chunk(b, true)?);
    }
    let s = heap.stats();
    println!(
        "8 chunks of 8 MiB under 32 MiB: {} MiB resident, {} MiB spilled in {} files",
        s.chunk_bytes_resident >> 20,
        s.chunk_bytes_spilled >> 20,
        s.spill_files
    );
    let total: u64 = chunks
        .iter()
        .map(|c| heap.with_chunk(c, |b| b.as_slice::<u64>()[0]).unwrap())
        .sum();
    println!("first element of every chunk, reloaded as needed, sums to {total} (expected 28)");

    // Put them in a cycle and let go: reference counting cannot free it, the collector can.
    let list = heap.list(&chunks.iter().collect::<Vec<_>>());
    let holder = heap.dict(&[("chunks", &list)]);
    heap.list_append(&list, &holder)?;
    println!("why is chunk 0 alive? {:?}", heap.why_alive(&chunks[0]));
    drop(chunks);
    drop((list, holder));
    println!(
        "before collect: {} objects, budget {} MiB in use",
        heap.live_objects(),
        budget.used() >> 20
    );
    let found = heap.collect(2)?;
    let g = &heap.get_stats()[2];
    println!(
        "collect(2) found {found} unreachable containers, freed {} MiB in {:?}; {} objects left, budget {} MiB",
        g.bytes_freed >> 20,
        g.pause,
        heap.live_objects(),
        budget.used() >> 20
    );
    Ok(())
}
