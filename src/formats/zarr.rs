//! Zarr v3 directory stores: `zarr.json` metadata, chunk key encodings, chunk reads (memory-mapped
//! when uncompressed, decoded into an owned buffer otherwise) and a streaming writer.
//!
//! Supported: `bool`, `int8`..`int64`, `uint8`..`uint64`, `float32`, `float64` arrays on a
//! `regular` chunk grid, with the `default` or `v2` chunk key encoding and a codec pipeline of
//! `bytes` (little- or big-endian) followed by any number of `zstd` / `gzip` codecs. Everything
//! else (`transpose`, `sharding_indexed`, `blosc`, `crc32c`, storage transformers...) is reported
//! as [`Error::Unsupported`] naming the feature.
//!
//! Stored chunks always have the full chunk shape (edge chunks are padded with the fill value);
//! [`ZarrSource::read_chunk`] clips them to the array and converts them to native byte order. A
//! chunk file that does not exist reads as the fill value.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::dtype::{ByteOrder, DType, swap_bytes_in_place};
use crate::error::{Error, Result};
use crate::formats::DEFAULT_CHUNK_BYTES;
use crate::shape::{ChunkLayout, Region, checked_numel, copy_box, shape_str};
use crate::storage::atomic::AtomicDir;
use crate::storage::mmap::MmapWindow;
use crate::storage::{
    ArrayWriter, Buffer, Chunk, ChunkSource, Codec, Format, SourceInfo, WriteOptions,
};

/// The metadata document of a Zarr v3 node.
pub const METADATA_FILE: &str = "zarr.json";

// ------------------------------------------------------------------------------------------------
// Metadata
// ------------------------------------------------------------------------------------------------

/// How chunk grid coordinates become file names inside the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEncoding {
    /// `c/1/2` (or `c.1.2` with the `.` separator); a 0-d array's chunk is `c`.
    Default {
        /// `'/'` (the default) or `'.'`.
        separator: char,
    },
    /// Zarr v2 style `1.2` (or `1/2`); a 0-d array's chunk is `0`.
    V2 {
        /// `'.'` (the default) or `'/'`.
        separator: char,
    },
}

impl KeyEncoding {
    /// The key (path relative to the store root) of the chunk at grid coordinates `coords`.
    pub fn key(&self, coords: &[u64]) -> String {
        let (prefix, sep) = match *self {
            KeyEncoding::Default { separator } => (Some("c"), separator),
            KeyEncoding::V2 { separator } => (None, separator),
        };
        let mut key = String::new();
        if let Some(p) = prefix {
            key.push_str(p);
        }
        for c in coords {
            if !key.is_empty() {
                key.push(sep);
            }
            key.push_str(&c.to_string());
        }
        if key.is_empty() {
            key.push('0'); // a 0-d array under the v2 encoding
        }
        key
    }
}

impl fmt::Display for KeyEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyEncoding::Default { separator } => write!(f, "default (separator {separator:?})"),
            KeyEncoding::V2 { separator } => write!(f, "v2 (separator {separator:?})"),
        }
    }
}

/// A bytes-to-bytes codec applied after the `bytes` serializer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesCodec {
    /// Zstandard.
    Zstd {
        /// Compression level the writer used.
        level: i32,
        /// Whether frames carry a content checksum.
        checksum: bool,
    },
    /// gzip (the RFC 1952 container around DEFLATE).
    Gzip {
        /// Compression level the writer used.
        level: u32,
    },
}

impl fmt::Display for BytesCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BytesCodec::Zstd { level, checksum } => {
                write!(f, "zstd(level {level}")?;
                if *checksum {
                    f.write_str(", checksum")?;
                }
                f.write_str(")")
            }
            BytesCodec::Gzip { level } => write!(f, "gzip(level {level})"),
        }
    }
}

/// The parsed `zarr.json` of an array.
#[derive(Clone, Debug, PartialEq)]
pub struct ZarrMetadata {
    /// Array shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Shape of every stored chunk.
    pub chunk_shape: Vec<u64>,
    /// How chunk coordinates map to keys.
    pub key_encoding: KeyEncoding,
    /// Byte order of stored elements (from the `bytes` codec).
    pub byte_order: ByteOrder,
    /// Whether the `bytes` codec named an `endian` (it may be omitted for 1-byte types).
    pub endian_given: bool,
    /// Bytes-to-bytes codecs, in encoding order (decoding runs them in reverse).
    pub codecs: Vec<BytesCodec>,
    /// The fill value as one element in native byte order.
    pub fill_value: Vec<u8>,
    /// The fill value as written in `zarr.json`.
    pub fill_value_json: Value,
}

impl ZarrMetadata {
    /// The codec pipeline for display: `bytes(little) + zstd(level 0)`.
    pub fn describe_codecs(&self) -> String {
        let mut s = if self.endian_given {
            format!("bytes({})", self.byte_order.name())
        } else {
            "bytes".to_string()
        };
        for c in &self.codecs {
            s.push_str(&format!(" + {c}"));
        }
        s
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Error helpers for one `zarr.json`: every message names the file and the field.
struct Doc<'a> {
    path: &'a Path,
}

impl Doc<'_> {
    fn corrupt(&self, what: String) -> Error {
        Error::corrupt(self.path, what)
    }

    fn unsupported(&self, what: String) -> Error {
        Error::unsupported(self.path, what)
    }

    /// `field "NAME": expected EXPECTED, found VALUE`.
    fn bad(&self, name: &str, expected: &str, found: &Value) -> Error {
        self.corrupt(format!(
            "field \"{name}\": expected {expected}, found {found}"
        ))
    }

    /// The required member `name` of `obj`; `ctx` is the dotted path of `obj` (`""` for the
    /// root, `"chunk_grid."`...).
    fn field<'v>(&self, obj: &'v Map<String, Value>, ctx: &str, name: &str) -> Result<&'v Value> {
        obj.get(name)
            .ok_or_else(|| self.corrupt(format!("missing field \"{ctx}{name}\"")))
    }

    /// The required member `name` of `obj`, which must be an object.
    fn object<'v>(
        &self,
        obj: &'v Map<String, Value>,
        ctx: &str,
        name: &str,
    ) -> Result<&'v Map<String, Value>> {
        let v = self.field(obj, ctx, name)?;
        v.as_object()
            .ok_or_else(|| self.bad(&format!("{ctx}{name}"), "an object", v))
    }

    /// A JSON array of non-negative integers.
    fn u64_list(&self, name: &str, v: &Value) -> Result<Vec<u64>> {
        let bad = || self.bad(name, "an array of non-negative integers", v);
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|d| d.as_u64().ok_or_else(bad))
            .collect()
    }
}

/// Parses the text of an array's `zarr.json`. `path` (the `zarr.json` file) only names it in
/// errors; a group is rejected with a hint to name an array inside it.
pub fn parse_metadata(path: &Path, text: &str) -> Result<ZarrMetadata> {
    let doc = Doc { path };
    let json: Value = serde_json::from_str(text).map_err(|e| {
        doc.corrupt(format!(
            "invalid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let root = json.as_object().ok_or_else(|| {
        doc.corrupt(format!(
            "expected a JSON object, found {}",
            type_name(&json)
        ))
    })?;

    match doc.field(root, "", "zarr_format")? {
        Value::Number(n) if n.as_u64() == Some(3) => {}
        Value::Number(n) => {
            return Err(doc.unsupported(format!(
                "zarr_format {n}; only Zarr v3 (zarr_format 3) is read"
            )));
        }
        v => return Err(doc.bad("zarr_format", "the number 3", v)),
    }
    match doc.field(root, "", "node_type")? {
        Value::String(s) if s == "array" => {}
        Value::String(s) if s == "group" => {
            return Err(group_error(path.parent().unwrap_or(Path::new("."))));
        }
        v => return Err(doc.bad("node_type", "\"array\"", v)),
    }

    let shape = doc.u64_list("shape", doc.field(root, "", "shape")?)?;
    checked_numel(&shape).map_err(|e| doc.corrupt(format!("field \"shape\": {e}")))?;

    let dtype = match doc.field(root, "", "data_type")? {
        Value::String(s) => DType::from_zarr_name(s).ok_or_else(|| {
            doc.unsupported(format!(
                "data type {s:?} (supported: bool, int8-int64, uint8-uint64, float32, float64)"
            ))
        })?,
        Value::Object(o) => {
            let name = o.get("name").map(|n| n.to_string()).unwrap_or_default();
            return Err(doc.unsupported(format!("extension data type {name}")));
        }
        v => return Err(doc.bad("data_type", "a data type name", v)),
    };

    let chunk_shape = parse_chunk_grid(&doc, root, &shape, dtype)?;
    let key_encoding = parse_key_encoding(&doc, root)?;
    let fill_value_json = doc.field(root, "", "fill_value")?.clone();
    let fill_value = parse_fill_value(path, dtype, &fill_value_json)?;
    let (byte_order, endian_given, codecs) = parse_codecs(&doc, root, dtype)?;

    match root.get("storage_transformers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(st @ Value::Array(_)) => {
            return Err(doc.unsupported(format!("storage transformers {st}")));
        }
        Some(v) => return Err(doc.bad("storage_transformers", "an array", v)),
    }

    Ok(ZarrMetadata {
        shape,
        dtype,
        chunk_shape,
        key_encoding,
        byte_order,
        endian_given,
        codecs,
        fill_value,
        fill_value_json,
    })
}

/// `chunk_grid`: a `regular` grid whose chunk shape fits the array and memory.
fn parse_chunk_grid(
    doc: &Doc<'_>,
    root: &Map<String, Value>,
    shape: &[u64],
    dtype: DType,
) -> Result<Vec<u64>> {
    let grid = doc.object(root, "", "chunk_grid")?;
    match doc.field(grid, "chunk_grid.", "name")? {
        Value::String(s) if s == "regular" => {}
        Value::String(s) => {
            return Err(
                doc.unsupported(format!("chunk grid {s:?} (only \"regular\" is supported)"))
            );
        }
        v => return Err(doc.bad("chunk_grid.name", "a string", v)),
    }
    let conf = doc.object(grid, "chunk_grid.", "configuration")?;
    let name = "chunk_grid.configuration.chunk_shape";
    let chunk_shape = doc.u64_list(
        name,
        doc.field(conf, "chunk_grid.configuration.", "chunk_shape")?,
    )?;
    if chunk_shape.len() != shape.len() {
        return Err(doc.corrupt(format!(
            "field \"{name}\": {chunk_shape:?} has {} dimensions, but shape {} has {}",
            chunk_shape.len(),
            shape_str(shape),
            shape.len()
        )));
    }
    if chunk_shape.contains(&0) {
        return Err(doc.corrupt(format!(
            "field \"{name}\": {chunk_shape:?} has a zero entry"
        )));
    }
    let chunk_bytes = checked_numel(&chunk_shape)
        .ok()
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .filter(|&b| b <= isize::MAX as u64);
    if chunk_bytes.is_none() {
        return Err(doc.unsupported(format!(
            "chunk shape {} is too large to hold in memory",
            shape_str(&chunk_shape)
        )));
    }
    Ok(chunk_shape)
}

/// `chunk_key_encoding`: `default` (separator `/` unless given) or `v2` (separator `.`).
fn parse_key_encoding(doc: &Doc<'_>, root: &Map<String, Value>) -> Result<KeyEncoding> {
    let kenc = doc.object(root, "", "chunk_key_encoding")?;
    let separator = match kenc.get("configuration") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => match c.get("separator") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "/" => Some('/'),
            Some(Value::String(s)) if s == "." => Some('.'),
            Some(v) => {
                return Err(doc.bad(
                    "chunk_key_encoding.configuration.separator",
                    "\"/\" or \".\"",
                    v,
                ));
            }
        },
        Some(v) => return Err(doc.bad("chunk_key_encoding.configuration", "an object", v)),
    };
    match doc.field(kenc, "chunk_key_encoding.", "name")? {
        Value::String(s) if s == "default" => Ok(KeyEncoding::Default {
            separator: separator.unwrap_or('/'),
        }),
        Value::String(s) if s == "v2" => Ok(KeyEncoding::V2 {
            separator: separator.unwrap_or('.'),
        }),
        Value::String(s) => Err(doc.unsupported(format!(
            "chunk key encoding {s:?} (supported: \"default\", \"v2\")"
        ))),
        v => Err(doc.bad("chunk_key_encoding.name", "a string", v)),
    }
}

/// `codecs`: exactly one `bytes` serializer followed by `zstd` / `gzip` codecs. Returns the byte
/// order, whether it was given explicitly, and the bytes-to-bytes codecs in encoding order.
fn parse_codecs(
    doc: &Doc<'_>,
    root: &Map<String, Value>,
    dtype: DType,
) -> Result<(ByteOrder, bool, Vec<BytesCodec>)> {
    let list = doc.field(root, "", "codecs")?;
    let list = list
        .as_array()
        .ok_or_else(|| doc.bad("codecs", "an array", list))?;
    let mut serializer: Option<(ByteOrder, bool)> = None;
    let mut codecs = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let ctx = format!("codecs[{i}]");
        let (name, conf) = match c {
            Value::String(s) => (s.as_str(), None),
            Value::Object(o) => match o.get("name") {
                Some(Value::String(s)) => match o.get("configuration") {
                    None | Some(Value::Null) => (s.as_str(), None),
                    Some(Value::Object(conf)) => (s.as_str(), Some(conf)),
                    Some(v) => {
                        return Err(doc.bad(&format!("{ctx}.configuration"), "an object", v));
                    }
                },
                Some(v) => return Err(doc.bad(&format!("{ctx}.name"), "a string", v)),
                None => return Err(doc.corrupt(format!("missing field \"{ctx}.name\""))),
            },
            v => return Err(doc.bad(&ctx, "a codec object", v)),
        };
        let setting = |key: &str| conf.and_then(|o| o.get(key)).filter(|v| !v.is_null());
        match name {
            "bytes" => {
                if serializer.is_some() {
                    return Err(doc.corrupt(format!(
                        "field \"codecs\": {ctx} is a second array->bytes codec \"bytes\""
                    )));
                }
                serializer = Some(match setting("endian") {
                    None if dtype.size() == 1 => (ByteOrder::Little, false),
                    None => {
                        return Err(doc.corrupt(format!(
                            "missing field \"{ctx}.configuration.endian\" (required for {})",
                            dtype.zarr_name()
                        )));
                    }
                    Some(Value::String(s)) if s == "little" => (ByteOrder::Little, true),
                    Some(Value::String(s)) if s == "big" => (ByteOrder::Big, true),
                    Some(v) => {
                        let field = format!("{ctx}.configuration.endian");
                        return Err(doc.bad(&field, "\"little\" or \"big\"", v));
                    }
                });
            }
            "zstd" | "gzip" => {
                if serializer.is_none() {
                    return Err(doc.corrupt(format!(
                        "field \"codecs\": bytes->bytes codec {name:?} ({ctx}) comes before the \
                         array->bytes codec \"bytes\""
                    )));
                }
                let level = match setting("level") {
                    None => None,
                    Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.as_i64(),
                    Some(v) => {
                        return Err(doc.bad(
                            &format!("{ctx}.configuration.level"),
                            "an integer",
                            v,
                        ));
                    }
                };
                codecs.push(if name == "zstd" {
                    BytesCodec::Zstd {
                        level: level.unwrap_or(0).clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                        checksum: matches!(setting("checksum"), Some(Value::Bool(true))),
                    }
                } else {
                    BytesCodec::Gzip {
                        level: level.unwrap_or(5).clamp(0, 9) as u32,
                    }
                });
            }
            other => {
                return Err(doc.unsupported(format!(
                    "codec {other:?} ({ctx}); supported codecs are \"bytes\", \"zstd\" and \"gzip\""
                )));
            }
        }
    }
    let (byte_order, endian_given) = serializer.ok_or_else(|| {
        doc.corrupt("field \"codecs\" has no array->bytes codec (expected \"bytes\")".into())
    })?;
    Ok((byte_order, endian_given, codecs))
}

/// The error for opening a group: names the arrays directly inside it, if any.
fn group_error(store: &Path) -> Error {
    let mut arrays: Vec<String> = std::fs::read_dir(store)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join(METADATA_FILE))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v.get("node_type").and_then(Value::as_str) == Some("array"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    arrays.sort();
    let hint = match arrays.first() {
        Some(first) => format!(
            "; name an array inside it, e.g. {} (arrays here: {})",
            store.join(first).display(),
            arrays.join(", ")
        ),
        None => format!(
            "; name an array inside it, e.g. {}",
            store.join("ARRAY").display()
        ),
    };
    Error::unsupported(store, format!("this is a Zarr group, not an array{hint}"))
}

fn int_fill<T: TryFrom<i128> + bytemuck::Pod>(v: i128) -> Option<Vec<u8>> {
    T::try_from(v).ok().map(|t| bytemuck::bytes_of(&t).to_vec())
}

/// Parses `fill_value` for `dtype` into one native-order element.
fn parse_fill_value(path: &Path, dtype: DType, v: &Value) -> Result<Vec<u8>> {
    let bad = || {
        Error::corrupt(
            path,
            format!(
                "field \"fill_value\": {v} is not a valid {} value",
                dtype.zarr_name()
            ),
        )
    };
    if v.is_null() {
        return Ok(vec![0u8; dtype.size()]);
    }
    match dtype {
        DType::Bool => match v {
            Value::Bool(b) => Ok(vec![u8::from(*b)]),
            Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Ok(vec![u8::from(n.as_u64() == Some(1))])
            }
            _ => Err(bad()),
        },
        DType::F32 | DType::F64 => {
            let f: f64 = match v {
                Value::Number(n) => n.as_f64().ok_or_else(bad)?,
                Value::String(s) => match s.as_str() {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    hex => {
                        let digits = hex.strip_prefix("0x").ok_or_else(bad)?;
                        if digits.len() != 2 * dtype.size() {
                            return Err(bad());
                        }
                        let bits = u64::from_str_radix(digits, 16).map_err(|_| bad())?;
                        return Ok(if dtype == DType::F32 {
                            f32::from_bits(bits as u32).to_ne_bytes().to_vec()
                        } else {
                            f64::from_bits(bits).to_ne_bytes().to_vec()
                        });
                    }
                },
                _ => return Err(bad()),
            };
            Ok(if dtype == DType::F32 {
                (f as f32).to_ne_bytes().to_vec()
            } else {
                f.to_ne_bytes().to_vec()
            })
        }
        _ => {
            let Value::Number(n) = v else {
                return Err(bad());
            };
            let i: i128 = if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 1.9e19 => f as i128,
                    _ => return Err(bad()),
                }
            };
            let bytes = match dtype {
                DType::I8 => int_fill::<i8>(i),
                DType::I16 => int_fill::<i16>(i),
                DType::I32 => int_fill::<i32>(i),
                DType::I64 => int_fill::<i64>(i),
                DType::U8 => int_fill::<u8>(i),
                DType::U16 => int_fill::<u16>(i),
                DType::U32 => int_fill::<u32>(i),
                DType::U64 => int_fill::<u64>(i),
                DType::Bool | DType::F32 | DType::F64 => None,
            };
            bytes.ok_or_else(bad)
        }
    }
}

/// A buffer of `len` bytes holding `elem` repeated.
fn filled(len: usize, elem: &[u8]) -> Result<Buffer> {
    let mut b = Buffer::zeroed(len)?;
    if elem.iter().any(|&x| x != 0) {
        for c in b.bytes_mut().chunks_exact_mut(elem.len()) {
            c.copy_from_slice(elem);
        }
    }
    Ok(b)
}

// ------------------------------------------------------------------------------------------------
// Read path
// ------------------------------------------------------------------------------------------------

/// A Zarr v3 array store opened for reading.
pub struct ZarrSource {
    info: SourceInfo,
    meta: ZarrMetadata,
    /// Bytes of one stored (full-shape) chunk.
    chunk_bytes: usize,
}

impl ZarrSource {
    /// Opens the store directory `path` and parses its `zarr.json`. `name` is how the user named
    /// it.
    pub fn open(path: &Path, name: &str) -> Result<ZarrSource> {
        let jp = path.join(METADATA_FILE);
        let text = std::fs::read_to_string(&jp).map_err(|e| Error::io(&jp, "read", e))?;
        let meta = parse_metadata(&jp, &text)?;
        let layout = ChunkLayout::regular(&meta.shape, &meta.chunk_shape)
            .map_err(|e| Error::corrupt(&jp, e.to_string()))?;
        let chunk_bytes = (crate::shape::numel(&meta.chunk_shape) as usize) * meta.dtype.size();

        // What is on disk: one stat per chunk, in parallel.
        let n = layout.num_chunks();
        let (present, stored_bytes) = (0..n)
            .into_par_iter()
            .map(|i| {
                let key = meta.key_encoding.key(&layout.chunk_coords(i));
                match std::fs::metadata(path.join(key)) {
                    Ok(m) if m.is_file() => (1usize, m.len()),
                    _ => (0, 0),
                }
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));

        let info = SourceInfo {
            name: name.to_string(),
            path: path.to_path_buf(),
            format: Format::Zarr,
            dtype: meta.dtype,
            shape: meta.shape.clone(),
            layout,
            byte_order: meta.byte_order,
            stored_bytes,
            details: vec![
                ("chunk key encoding".into(), meta.key_encoding.to_string()),
                ("codecs".into(), meta.describe_codecs()),
                ("fill value".into(), meta.fill_value_json.to_string()),
                ("chunks present".into(), format!("{present} of {n}")),
            ],
        };
        Ok(ZarrSource {
            info,
            meta,
            chunk_bytes,
        })
    }

    /// The parsed metadata.
    pub fn metadata(&self) -> &ZarrMetadata {
        &self.meta
    }

    /// The path of the file holding chunk `index` (which may not exist).
    pub fn chunk_path(&self, index: usize) -> PathBuf {
        let coords = self.info.layout.chunk_coords(index);
        self.info.path.join(self.meta.key_encoding.key(&coords))
    }

    /// Reads and decodes the whole stored chunk at `cpath` (full chunk shape, stored byte order).
    /// `None` when the file does not exist.
    fn load_stored(&self, cpath: &Path) -> Result<Option<Buffer>> {
        let expected = self.chunk_bytes;
        let file = match File::open(cpath) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(cpath, "open", e)),
        };
        let stat = file.metadata().map_err(|e| Error::io(cpath, "stat", e))?;
        if !stat.is_file() {
            return Err(Error::corrupt(
                cpath,
                "expected a chunk file, found a directory or special file",
            ));
        }
        if self.meta.codecs.is_empty() {
            if stat.len() != expected as u64 {
                return Err(self.size_error(cpath, stat.len(), "file size"));
            }
            let window = MmapWindow::map(&file, cpath, 0, expected)?;
            return Ok(Some(Buffer::shared(Box::new(window))?));
        }
        let mut raw = Vec::with_capacity(stat.len().min(1 << 30) as usize);
        (&file)
            .read_to_end(&mut raw)
            .map_err(|e| Error::io(cpath, "read", e))?;
        // The chunk shape comes from zarr.json; make an absurd one a typed error rather than an
        // allocation failure (which aborts). Typical chunks are far below the threshold.
        if expected > 1 << 30
            && Vec::<u64>::new()
                .try_reserve_exact(expected.div_ceil(8))
                .is_err()
        {
            return Err(Error::unsupported(
                cpath,
                format!(
                    "cannot allocate {expected} bytes to decode a chunk of shape {}",
                    shape_str(&self.meta.chunk_shape)
                ),
            ));
        }
        let mut out = Buffer::zeroed(expected)?;
        self.decode_into(cpath, &raw, out.bytes_mut())?;
        Ok(Some(out))
    }

    /// Runs the bytes-to-bytes codecs backwards over `raw`, filling `out` exactly.
    fn decode_into(&self, cpath: &Path, raw: &[u8], out: &mut [u8]) -> Result<()> {
        let names = self
            .meta
            .codecs
            .iter()
            .rev()
            .map(|c| match c {
                BytesCodec::Zstd { .. } => "zstd",
                BytesCodec::Gzip { .. } => "gzip",
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let corrupt = |e: io::Error| Error::corrupt(cpath, format!("corrupt {names} data: {e}"));
        let mut reader: Box<dyn Read + '_> = Box::new(raw);
        for c in self.meta.codecs.iter().rev() {
            reader = match c {
                BytesCodec::Zstd { .. } => {
                    Box::new(zstd::stream::read::Decoder::new(reader).map_err(corrupt)?)
                }
                BytesCodec::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            };
        }
        let mut filled = 0usize;
        while filled < out.len() {
            match reader.read(&mut out[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(corrupt(e)),
            }
        }
        let extra = if filled == out.len() {
            io::copy(&mut reader, &mut io::sink()).map_err(corrupt)?
        } else {
            0
        };
        let found = filled as u64 + extra;
        if found != out.len() as u64 {
            return Err(self.size_error(cpath, found, "decoded size"));
        }
        Ok(())
    }

    /// The error for a stored chunk whose (decoded) size is not the full chunk size.
    fn size_error(&self, cpath: &Path, found: u64, what: &str) -> Error {
        let expected = self.chunk_bytes as u64;
        let kind = if found < expected {
            "short chunk"
        } else {
            "oversized chunk"
        };
        Error::corrupt(
            cpath,
            format!(
                "{kind}: {what} is {found} bytes, expected {expected} (chunk shape {} x {} bytes)",
                shape_str(&self.meta.chunk_shape),
                self.meta.dtype.size()
            ),
        )
    }
}

impl ChunkSource for ZarrSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        let layout = &self.info.layout;
        let n = layout.num_chunks();
        if index >= n {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} out of range ({n} chunks)",
                self.info.path.display()
            )));
        }
        let region = layout.chunk_region(index);
        let dtype = self.info.dtype;
        let elem = dtype.size();
        let cpath = self.chunk_path(index);
        let Some(stored) = self.load_stored(&cpath)? else {
            return Ok(Chunk {
                data: filled(region.numel() as usize * elem, &self.meta.fill_value)?,
                region,
                dtype,
            });
        };
        let mut data = if region.shape == self.meta.chunk_shape {
            stored
        } else {
            let full = Region {
                origin: region.origin.clone(),
                shape: self.meta.chunk_shape.clone(),
            };
            let mut out = Buffer::zeroed(region.numel() as usize * elem)?;
            copy_box(
                stored.bytes(),
                &full,
                out.bytes_mut(),
                &region,
                &region,
                elem,
            );
            out
        };
        if self.meta.byte_order != ByteOrder::NATIVE && elem > 1 {
            swap_bytes_in_place(data.bytes_mut(), dtype);
        }
        Ok(Chunk {
            region,
            dtype,
            data,
        })
    }

    /// Each chunk straight into `out`: a copy out of a store (a settled matrix product into a
    /// `.npy`) holds the output's memory and one chunk, not a second region-sized buffer.
    fn read_region_into(&self, region: &Region, out: &mut [u8]) -> Result<()> {
        crate::storage::assemble_region_into(self, region, out)
    }
}

// ------------------------------------------------------------------------------------------------
// Write path
// ------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ArrayMetadataOut<'a> {
    zarr_format: u32,
    node_type: &'static str,
    shape: &'a [u64],
    data_type: &'static str,
    chunk_grid: NamedConfig<ChunkShapeConfig<'a>>,
    chunk_key_encoding: NamedConfig<SeparatorConfig>,
    fill_value: Value,
    codecs: Vec<CodecOut>,
    attributes: Map<String, Value>,
    storage_transformers: [(); 0],
}

#[derive(Serialize)]
struct NamedConfig<C> {
    name: &'static str,
    configuration: C,
}

#[derive(Serialize)]
struct ChunkShapeConfig<'a> {
    chunk_shape: &'a [u64],
}

#[derive(Serialize)]
struct SeparatorConfig {
    separator: &'static str,
}

#[derive(Serialize)]
struct CodecOut {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration: Option<CodecConfig>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum CodecConfig {
    Bytes { endian: &'static str },
    Zstd { level: i32, checksum: bool },
    Gzip { level: u32 },
}

/// The `zarr.json` our writer produces, laid out as zarr-python 3 writes it (fill value zero,
/// `default` key encoding with `/`, little-endian `bytes` plus the chosen compressor).
pub fn metadata_json(dtype: DType, shape: &[u64], chunk_shape: &[u64], codec: Codec) -> String {
    let fill_value = match dtype {
        DType::Bool => Value::Bool(false),
        DType::F32 | DType::F64 => Value::from(0.0f64),
        _ => Value::from(0u64),
    };
    let mut codecs = vec![CodecOut {
        name: "bytes",
        // zarr-python omits the endianness of 1-byte types.
        configuration: (dtype.size() > 1).then_some(CodecConfig::Bytes { endian: "little" }),
    }];
    match codec {
        Codec::None => {}
        Codec::Zstd(level) => codecs.push(CodecOut {
            name: "zstd",
            configuration: Some(CodecConfig::Zstd {
                level,
                checksum: false,
            }),
        }),
        Codec::Gzip(level) => codecs.push(CodecOut {
            name: "gzip",
            configuration: Some(CodecConfig::Gzip { level }),
        }),
    }
    let doc = ArrayMetadataOut {
        zarr_format: 3,
        node_type: "array",
        shape,
        data_type: dtype.zarr_name(),
        chunk_grid: NamedConfig {
            name: "regular",
            configuration: ChunkShapeConfig { chunk_shape },
        },
        chunk_key_encoding: NamedConfig {
            name: "default",
            configuration: SeparatorConfig { separator: "/" },
        },
        fill_value,
        codecs,
        attributes: Map::new(),
        storage_transformers: [],
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// Streams an array into a new Zarr v3 store (a temporary directory beside the target until
/// [`ArrayWriter::finish`]).
pub struct ZarrWriter {
    dir: AtomicDir,
    layout: ChunkLayout,
    dtype: DType,
    chunk_shape: Vec<u64>,
    codec: Codec,
    key_encoding: KeyEncoding,
    metadata: String,
    /// The next chunk [`ArrayWriter::write`] expects (it takes them in index order).
    next: AtomicUsize,
    /// Which chunks are stored, by either entry point.
    written: Vec<AtomicBool>,
    /// How many of them.
    count: AtomicUsize,
}

impl ZarrWriter {
    /// Starts writing a store of `dtype` and `shape` at `path`, chunked by `options.chunks`
    /// (default: contiguous chunks of about [`DEFAULT_CHUNK_BYTES`]) and compressed with
    /// `options.codec`.
    pub fn create(
        path: &Path,
        dtype: DType,
        shape: &[u64],
        options: &WriteOptions,
    ) -> Result<ZarrWriter> {
        checked_numel(shape)?;
        let invalid = |what: String| Error::Invalid(format!("{}: {what}", path.display()));
        let layout = match &options.chunks {
            Some(chunks) => {
                ChunkLayout::regular(shape, chunks).map_err(|e| invalid(e.to_string()))?
            }
            None => ChunkLayout::contiguous(shape, dtype.size(), DEFAULT_CHUNK_BYTES),
        };
        let chunk_shape = match &layout {
            ChunkLayout::Regular { chunk_shape, .. } => chunk_shape.clone(),
            ChunkLayout::Ranges { .. } => unreachable!("built as a regular grid above"),
        };
        let chunk_bytes = checked_numel(&chunk_shape)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size() as u64));
        if chunk_bytes.is_none_or(|b| b > isize::MAX as u64) {
            return Err(invalid(format!(
                "chunk shape {} is too large",
                shape_str(&chunk_shape)
            )));
        }
        match options.codec {
            Codec::Zstd(l) if !zstd::compression_level_range().contains(&l) => {
                return Err(invalid(format!(
                    "zstd level {l} is out of range {:?}",
                    zstd::compression_level_range()
                )));
            }
            Codec::Gzip(l) if l > 9 => {
                return Err(invalid(format!("gzip level {l} is out of range 0..=9")));
            }
            _ => {}
        }
        let metadata = metadata_json(dtype, shape, &chunk_shape, options.codec);
        let layout_chunks = layout.num_chunks();
        Ok(ZarrWriter {
            dir: AtomicDir::create(path)?,
            layout,
            dtype,
            chunk_shape,
            codec: options.codec,
            key_encoding: KeyEncoding::Default { separator: '/' },
            metadata,
            next: AtomicUsize::new(0),
            written: (0..layout_chunks).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicUsize::new(0),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        self.dir.target()
    }

    fn chunk_target(&self, index: usize) -> PathBuf {
        let key = self.key_encoding.key(&self.layout.chunk_coords(index));
        self.dir.target().join(key)
    }
}

impl ArrayWriter for ZarrWriter {
    fn layout(&self) -> &ChunkLayout {
        &self.layout
    }

    fn encode<'a>(&self, index: usize, data: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        let n = self.layout.num_chunks();
        if index >= n {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} out of range ({n} chunks)",
                self.path().display()
            )));
        }
        let elem = self.dtype.size();
        let region = self.layout.chunk_region(index);
        let expected = region.numel() as usize * elem;
        if data.len() != expected {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} has {} bytes, expected {expected} for region {}",
                self.chunk_target(index).display(),
                data.len(),
                shape_str(&region.shape)
            )));
        }
        // Pad edge chunks to the full chunk shape with the fill value (zero).
        let mut bytes: Cow<'a, [u8]> = if region.shape == self.chunk_shape {
            Cow::Borrowed(data)
        } else {
            let full = Region {
                origin: region.origin.clone(),
                shape: self.chunk_shape.clone(),
            };
            let mut out = vec![0u8; crate::shape::numel(&self.chunk_shape) as usize * elem];
            copy_box(data, &region, &mut out, &full, &region, elem);
            Cow::Owned(out)
        };
        if ByteOrder::NATIVE != ByteOrder::Little && elem > 1 {
            swap_bytes_in_place(bytes.to_mut(), self.dtype);
        }
        let target = || self.chunk_target(index);
        Ok(match self.codec {
            Codec::None => bytes,
            Codec::Zstd(level) => Cow::Owned(
                zstd::bulk::compress(&bytes, level)
                    .map_err(|e| Error::io(target(), "zstd-compress", e))?,
            ),
            Codec::Gzip(level) => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(bytes.len() / 2),
                    flate2::Compression::new(level),
                );
                enc.write_all(&bytes)
                    .map_err(|e| Error::io(target(), "gzip-compress", e))?;
                Cow::Owned(
                    enc.finish()
                        .map_err(|e| Error::io(target(), "gzip-compress", e))?,
                )
            }
        })
    }

    fn write(&self, index: usize, encoded: &[u8]) -> Result<()> {
        let next = self.next.load(Ordering::Acquire);
        if index != next || index >= self.layout.num_chunks() {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} written out of order (expected {} of {})",
                self.path().display(),
                next,
                self.layout.num_chunks()
            )));
        }
        self.next.store(next + 1, Ordering::Release);
        self.write_at(index, encoded)
    }

    /// Every chunk is a file of its own, so chunks may be stored from any thread in any order.
    fn positional(&self) -> bool {
        true
    }

    fn write_at(&self, index: usize, encoded: &[u8]) -> Result<()> {
        let n = self.layout.num_chunks();
        let Some(flag) = self.written.get(index) else {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} out of range ({n} chunks)",
                self.path().display()
            )));
        };
        if flag.swap(true, Ordering::AcqRel) {
            return Err(Error::Invalid(format!(
                "{}: chunk {index} written twice",
                self.chunk_target(index).display()
            )));
        }
        let key = self.key_encoding.key(&self.layout.chunk_coords(index));
        self.dir.write_file(&key, encoded)?;
        self.count.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let n = self.layout.num_chunks();
        let written = self.count.load(Ordering::Acquire);
        if written != n {
            return Err(Error::Invalid(format!(
                "{}: {written} of {n} chunks written",
                self.path().display(),
            )));
        }
        self.dir
            .write_file(METADATA_FILE, self.metadata.as_bytes())?;
        self.dir.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL_DTYPES;
    use crate::generate::{Dist, GenSpec, generate, generate_region};

    fn gen_store(
        dir: &Path,
        name: &str,
        dtype: DType,
        shape: &[u64],
        chunks: Option<Vec<u64>>,
        codec: Codec,
    ) -> PathBuf {
        let path = dir.join(name);
        let dist = if dtype.is_float() {
            Dist::NORMAL
        } else {
            Dist::UNIFORM
        };
        let options = WriteOptions {
            chunks,
            codec,
            column: None,
            ..Default::default()
        };
        if path.extension().is_some_and(|e| e == "zarr") {
            // Through the format-agnostic entry point.
            let spec = GenSpec {
                shape: shape.to_vec(),
                dtype,
                dist,
                seed: 7,
                options,
            };
            generate(path.to_str().unwrap(), &spec).unwrap();
        } else {
            let w = ZarrWriter::create(&path, dtype, shape, &options).unwrap();
            crate::pipeline::write_all(Box::new(w), &crate::pipeline::no_progress, |r| {
                Ok(generate_region(shape, r, dtype, dist, 7).unwrap())
            })
            .unwrap();
        }
        path
    }

    /// Reads the store back chunk by chunk and whole, comparing with the generator.
    fn check_store(path: &Path, dtype: DType, shape: &[u64]) {
        let dist = if dtype.is_float() {
            Dist::NORMAL
        } else {
            Dist::UNIFORM
        };
        let src = ZarrSource::open(path, "x").unwrap();
        let info = src.info();
        assert_eq!(info.shape, shape);
        assert_eq!(info.dtype, dtype);
        assert_eq!(info.format, Format::Zarr);
        for i in 0..info.layout.num_chunks() {
            let c = src.read_chunk(i).unwrap();
            assert_eq!(c.region, info.layout.chunk_region(i));
            let want = generate_region(shape, &c.region, dtype, dist, 7).unwrap();
            assert_eq!(c.data.bytes(), want.bytes(), "chunk {i} of {shape:?}");
        }
        let whole = src.read_region(&Region::full(shape)).unwrap();
        let want = generate_region(shape, &Region::full(shape), dtype, dist, 7).unwrap();
        assert_eq!(whole.bytes(), want.bytes());
    }

    #[test]
    fn round_trip_shapes_dtypes_codecs() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&[u64], Option<Vec<u64>>)] = &[
            (&[10], Some(vec![3])),
            (&[7, 5], Some(vec![3, 2])),
            (&[4, 6, 5], Some(vec![2, 4, 3])),
            (&[4, 6], Some(vec![4, 6])),
            (&[5, 3], Some(vec![100, 100])),
            (&[], None),
            (&[], Some(vec![])),
            (&[0, 4], Some(vec![2, 2])),
            (&[0], None),
            (&[1000, 3], None),
        ];
        let mut k = 0;
        for codec in [Codec::None, Codec::Zstd(3), Codec::Gzip(6)] {
            for dtype in ALL_DTYPES {
                for (shape, chunks) in cases {
                    k += 1;
                    let p = gen_store(
                        dir.path(),
                        &format!("a{k}.zarr"),
                        dtype,
                        shape,
                        chunks.clone(),
                        codec,
                    );
                    check_store(&p, dtype, shape);
                }
            }
        }
    }

    /// Chunks stored in any order from any thread make the same store; a chunk stored twice, an
    /// index past the grid and a store missing a chunk are errors, and leave nothing behind.
    #[test]
    fn positional_writes_any_order_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let shape = [7u64, 5];
        let opts = WriteOptions {
            chunks: Some(vec![3, 2]),
            codec: Codec::Zstd(1),
            ..Default::default()
        };
        let data = |w: &ZarrWriter, i: usize| {
            let r = w.layout().chunk_region(i);
            generate_region(&shape, &r, DType::I32, Dist::UNIFORM, 7).unwrap()
        };
        let p = dir.path().join("p.zarr");
        let w = ZarrWriter::create(&p, DType::I32, &shape, &opts).unwrap();
        assert!(w.positional());
        let n = w.layout().num_chunks();
        let order: Vec<usize> = (0..n).rev().collect();
        std::thread::scope(|s| {
            for part in order.chunks(3) {
                let w = &w;
                s.spawn(move || {
                    for &i in part {
                        let d = data(w, i);
                        w.write_at(i, &w.encode(i, d.bytes()).unwrap()).unwrap();
                    }
                });
            }
        });
        let e = w.write_at(2, &w.encode(2, data(&w, 2).bytes()).unwrap());
        assert!(e.unwrap_err().to_string().contains("chunk 2 written twice"));
        let e = w.write_at(n, b"").unwrap_err().to_string();
        assert!(e.contains(&format!("chunk {n} out of range")), "{e}");
        Box::new(w).finish().unwrap();
        check_store(&p, DType::I32, &shape);

        let q = dir.path().join("q.zarr");
        let w = ZarrWriter::create(&q, DType::I32, &shape, &opts).unwrap();
        for i in [0, 3, 1] {
            w.write_at(i, &w.encode(i, data(&w, i).bytes()).unwrap())
                .unwrap();
        }
        let e = Box::new(w).finish().unwrap_err().to_string();
        assert!(e.contains(&format!("3 of {n} chunks written")), "{e}");
        assert!(!q.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn zero_copy_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = gen_store(
            dir.path(),
            "z.zarr",
            DType::F64,
            &[5, 4],
            Some(vec![2, 4]),
            Codec::None,
        );
        let src = ZarrSource::open(&p, "z").unwrap();
        assert_eq!(src.info().layout.grid_shape(), vec![3, 1]);
        assert!(p.join("c/0/0").is_file() && p.join("c/2/0").is_file());
        assert!(src.read_chunk(0).unwrap().data.is_shared());
        assert!(!src.read_chunk(2).unwrap().data.is_shared()); // edge chunk: clipped copy
        assert_eq!(std::fs::metadata(p.join("c/2/0")).unwrap().len(), 64); // padded
        assert_eq!(src.info().stored_bytes, 3 * 64);
        let d: std::collections::HashMap<_, _> = src.info().details.iter().cloned().collect();
        assert_eq!(d["codecs"], "bytes(little)");
        assert_eq!(d["chunks present"], "3 of 3");
        assert_eq!(d["fill value"], "0.0");
        assert!(src.read_chunk(3).is_err());

        let p = gen_store(
            dir.path(),
            "e.zarr",
            DType::U8,
            &[0, 3],
            None,
            Codec::Zstd(1),
        );
        let text = std::fs::read_to_string(p.join("zarr.json")).unwrap();
        assert!(text.contains("\"name\": \"bytes\"\n"), "{text}");
        assert_eq!(std::fs::read_dir(&p).unwrap().count(), 1);
        let d = ZarrSource::open(&p, "e").unwrap().info().details.clone();
        assert_eq!(d[1].1, "bytes + zstd(level 1)");
        let p = gen_store(dir.path(), "s.zarr", DType::I16, &[], None, Codec::None);
        assert!(p.join("c").is_file());
    }

    #[test]
    fn writer_rejects_bad_options() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.zarr");
        for chunks in [vec![2], vec![0, 2], vec![1, 2, 3]] {
            let opts = WriteOptions {
                chunks: Some(chunks),
                ..Default::default()
            };
            let e = ZarrWriter::create(&p, DType::F32, &[4, 4], &opts)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("bad.zarr") && e.contains("chunk shape"), "{e}");
        }
        let opts = WriteOptions {
            codec: Codec::Gzip(12),
            ..Default::default()
        };
        assert!(ZarrWriter::create(&p, DType::F32, &[4], &opts).is_err());
        // Nothing is left behind by writers that never finish.
        let w = ZarrWriter::create(&p, DType::F32, &[4], &WriteOptions::default()).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A store written by hand: `zarr.json` from `meta` plus the given chunk files.
    fn hand_store(dir: &Path, name: &str, meta: &Value, chunks: &[(&str, Vec<u8>)]) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("zarr.json"), meta.to_string()).unwrap();
        for (key, bytes) in chunks {
            let f = p.join(key);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, bytes).unwrap();
        }
        p
    }

    fn meta(dtype: &str, shape: &[u64], chunks: &[u64], fill: Value, codecs: Value) -> Value {
        serde_json::json!({
            "zarr_format": 3, "node_type": "array", "shape": shape, "data_type": dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": fill, "codecs": codecs, "attributes": {},
        })
    }

    fn open_err(p: &Path) -> String {
        ZarrSource::open(p, "x").err().unwrap().to_string()
    }

    #[test]
    fn missing_chunks_read_as_fill_value() {
        let dir = tempfile::tempdir().unwrap();
        let le = serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}]);
        let cases: Vec<(&str, Value, f64)> = vec![
            ("int32", Value::from(-7), -7.0),
            ("uint64", Value::from(u64::MAX), u64::MAX as f64),
            ("float32", Value::from("NaN"), f64::NAN),
            ("float64", Value::from("-Infinity"), f64::NEG_INFINITY),
            ("float64", Value::from("0x3ff8000000000000"), 1.5),
            ("float32", Value::from("0x3fc00000"), 1.5),
            ("float64", Value::from(2.5), 2.5),
            ("bool", Value::from(true), 1.0),
            ("int8", Value::Null, 0.0),
        ];
        for (k, (dt, fill, want)) in cases.into_iter().enumerate() {
            let m = meta(dt, &[5, 3], &[2, 2], fill, le.clone());
            let p = hand_store(dir.path(), &format!("f{k}.zarr"), &m, &[]);
            let src = ZarrSource::open(&p, "x").unwrap();
            assert_eq!(src.info().stored_bytes, 0);
            assert_eq!(src.info().details[3].1, "0 of 6");
            let c = src.read_chunk(5).unwrap();
            assert_eq!(c.region.shape, vec![1, 1]);
            let b = src.read_region(&Region::full(&[5, 3])).unwrap();
            let vals: Vec<f64> = crate::with_dtype!(src.info().dtype, T => {
                b.as_slice::<T>().iter().map(|&v| crate::Element::to_f64(v)).collect()
            });
            assert_eq!(vals.len(), 15);
            for v in vals {
                assert!(
                    v == want || (v.is_nan() && want.is_nan()),
                    "{dt}: {v} != {want}"
                );
            }
        }
        for (dt, fill) in [
            ("int8", Value::from(300)),
            ("uint8", Value::from(-1)),
            ("float32", Value::from("0x7ff8000000000000")),
            ("float64", Value::from("nan")),
            ("bool", Value::from("yes")),
            ("int32", Value::from(1.5)),
        ] {
            let m = meta(dt, &[5], &[2], fill, le.clone());
            let p = hand_store(dir.path(), "badfill.zarr", &m, &[]);
            let e = open_err(&p);
            assert!(e.contains("zarr.json") && e.contains("fill_value"), "{e}");
        }
    }

    #[test]
    fn big_endian_v2_keys_and_partial_stores() {
        let dir = tempfile::tempdir().unwrap();
        let be = serde_json::json!([{"name": "bytes", "configuration": {"endian": "big"}}]);
        let mut m = meta("int16", &[3, 3], &[2, 2], Value::from(9), be);
        m["chunk_key_encoding"] = serde_json::json!({"name": "v2"});
        // Chunk (0, 1) holds [[1, 2], [3, 4]] big-endian; column 1 of it is padding.
        let c01: Vec<u8> = [1i16, 2, 3, 4]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let c10: Vec<u8> = [5i16, 6, 7, 8]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let p = hand_store(dir.path(), "be.zarr", &m, &[("0.1", c01), ("1.0", c10)]);
        let src = ZarrSource::open(&p, "x").unwrap();
        assert_eq!(src.info().byte_order, ByteOrder::Big);
        assert_eq!(src.info().details[0].1, "v2 (separator '.')");
        assert_eq!(src.info().details[3].1, "2 of 4");
        let b = src.read_region(&Region::full(&[3, 3])).unwrap();
        assert_eq!(b.as_slice::<i16>(), &[9, 9, 1, 9, 9, 3, 5, 6, 9]);

        // Default encoding with "." and a 0-d array.
        let le = serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}]);
        let mut m = meta("float64", &[], &[], Value::from(0.0), le.clone());
        m["chunk_key_encoding"]["configuration"]["separator"] = Value::from(".");
        let p = hand_store(
            dir.path(),
            "z0.zarr",
            &m,
            &[("c", 2.5f64.to_le_bytes().to_vec())],
        );
        let src = ZarrSource::open(&p, "x").unwrap();
        assert_eq!(src.read_chunk(0).unwrap().as_slice::<f64>(), &[2.5]);
        let mut m = meta("uint8", &[4, 4], &[2, 2], Value::from(0), le);
        m["chunk_key_encoding"]["configuration"]["separator"] = Value::from(".");
        let p = hand_store(dir.path(), "dot.zarr", &m, &[("c.1.0", vec![1, 2, 3, 4])]);
        let src = ZarrSource::open(&p, "x").unwrap();
        assert_eq!(src.read_chunk(2).unwrap().as_slice::<u8>(), &[1, 2, 3, 4]);
        assert_eq!(KeyEncoding::V2 { separator: '.' }.key(&[]), "0");
        assert_eq!(KeyEncoding::Default { separator: '/' }.key(&[]), "c");
        assert_eq!(KeyEncoding::V2 { separator: '/' }.key(&[3, 4]), "3/4");
    }

    #[test]
    fn short_and_corrupt_chunks_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for codec in [Codec::None, Codec::Zstd(3), Codec::Gzip(1)] {
            let p = gen_store(
                dir.path(),
                "s.zarr",
                DType::I32,
                &[10, 10],
                Some(vec![4, 5]),
                codec,
            );
            let chunk = p.join("c/1/1");
            let expect = 4 * 5 * 4;
            let short: Vec<u8> = vec![0u8; expect - 12];
            let encoded = match codec {
                Codec::None => short,
                Codec::Zstd(l) => zstd::bulk::compress(&short, l).unwrap(),
                Codec::Gzip(l) => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(l));
                    e.write_all(&short).unwrap();
                    e.finish().unwrap()
                }
            };
            std::fs::write(&chunk, encoded).unwrap();
            let src = ZarrSource::open(&p, "x").unwrap();
            let e = src.read_chunk(3).unwrap_err().to_string();
            assert!(e.contains("c/1/1") && e.contains("short chunk"), "{e}");
            assert!(
                e.contains(&expect.to_string()) && e.contains(&(expect - 12).to_string()),
                "{e}"
            );
            // Too long is an error too.
            if codec == Codec::None {
                std::fs::write(&chunk, vec![0u8; expect + 1]).unwrap();
                let e = src.read_chunk(3).unwrap_err().to_string();
                assert!(
                    e.contains("c/1/1") && e.contains(&(expect + 1).to_string()),
                    "{e}"
                );
            } else {
                // Garbage and truncated compressed data.
                std::fs::write(&chunk, b"not compressed at all").unwrap();
                let e = src.read_chunk(3).unwrap_err().to_string();
                assert!(e.contains("c/1/1") && e.contains("corrupt"), "{e}");
                let good = std::fs::read(p.join("c/0/0")).unwrap();
                std::fs::write(&chunk, &good[..good.len() / 2]).unwrap();
                let e = src.read_chunk(3).unwrap_err();
                assert!(matches!(e, Error::Corrupt { .. }), "{e}");
                assert!(e.to_string().contains("c/1/1"), "{e}");
            }
            assert!(src.read_chunk(0).is_ok());
        }
    }

    #[test]
    fn unsupported_and_malformed_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let le = serde_json::json!({"name": "bytes", "configuration": {"endian": "little"}});
        for (codecs, needle) in [
            (
                serde_json::json!([{"name": "transpose", "configuration": {"order": [1, 0]}}, le]),
                "transpose",
            ),
            (
                serde_json::json!([{"name": "sharding_indexed", "configuration": {}}]),
                "sharding_indexed",
            ),
            (
                serde_json::json!([le, {"name": "blosc", "configuration": {}}]),
                "blosc",
            ),
            (serde_json::json!([le, {"name": "crc32c"}]), "crc32c"),
        ] {
            let p = hand_store(
                dir.path(),
                "u.zarr",
                &meta("int32", &[4, 4], &[2, 2], Value::from(0), codecs),
                &[],
            );
            let e = ZarrSource::open(&p, "x").err().unwrap();
            assert!(matches!(e, Error::Unsupported { .. }), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        let p = hand_store(
            dir.path(),
            "u.zarr",
            &meta(
                "float16",
                &[4],
                &[2],
                Value::from(0),
                serde_json::json!([le]),
            ),
            &[],
        );
        let e = open_err(&p);
        assert!(e.contains("unsupported") && e.contains("float16"), "{e}");

        let mut cases: Vec<(Value, &str)> = Vec::new();
        let base = meta(
            "int32",
            &[4, 4],
            &[2, 2],
            Value::from(0),
            serde_json::json!([le]),
        );
        for field in [
            "shape",
            "data_type",
            "chunk_grid",
            "fill_value",
            "codecs",
            "chunk_key_encoding",
            "zarr_format",
            "node_type",
        ] {
            let mut m = base.clone();
            m.as_object_mut().unwrap().remove(field);
            cases.push((m, field));
        }
        let mut m = base.clone();
        m["shape"] = serde_json::json!([4, -1]);
        cases.push((m, "shape"));
        let mut m = base.clone();
        m["chunk_grid"]["configuration"]["chunk_shape"] = serde_json::json!([2]);
        cases.push((m, "chunk_shape"));
        let mut m = base.clone();
        m["chunk_grid"]["configuration"]["chunk_shape"] = serde_json::json!([2, 0]);
        cases.push((m, "chunk_shape"));
        let mut m = base.clone();
        m["codecs"] = serde_json::json!([{"name": "bytes"}]);
        cases.push((m, "endian"));
        let mut m = base.clone();
        m["codecs"] = serde_json::json!([{"name": "zstd"}, le]);
        cases.push((m, "zstd"));
        let mut m = base.clone();
        m["codecs"] = serde_json::json!([]);
        cases.push((m, "codecs"));
        let mut m = base.clone();
        m["chunk_key_encoding"]["configuration"]["separator"] = Value::from("-");
        cases.push((m, "separator"));
        for (k, (m, needle)) in cases.into_iter().enumerate() {
            let p = hand_store(dir.path(), &format!("m{k}.zarr"), &m, &[]);
            let e = ZarrSource::open(&p, "x").err().unwrap();
            assert!(matches!(e, Error::Corrupt { .. }), "{needle}: {e}");
            let e = e.to_string();
            assert!(e.contains("zarr.json") && e.contains(needle), "{e}");
        }
        let p = dir.path().join("j.zarr");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("zarr.json"), "{\"zarr_format\": 3,").unwrap();
        assert!(open_err(&p).contains("invalid JSON"));
        let mut m = base.clone();
        m["zarr_format"] = Value::from(2);
        let p = hand_store(dir.path(), "v2.zarr", &m, &[]);
        assert!(open_err(&p).contains("zarr_format 2"));
    }

    #[test]
    fn absurd_chunk_shapes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let codecs = serde_json::json!([
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 0, "checksum": false}},
        ]);
        let m = meta("int64", &[4], &[1 << 62], Value::from(0), codecs.clone());
        let p = hand_store(dir.path(), "huge.zarr", &m, &[]);
        assert!(open_err(&p).contains("too large"));
        // 2^47 elements x 8 bytes = 1 PiB: no machine allocates that.
        let chunk = zstd::bulk::compress(&[0u8; 64], 1).unwrap();
        let m = meta("int64", &[4], &[1 << 47], Value::from(0), codecs);
        let p = hand_store(dir.path(), "big.zarr", &m, &[("c/0", chunk)]);
        let e = ZarrSource::open(&p, "x")
            .unwrap()
            .read_chunk(0)
            .unwrap_err();
        assert!(e.to_string().contains("c/0"), "{e}");
        // A directory where a chunk file should be.
        let le = serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}]);
        let m = meta("uint8", &[4], &[2], Value::from(0), le);
        let p = hand_store(dir.path(), "d.zarr", &m, &[("c/1/x", vec![])]);
        let e = ZarrSource::open(&p, "x")
            .unwrap()
            .read_chunk(1)
            .unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn group_error_names_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g.zarr");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(
            g.join("zarr.json"),
            r#"{"zarr_format": 3, "node_type": "group", "attributes": {}}"#,
        )
        .unwrap();
        let e = open_err(&g);
        assert!(e.contains("group") && e.contains("g.zarr/ARRAY"), "{e}");
        gen_store(&g, "temp", DType::F32, &[3], None, Codec::None);
        let e = open_err(&g);
        assert!(e.contains("g.zarr/temp"), "{e}");
        // Through the format-agnostic entry point too.
        let e = crate::formats::open(g.to_str().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("group"), "{e}");
        let src = crate::formats::open(g.join("temp").to_str().unwrap()).unwrap();
        assert_eq!(src.info().shape, vec![3]);
    }
}
