//! Element types: the [`DType`] tag, the [`Element`] trait implemented by every storable type, and
//! byte order.

use std::fmt;
use std::str::FromStr;

use bytemuck::{Pod, Zeroable};

use crate::error::Error;

/// The element types chunkheap stores and computes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// One byte, 0 = false, anything else = true (NumPy `?`).
    Bool,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// IEEE-754 binary32.
    F32,
    /// IEEE-754 binary64.
    F64,
}

/// Every dtype, in a fixed order (useful for tests and help texts).
pub const ALL_DTYPES: [DType; 11] = [
    DType::Bool,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::F32,
    DType::F64,
];

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// Our short name (`f64`, `i32`, `bool`, ...), also accepted by [`FromStr`].
    pub const fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// The Zarr v3 `data_type` name (`float64`, `int32`, `bool`, ...).
    pub const fn zarr_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// The NumPy type character with size (`f8`, `i4`, `b1`), without the byte-order mark.
    pub const fn numpy_code(self) -> &'static str {
        match self {
            DType::Bool => "b1",
            DType::I8 => "i1",
            DType::I16 => "i2",
            DType::I32 => "i4",
            DType::I64 => "i8",
            DType::U8 => "u1",
            DType::U16 => "u2",
            DType::U32 => "u4",
            DType::U64 => "u8",
            DType::F32 => "f4",
            DType::F64 => "f8",
        }
    }

    /// True for `f32` and `f64`.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// True for the signed and unsigned integer types (not `bool`).
    pub const fn is_integer(self) -> bool {
        !self.is_float() && !matches!(self, DType::Bool)
    }

    /// Parses a NumPy type string without its byte-order mark (`f8`, `i4`, `b1`, `?`, `u1`...).
    pub fn from_numpy_code(code: &str) -> Option<DType> {
        Some(match code {
            "b1" | "?" => DType::Bool,
            "i1" | "b" => DType::I8,
            "i2" | "h" => DType::I16,
            "i4" | "i" => DType::I32,
            "i8" | "q" | "l" => DType::I64,
            "u1" | "B" => DType::U8,
            "u2" | "H" => DType::U16,
            "u4" | "I" => DType::U32,
            "u8" | "Q" | "L" => DType::U64,
            "f4" | "f" => DType::F32,
            "f8" | "d" => DType::F64,
            _ => return None,
        })
    }

    /// Parses a Zarr v3 `data_type` name.
    pub fn from_zarr_name(name: &str) -> Option<DType> {
        ALL_DTYPES.into_iter().find(|d| d.zarr_name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = Error;

    /// Accepts our short names (`f64`), Zarr/NumPy names (`float64`, `int8`) and NumPy codes
    /// (`<f8` is accepted too, the byte order is ignored).
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        if let Some(d) = ALL_DTYPES.into_iter().find(|d| d.name() == t) {
            return Ok(d);
        }
        if let Some(d) = DType::from_zarr_name(t) {
            return Ok(d);
        }
        let code = t.trim_start_matches(['<', '>', '=', '|']);
        if t.len() - code.len() <= 1
            && code.len() == 2
            && let Some(d) = DType::from_numpy_code(code)
        {
            return Ok(d);
        }
        Err(Error::UnknownDType(s.to_string()))
    }
}

/// Byte order of stored data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Least significant byte first (x86, ARM).
    Little,
    /// Most significant byte first.
    Big,
}

impl ByteOrder {
    /// The byte order of the machine we run on.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "little") {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    };

    /// `"little"` or `"big"`.
    pub const fn name(self) -> &'static str {
        match self {
            ByteOrder::Little => "little",
            ByteOrder::Big => "big",
        }
    }
}

/// Reverses the byte order of every element of `dtype` in `bytes` (a no-op for 1-byte types).
pub fn swap_bytes_in_place(bytes: &mut [u8], dtype: DType) {
    match dtype.size() {
        2 => bytes.chunks_exact_mut(2).for_each(|c| c.reverse()),
        4 => bytes.chunks_exact_mut(4).for_each(|c| c.reverse()),
        8 => bytes.chunks_exact_mut(8).for_each(|c| c.reverse()),
        _ => {}
    }
}

/// A boolean stored as one byte (NumPy's `?`): 0 is false, anything else true.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
#[repr(transparent)]
pub struct Bool(pub u8);

impl Bool {
    /// The truth value.
    pub const fn get(self) -> bool {
        self.0 != 0
    }
}

/// A type that can be stored in an array: plain old data with a [`DType`] tag.
pub trait Element: Pod + Send + Sync + PartialOrd + fmt::Debug + 'static {
    /// The dtype tag of this type.
    const DTYPE: DType;
    /// Reverses the byte order of one element.
    fn swap_bytes(self) -> Self;
    /// The value as `f64` (exact for every type but 64-bit integers beyond 2^53).
    fn to_f64(self) -> f64;
    /// Converts from an `f64` with `as` semantics (saturating, NaN to 0).
    fn from_f64(v: f64) -> Self;
    /// Converts a flat index as NumPy's `arange(n).astype(T)` does (wrapping for narrow ints).
    fn from_index(i: u64) -> Self;
}

macro_rules! int_element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn swap_bytes(self) -> Self { <$t>::swap_bytes(self) }
            #[inline]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline]
            fn from_f64(v: f64) -> Self { v as $t }
            #[inline]
            fn from_index(i: u64) -> Self { i as $t }
        }
    )*};
}
int_element!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64);

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn swap_bytes(self) -> Self {
        f32::from_bits(self.to_bits().swap_bytes())
    }
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn from_index(i: u64) -> Self {
        i as f32
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    #[inline]
    fn swap_bytes(self) -> Self {
        f64::from_bits(self.to_bits().swap_bytes())
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn from_index(i: u64) -> Self {
        i as f64
    }
}

impl Element for Bool {
    const DTYPE: DType = DType::Bool;
    #[inline]
    fn swap_bytes(self) -> Self {
        self
    }
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self.get()))
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        Bool(u8::from(v != 0.0))
    }
    #[inline]
    fn from_index(i: u64) -> Self {
        Bool(u8::from(i != 0))
    }
}

/// Calls `$body` with the type alias `$T` bound to the Rust element type of `$dtype`.
///
/// ```
/// use chunkheap::{with_dtype, DType, Element};
/// let size = with_dtype!(DType::F32, T => std::mem::size_of::<T>());
/// assert_eq!(size, 4);
/// ```
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {{
        match $dtype {
            $crate::DType::Bool => {
                type $T = $crate::dtype::Bool;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            assert_eq!(d.zarr_name().parse::<DType>().unwrap(), d);
            assert_eq!(format!("<{}", d.numpy_code()).parse::<DType>().unwrap(), d);
            assert_eq!(with_dtype!(d, T => std::mem::size_of::<T>()), d.size());
        }
        let e = "f16".parse::<DType>().unwrap_err().to_string();
        assert!(e.contains("\"f16\""), "{e}");
    }
}
