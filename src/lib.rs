//! # chunkheap
//!
//! Crunch arrays far larger than memory: chunked, memory-mapped, streamed through parallel kernels.
//!
//! ```text
//! file ─formats→ ChunkSource ─read_chunk→ Chunk (dense, native, C order) ─rayon→ kernels → result
//!                                                                        └──→ ArrayWriter → file
//! ```
//!
//! Open any `.npy`, Zarr v3 or Arrow IPC source by name and reduce it in one parallel pass:
//!
//! ```
//! use chunkheap::{formats, reduce};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("x.npy");
//! # let path = path.to_str().unwrap();
//! // Write 0, 1, ..., 9 as f64 and read it back.
//! chunkheap::generate::generate(path, &chunkheap::generate::GenSpec {
//!     shape: vec![10],
//!     dtype: chunkheap::DType::F64,
//!     dist: chunkheap::generate::Dist::Arange,
//!     seed: 0,
//!     options: Default::default(),
//! }).unwrap();
//! let src = formats::open(path).unwrap();
//! let s = reduce::stats(src.as_ref()).unwrap();
//! assert_eq!(s.count, 10);
//! assert_eq!(s.mean(), Some(4.5));
//! assert_eq!(s.argmax, Some(9));
//! ```

pub mod dtype;
pub mod error;
pub mod expr;
pub mod formats;
pub mod generate;
pub mod heap;
pub mod kernels;
pub mod memory;
pub mod memstat;
pub mod pipeline;
pub mod reduce;
pub mod script;
pub mod shape;
pub mod storage;

pub use dtype::{ByteOrder, DType, Element};
pub use error::{Error, Result};
pub use storage::{ArrayWriter, Chunk, ChunkSource, Codec, Format, SourceInfo, WriteOptions};
