//! The element-wise operations and NumPy's type rules for them: array–array promotion
//! (`np.result_type`), "weak" Python scalars (NEP 50), and the result dtype of each operation.

use std::fmt;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// One-argument element-wise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `abs(x)`
    Abs,
    /// `sqrt(x)`
    Sqrt,
    /// `exp(x)`
    Exp,
    /// Natural logarithm.
    Log,
    /// Base-2 logarithm.
    Log2,
    /// Base-10 logarithm.
    Log10,
    /// `sin(x)`
    Sin,
    /// `cos(x)`
    Cos,
    /// `tan(x)`
    Tan,
    /// `tanh(x)`
    Tanh,
    /// Round toward -inf (integers unchanged, like NumPy 2).
    Floor,
    /// Round toward +inf.
    Ceil,
    /// Round half to even (`np.round` with 0 decimals).
    Round,
    /// `logical_not(x)` / `not x`
    Not,
    /// `~x`: bitwise not (integers), logical not (bool).
    Invert,
    /// `isnan(x)`
    IsNan,
    /// `isfinite(x)`
    IsFinite,
    /// `isinf(x)`
    IsInf,
}

/// Two-argument element-wise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (true division: integers give `f64`)
    Div,
    /// `//`
    FloorDiv,
    /// `%`
    Mod,
    /// `**`
    Pow,
    /// `minimum` (NaN propagates)
    Minimum,
    /// `maximum` (NaN propagates)
    Maximum,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `logical_and`
    And,
    /// `logical_or`
    Or,
    /// `logical_xor`
    Xor,
    /// `&`
    BitAnd,
    /// `|`
    BitOr,
    /// `^`
    BitXor,
}

impl UnOp {
    /// The NumPy-style function name (`negative`, `sqrt`, `isnan`...).
    pub const fn name(self) -> &'static str {
        match self {
            UnOp::Neg => "negative",
            UnOp::Abs => "abs",
            UnOp::Sqrt => "sqrt",
            UnOp::Exp => "exp",
            UnOp::Log => "log",
            UnOp::Log2 => "log2",
            UnOp::Log10 => "log10",
            UnOp::Sin => "sin",
            UnOp::Cos => "cos",
            UnOp::Tan => "tan",
            UnOp::Tanh => "tanh",
            UnOp::Floor => "floor",
            UnOp::Ceil => "ceil",
            UnOp::Round => "round",
            UnOp::Not => "logical_not",
            UnOp::Invert => "invert",
            UnOp::IsNan => "isnan",
            UnOp::IsFinite => "isfinite",
            UnOp::IsInf => "isinf",
        }
    }

    /// Every unary operation, for lookups by name.
    pub const ALL: [UnOp; 19] = [
        UnOp::Neg,
        UnOp::Abs,
        UnOp::Sqrt,
        UnOp::Exp,
        UnOp::Log,
        UnOp::Log2,
        UnOp::Log10,
        UnOp::Sin,
        UnOp::Cos,
        UnOp::Tan,
        UnOp::Tanh,
        UnOp::Floor,
        UnOp::Ceil,
        UnOp::Round,
        UnOp::Not,
        UnOp::Invert,
        UnOp::IsNan,
        UnOp::IsFinite,
        UnOp::IsInf,
    ];

    /// Looks an operation up by its function name (`absolute` and `rint` are accepted too).
    pub fn from_name(name: &str) -> Option<UnOp> {
        match name {
            "absolute" => Some(UnOp::Abs),
            "rint" | "around" => Some(UnOp::Round),
            _ => UnOp::ALL.into_iter().find(|o| o.name() == name),
        }
    }

    /// `(dtype the kernel computes in, result dtype)` for an input of `dtype`, or an error where
    /// NumPy has no loop for it.
    pub fn types(self, dtype: DType) -> Result<(DType, DType)> {
        use UnOp::*;
        Ok(match self {
            Neg if dtype == DType::Bool => {
                return Err(Error::Invalid(
                    "the negative operator is not supported for bool; use `~` or logical_not"
                        .into(),
                ));
            }
            Neg | Abs | Floor | Ceil => (dtype, dtype),
            Round if dtype == DType::Bool => (DType::F32, DType::F32),
            Round => (dtype, dtype),
            Sqrt | Exp | Log | Log2 | Log10 | Sin | Cos | Tan | Tanh => {
                let f = float_of(dtype);
                (f, f)
            }
            Not => (dtype, DType::Bool),
            Invert if dtype.is_float() => {
                return Err(Error::Invalid(format!(
                    "invert (~) is not supported for {dtype}: it needs integers or bool"
                )));
            }
            Invert => (dtype, dtype),
            IsNan | IsFinite | IsInf => (dtype, DType::Bool),
        })
    }
}

impl BinOp {
    /// The operator or function name (`+`, `//`, `minimum`, `logical_and`...).
    pub const fn name(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Pow => "**",
            BinOp::Minimum => "minimum",
            BinOp::Maximum => "maximum",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "logical_and",
            BinOp::Or => "logical_or",
            BinOp::Xor => "logical_xor",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
        }
    }

    /// True for operators written between their operands (`a + b`), false for functions.
    pub const fn is_infix(self) -> bool {
        !matches!(
            self,
            BinOp::Minimum | BinOp::Maximum | BinOp::And | BinOp::Or | BinOp::Xor
        )
    }

    /// True for comparisons and logical operations (their result is `bool`).
    pub const fn gives_bool(self) -> bool {
        matches!(
            self,
            BinOp::Lt
                | BinOp::Le
                | BinOp::Gt
                | BinOp::Ge
                | BinOp::Eq
                | BinOp::Ne
                | BinOp::And
                | BinOp::Or
                | BinOp::Xor
        )
    }

    /// `(dtype both operands are cast to, result dtype)` for operands of `a` and `b` (already
    /// resolved for weak scalars).
    pub fn types(self, a: DType, b: DType) -> Result<(DType, DType)> {
        use BinOp::*;
        let p = promote(a, b);
        Ok(match self {
            Div if !p.is_float() => (DType::F64, DType::F64),
            Div => (p, p),
            Sub if p == DType::Bool => {
                return Err(Error::Invalid(
                    "numpy boolean subtract, the `-` operator, is not supported; use `^` or \
                     logical_xor"
                        .into(),
                ));
            }
            FloorDiv | Mod | Pow if p == DType::Bool => (DType::I8, DType::I8),
            Add | Sub | Mul | FloorDiv | Mod | Pow | Minimum | Maximum => (p, p),
            Lt | Le | Gt | Ge | Eq | Ne | And | Or | Xor => (p, DType::Bool),
            BitAnd | BitOr | BitXor if p.is_float() => {
                return Err(Error::Invalid(format!(
                    "bitwise `{}` is not supported for {a} and {b}: it needs integers or bool",
                    self.name()
                )));
            }
            BitAnd | BitOr | BitXor => (p, p),
        })
    }
}

impl fmt::Display for UnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The float type NumPy computes transcendental functions of `dtype` in. NumPy uses `float16`
/// for bool/int8/uint8, which chunkheap does not have: `f32` is used instead.
pub fn float_of(dtype: DType) -> DType {
    match dtype {
        DType::Bool | DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::F32 => DType::F32,
        _ => DType::F64,
    }
}

fn rank(d: DType) -> (u8, u8) {
    // (kind, bytes): kind 0 bool, 1 unsigned, 2 signed, 3 float
    let kind = match d {
        DType::Bool => 0,
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => 1,
        DType::I8 | DType::I16 | DType::I32 | DType::I64 => 2,
        DType::F32 | DType::F64 => 3,
    };
    (kind, d.size() as u8)
}

fn signed_of(bytes: u8) -> DType {
    match bytes {
        1 => DType::I8,
        2 => DType::I16,
        4 => DType::I32,
        _ => DType::I64,
    }
}

/// NumPy's `np.result_type(a, b)` for two array dtypes.
pub fn promote(a: DType, b: DType) -> DType {
    if a == b {
        return a;
    }
    let (ka, sa) = rank(a);
    let (kb, sb) = rank(b);
    match (ka, kb) {
        (0, _) => b,
        (_, 0) => a,
        (3, 3) => {
            if sa >= sb {
                a
            } else {
                b
            }
        }
        (3, _) | (_, 3) => {
            let (f, i) = if ka == 3 { (a, sb) } else { (b, sa) };
            // An integer fits a float whose mantissa holds it: f32 takes 8/16-bit integers.
            if f == DType::F32 && i >= 4 {
                DType::F64
            } else {
                f
            }
        }
        _ if ka == kb => {
            if sa >= sb {
                a
            } else {
                b
            }
        }
        _ => {
            // One signed, one unsigned.
            let (s, u) = if ka == 2 { (sa, sb) } else { (sb, sa) };
            if s > u {
                signed_of(s)
            } else if u < 8 {
                signed_of(u * 2)
            } else {
                DType::F64
            }
        }
    }
}

/// A Python scalar in an expression: NEP 50 "weak" promotion, so `x * 2` keeps `x`'s dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weak {
    /// A Python `bool`.
    Bool(bool),
    /// A Python `int`.
    Int(i128),
    /// A Python `float`.
    Float(f64),
}

impl Weak {
    /// The dtype a weak scalar takes next to an array of `other` (NEP 50), or an error when an
    /// integer does not fit (`uint8 + 300`).
    pub fn resolve(self, other: DType) -> Result<DType> {
        Ok(match self {
            Weak::Bool(_) => other,
            Weak::Int(v) => {
                if other == DType::Bool {
                    DType::I64
                } else if other.is_float() {
                    other
                } else {
                    let (lo, hi) = int_range(other);
                    if v < lo || v > hi {
                        return Err(Error::Invalid(format!(
                            "Python integer {v} out of bounds for {other}"
                        )));
                    }
                    other
                }
            }
            Weak::Float(_) => {
                if other.is_float() {
                    other
                } else {
                    DType::F64
                }
            }
        })
    }

    /// The dtype NumPy gives the scalar alone (`np.asarray(v).dtype`).
    pub fn default_dtype(self) -> DType {
        match self {
            Weak::Bool(_) => DType::Bool,
            Weak::Int(v) if v > i64::MAX as i128 => DType::U64,
            Weak::Int(_) => DType::I64,
            Weak::Float(_) => DType::F64,
        }
    }
}

/// The inclusive value range of an integer dtype.
pub fn int_range(d: DType) -> (i128, i128) {
    match d {
        DType::Bool => (0, 1),
        DType::I8 => (i8::MIN as i128, i8::MAX as i128),
        DType::I16 => (i16::MIN as i128, i16::MAX as i128),
        DType::I32 => (i32::MIN as i128, i32::MAX as i128),
        DType::I64 => (i64::MIN as i128, i64::MAX as i128),
        DType::U8 => (0, u8::MAX as i128),
        DType::U16 => (0, u16::MAX as i128),
        DType::U32 => (0, u32::MAX as i128),
        DType::U64 => (0, u64::MAX as i128),
        DType::F32 | DType::F64 => (i128::MIN, i128::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL_DTYPES;

    /// `np.result_type` for every pair, as printed by NumPy 2.4 (row = a, column = b, in
    /// `ALL_DTYPES` order).
    #[test]
    fn promotion_matches_numpy_table() {
        let numpy = [
            "bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64",
            "i8 i8 i16 i32 i64 i16 i32 i64 f64 f32 f64",
            "i16 i16 i16 i32 i64 i16 i32 i64 f64 f32 f64",
            "i32 i32 i32 i32 i64 i32 i32 i64 f64 f64 f64",
            "i64 i64 i64 i64 i64 i64 i64 i64 f64 f64 f64",
            "u8 i16 i16 i32 i64 u8 u16 u32 u64 f32 f64",
            "u16 i32 i32 i32 i64 u16 u16 u32 u64 f32 f64",
            "u32 i64 i64 i64 i64 u32 u32 u32 u64 f64 f64",
            "u64 f64 f64 f64 f64 u64 u64 u64 u64 f64 f64",
            "f32 f32 f32 f64 f64 f32 f32 f64 f64 f32 f64",
            "f64 f64 f64 f64 f64 f64 f64 f64 f64 f64 f64",
        ];
        for (i, row) in numpy.iter().enumerate() {
            for (j, want) in row.split(' ').enumerate() {
                let got = promote(ALL_DTYPES[i], ALL_DTYPES[j]);
                assert_eq!(got.name(), want, "{} + {}", ALL_DTYPES[i], ALL_DTYPES[j]);
            }
        }
    }

    #[test]
    fn weak_scalars() {
        assert_eq!(Weak::Int(2).resolve(DType::U8).unwrap(), DType::U8);
        assert!(Weak::Int(300).resolve(DType::U8).is_err());
        assert_eq!(Weak::Float(2.5).resolve(DType::I32).unwrap(), DType::F64);
        assert_eq!(Weak::Float(2.5).resolve(DType::F32).unwrap(), DType::F32);
        assert_eq!(Weak::Int(1).resolve(DType::Bool).unwrap(), DType::I64);
        assert_eq!(
            BinOp::Div.types(DType::I8, DType::I8).unwrap().1,
            DType::F64
        );
        assert!(BinOp::Sub.types(DType::Bool, DType::Bool).is_err());
    }
}
