//! File formats: opening a source by name and creating a writer by path.
//!
//! **Boundary:** formats depend on `storage` (maps, buffers, atomic outputs), never the reverse.
//! Each format turns its bytes into dense native C-order [`Chunk`](crate::storage::Chunk)s.

pub mod arrow;
pub mod npy;
pub mod zarr;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::{ArrayWriter, ChunkSource, Format, WriteOptions};

/// Default bytes per chunk for formats without a native chunking (`.npy`) and for new outputs.
pub const DEFAULT_CHUNK_BYTES: u64 = 8 << 20;

/// Splits `PATH#COLUMN`. A name that exists as a path is taken whole (paths may contain `#`).
pub fn split_source_name(name: &str) -> (PathBuf, Option<String>) {
    let whole = PathBuf::from(name);
    if whole.exists() {
        return (whole, None);
    }
    match name.rsplit_once('#') {
        Some((p, col)) => (PathBuf::from(p), Some(col.to_string())),
        None => (whole, None),
    }
}

/// Tells the format of an existing path from its magic bytes, then from its extension.
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "open", e))?;
    if meta.is_dir() {
        if path.join("zarr.json").is_file() {
            return Ok(Format::Zarr);
        }
        if path.join(".zarray").is_file() {
            return Err(Error::unsupported(
                path,
                "Zarr v2 store (.zarray); only Zarr v3 is read",
            ));
        }
        return Err(Error::corrupt(
            path,
            "directory has no zarr.json: not a Zarr v3 array",
        ));
    }
    let mut magic = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let n = f.read(&mut magic).map_err(|e| Error::io(path, "read", e))?;
    if magic[..n].starts_with(b"\x93NUMPY") {
        return Ok(Format::Npy);
    }
    if magic[..n].starts_with(b"ARROW1") {
        return Ok(Format::Arrow);
    }
    format_from_extension(path).ok_or_else(|| Error::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// The format named by a path's extension, if any.
pub fn format_from_extension(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "npy" => Some(Format::Npy),
        "zarr" => Some(Format::Zarr),
        "arrow" | "ipc" | "feather" => Some(Format::Arrow),
        _ => None,
    }
}

/// Opens a source named `PATH` or `PATH#COLUMN`.
pub fn open(name: &str) -> Result<Box<dyn ChunkSource>> {
    let (path, column) = split_source_name(name);
    let format = detect(&path)?;
    if column.is_some() && format != Format::Arrow {
        return Err(Error::Column {
            path,
            what: format!(
                "{name:?} names a column, but a {} source is a single array (columns exist only \
                 in Arrow files)",
                format.name()
            ),
        });
    }
    Ok(match format {
        Format::Npy => Box::new(npy::NpySource::open(&path, name)?),
        Format::Zarr => Box::new(zarr::ZarrSource::open(&path, name)?),
        Format::Arrow => Box::new(arrow::ArrowSource::open(&path, name, column.as_deref())?),
        Format::Computed => unreachable!("detect() only names file formats"),
    })
}

/// Creates a writer for a new array at `path` (`PATH#COLUMN` names the Arrow column); the format
/// comes from the extension.
pub fn create(
    path: &str,
    dtype: DType,
    shape: &[u64],
    options: &WriteOptions,
) -> Result<Box<dyn ArrayWriter>> {
    let (p, column) = match path.rsplit_once('#') {
        Some((p, c)) if format_from_extension(Path::new(p)) == Some(Format::Arrow) => {
            (PathBuf::from(p), Some(c.to_string()))
        }
        _ => (PathBuf::from(path), None),
    };
    let format = format_from_extension(&p).ok_or_else(|| {
        Error::Invalid(format!(
            "{}: cannot tell the output format from the extension (use .npy, .zarr, .arrow, \
             .ipc or .feather)",
            p.display()
        ))
    })?;
    let mut options = options.clone();
    if column.is_some() {
        options.column = column;
    }
    Ok(match format {
        Format::Npy => {
            let w = npy::NpyWriter::create(&p, dtype, shape)?;
            w.set_fsync(options.fsync);
            Box::new(w)
        }
        Format::Zarr => Box::new(zarr::ZarrWriter::create(&p, dtype, shape, &options)?),
        Format::Arrow => Box::new(arrow::ArrowWriter::create(&p, dtype, shape, &options)?),
        Format::Computed => unreachable!("format_from_extension() only names file formats"),
    })
}
