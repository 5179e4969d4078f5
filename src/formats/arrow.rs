//! Arrow IPC files (`.arrow`, `.ipc`, Feather v2 `.feather`): one numeric column read as a 1-D
//! array whose chunks are the file's record batches, and a streaming single-column writer.
//!
//! Opening reads only the footer and each record batch's message header (to learn the batch
//! lengths and validate the block table); the bodies are not touched. A chunk read maps just that
//! batch's bytes and decodes the chosen column with arrow-ipc: uncompressed, aligned values come
//! out zero-copy from the map; lz4/zstd-compressed bodies are decompressed by arrow-ipc.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::types::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, BooleanArray, PrimitiveArray, RecordBatch};
use arrow_buffer::{BooleanBuffer, ScalarBuffer};
use arrow_ipc::reader::FileDecoder;
use arrow_ipc::writer::FileWriter;
use arrow_ipc::{Block, CompressionType, MessageHeader, MetadataVersion};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, UnionMode};

use crate::dtype::{ByteOrder, DType};
use crate::error::{Error, Result};
use crate::formats::DEFAULT_CHUNK_BYTES;
use crate::shape::{ChunkLayout, Region, shape_str};
use crate::storage::atomic::AtomicFile;
use crate::storage::mmap::MmapWindow;
use crate::storage::{ArrayWriter, Buffer, Chunk, ChunkSource, Format, SourceInfo, WriteOptions};

/// The magic at the start and end of an Arrow IPC file.
const MAGIC: &[u8; 6] = b"ARROW1";
/// Bytes before the first message: the magic padded to 8.
const HEAD_LEN: u64 = 8;
/// Bytes after the footer: its `i32` length and the magic.
const TAIL_LEN: u64 = 10;
/// Footers larger than this are refused (about 40 million record batches).
const MAX_FOOTER: u64 = 1 << 30;

/// The chunkheap dtype an Arrow type is read as, if it is one we read.
fn dtype_of(t: &DataType) -> Option<DType> {
    Some(match t {
        DataType::Boolean => DType::Bool,
        DataType::Int8 => DType::I8,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::UInt8 => DType::U8,
        DataType::UInt16 => DType::U16,
        DataType::UInt32 => DType::U32,
        DataType::UInt64 => DType::U64,
        DataType::Float32 => DType::F32,
        DataType::Float64 => DType::F64,
        _ => return None,
    })
}

/// The Arrow type a chunkheap dtype is written as.
fn arrow_type(dtype: DType) -> DataType {
    match dtype {
        DType::Bool => DataType::Boolean,
        DType::I8 => DataType::Int8,
        DType::I16 => DataType::Int16,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::U8 => DataType::UInt8,
        DType::U16 => DataType::UInt16,
        DType::U32 => DataType::UInt32,
        DType::U64 => DataType::UInt64,
        DType::F32 => DataType::Float32,
        DType::F64 => DataType::Float64,
    }
}

/// `lz4`, `zstd` or the raw code of an unknown codec.
fn codec_name(c: CompressionType) -> Cow<'static, str> {
    match c {
        CompressionType::LZ4_FRAME => "lz4".into(),
        CompressionType::ZSTD => "zstd".into(),
        other => format!("unknown codec {}", other.0).into(),
    }
}

/// Runs an arrow-ipc decoding step, turning its errors (and, as a last line of defence, its
/// panics on malformed input) into [`Error::Corrupt`] naming the file and `what` was being read.
fn guarded<T>(
    path: &Path,
    what: impl FnOnce() -> String,
    f: impl FnOnce() -> std::result::Result<T, ArrowError>,
) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::corrupt(path, format!("{}: {e}", what()))),
        Err(_) => Err(Error::corrupt(
            path,
            format!("{}: malformed data (rejected by the Arrow decoder)", what()),
        )),
    }
}

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
        .map_err(|e| Error::io(path, "read", e))
}

/// `"a" (Float64), "b" (Utf8)`: column names with their types, for error messages.
fn list_columns<'a>(fields: impl IntoIterator<Item = &'a Arc<Field>>) -> String {
    let parts: Vec<String> = fields
        .into_iter()
        .map(|f| format!("{:?} ({})", f.name(), f.data_type()))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// One record batch of the file, as listed in the footer and checked at open.
#[derive(Clone, Debug)]
struct BatchBlock {
    /// Offset of the batch's message in the file.
    offset: u64,
    /// Bytes of the encapsulated message metadata (prefix, flatbuffer and padding).
    meta_len: i32,
    /// Bytes of the body that follows the metadata.
    body_len: i64,
    /// Rows in the batch.
    rows: u64,
    /// Body compression, if any.
    codec: Option<CompressionType>,
    /// For compressed batches: `(offset, length)` in the body of the selected column's validity
    /// and values buffers (empty when not compressed or not locatable).
    column_buffers: Vec<(u64, u64)>,
}

/// What the message header of one record batch says.
struct BatchHeader {
    rows: u64,
    codec: Option<CompressionType>,
    version: MetadataVersion,
    column_buffers: Vec<(u64, u64)>,
}

/// Number of IPC buffers a field of type `t` occupies in a record batch (the order arrow-ipc
/// reads them in), or `None` if it cannot be told. `variadic` yields the batch's variadic buffer
/// counts (for view types) in field order.
fn buffer_count(
    t: &DataType,
    version: MetadataVersion,
    variadic: &mut dyn Iterator<Item = i64>,
) -> Option<usize> {
    let mut count = |t: &DataType| buffer_count(t, version, variadic);
    Some(match t {
        DataType::Null => 0,
        DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary => 3,
        DataType::Utf8View | DataType::BinaryView => {
            usize::try_from(variadic.next()?).ok()?.checked_add(2)?
        }
        DataType::List(c) | DataType::LargeList(c) | DataType::Map(c, _) => {
            2 + count(c.data_type())?
        }
        DataType::ListView(c) | DataType::LargeListView(c) => 3 + count(c.data_type())?,
        DataType::FixedSizeList(c, _) => 1 + count(c.data_type())?,
        DataType::Struct(fields) => {
            let mut n = 1usize;
            for f in fields {
                n = n.checked_add(count(f.data_type())?)?;
            }
            n
        }
        DataType::RunEndEncoded(a, b) => {
            count(a.data_type())?.checked_add(count(b.data_type())?)?
        }
        DataType::Union(fields, mode) => {
            let mut n = usize::from(version < MetadataVersion::V5)
                + 1
                + usize::from(*mode == UnionMode::Dense);
            for (_, f) in fields.iter() {
                n = n.checked_add(count(f.data_type())?)?;
            }
            n
        }
        // Fixed-width types, booleans and dictionaries (validity + values/indices).
        _ => 2,
    })
}

/// Parses the encapsulated message at the start of `meta` (one record batch's metadata) and checks
/// it against its block. `version` is the version every batch must share (that of the first
/// batch), if known; `column` is the selected field's index in `fields`. Never reads the body.
#[allow(clippy::too_many_arguments)]
fn parse_batch_header(
    path: &Path,
    index: usize,
    offset: u64,
    meta: &[u8],
    body_len: i64,
    version: Option<MetadataVersion>,
    fields: &Fields,
    column: usize,
) -> Result<BatchHeader> {
    let bad = |what: String| {
        Error::corrupt(
            path,
            format!("record batch {index} (message at offset {offset}): {what}"),
        )
    };
    let (prefix, len_bytes) = match meta {
        [0xff, 0xff, 0xff, 0xff, a, b, c, d, ..] => (8usize, [*a, *b, *c, *d]),
        [a, b, c, d, ..] => (4usize, [*a, *b, *c, *d]),
        _ => return Err(bad("message metadata is shorter than 8 bytes".into())),
    };
    let fb_len = i32::from_le_bytes(len_bytes);
    if fb_len <= 0 || prefix + fb_len as usize > meta.len() {
        return Err(bad(format!(
            "message length {fb_len} does not fit the block's {} metadata bytes",
            meta.len()
        )));
    }
    let msg = arrow_ipc::root_as_message(&meta[prefix..])
        .map_err(|e| bad(format!("invalid message flatbuffer: {e}")))?;
    // The footer's version is not checked: pyarrow writes a V5 footer over V4 messages when asked
    // for V4 metadata, and the messages' own version is what governs their decoding.
    if let Some(v) = version
        && msg.version() != v
    {
        return Err(bad(format!(
            "message metadata version {:?} differs from record batch 0's {v:?}",
            msg.version()
        )));
    }
    if msg.header_type() != MessageHeader::RecordBatch {
        return Err(bad(format!(
            "holds a {:?} message, not a record batch",
            msg.header_type()
        )));
    }
    let rb = msg
        .header_as_record_batch()
        .ok_or_else(|| bad("record batch header is missing".into()))?;
    let rows = u64::try_from(rb.length())
        .map_err(|_| bad(format!("negative row count {}", rb.length())))?;
    if msg.bodyLength() < 0 || msg.bodyLength() > body_len {
        return Err(bad(format!(
            "message body length {} exceeds the block's {body_len} bytes",
            msg.bodyLength()
        )));
    }
    if rb.nodes().is_none() {
        return Err(bad("record batch has no field nodes".into()));
    }
    let buffers = rb
        .buffers()
        .ok_or_else(|| bad("record batch has no buffer list".into()))?;
    for (j, b) in buffers.iter().enumerate() {
        let ok = b.offset() >= 0
            && b.length() >= 0
            && b.offset()
                .checked_add(b.length())
                .is_some_and(|end| end <= body_len);
        if !ok {
            return Err(bad(format!(
                "buffer {j} (offset {}, length {}) lies outside the {body_len}-byte body",
                b.offset(),
                b.length()
            )));
        }
    }
    let codec = rb.compression().map(|c| c.codec());
    if let Some(c) = codec
        && !matches!(c, CompressionType::LZ4_FRAME | CompressionType::ZSTD)
    {
        return Err(Error::unsupported(
            path,
            format!("record batch {index} uses {} compression", codec_name(c)),
        ));
    }
    let mut column_buffers = Vec::new();
    if codec.is_some() {
        // Locate the column's buffers so reads can bound their declared decompressed sizes.
        let mut variadic = rb.variadicBufferCounts().into_iter().flatten();
        let first = fields[..column].iter().try_fold(0usize, |n, f| {
            n.checked_add(buffer_count(f.data_type(), msg.version(), &mut variadic)?)
        });
        if let Some(first) = first
            && first.checked_add(2).is_some_and(|end| end <= buffers.len())
        {
            column_buffers = (first..first + 2)
                .map(|j| {
                    let b = buffers.get(j);
                    (b.offset() as u64, b.length() as u64)
                })
                .collect();
        }
    }
    Ok(BatchHeader {
        rows,
        codec,
        version: msg.version(),
        column_buffers,
    })
}

/// One numeric column of an Arrow IPC file, read as a 1-D array whose chunks are the record
/// batches.
pub struct ArrowSource {
    info: SourceInfo,
    file: File,
    decoder: FileDecoder,
    batches: Vec<BatchBlock>,
    column: String,
}

impl ArrowSource {
    /// Opens the Arrow IPC file `path` (also Feather v2) and selects `column`, or the only numeric
    /// column when `column` is `None`. `name` is how the user named the source.
    ///
    /// Reads the footer and every record batch's metadata, not the bodies. Errors with
    /// [`Error::Column`] when the column is missing, ambiguous or not numeric, and with
    /// [`Error::Corrupt`]/[`Error::Truncated`] when the file's structure is damaged.
    pub fn open(path: &Path, name: &str, column: Option<&str>) -> Result<ArrowSource> {
        let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        let mut head = [0u8; HEAD_LEN as usize];
        let head_n = file_len.min(HEAD_LEN) as usize;
        read_exact_at(&file, path, &mut head[..head_n], 0)?;
        let head = &head[..head_n];
        if !head.starts_with(MAGIC) {
            if head.starts_with(b"FEA1") {
                return Err(Error::unsupported(
                    path,
                    "Feather v1 file (magic FEA1); only Feather v2 (an Arrow IPC file) is read: \
                     rewrite it with pyarrow.feather.write_feather(table, path)",
                ));
            }
            if head.starts_with(&[0xff; 4]) {
                return Err(Error::unsupported(
                    path,
                    "Arrow IPC stream (starts with a message, not the ARROW1 magic); only the IPC \
                     file format is read: rewrite it with pyarrow.ipc.new_file",
                ));
            }
            return Err(Error::corrupt(
                path,
                format!("not an Arrow IPC file: expected magic ARROW1 at offset 0, found {head:?}"),
            ));
        }
        if file_len < HEAD_LEN + TAIL_LEN {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                offset: 0,
                expected: HEAD_LEN + TAIL_LEN,
                found: file_len,
            });
        }
        let mut tail = [0u8; TAIL_LEN as usize];
        read_exact_at(&file, path, &mut tail, file_len - TAIL_LEN)?;
        if &tail[4..] != MAGIC {
            return Err(Error::corrupt(
                path,
                format!(
                    "no ARROW1 magic at the end of the file (offset {}): the file is truncated or \
                     was never finished",
                    file_len - 6
                ),
            ));
        }
        let footer_len = i32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let room = file_len - HEAD_LEN - TAIL_LEN;
        let footer_len = u64::try_from(footer_len)
            .ok()
            .filter(|&n| n > 0 && n <= room && n <= MAX_FOOTER)
            .ok_or_else(|| {
                Error::corrupt(
                    path,
                    format!(
                        "footer length {footer_len} (offset {}) does not fit a {file_len}-byte \
                         file",
                        file_len - TAIL_LEN
                    ),
                )
            })?;
        let footer_start = file_len - TAIL_LEN - footer_len;
        let mut footer_bytes = vec![0u8; footer_len as usize];
        read_exact_at(&file, path, &mut footer_bytes, footer_start)?;
        let footer = arrow_ipc::root_as_footer(&footer_bytes).map_err(|e| {
            Error::corrupt(
                path,
                format!("invalid footer flatbuffer at offset {footer_start}: {e}"),
            )
        })?;
        let fb_schema = footer
            .schema()
            .ok_or_else(|| Error::corrupt(path, "the footer has no schema"))?;
        if !fb_schema.endianness().equals_to_target_endianness() {
            return Err(Error::unsupported(
                path,
                "the file's byte order differs from this machine's",
            ));
        }
        let schema = guarded(
            path,
            || "footer schema".to_string(),
            || arrow_ipc::convert::try_fb_to_schema(fb_schema),
        )?;
        let blocks = footer
            .recordBatches()
            .ok_or_else(|| Error::corrupt(path, "the footer has no record batch list"))?;

        // Choose the column.
        let fields = schema.fields();
        let col_index = match column {
            Some(c) => {
                let hits: Vec<usize> = (0..fields.len())
                    .filter(|&i| fields[i].name() == c)
                    .collect();
                match hits[..] {
                    [i] => i,
                    [] => {
                        return Err(Error::Column {
                            path: path.to_path_buf(),
                            what: format!(
                                "no column {c:?}; the file's columns are {}",
                                list_columns(fields.iter())
                            ),
                        });
                    }
                    _ => {
                        return Err(Error::Column {
                            path: path.to_path_buf(),
                            what: format!(
                                "{} columns are named {c:?}; cannot tell which to read",
                                hits.len()
                            ),
                        });
                    }
                }
            }
            None => {
                let numeric: Vec<usize> = (0..fields.len())
                    .filter(|&i| dtype_of(fields[i].data_type()).is_some())
                    .collect();
                match numeric[..] {
                    [i] => i,
                    [] => {
                        return Err(Error::Column {
                            path: path.to_path_buf(),
                            what: format!(
                                "no numeric column (columns: {}); chunkheap reads bool, int8-64, \
                                 uint8-64, float32 and float64 columns",
                                list_columns(fields.iter())
                            ),
                        });
                    }
                    _ => {
                        return Err(Error::Column {
                            path: path.to_path_buf(),
                            what: format!(
                                "{} numeric columns ({}); choose one with PATH#COLUMN, e.g. \
                                 {}#{}",
                                numeric.len(),
                                list_columns(numeric.iter().map(|&i| &fields[i])),
                                path.display(),
                                fields[numeric[0]].name()
                            ),
                        });
                    }
                }
            }
        };
        let field = &fields[col_index];
        let dtype = dtype_of(field.data_type()).ok_or_else(|| Error::Column {
            path: path.to_path_buf(),
            what: format!(
                "column {:?} has type {}, which is not numeric (chunkheap reads bool, int8-64, \
                 uint8-64, float32 and float64 columns)",
                field.name(),
                field.data_type()
            ),
        })?;
        let column = field.name().clone();
        let arrow_type = field.data_type().to_string();

        // Check every block and learn its row count from the message header.
        let mut batches = Vec::with_capacity(blocks.len());
        let mut bounds = Vec::with_capacity(blocks.len() + 1);
        bounds.push(0u64);
        let mut codecs: Vec<String> = Vec::new();
        let mut batch_version = None;
        for (i, block) in blocks.iter().enumerate() {
            let (off, meta_len, body_len) =
                (block.offset(), block.metaDataLength(), block.bodyLength());
            let end = u64::try_from(off).ok().and_then(|o| {
                let m = u64::try_from(meta_len).ok()?;
                let b = u64::try_from(body_len).ok()?;
                o.checked_add(m)?.checked_add(b)
            });
            let fits =
                off >= HEAD_LEN as i64 && meta_len >= 8 && end.is_some_and(|e| e <= footer_start);
            if !fits {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "record batch {i}: block at offset {off} ({meta_len} metadata + \
                         {body_len} body bytes) lies outside the data section \
                         ({HEAD_LEN}..{footer_start})"
                    ),
                ));
            }
            let offset = off as u64;
            let mut meta = vec![0u8; meta_len as usize];
            read_exact_at(&file, path, &mut meta, offset)?;
            let h = parse_batch_header(
                path,
                i,
                offset,
                &meta,
                body_len,
                batch_version,
                fields,
                col_index,
            )?;
            let (rows, codec) = (h.rows, h.codec);
            batch_version = Some(h.version);
            let total = bounds[i].checked_add(rows).ok_or_else(|| {
                Error::corrupt(path, format!("record batch {i}: row count overflows"))
            })?;
            bounds.push(total);
            let c = codec.map_or(Cow::Borrowed("none"), codec_name).into_owned();
            if !codecs.contains(&c) {
                codecs.push(c);
            }
            batches.push(BatchBlock {
                offset,
                meta_len,
                body_len,
                rows,
                codec,
                column_buffers: h.column_buffers,
            });
        }
        if codecs.is_empty() {
            codecs.push("none".to_string());
        }

        let schema: SchemaRef = Arc::new(schema);
        let decoder = FileDecoder::new(schema, batch_version.unwrap_or(footer.version()))
            .with_projection(vec![col_index]);
        let len = *bounds.last().unwrap_or(&0);
        let info = SourceInfo {
            name: name.to_string(),
            path: path.to_path_buf(),
            format: Format::Arrow,
            dtype,
            shape: vec![len],
            layout: ChunkLayout::Ranges { bounds },
            byte_order: ByteOrder::NATIVE,
            stored_bytes: file_len,
            details: vec![
                ("column".into(), column.clone()),
                ("arrow type".into(), arrow_type),
                ("record batches".into(), batches.len().to_string()),
                ("compression".into(), codecs.join(", ")),
            ],
        };
        Ok(ArrowSource {
            info,
            file,
            decoder,
            batches,
            column,
        })
    }

    /// The name of the column being read.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// Refuses compressed buffers of the column whose declared decompressed size is far beyond what
    /// the batch's row count needs, before arrow-ipc allocates that much.
    fn check_decompressed_sizes(&self, index: usize, b: &BatchBlock, body: &[u8]) -> Result<()> {
        let bits = b.rows.div_ceil(8);
        let values = if self.info.dtype == DType::Bool {
            bits
        } else {
            b.rows.saturating_mul(self.info.dtype.size() as u64)
        };
        for (&(off, len), need) in b.column_buffers.iter().zip([bits, values]) {
            let prefix = usize::try_from(off)
                .ok()
                .and_then(|o| body.get(o..o.checked_add(8)?))
                .filter(|_| len >= 8);
            let Some(prefix) = prefix else { continue };
            let mut n = [0u8; 8];
            n.copy_from_slice(prefix);
            let declared = i64::from_le_bytes(n);
            let limit = need.saturating_mul(2).saturating_add(1 << 20);
            if declared > 0 && declared as u64 > limit {
                return Err(Error::corrupt(
                    &self.info.path,
                    format!(
                        "record batch {index}: a compressed buffer of column {:?} declares {declared} \
                         decompressed bytes, but {} rows need at most {need}",
                        self.column, b.rows
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Turns the decoded column of batch `index` into chunk bytes.
    fn column_bytes(&self, index: usize, col: &ArrayRef) -> Result<Buffer> {
        let path = &self.info.path;
        let dtype = self.info.dtype;
        let n = col.len();
        let nulls = col.null_count();
        if nulls > 0 && !dtype.is_float() {
            return Err(Error::unsupported(
                path,
                format!(
                    "column {:?} ({dtype}) has {nulls} null(s) in record batch {index}; nulls are \
                     only read in float columns (as NaN)",
                    self.column
                ),
            ));
        }
        if dtype == DType::Bool {
            let b = col.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
                Error::corrupt(
                    path,
                    format!("record batch {index}: column did not decode as booleans"),
                )
            })?;
            let mut out = Buffer::zeroed(n)?;
            for (o, v) in out.bytes_mut().iter_mut().zip(b.values().iter()) {
                *o = u8::from(v);
            }
            return Ok(out);
        }
        let size = dtype.size();
        let data = col.to_data();
        let values = data.buffers().first().ok_or_else(|| {
            Error::corrupt(
                path,
                format!("record batch {index}: column has no values buffer"),
            )
        })?;
        let start = data.offset() * size;
        let len = n * size;
        if values.len() < start + len {
            return Err(Error::corrupt(
                path,
                format!(
                    "record batch {index}: values buffer holds {} bytes, {} needed",
                    values.len(),
                    start + len
                ),
            ));
        }
        let values = values.slice_with_length(start, len);
        if nulls == 0 {
            return Buffer::shared(Box::new(values));
        }
        let mut out = Buffer::copy_from(values.as_slice())?;
        match dtype {
            DType::F32 => {
                let s: &mut [f32] = out.as_mut_slice();
                for (i, v) in s.iter_mut().enumerate() {
                    if col.is_null(i) {
                        *v = f32::NAN;
                    }
                }
            }
            _ => {
                let s: &mut [f64] = out.as_mut_slice();
                for (i, v) in s.iter_mut().enumerate() {
                    if col.is_null(i) {
                        *v = f64::NAN;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Owns a map window so `bytes::Bytes` (and through it an Arrow buffer) can borrow its bytes.
struct WindowBytes(MmapWindow);

impl AsRef<[u8]> for WindowBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl ChunkSource for ArrowSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        let path = &self.info.path;
        let b = self.batches.get(index).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: chunk {index} requested, but the file has {} record batches",
                path.display(),
                self.batches.len()
            ))
        })?;
        // Checked at open: the block lies inside the file and its lengths are non-negative.
        let len = b.meta_len as usize + b.body_len as usize;
        let window = MmapWindow::map(&self.file, path, b.offset, len)?;
        self.check_decompressed_sizes(index, b, &window.bytes()[b.meta_len as usize..])?;
        let buf = arrow_buffer::Buffer::from(bytes::Bytes::from_owner(WindowBytes(window)));
        // The window starts at the block, so the block's offset within `buf` is 0.
        let block = Block::new(0, b.meta_len, b.body_len);
        let what = || {
            format!(
                "record batch {index} (offset {}{})",
                b.offset,
                b.codec
                    .map(|c| format!(", {} compressed", codec_name(c)))
                    .unwrap_or_default()
            )
        };
        let batch = guarded(path, what, || self.decoder.read_record_batch(&block, &buf))?
            .ok_or_else(|| Error::corrupt(path, format!("{}: empty message", what())))?;
        let col = match batch.columns() {
            [col] if col.len() as u64 == b.rows => col,
            _ => {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "{}: decoded column does not have the {} rows of its header",
                        what(),
                        b.rows
                    ),
                ));
            }
        };
        let data = self.column_bytes(index, col)?;
        Ok(Chunk {
            region: self.info.layout.chunk_region(index),
            dtype: self.info.dtype,
            data,
        })
    }

    /// Each record batch straight into `out` (no second region-sized buffer).
    fn read_region_into(&self, region: &Region, out: &mut [u8]) -> Result<()> {
        crate::storage::assemble_region_into(self, region, out)
    }
}

/// An [`AtomicFile`] as an `io::Write`, so arrow-ipc's writer can own it and hand it back.
struct AtomicSink(AtomicFile);

impl Write for AtomicSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.writer().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.writer().flush()
    }
}

/// Streams a 1-D array into a new Arrow IPC file: one non-nullable column, one record batch per
/// chunk, uncompressed (so reads map it zero-copy).
pub struct ArrowWriter {
    path: PathBuf,
    dtype: DType,
    layout: ChunkLayout,
    schema: SchemaRef,
    state: Mutex<WriteState>,
}

/// The sequential part of an [`ArrowWriter`], behind its lock.
struct WriteState {
    writer: FileWriter<AtomicSink>,
    next: usize,
}

impl ArrowWriter {
    /// Starts writing `path` (a temporary file beside it until [`ArrayWriter::finish`]).
    ///
    /// `shape` must be 1-D. The record-batch length is `options.chunks[0]`, or about
    /// [`DEFAULT_CHUNK_BYTES`] of elements; the column is named `options.column` (default
    /// `values`).
    pub fn create(
        path: &Path,
        dtype: DType,
        shape: &[u64],
        options: &WriteOptions,
    ) -> Result<ArrowWriter> {
        let &[len] = shape else {
            return Err(Error::Invalid(format!(
                "{}: an Arrow IPC file holds 1-D columns, but the array has shape {}; write it \
                 as .npy or .zarr instead",
                path.display(),
                shape_str(shape)
            )));
        };
        let batch = match options.chunks.as_deref() {
            None => (DEFAULT_CHUNK_BYTES / dtype.size() as u64).max(1),
            Some(&[b]) if b > 0 => b,
            Some(c) => {
                return Err(Error::Invalid(format!(
                    "{}: the record-batch length must be one number of at least 1, got {c:?}",
                    path.display()
                )));
            }
        };
        let mut bounds = vec![0u64];
        let mut at = 0u64;
        while at < len {
            at = at.saturating_add(batch).min(len);
            bounds.push(at);
        }
        let name = options.column.as_deref().unwrap_or("values");
        let schema = Arc::new(Schema::new(vec![Field::new(
            name,
            arrow_type(dtype),
            false,
        )]));
        let mut out = AtomicFile::create(path)?;
        out.set_fsync(options.fsync);
        let writer = FileWriter::try_new(AtomicSink(out), &schema)
            .map_err(|e| write_error(path, "start Arrow file", e))?;
        Ok(ArrowWriter {
            path: path.to_path_buf(),
            dtype,
            layout: ChunkLayout::Ranges { bounds },
            schema,
            state: Mutex::new(WriteState { writer, next: 0 }),
        })
    }
}

/// Maps an arrow-ipc writer error: I/O errors stay [`Error::Io`].
fn write_error(path: &Path, op: &'static str, e: ArrowError) -> Error {
    match e {
        ArrowError::IoError(_, source) => Error::io(path, op, source),
        other => Error::Invalid(format!("{}: {op}: {other}", path.display())),
    }
}

/// A primitive Arrow array holding a copy of native-endian `data`.
fn primitive<T: ArrowPrimitiveType>(data: &[u8]) -> ArrayRef {
    let n = data.len() / std::mem::size_of::<T::Native>();
    let buf = arrow_buffer::Buffer::from_slice_ref(data);
    Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::new(buf, 0, n), None))
}

impl ArrayWriter for ArrowWriter {
    fn layout(&self) -> &ChunkLayout {
        &self.layout
    }

    fn write(&self, index: usize, encoded: &[u8]) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if index != st.next || index >= self.layout.num_chunks() {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} written out of order (expected {} of {})",
                self.path.display(),
                st.next,
                self.layout.num_chunks()
            )));
        }
        let rows = self.layout.chunk_region(index).numel() as usize;
        let expected = rows * self.dtype.size();
        if encoded.len() != expected {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} has {} bytes, {expected} expected ({rows} {} elements)",
                self.path.display(),
                encoded.len(),
                self.dtype
            )));
        }
        let array: ArrayRef = match self.dtype {
            DType::Bool => Arc::new(BooleanArray::new(
                BooleanBuffer::collect_bool(rows, |i| encoded[i] != 0),
                None,
            )),
            DType::I8 => primitive::<Int8Type>(encoded),
            DType::I16 => primitive::<Int16Type>(encoded),
            DType::I32 => primitive::<Int32Type>(encoded),
            DType::I64 => primitive::<Int64Type>(encoded),
            DType::U8 => primitive::<UInt8Type>(encoded),
            DType::U16 => primitive::<UInt16Type>(encoded),
            DType::U32 => primitive::<UInt32Type>(encoded),
            DType::U64 => primitive::<UInt64Type>(encoded),
            DType::F32 => primitive::<Float32Type>(encoded),
            DType::F64 => primitive::<Float64Type>(encoded),
        };
        let batch = RecordBatch::try_new(self.schema.clone(), vec![array])
            .map_err(|e| write_error(&self.path, "build record batch", e))?;
        st.writer
            .write(&batch)
            .map_err(|e| write_error(&self.path, "write", e))?;
        st.next += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let this = *self;
        let st = this.state.into_inner().unwrap_or_else(|e| e.into_inner());
        if st.next != this.layout.num_chunks() {
            return Err(Error::Invalid(format!(
                "{}: {} of {} record batches written",
                this.path.display(),
                st.next,
                this.layout.num_chunks()
            )));
        }
        let sink = st
            .writer
            .into_inner()
            .map_err(|e| write_error(&this.path, "write", e))?;
        sink.0.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL_DTYPES;
    use crate::generate::{Dist, GenSpec, generate, generate_region};
    use crate::shape::Region;
    use arrow_array::{Float64Array, Int32Array, Int64Array, StringArray};

    fn gen_spec(dtype: DType, n: u64, batch: Option<u64>, column: Option<&str>) -> GenSpec {
        GenSpec {
            shape: vec![n],
            dtype,
            dist: Dist::UNIFORM,
            seed: 7,
            options: WriteOptions {
                chunks: batch.map(|b| vec![b]),
                column: column.map(str::to_string),
                ..WriteOptions::default()
            },
        }
    }

    /// Reads every chunk of `src` in order, checking regions, and concatenates the bytes.
    fn read_all(src: &ArrowSource) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for i in 0..src.info().layout.num_chunks() {
            let c = src.read_chunk(i).unwrap();
            assert_eq!(c.region.origin, vec![at]);
            assert_eq!(c.dtype, src.info().dtype);
            assert_eq!(
                c.data.len() as u64,
                c.region.numel() * c.dtype.size() as u64
            );
            at += c.region.shape[0];
            out.extend_from_slice(c.data.bytes());
        }
        assert_eq!(at, src.info().shape[0]);
        out
    }

    #[test]
    fn round_trip_every_dtype_and_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in ALL_DTYPES {
            for (n, batch) in [
                (0u64, Some(3u64)),
                (1, None),
                (10, Some(3)),
                (12, Some(4)),
                (1000, Some(999)),
                (257, Some(1)),
            ] {
                let p = dir.path().join(format!("{dtype}-{n}-{batch:?}.arrow"));
                let ps = p.to_str().unwrap();
                generate(ps, &gen_spec(dtype, n, batch, None)).unwrap();
                let src = ArrowSource::open(&p, ps, None).unwrap();
                let info = src.info();
                assert_eq!(info.dtype, dtype);
                assert_eq!(info.shape, vec![n]);
                assert_eq!(src.column(), "values");
                let b = batch.unwrap_or(DEFAULT_CHUNK_BYTES / dtype.size() as u64);
                let want_batches = n.div_ceil(b) as usize;
                assert_eq!(info.layout.num_chunks(), want_batches, "{p:?}");
                if let ChunkLayout::Ranges { bounds } = &info.layout {
                    assert_eq!(bounds.len(), want_batches + 1);
                    assert_eq!(bounds.last(), Some(&n));
                    for w in bounds.windows(2) {
                        assert!(w[1] - w[0] == b || w[1] == n);
                    }
                } else {
                    panic!("expected ranges layout");
                }
                let want =
                    generate_region(&[n], &Region::full(&[n]), dtype, Dist::UNIFORM, 7).unwrap();
                assert_eq!(read_all(&src), want.bytes(), "{p:?}");
                if n > 0 {
                    let whole = src.read_region(&Region::full(&[n])).unwrap();
                    assert_eq!(whole.bytes(), want.bytes());
                }
                assert!(
                    info.details
                        .contains(&("compression".into(), "none".into()))
                );
                assert_eq!(info.stored_bytes, std::fs::metadata(&p).unwrap().len());
            }
        }
    }

    #[test]
    fn uncompressed_reads_are_zero_copy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.arrow");
        generate(
            p.to_str().unwrap(),
            &gen_spec(DType::F64, 100, Some(30), Some("x")),
        )
        .unwrap();
        let src = ArrowSource::open(&p, "z", Some("x")).unwrap();
        for i in 0..src.info().layout.num_chunks() {
            assert!(src.read_chunk(i).unwrap().data.is_shared());
        }
        assert!(src.read_chunk(4).is_err());
    }

    #[test]
    fn column_name_option_and_n_d_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.arrow");
        generate(
            p.to_str().unwrap(),
            &gen_spec(DType::I32, 5, None, Some("temp")),
        )
        .unwrap();
        let src = ArrowSource::open(&p, "c", None).unwrap();
        assert_eq!(src.column(), "temp");
        assert_eq!(src.info().details[0], ("column".into(), "temp".into()));

        let e = ArrowWriter::create(
            &dir.path().join("m.arrow"),
            DType::F64,
            &[2, 3],
            &WriteOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("1-D") && e.contains("(2, 3)") && e.contains(".npy"),
            "{e}"
        );
        let e = ArrowWriter::create(
            &dir.path().join("m.arrow"),
            DType::F64,
            &[],
            &WriteOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("1-D") && e.contains("()"), "{e}");
        let opts = WriteOptions {
            chunks: Some(vec![0]),
            ..Default::default()
        };
        assert!(ArrowWriter::create(&dir.path().join("m.arrow"), DType::F64, &[4], &opts).is_err());
        assert!(!dir.path().join("m.arrow").exists());
    }

    #[test]
    fn unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.arrow");
        let opts = WriteOptions {
            chunks: Some(vec![2]),
            ..Default::default()
        };
        let w = Box::new(ArrowWriter::create(&p, DType::I16, &[4], &opts).unwrap());
        w.write(0, &[1, 0, 2, 0]).unwrap();
        assert!(w.write(0, &[1, 0, 2, 0]).is_err());
        assert!(w.finish().is_err());
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Writes a multi-column file with arrow-ipc directly: batches of 3, 0 and 2 rows.
    fn multi_column_file(path: &Path) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("b", DataType::Float64, true),
            Field::new("c", DataType::Int64, true),
            Field::new("flag", DataType::Boolean, true),
        ]));
        let f = File::create(path).unwrap();
        let mut w = FileWriter::try_new(f, &schema).unwrap();
        let cols = |a: Vec<i32>,
                    name: Vec<Option<&str>>,
                    b: Vec<Option<f64>>,
                    c: Vec<Option<i64>>,
                    flag: Vec<Option<bool>>|
         -> Vec<ArrayRef> {
            vec![
                Arc::new(Int32Array::from(a)),
                Arc::new(StringArray::from(name)),
                Arc::new(Float64Array::from(b)),
                Arc::new(Int64Array::from(c)),
                Arc::new(BooleanArray::from(flag)),
            ]
        };
        let batches = [
            cols(
                vec![1, 2, 3],
                vec![Some("x"), None, Some("z")],
                vec![Some(1.5), None, Some(-2.0)],
                vec![Some(10), Some(11), Some(12)],
                vec![Some(true), Some(false), Some(true)],
            ),
            cols(vec![], vec![], vec![], vec![], vec![]),
            cols(
                vec![4, 5],
                vec![Some("p"), Some("q")],
                vec![None, Some(3.25)],
                vec![None, Some(14)],
                vec![Some(false), Some(true)],
            ),
        ];
        for columns in batches {
            w.write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
                .unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn multi_column_selection_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("multi.arrow");
        multi_column_file(&p);

        let a = ArrowSource::open(&p, "m#a", Some("a")).unwrap();
        assert_eq!(a.info().dtype, DType::I32);
        assert_eq!(
            a.info().layout,
            ChunkLayout::Ranges {
                bounds: vec![0, 3, 3, 5]
            }
        );
        assert_eq!(
            bytemuck::cast_slice::<u8, i32>(&read_all(&a)),
            &[1, 2, 3, 4, 5]
        );
        assert!(
            a.info()
                .details
                .contains(&("record batches".into(), "3".into()))
        );
        assert!(
            a.info()
                .details
                .contains(&("arrow type".into(), "Int32".into()))
        );

        // Float nulls become NaN.
        let b = ArrowSource::open(&p, "m#b", Some("b")).unwrap();
        let v: Vec<f64> = bytemuck::cast_slice::<u8, f64>(&read_all(&b)).to_vec();
        assert_eq!(v.len(), 5);
        assert_eq!((v[0], v[2], v[4]), (1.5, -2.0, 3.25));
        assert!(v[1].is_nan() && v[3].is_nan());

        // Bool unpacked to bytes.
        let flag = ArrowSource::open(&p, "m#flag", Some("flag")).unwrap();
        assert_eq!(flag.info().dtype, DType::Bool);
        assert_eq!(read_all(&flag), vec![1, 0, 1, 0, 1]);

        // Integer nulls: error naming column, batch and count; the null-free batch reads.
        let c = ArrowSource::open(&p, "m#c", Some("c")).unwrap();
        assert_eq!(c.read_chunk(0).unwrap().as_slice::<i64>(), &[10, 11, 12]);
        let e = c.read_chunk(2).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("\"c\"") && e.contains("batch 2") && e.contains("1 null"),
            "{e}"
        );

        // No column given: several numeric columns.
        let e = ArrowSource::open(&p, "m", None).err().unwrap();
        assert!(matches!(e, Error::Column { .. }));
        let e = e.to_string();
        assert!(
            e.contains("PATH#COLUMN") && e.contains("\"a\"") && e.contains("\"flag\""),
            "{e}"
        );
        assert!(!e.contains("\"name\""), "{e}");

        // Missing column lists the available ones.
        let e = ArrowSource::open(&p, "m#zz", Some("zz")).err().unwrap();
        assert!(matches!(e, Error::Column { .. }));
        let e = e.to_string();
        assert!(
            e.contains("multi.arrow")
                && e.contains("\"zz\"")
                && e.contains("\"name\" (Utf8)")
                && e.contains("\"b\" (Float64)"),
            "{e}"
        );

        // String column: not numeric.
        let e = ArrowSource::open(&p, "m#name", Some("name")).err().unwrap();
        assert!(matches!(e, Error::Column { .. }));
        let e = e.to_string();
        assert!(e.contains("not numeric") && e.contains("Utf8"), "{e}");
    }

    #[test]
    fn compressed_batches_read() {
        let dir = tempfile::tempdir().unwrap();
        for (codec, name) in [
            (CompressionType::LZ4_FRAME, "lz4"),
            (CompressionType::ZSTD, "zstd"),
        ] {
            let p = dir.path().join(format!("{name}.arrow"));
            let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float32, false)]));
            let opts = arrow_ipc::writer::IpcWriteOptions::default()
                .try_with_compression(Some(codec))
                .unwrap();
            let mut w =
                FileWriter::try_new_with_options(File::create(&p).unwrap(), &schema, opts).unwrap();
            let vals: Vec<f32> = (0..1000).map(|i| (i % 17) as f32).collect();
            for part in vals.chunks(300) {
                let col: ArrayRef = Arc::new(PrimitiveArray::<Float32Type>::from(part.to_vec()));
                w.write(&RecordBatch::try_new(schema.clone(), vec![col]).unwrap())
                    .unwrap();
            }
            w.finish().unwrap();
            let src = ArrowSource::open(&p, name, None).unwrap();
            assert!(
                src.info()
                    .details
                    .contains(&("compression".into(), name.into()))
            );
            assert_eq!(bytemuck::cast_slice::<u8, f32>(&read_all(&src)), &vals[..]);
        }
    }

    #[test]
    fn compressed_buffer_sizes_are_bounded() {
        use arrow_array::builder::{ListBuilder, PrimitiveBuilder};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.arrow");
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                true,
            ),
            Field::new("v", DataType::Float64, false),
        ]));
        let opts = arrow_ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::ZSTD))
            .unwrap();
        let mut w =
            FileWriter::try_new_with_options(File::create(&p).unwrap(), &schema, opts).unwrap();
        for rows in [500usize, 200] {
            let mut lb = ListBuilder::new(PrimitiveBuilder::<Int32Type>::new());
            for i in 0..rows {
                lb.values().append_value(i as i32);
                lb.append(true);
            }
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("r{i}")),
                )),
                Arc::new(lb.finish()),
                Arc::new(Float64Array::from(vec![0.5; rows])),
            ];
            w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
                .unwrap();
        }
        w.finish().unwrap();

        let src = ArrowSource::open(&p, "c", Some("v")).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        for b in &src.batches {
            // The located values buffer declares exactly rows x 8 decompressed bytes.
            let (off, _) = b.column_buffers[1];
            let at = (b.offset + b.meta_len as u64 + off) as usize;
            let declared = i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            assert_eq!(declared as u64, b.rows * 8);
            bytes[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
        }
        assert_eq!(
            read_all(&src),
            bytemuck::cast_slice::<f64, u8>(&[0.5f64; 700])
        );
        let bad = dir.path().join("huge.arrow");
        std::fs::write(&bad, &bytes).unwrap();
        let src = ArrowSource::open(&bad, "huge", Some("v")).unwrap();
        let e = src.read_chunk(1).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("declares"), "{e}");
    }

    #[test]
    fn damaged_files_give_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ok.arrow");
        multi_column_file(&p);
        let good = std::fs::read(&p).unwrap();
        let bad = dir.path().join("bad.arrow");
        let try_read = |bytes: &[u8]| -> Result<()> {
            std::fs::write(&bad, bytes).unwrap();
            for col in ["a", "b", "flag"] {
                let src = ArrowSource::open(&bad, "bad", Some(col))?;
                for i in 0..src.info().layout.num_chunks() {
                    src.read_chunk(i)?;
                }
            }
            Ok(())
        };
        try_read(&good).unwrap();
        for cut in [
            0,
            3,
            6,
            8,
            17,
            100,
            good.len() / 2,
            good.len() - 11,
            good.len() - 1,
        ] {
            let e = try_read(&good[..cut]).unwrap_err().to_string();
            assert!(e.contains("bad.arrow"), "{e}");
        }
        // Flip bytes all over the file: every outcome is Ok or a typed error.
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..3000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut bytes = good.clone();
            let pos = (state >> 33) as usize % bytes.len();
            bytes[pos] ^= (state >> 8) as u8 | 1;
            if let Err(e) = try_read(&bytes) {
                assert!(e.to_string().contains("bad.arrow"), "{e}");
            }
        }
        let e = try_read(b"FEA1xxxxxxxxxxxxxxxxxxxxxxx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Feather v1"), "{e}");
        let e = try_read(b"\x93NUMPY").unwrap_err().to_string();
        assert!(e.contains("ARROW1"), "{e}");
    }
}
