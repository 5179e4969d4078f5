//! Arrays held in memory: small results (axis reductions, literals) and anything the caller chose
//! to keep, as a [`ChunkSource`] so every kernel can read them like a file.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::{ChunkLayout, Region, copy_box, numel, shape_str};
use crate::storage::{Buffer, Chunk, ChunkSource, SourceInfo};

/// A dense C-order array in an owned (budgeted) buffer.
pub struct MemArray {
    info: SourceInfo,
    data: Buffer,
}

impl MemArray {
    /// Wraps `data` (exactly `numel(shape)` elements of `dtype`).
    pub fn new(name: &str, dtype: DType, shape: Vec<u64>, data: Buffer) -> Result<MemArray> {
        let want = numel(&shape) as usize * dtype.size();
        if data.len() != want {
            return Err(Error::Invalid(format!(
                "{name}: {} bytes given for a {dtype} array of shape {} ({want} bytes)",
                data.len(),
                shape_str(&shape)
            )));
        }
        let layout =
            ChunkLayout::contiguous(&shape, dtype.size(), crate::formats::DEFAULT_CHUNK_BYTES);
        Ok(MemArray {
            info: super::lazy::computed_source_info(name.to_string(), dtype, shape, layout),
            data,
        })
    }

    /// An array from typed values.
    pub fn from_vec<T: Element>(name: &str, shape: Vec<u64>, values: &[T]) -> Result<MemArray> {
        let data = Buffer::copy_from(bytemuck::cast_slice(values))?;
        MemArray::new(name, T::DTYPE, shape, data)
    }

    /// The elements' bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// The elements as a typed slice (panics if `T` is not the dtype).
    pub fn as_slice<T: Element>(&self) -> &[T] {
        assert_eq!(T::DTYPE, self.info.dtype);
        self.data.as_slice()
    }
}

impl ChunkSource for MemArray {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        let es = self.info.dtype.size();
        let mut out = Buffer::for_overwrite(region.numel() as usize * es)?;
        self.read_region_into(region, out.bytes_mut())?;
        Ok(out)
    }

    fn read_region_into(&self, region: &Region, out: &mut [u8]) -> Result<()> {
        let es = self.info.dtype.size();
        if out.len() != region.numel() as usize * es {
            return Err(Error::Invalid(format!(
                "{}: region of {} bytes read into {} bytes",
                self.info.name,
                region.numel() as usize * es,
                out.len()
            )));
        }
        if region.shape.is_empty() {
            out.copy_from_slice(&self.data.bytes()[..es]);
            return Ok(());
        }
        let full = Region::full(&self.info.shape);
        copy_box(self.data.bytes(), &full, out, region, region, es);
        Ok(())
    }
}
