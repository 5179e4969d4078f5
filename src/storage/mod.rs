//! Chunked storage: the [`ChunkSource`] trait every format implements for reading, the
//! [`ArrayWriter`] trait for writing, and the byte containers they exchange.
//!
//! **Invariant:** a [`Chunk`] handed out by a source is dense, C-ordered and in native byte order,
//! whatever the file holds (Fortran order, big-endian, compressed, padded edge chunks). Formats do
//! that conversion once, in `read_chunk`; everything above works on plain slices.

pub mod atomic;
pub mod buffer;
pub mod direct;
pub mod mmap;

use std::borrow::Cow;
use std::path::PathBuf;

use crate::dtype::{ByteOrder, DType, Element};
use crate::error::{Error, Result};
use crate::shape::{ChunkLayout, Region, copy_box};

pub use buffer::Buffer;

/// The file formats chunkheap reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// NumPy `.npy` (v1, v2, v3 headers).
    Npy,
    /// A Zarr v3 directory store.
    Zarr,
    /// An Arrow IPC file (`.arrow`, `.ipc`, `.feather` v2).
    Arrow,
    /// Computed on demand: a lazy expression, a view of another source or data held in memory.
    Computed,
}

impl Format {
    /// `"npy"`, `"zarr"` or `"arrow"`.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Npy => "npy",
            Format::Zarr => "zarr",
            Format::Arrow => "arrow",
            Format::Computed => "computed",
        }
    }
}

/// What a source is: enough to plan any computation over it.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// The name the source was opened with (`PATH` or `PATH#COLUMN`).
    pub name: String,
    /// The file or directory.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Element type.
    pub dtype: DType,
    /// Array shape (C order).
    pub shape: Vec<u64>,
    /// How the array is cut into chunks.
    pub layout: ChunkLayout,
    /// Byte order of the stored elements.
    pub byte_order: ByteOrder,
    /// Bytes the array occupies on disk (compressed size for compressed stores).
    pub stored_bytes: u64,
    /// Format-specific facts for `info` (header version, codecs, column...), in display order.
    pub details: Vec<(String, String)>,
}

impl SourceInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        crate::shape::numel(&self.shape)
    }

    /// Bytes of the array in memory (elements x element size).
    pub fn nbytes(&self) -> u64 {
        self.numel() * self.dtype.size() as u64
    }
}

/// One chunk of an array: dense, C-ordered, native-endian elements covering `region`.
#[derive(Debug)]
pub struct Chunk {
    /// Which part of the array this is.
    pub region: Region,
    /// Element type.
    pub dtype: DType,
    /// The elements' bytes.
    pub data: Buffer,
}

impl Chunk {
    /// The elements as a typed slice. Panics if `T` is not the chunk's dtype.
    pub fn as_slice<T: Element>(&self) -> &[T] {
        assert_eq!(T::DTYPE, self.dtype, "chunk holds {} elements", self.dtype);
        self.data.as_slice()
    }
}

/// [`ArrayWriter::fill_at`] the plain way: `fill` a fresh buffer of `len` bytes, then encode it
/// and hand it to [`ArrayWriter::write_at`].
pub fn fill_through_buffer<W: ArrayWriter + ?Sized>(
    writer: &W,
    index: usize,
    len: usize,
    fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let mut b = Buffer::for_overwrite(len)?;
    fill(b.bytes_mut())?;
    writer.write_at(index, &writer.encode(index, b.bytes())?)
}

/// The checks of runs of a box ([`ArrayWriter::fill_rows`], [`DirectFile::write_rows_with`]):
/// `rows` runs of `count` `unit`s, the first from `start` and each `stride` after the one
/// before, within `limit` `unit`s of `what` ("array", "file"). Runs that overlap, or whose last
/// one ends past the limit (or past `u64`), are refused with a message (for the caller to
/// prefix with its path); `Ok(false)` when there is nothing to store (no runs, or empty ones).
///
/// [`DirectFile::write_rows_with`]: direct::DirectFile::write_rows_with
pub(crate) fn check_runs(
    start: u64,
    (count, stride, rows): (usize, u64, usize),
    (limit, unit, what): (u64, &str, &str),
) -> std::result::Result<bool, String> {
    if rows == 0 || count == 0 {
        return Ok(false);
    }
    if rows > 1 && stride < count as u64 {
        return Err(format!(
            "runs of {count} {unit} every {stride} {unit} overlap"
        ));
    }
    let end = ((rows - 1) as u64)
        .checked_mul(stride)
        .and_then(|d| d.checked_add(start))
        .and_then(|s| s.checked_add(count as u64));
    if end.is_none_or(|e| e > limit) {
        return Err(format!(
            "{rows} runs of {count} {unit} every {stride} from {start} lie beyond the {what}'s \
             {limit} {unit}"
        ));
    }
    Ok(true)
}

/// [`ArrayWriter::fill_rows`] the plain way: `fill` one fresh buffer with all the runs, then
/// store each with [`ArrayWriter::fill_span`].
pub fn fill_rows_by_spans<W: ArrayWriter + ?Sized>(
    writer: &W,
    start: u64,
    (count, stride, rows): (usize, u64, usize),
    elem: usize,
    fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
) -> Result<()> {
    if !writer.spans() {
        return Err(Error::Invalid(
            "runs of elements for a writer that takes whole chunks only".into(),
        ));
    }
    // Everything is checked before `fill` runs and before the first run is stored.
    let numel = writer.layout().shape().iter().product::<u64>();
    if !check_runs(start, (count, stride, rows), (numel, "elements", "array"))
        .map_err(Error::Invalid)?
    {
        return Ok(());
    }
    let run = count
        .checked_mul(elem)
        .filter(|r| r.checked_mul(rows).is_some())
        .ok_or_else(|| Error::Invalid(format!("{rows} runs of {count} elements overflow")))?;
    let mut b = Buffer::for_overwrite(run * rows)?;
    fill(b.bytes_mut())?;
    for r in 0..rows {
        let bytes = &b.bytes()[r * run..(r + 1) * run];
        writer.fill_span(start + r as u64 * stride, count, &mut |out| {
            if out.len() != bytes.len() {
                return Err(Error::Invalid(format!(
                    "runs of {elem}-byte elements for an array of {}-byte ones",
                    out.len() / count
                )));
            }
            out.copy_from_slice(bytes);
            Ok(())
        })?;
    }
    Ok(())
}

/// A readable chunked array. Implementations are cheap to share across threads; `read_chunk` may be
/// called concurrently for different (or the same) chunks.
pub trait ChunkSource: std::any::Any + Send + Sync {
    /// What the array is.
    fn info(&self) -> &SourceInfo;

    /// Reads chunk `index` (C order over `info().layout`).
    fn read_chunk(&self, index: usize) -> Result<Chunk>;

    /// Reads chunk `index` for a caller that looks at only a small part of it (a sample of a
    /// value every few pages): a source whose chunks can be had without reading all their bytes
    /// (a map window, whose untouched pages cost nothing) should return them so. The default
    /// reads the chunk.
    fn read_chunk_sparse(&self, index: usize) -> Result<Chunk> {
        self.read_chunk(index)
    }

    /// Reads an arbitrary box of the array into `out` (dense C order, exactly the box's bytes).
    /// The default copies what [`read_region`](Self::read_region) returns (a second buffer of
    /// the region's size); computed sources write their results straight into `out`, and stored
    /// ones that assemble regions from chunks (Zarr, Arrow) copy each chunk straight into `out`
    /// ([`assemble_region_into`]).
    fn read_region_into(&self, region: &Region, out: &mut [u8]) -> Result<()> {
        let b = self.read_region(region)?;
        if b.len() != out.len() {
            return Err(Error::Invalid(format!(
                "{}: region of {} bytes read into {} bytes",
                self.info().name,
                b.len(),
                out.len()
            )));
        }
        out.copy_from_slice(b.bytes());
        Ok(())
    }

    /// Reads an arbitrary box of the array into a dense C-order buffer, assembling it from every
    /// chunk it overlaps.
    fn read_region(&self, region: &Region) -> Result<Buffer> {
        assemble_region(self, region)
    }
}

/// [`ChunkSource::read_region`] the plain way: `region` as a dense C-order buffer assembled from
/// every chunk it overlaps (a lone chunk that is exactly `region` is returned as it is).
pub fn assemble_region<S: ChunkSource + ?Sized>(src: &S, region: &Region) -> Result<Buffer> {
    let info = src.info();
    let elem = info.dtype.size();
    let chunks = info.layout.chunks_overlapping(region);
    if let [only] = chunks[..] {
        let c = src.read_chunk(only)?;
        if c.region == *region {
            return Ok(c.data);
        }
    }
    let mut out = Buffer::zeroed(region.numel() as usize * elem)?;
    copy_chunks_into(src, region, &chunks, out.bytes_mut())?;
    Ok(out)
}

/// [`ChunkSource::read_region_into`] the plain way: `region` assembled straight into `out` from
/// every chunk it overlaps, one chunk held at a time (no buffer of the region's size besides
/// `out`). For sources whose [`read_region`](ChunkSource::read_region) is [`assemble_region`].
pub fn assemble_region_into<S: ChunkSource + ?Sized>(
    src: &S,
    region: &Region,
    out: &mut [u8],
) -> Result<()> {
    let info = src.info();
    let want = region.numel() as usize * info.dtype.size();
    if out.len() != want {
        return Err(Error::Invalid(format!(
            "{}: region of {want} bytes read into {} bytes",
            info.name,
            out.len()
        )));
    }
    let chunks = info.layout.chunks_overlapping(region);
    copy_chunks_into(src, region, &chunks, out)
}

/// Copies the parts of `chunks` of `src` that lie in `region` into `out` (the region's dense
/// bytes), reading one chunk at a time.
fn copy_chunks_into<S: ChunkSource + ?Sized>(
    src: &S,
    region: &Region,
    chunks: &[usize],
    out: &mut [u8],
) -> Result<()> {
    if region.shape.is_empty() {
        let c = src.read_chunk(0)?;
        out.copy_from_slice(c.data.bytes());
        return Ok(());
    }
    let elem = src.info().dtype.size();
    for &idx in chunks {
        let c = src.read_chunk(idx)?;
        if let Some(part) = c.region.intersect(region) {
            copy_box(c.data.bytes(), &c.region, out, region, &part, elem);
        }
    }
    Ok(())
}

/// `read_chunk` for sources computed on demand: chunk `index` of the source's layout, produced by
/// its own `read_region` (which must not call `read_chunk` back).
pub fn chunk_from_region(src: &dyn ChunkSource, index: usize) -> Result<Chunk> {
    let info = src.info();
    let region = info.layout.chunk_region(index);
    let data = src.read_region(&region)?;
    Ok(Chunk {
        region,
        dtype: info.dtype,
        data,
    })
}

/// Compression for written Zarr chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// Raw bytes (memory-mappable when read back).
    #[default]
    None,
    /// Zstandard at the given level.
    Zstd(i32),
    /// gzip at the given level (0-9).
    Gzip(u32),
}

impl std::str::FromStr for Codec {
    type Err = crate::error::Error;

    /// `none` (or `raw`), `zstd[:LEVEL]` (default 3) or `gzip[:LEVEL]` (0-9, default 5).
    fn from_str(s: &str) -> Result<Codec> {
        let bad = |m: String| crate::error::Error::Invalid(m);
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (
                n,
                Some(
                    l.parse::<i32>()
                        .map_err(|_| bad(format!("bad codec level in {s:?}")))?,
                ),
            ),
            None => (s, None),
        };
        Ok(match name {
            "none" | "raw" => Codec::None,
            "zstd" => Codec::Zstd(level.unwrap_or(3)),
            "gzip" => {
                let l = level.unwrap_or(5);
                if !(0..=9).contains(&l) {
                    return Err(bad(format!("gzip level must be 0..9, got {l}")));
                }
                Codec::Gzip(l as u32)
            }
            other => {
                return Err(bad(format!(
                    "unknown codec {other:?} (expected none, zstd or gzip)"
                )));
            }
        })
    }
}

/// How to write an output.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Chunk shape (Zarr) or record-batch length (Arrow); `None` picks a default of about 8 MiB.
    pub chunks: Option<Vec<u64>>,
    /// Compression for Zarr chunks.
    pub codec: Codec,
    /// Column name for Arrow outputs (default `values`).
    pub column: Option<String>,
    /// `fsync` file outputs before renaming them into place (durable across power loss; about
    /// halves write throughput here). Without it the rename is still atomic for readers and
    /// against crashes of this process, as with NumPy's, zarr-python's and pyarrow's writers.
    pub fsync: bool,
}

/// A streaming array writer. The driver calls [`encode`](Self::encode) for chunks in any order and
/// on any thread, [`write`](Self::write) for each chunk in index order (from one thread, while
/// other chunks are being encoded), then [`finish`](Self::finish), which puts the output in place
/// atomically. Dropping a writer without finishing leaves nothing behind.
pub trait ArrayWriter: Send + Sync {
    /// The chunking of the output; the driver supplies exactly these regions.
    fn layout(&self) -> &ChunkLayout;

    /// Turns a chunk's dense native C-order bytes into what is stored (e.g. compresses). The
    /// default stores them as they are.
    fn encode<'a>(&self, _index: usize, data: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        Ok(Cow::Borrowed(data))
    }

    /// Stores encoded chunk `index`. Called once per chunk, in index order, concurrently with
    /// `encode` calls for later chunks (so sequential state lives behind a lock).
    fn write(&self, index: usize, encoded: &[u8]) -> Result<()>;

    /// Whether [`write_at`](Self::write_at) may store chunks from any thread in any order (the
    /// output's byte layout is known up front, as in `.npy`). The driver then writes each chunk
    /// where it is produced, in parallel, instead of funnelling all of them through one thread.
    fn positional(&self) -> bool {
        false
    }

    /// Stores encoded chunk `index` at its place; called once per chunk, from any thread, in any
    /// order, and only when [`positional`](Self::positional) is true.
    fn write_at(&self, index: usize, _encoded: &[u8]) -> Result<()> {
        Err(Error::Invalid(format!(
            "chunk {index}: this output cannot be written out of order"
        )))
    }

    /// Stores chunk `index` (`len` bytes, dense native C order) at its place, its bytes written
    /// by `fill` into memory the writer provides (e.g. a staging buffer for a direct write),
    /// sparing the copy of [`write_at`](Self::write_at). Same calling rules as `write_at`. The
    /// default fills a fresh buffer and hands it to `write_at`.
    fn fill_at(
        &self,
        index: usize,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        fill_through_buffer(self, index, len, fill)
    }

    /// Whether [`fill_span`](Self::fill_span) may store any run of consecutive elements (in
    /// C order) from any thread in any order: the output's bytes are its elements in order, as in
    /// `.npy`. A producer whose natural unit is not the writer's chunk (a band of matrix rows, a
    /// row of a column block) then writes its own pieces.
    fn spans(&self) -> bool {
        false
    }

    /// Stores `count` elements from flat C-order element `start` on, their bytes written by
    /// `fill` into memory the writer provides (dense, native). Only when
    /// [`spans`](Self::spans) is true; every element must be stored exactly once, and an output
    /// is written either by spans or by chunks, not both.
    fn fill_span(
        &self,
        start: u64,
        count: usize,
        _fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        Err(Error::Invalid(format!(
            "elements {start}..{}: this output cannot be written in spans",
            start + count as u64
        )))
    }

    /// Stores `rows` runs of `count` elements of `elem` bytes, the first from flat C-order
    /// element `start` on and each `stride` elements after the one before (a box of the array,
    /// such as a column block's piece of a band of matrix rows), their bytes written by `fill`
    /// into one dense buffer, run after run. Same rules as [`fill_span`](Self::fill_span), of
    /// which it is a batch: the default fills a buffer and stores each run with `fill_span`;
    /// `.npy` stages the runs of a direct-write output together.
    fn fill_rows(
        &self,
        start: u64,
        (count, stride, rows): (usize, u64, usize),
        elem: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        fill_rows_by_spans(self, start, (count, stride, rows), elem, fill)
    }

    /// Completes the output and moves it into place.
    fn finish(self: Box<Self>) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The bytes so far, and each span's `(start, count)`.
    type Recorded = (Vec<u8>, Vec<(u64, usize)>);

    /// A `u16` array in memory that takes spans, recording each.
    struct Spans {
        layout: ChunkLayout,
        bytes: Mutex<Recorded>,
    }

    impl ArrayWriter for Spans {
        fn layout(&self) -> &ChunkLayout {
            &self.layout
        }
        fn write(&self, index: usize, _: &[u8]) -> Result<()> {
            Err(Error::Invalid(format!("chunk {index}: spans only")))
        }
        fn spans(&self) -> bool {
            true
        }
        fn fill_span(
            &self,
            start: u64,
            count: usize,
            fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
        ) -> Result<()> {
            let mut g = self.bytes.lock().unwrap();
            let at = start as usize * 2;
            fill(&mut g.0[at..at + count * 2])?;
            g.1.push((start, count));
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rows_go_to_a_spans_writer_one_span_per_run() {
        let (rows, cols) = (7usize, 10usize);
        let w = Spans {
            layout: ChunkLayout::regular(&[rows as u64, cols as u64], &[1, cols as u64]).unwrap(),
            bytes: Mutex::new((vec![0; rows * cols * 2], Vec::new())),
        };
        // Columns 3..7 of rows 2..5: three runs of four elements, ten apart.
        w.fill_rows(23, (4, 10, 3), 2, &mut |out| {
            assert_eq!(out.len(), 24);
            let v: Vec<u16> = (0..12).map(|i| 100 + i).collect();
            out.copy_from_slice(bytemuck::cast_slice(&v));
            Ok(())
        })
        .unwrap();
        let (bytes, spans) = w.bytes.into_inner().unwrap();
        assert_eq!(spans, [(23, 4), (33, 4), (43, 4)]);
        let got: &[u16] = bytemuck::cast_slice(&bytes);
        for (i, &x) in got.iter().enumerate() {
            let (r, c) = (i / cols, i % cols);
            let want = if (2..5).contains(&r) && (3..7).contains(&c) {
                100 + ((r - 2) * 4 + c - 3) as u16
            } else {
                0
            };
            assert_eq!(x, want, "element ({r}, {c})");
        }
        // Overlapping runs, runs past the end (or whose offsets overflow) and the wrong element
        // size are refused before anything is filled or stored.
        let e = fill_rows_by_spans(&small_writer(), 0, (5, 4, 2), 2, &mut |_| panic!("filled"));
        assert!(e.unwrap_err().to_string().contains("overlap"));
        for (start, runs) in [
            (0, (usize::MAX, usize::MAX as u64, 2)),
            (5, (1, u64::MAX, 2)),
            (10, (4, 4, 2)),
        ] {
            let w = small_writer();
            let e = fill_rows_by_spans(&w, start, runs, 2, &mut |_| panic!("filled"));
            let e = e.unwrap_err().to_string();
            assert!(e.contains("beyond the array's 16 elements"), "{e}");
            assert!(w.bytes.into_inner().unwrap().1.is_empty());
        }
        let w = small_writer();
        let e = fill_rows_by_spans(&w, 0, (2, 10, 2), 4, &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("4-byte elements"), "{e}");
        // Nothing to store: nothing filled.
        fill_rows_by_spans(&w, 0, (0, 10, 3), 2, &mut |_| panic!("filled")).unwrap();
        fill_rows_by_spans(&w, 0, (4, 10, 0), 2, &mut |_| panic!("filled")).unwrap();
    }

    fn small_writer() -> Spans {
        Spans {
            layout: ChunkLayout::regular(&[4, 4], &[1, 4]).unwrap(),
            bytes: Mutex::new((vec![0; 32], Vec::new())),
        }
    }
}
