//! PLACEHOLDER: the Arrow format module is being written; every call reports "unsupported".

use std::borrow::Cow;
use std::path::Path;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::ChunkLayout;
use crate::storage::{ArrayWriter, Chunk, ChunkSource, SourceInfo, WriteOptions};

/// A Arrow source.
pub struct ArrowSource {
    info: SourceInfo,
}

impl ArrowSource {
    /// Opens a Arrow source.
    pub fn open(path: &Path, _name: &str, _column: Option<&str>) -> Result<Self> {
        Err(Error::unsupported(path, "Arrow not yet implemented"))
    }
}

impl ChunkSource for ArrowSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn read_chunk(&self, _index: usize) -> Result<Chunk> {
        Err(Error::unsupported(
            &self.info.path,
            "Arrow not yet implemented",
        ))
    }
}

/// A Arrow writer.
pub struct ArrowWriter {
    layout: ChunkLayout,
}

impl ArrowWriter {
    /// Creates a Arrow writer.
    pub fn create(
        path: &Path,
        _dtype: DType,
        _shape: &[u64],
        _options: &WriteOptions,
    ) -> Result<Self> {
        Err(Error::unsupported(path, "Arrow not yet implemented"))
    }
}

impl ArrayWriter for ArrowWriter {
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
