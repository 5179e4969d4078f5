//! Arrays kept on the managed heap: every chunk is a heap chunk object, resident while the budget
//! allows and spilled to a temp file (read back on use) when it needs the room.

use std::sync::Arc;

use rayon::prelude::*;

use super::lazy::{Src, computed_source_info};
use crate::error::Result;
use crate::heap::{Handle, Heap};
use crate::shape::Region;
use crate::storage::{Buffer, Chunk, ChunkSource, SourceInfo};

/// A materialised array whose chunks live on a [`Heap`].
pub struct HeapArray {
    heap: Heap,
    chunks: Vec<Handle>,
    info: SourceInfo,
}

impl HeapArray {
    /// Evaluates `src` chunk by chunk (in parallel) into heap chunk objects.
    pub fn build(heap: &Heap, src: &Src) -> Result<Src> {
        let sinfo = src.info();
        let n = sinfo.layout.num_chunks();
        let chunks: Vec<Handle> = (0..n)
            .into_par_iter()
            .map(|i| -> Result<Handle> {
                let c = src.read_chunk(i)?;
                let mut data = c.data;
                // Own the bytes (a mapped window would pin the file's pages, not heap memory).
                if data.is_shared() {
                    data = Buffer::copy_from(data.bytes())?;
                }
                heap.chunk(data, true)
            })
            .collect::<Result<_>>()?;
        let info = computed_source_info(
            format!("persist({})", sinfo.name),
            sinfo.dtype,
            sinfo.shape.clone(),
            sinfo.layout.clone(),
        );
        Ok(Arc::new(HeapArray {
            heap: heap.clone(),
            chunks,
            info,
        }))
    }

    /// The heap chunk objects, in chunk order.
    pub fn chunks(&self) -> &[Handle] {
        &self.chunks
    }
}

impl ChunkSource for HeapArray {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        let region = self.info.layout.chunk_region(index);
        let data = self
            .heap
            .with_chunk(&self.chunks[index], |b| Buffer::copy_from(b.bytes()))??;
        Ok(Chunk {
            region,
            dtype: self.info.dtype,
            data,
        })
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        let es = self.info.dtype.size();
        let ids = self.info.layout.chunks_overlapping(region);
        if let [only] = ids[..] {
            let c = self.read_chunk(only)?;
            if c.region == *region {
                return Ok(c.data);
            }
        }
        let mut out = Buffer::for_overwrite(region.numel() as usize * es)?;
        for i in ids {
            let cr = self.info.layout.chunk_region(i);
            let Some(part) = cr.intersect(region) else {
                continue;
            };
            self.heap.with_chunk(&self.chunks[i], |b| {
                crate::shape::copy_box(b.bytes(), &cr, out.bytes_mut(), region, &part, es)
            })?;
        }
        Ok(out)
    }
}
