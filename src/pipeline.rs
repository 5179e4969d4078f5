//! Drivers that stream chunks through rayon: map every chunk of a source in parallel with results
//! kept in chunk order, and copy any source into any writer.
//!
//! **Invariant:** results never depend on the thread count: work is split by chunk, and partial
//! results are returned (and combined by callers) in chunk-index order.
//! **Invariant:** at most `batch` chunks are materialised at once (one per worker for maps,
//! three batches of one chunk per worker for writes), so memory stays bounded whatever the array
//! size.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::shape::{checked_numel, shape_str};
use crate::storage::{ArrayWriter, Buffer, Chunk, ChunkSource};

/// A callback told how many bytes of array data were just processed. Called from worker threads.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// A progress callback that ignores its input.
pub fn no_progress(_: u64) {}

/// Reads every chunk of `src` on the rayon pool and applies `f`; the results come back in chunk
/// order.
pub fn map_chunks<R, F>(src: &dyn ChunkSource, progress: Progress<'_>, f: F) -> Result<Vec<R>>
where
    R: Send,
    F: Fn(Chunk) -> R + Sync,
{
    let n = src.info().layout.num_chunks();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let chunk = src.read_chunk(i)?;
            let bytes = chunk.data.len() as u64;
            let r = f(chunk);
            progress(bytes);
            Ok(r)
        })
        .collect()
}

/// Fills every chunk of `writer` by calling `produce(region)` in parallel, encodes in parallel and
/// writes in order, then finishes the writer (which moves the output into place). On error the
/// partial output is discarded.
///
/// A [positional](ArrayWriter::positional) writer (`.npy`) gets each chunk stored by the worker
/// that produced it, in parallel, so at most one chunk per worker is in memory. Otherwise
/// production and writing overlap: while a dedicated thread writes batch *k* (one chunk per
/// worker), the pool produces batch *k + 1*, so at most three batches are in memory at once.
pub fn write_all<F>(writer: Box<dyn ArrayWriter>, progress: Progress<'_>, produce: F) -> Result<()>
where
    F: Fn(&crate::shape::Region) -> Result<Buffer> + Sync,
{
    write_batched(
        writer,
        progress,
        rayon::current_num_threads().max(1),
        produce,
    )
}

/// [`write_all`] with `batch` chunks per batch of an ordered writer (a positional one still
/// gets one chunk per worker).
fn write_batched<F>(
    writer: Box<dyn ArrayWriter>,
    progress: Progress<'_>,
    batch: usize,
    produce: F,
) -> Result<()>
where
    F: Fn(&crate::shape::Region) -> Result<Buffer> + Sync,
{
    type Batch = Vec<(Buffer, Option<Vec<u8>>)>;
    let layout = writer.layout().clone();
    let n = layout.num_chunks();
    if writer.positional() {
        // Each worker stores the chunk it produced at its place: one chunk per worker in flight,
        // no ordering barrier between workers, and the copies into the page cache overlap where
        // the file system allows it (ext4 serialises buffered writes to one file).
        let w: &dyn ArrayWriter = writer.as_ref();
        (0..n).into_par_iter().try_for_each(|i| -> Result<()> {
            let data = produce(&layout.chunk_region(i))?;
            w.write_at(i, &w.encode(i, data.bytes())?)?;
            progress(data.len() as u64);
            Ok(())
        })?;
        return writer.finish();
    }
    let batch = batch.max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Batch)>(1);
    let w: &dyn ArrayWriter = writer.as_ref();
    std::thread::scope(|scope| -> Result<()> {
        let sink = scope.spawn(move || -> Result<()> {
            for (start, items) in rx {
                for (k, (data, enc)) in items.into_iter().enumerate() {
                    w.write(start + k, enc.as_deref().unwrap_or(data.bytes()))?;
                    progress(data.len() as u64);
                }
            }
            Ok(())
        });
        let mut produced = Ok(());
        let mut start = 0;
        while start < n {
            let end = (start + batch).min(n);
            let items: Result<Batch> = (start..end)
                .into_par_iter()
                .map(|i| {
                    let data = produce(&layout.chunk_region(i))?;
                    let enc = match w.encode(i, data.bytes())? {
                        std::borrow::Cow::Owned(v) => Some(v),
                        std::borrow::Cow::Borrowed(_) => None,
                    };
                    Ok((data, enc))
                })
                .collect();
            match items {
                Ok(items) => {
                    if tx.send((start, items)).is_err() {
                        break; // the sink stopped on an error, reported below
                    }
                }
                Err(e) => {
                    produced = Err(e);
                    break;
                }
            }
            start = end;
        }
        drop(tx);
        let sunk = sink.join().expect("writer thread panicked");
        produced.and(sunk)
    })?;
    writer.finish()
}

/// Copies `src` into `writer`, rechunking as needed. Shapes must match.
pub fn copy(
    src: &dyn ChunkSource,
    writer: Box<dyn ArrayWriter>,
    progress: Progress<'_>,
) -> Result<()> {
    copy_in_flight(src, writer, progress, rayon::current_num_threads().max(1))
}

/// [`copy`] with at most `in_flight` of the writer's chunks being read and stored at once (a
/// positional writer: `in_flight` workers, one chunk each; an ordered one: batches of
/// `in_flight` chunks), for callers that size it from what each chunk holds and the memory
/// budget. At least one; more than the pool's workers changes nothing.
pub fn copy_in_flight(
    src: &dyn ChunkSource,
    writer: Box<dyn ArrayWriter>,
    progress: Progress<'_>,
    in_flight: usize,
) -> Result<()> {
    let shape = writer.layout().shape();
    if shape != src.info().shape {
        return Err(Error::Invalid(format!(
            "{}: shape {} does not match the output's {}",
            src.info().name,
            shape_str(&src.info().shape),
            shape_str(&shape)
        )));
    }
    checked_numel(&shape)?;
    let workers = rayon::current_num_threads().max(1);
    let in_flight = in_flight.clamp(1, workers);
    if writer.positional() {
        // Each worker has its chunk computed or read straight into the writer's memory.
        let layout = writer.layout().clone();
        let n = layout.num_chunks();
        let esize = src.info().dtype.size();
        let w: &dyn ArrayWriter = writer.as_ref();
        let one = |i: usize| -> Result<()> {
            let region = layout.chunk_region(i);
            let len = region.numel() as usize * esize;
            w.fill_at(i, len, &mut |out| src.read_region_into(&region, out))?;
            progress(len as u64);
            Ok(())
        };
        if in_flight == workers {
            (0..n).into_par_iter().try_for_each(one)?;
        } else {
            // `in_flight` workers take the chunks in turn; the first error stops them all.
            let next = AtomicUsize::new(0);
            let failed = AtomicBool::new(false);
            (0..in_flight.min(n))
                .into_par_iter()
                .try_for_each(|_| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n || failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        one(i).inspect_err(|_| failed.store(true, Ordering::Relaxed))?;
                    }
                })?;
        }
        return writer.finish();
    }
    write_batched(writer, progress, in_flight, |region| {
        src.read_region(region)
    })
}
