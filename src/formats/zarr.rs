//! PLACEHOLDER: the Zarr format module is being written; every call reports "unsupported".

use std::borrow::Cow;
use std::path::Path;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::ChunkLayout;
use crate::storage::{ArrayWriter, Chunk, ChunkSource, SourceInfo, WriteOptions};

/// A Zarr source.
pub struct ZarrSource {
    info: SourceInfo,
}

impl ZarrSource {
    /// Opens a Zarr source.
    pub fn open(path: &Path, _name: &str) -> Result<Self> {
        Err(Error::unsupported(path, "Zarr not yet implemented"))
    }
}

impl ChunkSource for ZarrSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn read_chunk(&self, _index: usize) -> Result<Chunk> {
        Err(Error::unsupported(
            &self.info.path,
            "Zarr not yet implemented",
        ))
    }
}

/// A Zarr writer.
pub struct ZarrWriter {
    layout: ChunkLayout,
}

impl ZarrWriter {
    /// Creates a Zarr writer.
    pub fn create(
        path: &Path,
        _dtype: DType,
        _shape: &[u64],
        _options: &WriteOptions,
    ) -> Result<Self> {
        Err(Error::unsupported(path, "Zarr not yet implemented"))
    }
}

impl ArrayWriter for ZarrWriter {
    fn layout(&self) -> &ChunkLayout {
        &self.layout
    }
    fn encode<'a>(&self, _index: usize, data: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        Ok(Cow::Borrowed(data))
    }
    fn write(&self, _index: usize, _encoded: &[u8]) -> Result<()> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
