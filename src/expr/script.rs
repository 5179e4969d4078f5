//! The engine behind batch scripts: [`EngineBackend`] implements the interpreter's
//! [`ArrayBackend`] with lazy arrays, so `a * 2 + b` in a script builds heap expression objects
//! and `sum(...)`, `save(...)`, `print(...)` evaluate them in fused streaming passes.

use std::sync::Arc;

use super::array::{Array, Operand, Session, norm_axis};
use super::lazy::{ConstValue, Src};
use super::ops::{BinOp, UnOp, Weak};
use super::product::Product;
use super::reduction::{PassCache, Reduction, stats_need};
use super::scan::ScanOp;
use super::views::Index;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::generate::Dist;
use crate::heap::{Handle, Heap, Kind};
use crate::pipeline::Progress;
use crate::reduce::Need;
use crate::reduce::Scalar;
use crate::script::ast::{BinOp as SBin, CmpOp, UnaryOp};
use crate::script::{ArrayBackend, BinaryOp, float_repr, is_array};
use crate::shape::shape_str;
use crate::storage::{ChunkSource, WriteOptions};

/// Makes a progress callback for a long step: `(label, total bytes)`.
pub type ProgressFactory = Arc<dyn Fn(&str, u64) -> Box<dyn Fn(u64) + Send + Sync> + Send + Sync>;

/// Runs `f` with a progress callback from `make` for a step of `bytes` (none without `make`).
pub(crate) fn with_progress<R>(
    make: Option<&ProgressFactory>,
    label: &str,
    bytes: u64,
    f: impl FnOnce(Progress<'_>) -> R,
) -> R {
    match make {
        Some(make) => {
            let p = make(label, bytes);
            f(&*p)
        }
        None => f(&crate::pipeline::no_progress),
    }
}

/// Arrays for scripts, over a [`Session`] sharing the interpreter's heap.
pub struct EngineBackend {
    session: Session,
    progress: Option<ProgressFactory>,
    /// Files `save()` wrote (so a failing script can report them; they are complete files).
    written: std::sync::Mutex<Vec<String>>,
    /// The last whole-array statistics pass, shared by the reductions that follow it.
    passes: PassCache,
}

/// Every name [`EngineBackend::call_function`] answers (for help texts and error hints).
pub const FUNCTIONS: &[&str] = &[
    "load",
    "save",
    "array",
    "arange",
    "zeros",
    "ones",
    "full",
    "random",
    "where",
    "clip",
    "minimum",
    "maximum",
    "concatenate",
    "cumsum",
    "cumprod",
    "reshape",
    "astype",
    "explain",
    "persist",
    "sort",
    "argsort",
    "topk",
    "shape",
    "dtype",
    "logical_and",
    "logical_or",
    "logical_xor",
];

impl EngineBackend {
    /// A backend over `heap` (the interpreter's), spilling into `temp_dir`.
    pub fn new(heap: Heap, temp_dir: Option<std::path::PathBuf>) -> EngineBackend {
        EngineBackend {
            session: Session::with_heap(heap, temp_dir),
            progress: None,
            written: std::sync::Mutex::new(Vec::new()),
            passes: PassCache::default(),
        }
    }

    /// Shows progress for long steps through `f`.
    pub fn with_progress(mut self, f: ProgressFactory) -> EngineBackend {
        self.progress = Some(f);
        self
    }

    /// The session arrays are built in.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Output files written by `save()` so far.
    pub fn written(&self) -> Vec<String> {
        self.written.lock().unwrap().clone()
    }

    fn with_progress_of<R>(&self, label: &str, bytes: u64, f: impl FnOnce(Progress<'_>) -> R) -> R {
        with_progress(self.progress.as_ref(), label, bytes, f)
    }

    fn array(&self, h: &Handle) -> Result<Array> {
        self.session.from_handle(h)
    }

    fn operand(&self, heap: &Heap, h: &Handle) -> Result<Operand> {
        Ok(match h.kind() {
            k if is_array(k) => Operand::Array(self.array(h)?),
            Kind::Bool => Operand::Scalar(Weak::Bool(heap.as_bool(h).unwrap_or(false))),
            Kind::Int => Operand::Scalar(Weak::Int(i128::from(heap.as_int(h).unwrap_or(0)))),
            Kind::Float => Operand::Scalar(Weak::Float(heap.as_float(h).unwrap_or(0.0))),
            k => {
                return Err(Error::Invalid(format!(
                    "an array operation needs arrays or numbers, not {k}"
                )));
            }
        })
    }

    /// Any value as an array (numbers become 0-d arrays; lists become in-memory arrays).
    fn to_array(&self, heap: &Heap, h: &Handle) -> Result<Array> {
        match self.operand(heap, h) {
            Ok(Operand::Array(a)) => Ok(a),
            Ok(Operand::Scalar(w)) => Ok(self.session.scalar(weak_const(w), w.default_dtype())),
            Err(_) if matches!(h.kind(), Kind::List | Kind::Tuple) => {
                self.list_to_array(heap, h, None)
            }
            Err(e) => Err(e),
        }
    }

    /// `array([[1, 2], [3, 4]])`: nested lists of numbers.
    fn list_to_array(&self, heap: &Heap, h: &Handle, dtype: Option<DType>) -> Result<Array> {
        let mut shape = Vec::new();
        let mut vals: Vec<Weak> = Vec::new();
        fn walk(
            heap: &Heap,
            h: &Handle,
            depth: usize,
            shape: &mut Vec<u64>,
            vals: &mut Vec<Weak>,
        ) -> Result<()> {
            match h.kind() {
                Kind::List | Kind::Tuple => {
                    let items = heap.items(h);
                    if shape.len() == depth {
                        shape.push(items.len() as u64);
                    } else if shape[depth] != items.len() as u64 {
                        return Err(Error::Invalid(
                            "setting an array element with a sequence: the nested lists have \
                             different lengths"
                                .into(),
                        ));
                    }
                    for it in &items {
                        walk(heap, it, depth + 1, shape, vals)?;
                    }
                    Ok(())
                }
                Kind::Bool => {
                    vals.push(Weak::Bool(heap.as_bool(h).unwrap_or(false)));
                    Ok(())
                }
                Kind::Int => {
                    vals.push(Weak::Int(i128::from(heap.as_int(h).unwrap_or(0))));
                    Ok(())
                }
                Kind::Float => {
                    vals.push(Weak::Float(heap.as_float(h).unwrap_or(0.0)));
                    Ok(())
                }
                k => Err(Error::Invalid(format!("array() cannot hold a {k}"))),
            }
        }
        walk(heap, h, 0, &mut shape, &mut vals)?;
        if vals.len() as u64 != crate::shape::numel(&shape) {
            return Err(Error::Invalid(
                "array(): the nested lists have different lengths".into(),
            ));
        }
        let dtype = dtype.unwrap_or_else(|| {
            if vals.iter().any(|v| matches!(v, Weak::Float(_))) {
                DType::F64
            } else if vals.iter().all(|v| matches!(v, Weak::Bool(_))) && !vals.is_empty() {
                DType::Bool
            } else if vals.is_empty() {
                DType::F64
            } else {
                DType::I64
            }
        });
        let f: Vec<f64> = vals
            .iter()
            .map(|v| match *v {
                Weak::Bool(b) => f64::from(u8::from(b)),
                Weak::Int(i) => i as f64,
                Weak::Float(x) => x,
            })
            .collect();
        let ints: Vec<i128> = vals
            .iter()
            .map(|v| match *v {
                Weak::Bool(b) => i128::from(b),
                Weak::Int(i) => i,
                Weak::Float(x) => x as i128,
            })
            .collect();
        crate::with_dtype!(dtype, T => {
            let v: Vec<T> = if dtype.is_float() {
                f.iter().map(|&x| <T as crate::Element>::from_f64(x)).collect()
            } else {
                ints.iter().map(|&x| <T as super::num::Num>::from_i128(x)).collect()
            };
            self.session.from_vec(&shape, &v)
        })
    }

    fn scalar_handle(&self, heap: &Heap, s: Scalar) -> Handle {
        match s {
            Scalar::Bool(b) => heap.bool(b),
            Scalar::Int(i) => match i64::try_from(i) {
                Ok(v) => heap.int(v),
                Err(_) => heap.float(i as f64),
            },
            Scalar::F32(f) => heap.float(f64::from(f)),
            Scalar::F64(f) => heap.float(f),
        }
    }

    fn reduce(&self, heap: &Heap, a: &Array, r: &Reduction, axis: Option<isize>) -> Result<Handle> {
        let bytes = a.size() * a.dtype().size() as u64;
        if let (None, Some(need)) = (axis, stats_need(r)) {
            // Whole-array reductions of one source in a row share one pass.
            if let Some(s) = self.passes.get(a.source(), need) {
                let v = a.reduce_from_stats(r, &s, &crate::pipeline::no_progress)?;
                return Ok(self.scalar_handle(heap, v));
            }
            let need = self.passes.widen(a.source(), need);
            return self.with_progress_of(&r.name(), bytes, |p| {
                let s = a.stats_pass(need, p)?;
                self.passes.put(a.source(), s.clone());
                Ok(self.scalar_handle(heap, a.reduce_from_stats(r, &s, p)?))
            });
        }
        self.with_progress_of(&r.name(), bytes, |p| match axis {
            None => Ok(self.scalar_handle(heap, a.reduce_with_progress(r, p)?)),
            Some(ax) => Ok(a.reduce_axis_with_progress(r, ax, p)?.handle().clone()),
        })
    }

    fn save(&self, a: &Array, path: &str, opts: &WriteOptions) -> Result<()> {
        let bytes = a.size() * a.dtype().size() as u64;
        // Sources are immutable, but a write is where that could be bent: forget cached passes.
        self.passes.clear();
        self.with_progress_of(&format!("save {path}"), bytes, |p| a.save(path, opts, p))?;
        self.written.lock().unwrap().push(path.to_string());
        Ok(())
    }
}

fn weak_const(w: Weak) -> ConstValue {
    match w {
        Weak::Bool(b) => ConstValue::Bool(b),
        Weak::Int(i) => ConstValue::Int(i),
        Weak::Float(f) => ConstValue::Float(f),
    }
}

/// Arguments of a call: positional, then keywords, looked up by position or name.
struct Args<'a> {
    heap: &'a Heap,
    pos: &'a [Handle],
    kw: &'a [(String, Handle)],
    func: &'a str,
}

impl<'a> Args<'a> {
    fn get(&self, i: usize, name: &str) -> Option<&'a Handle> {
        self.kw
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .or_else(|| self.pos.get(i))
            .filter(|h| h.kind() != Kind::None)
    }

    fn need(&self, i: usize, name: &str) -> Result<&'a Handle> {
        self.get(i, name).ok_or_else(|| {
            Error::Invalid(format!(
                "{}() missing required argument '{name}' (pos {})",
                self.func,
                i + 1
            ))
        })
    }

    fn int(&self, i: usize, name: &str) -> Result<Option<i64>> {
        match self.get(i, name) {
            None => Ok(None),
            Some(h) => self.heap.as_int(h).map(Some).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}(): '{name}' must be an integer, not {}",
                    self.func,
                    h.kind()
                ))
            }),
        }
    }

    fn float(&self, i: usize, name: &str) -> Result<Option<f64>> {
        match self.get(i, name) {
            None => Ok(None),
            Some(h) => self
                .heap
                .as_float(h)
                .or_else(|| self.heap.as_int(h).map(|v| v as f64))
                .map(Some)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}(): '{name}' must be a number, not {}",
                        self.func,
                        h.kind()
                    ))
                }),
        }
    }

    fn str(&self, i: usize, name: &str) -> Result<Option<String>> {
        match self.get(i, name) {
            None => Ok(None),
            Some(h) => self.heap.as_str(h).map(Some).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}(): '{name}' must be a string, not {}",
                    self.func,
                    h.kind()
                ))
            }),
        }
    }

    fn dtype(&self, i: usize) -> Result<Option<DType>> {
        self.str(i, "dtype")?.map(|s| s.parse()).transpose()
    }

    fn shape(&self, i: usize, name: &str) -> Result<Vec<u64>> {
        let h = self.need(i, name)?;
        if let Some(n) = self.heap.as_int(h) {
            return Ok(vec![u64::try_from(n).map_err(|_| {
                Error::Invalid(format!("negative dimensions are not allowed: {n}"))
            })?]);
        }
        self.heap
            .items(h)
            .iter()
            .map(|d| {
                self.heap
                    .as_int(d)
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "{}(): '{name}' must be an int or a tuple of non-negative ints",
                            self.func
                        ))
                    })
            })
            .collect()
    }

    fn axis(&self, i: usize) -> Result<Option<isize>> {
        Ok(self.int(i, "axis")?.map(|a| a as isize))
    }
}

fn index_of(heap: &Heap, h: &Handle) -> Result<Vec<Index>> {
    let one = |x: &Handle| -> Result<Index> {
        if let Some(i) = heap.as_int(x) {
            return Ok(Index::At(i));
        }
        if let Some([a, b, c]) = heap.as_slice(x) {
            return Ok(Index::Range(a, b, c));
        }
        Err(Error::Invalid(format!(
            "only integers and slices (`:`) are valid array indices, not {}",
            x.kind()
        )))
    };
    if h.kind() == Kind::Tuple {
        heap.items(h).iter().map(one).collect()
    } else {
        Ok(vec![one(h)?])
    }
}

fn binop_of(op: BinaryOp) -> Result<BinOp> {
    Ok(match op {
        BinaryOp::Arith(b) => match b {
            SBin::Add => BinOp::Add,
            SBin::Sub => BinOp::Sub,
            SBin::Mul => BinOp::Mul,
            SBin::Div => BinOp::Div,
            SBin::FloorDiv => BinOp::FloorDiv,
            SBin::Mod => BinOp::Mod,
            SBin::Pow => BinOp::Pow,
            SBin::BitAnd => BinOp::BitAnd,
            SBin::BitOr => BinOp::BitOr,
            SBin::BitXor => BinOp::BitXor,
            SBin::MatMul | SBin::LShift | SBin::RShift => {
                return Err(Error::Invalid(format!(
                    "operator '{}' is not supported for arrays",
                    b.symbol()
                )));
            }
        },
        BinaryOp::Compare(c) => match c {
            CmpOp::Eq => BinOp::Eq,
            CmpOp::Ne => BinOp::Ne,
            CmpOp::Lt => BinOp::Lt,
            CmpOp::Le => BinOp::Le,
            CmpOp::Gt => BinOp::Gt,
            CmpOp::Ge => BinOp::Ge,
            other => {
                return Err(Error::Invalid(format!(
                    "'{}' is not supported between arrays",
                    other.symbol()
                )));
            }
        },
    })
}

/// NumPy-style text of a small array (`array([1.5, 2.0])`), or a summary of a large one.
pub fn format_array(a: &Array) -> Result<String> {
    const MAX: u64 = 1000;
    if a.size() > MAX {
        return Ok(format!(
            "<array {} {} = {}>",
            a.dtype(),
            shape_str(a.shape()),
            a.name()
        ));
    }
    let vals: Vec<String> = crate::with_dtype!(a.dtype(), T => {
        a.to_vec::<T>()?
            .iter()
            .map(|&v| elem_text(a.dtype(), crate::Element::to_f64(v), <T as super::num::Num>::to_i128(v)))
            .collect()
    });
    let shape = a.shape().to_vec();
    fn nest(vals: &[String], shape: &[u64]) -> String {
        if shape.is_empty() {
            return vals.first().cloned().unwrap_or_default();
        }
        if shape.len() == 1 {
            return format!("[{}]", vals.join(", "));
        }
        let inner: usize = shape[1..].iter().product::<u64>() as usize;
        let parts: Vec<String> = (0..shape[0] as usize)
            .map(|i| nest(&vals[i * inner..(i + 1) * inner], &shape[1..]))
            .collect();
        format!("[{}]", parts.join(", "))
    }
    let body = nest(&vals, &shape);
    let default = matches!(a.dtype(), DType::F64 | DType::I64 | DType::Bool);
    Ok(if default {
        format!("array({body})")
    } else {
        format!("array({body}, dtype={})", numpy_name(a.dtype()))
    })
}

fn numpy_name(d: DType) -> &'static str {
    match d {
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

fn elem_text(d: DType, f: f64, i: i128) -> String {
    match d {
        DType::Bool => if i != 0 { "True" } else { "False" }.into(),
        DType::F32 => {
            let s = crate::reduce::fmt_f32(f as f32);
            python_float(&s, f)
        }
        DType::F64 => float_repr(f),
        _ => i.to_string(),
    }
}

fn python_float(s: &str, f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".into() } else { "-inf".into() }
    } else if s.contains(['.', 'e', 'E']) {
        s.into()
    } else {
        format!("{s}.0")
    }
}

impl ArrayBackend for EngineBackend {
    fn binary(&self, heap: &Heap, op: BinaryOp, lhs: &Handle, rhs: &Handle) -> Result<Handle> {
        if op == BinaryOp::Arith(SBin::MatMul) {
            return self.matmul(heap, lhs, rhs);
        }
        let op = binop_of(op)?;
        let l = self.operand(heap, lhs)?;
        let r = self.operand(heap, rhs)?;
        let out = match (l, r) {
            (Operand::Array(a), r) => a.binary(op, r)?,
            (l, Operand::Array(b)) => b.rbinary(op, l)?,
            _ => unreachable!("the interpreter only asks when one operand is an array"),
        };
        Ok(out.handle().clone())
    }

    fn unary(&self, _heap: &Heap, op: UnaryOp, operand: &Handle) -> Result<Handle> {
        let a = self.array(operand)?;
        Ok(match op {
            UnaryOp::Neg => a.unary(UnOp::Neg)?,
            UnaryOp::Pos => a,
            UnaryOp::Invert => a.unary(UnOp::Invert)?,
            UnaryOp::Not => a.unary(UnOp::Not)?,
        }
        .handle()
        .clone())
    }

    fn subscript(&self, heap: &Heap, array: &Handle, index: &Handle) -> Result<Handle> {
        let a = self.array(array)?;
        let ix = index_of(heap, index)?;
        let v = a.slice(&ix)?;
        if v.ndim() == 0 {
            // One element: a Python scalar, as NumPy gives a scalar.
            let s = v.reduce(&Reduction::from_name("max").expect("a reduction"))?;
            return Ok(self.scalar_handle(heap, s));
        }
        Ok(v.handle().clone())
    }

    fn attribute(&self, heap: &Heap, array: &Handle, name: &str) -> Result<Handle> {
        let a = self.array(array)?;
        Ok(match name {
            "shape" => {
                let dims: Vec<Handle> = a.shape().iter().map(|&d| heap.int(d as i64)).collect();
                let refs: Vec<&Handle> = dims.iter().collect();
                heap.tuple(&refs)
            }
            "dtype" => heap.str(a.dtype().name()),
            "ndim" => heap.int(a.ndim() as i64),
            "size" => heap.int(a.size() as i64),
            "nbytes" => heap.int((a.size() * a.dtype().size() as u64) as i64),
            "T" => self.transpose(&a, None)?.handle().clone(),
            other => {
                return Err(Error::Invalid(format!(
                    "'array' object has no attribute '{other}'"
                )));
            }
        })
    }

    fn call_method(
        &self,
        heap: &Heap,
        array: &Handle,
        name: &str,
        args: &[Handle],
        kwargs: &[(String, Handle)],
    ) -> Result<Handle> {
        // `a.f(x, ...)` is `f(a, x, ...)`.
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(array.clone());
        all.extend(args.iter().cloned());
        match self.call_function(heap, name, &all, kwargs)? {
            Some(h) => Ok(h),
            None => Err(Error::Invalid(format!(
                "'array' object has no attribute '{name}'"
            ))),
        }
    }

    fn expect_calls(&self, _: &Heap, calls: &[(Handle, &str)]) {
        // Whole-array reductions answered from a statistics pass: the first pass over each
        // array computes what all of them need.
        let arrays: Vec<(Array, Need)> = calls
            .iter()
            .filter_map(|(h, name)| {
                let need = stats_need(&Reduction::from_name(name)?)?;
                Some((self.session.deferred_handle(h).ok()?, need))
            })
            .collect();
        let wants: Vec<_> = arrays.iter().map(|(a, n)| (a.source(), *n)).collect();
        self.passes.expect(&wants);
    }

    fn statement_done(&self) {
        self.passes.forget_expected();
    }

    fn call_function(
        &self,
        heap: &Heap,
        name: &str,
        args: &[Handle],
        kwargs: &[(String, Handle)],
    ) -> Result<Option<Handle>> {
        let a = Args {
            heap,
            pos: args,
            kw: kwargs,
            func: name,
        };
        let first_is_array = args.first().is_some_and(|h| is_array(h.kind()));
        // Reductions: sum(a), a.mean(axis=1), nanstd(a, ddof=1), ...
        if let Some(mut r) = Reduction::from_name(name) {
            // Python's own `sum`, `min`, `max`, `any`, `all` on lists stay the interpreter's.
            if !first_is_array {
                return Ok(None);
            }
            let x = self.array(&args[0])?;
            r.ddof = a.int(99, "ddof")?.unwrap_or(0).max(0) as u64;
            return Ok(Some(self.reduce(heap, &x, &r, a.axis(1)?)?));
        }
        if let Some(op) = UnOp::from_name(name) {
            let Some(h) = a.get(0, "x") else {
                return Ok(None);
            };
            if !is_array(h.kind()) && matches!(name, "abs" | "round") {
                return Ok(None);
            }
            return Ok(Some(self.to_array(heap, h)?.unary(op)?.handle().clone()));
        }
        let h = |x: Array| Ok(Some(x.handle().clone()));
        match name {
            "len" if first_is_array => {
                let x = self.array(&args[0])?;
                match x.shape().first() {
                    Some(&n) => Ok(Some(heap.int(n as i64))),
                    None => Err(Error::Invalid("len() of unsized object".into())),
                }
            }
            "float" | "int" | "bool" if first_is_array => {
                let x = self.array(&args[0])?;
                if x.size() != 1 {
                    return Err(Error::Invalid(
                        "only length-1 arrays can be converted to Python scalars".into(),
                    ));
                }
                let v = x.astype(DType::F64).to_vec::<f64>()?[0];
                Ok(Some(match name {
                    "float" => heap.float(v),
                    "int" => heap.int(v as i64),
                    _ => heap.bool(v != 0.0),
                }))
            }
            "load" => h(self.session.open(
                &a.str(0, "src")?
                    .ok_or_else(|| Error::Invalid("load() needs a source path".into()))?,
            )?),
            "save" => {
                let x = a.need(0, "x")?;
                // A deferred product is computed straight into the output.
                let x = if is_array(x.kind()) {
                    self.session.deferred_handle(x)?
                } else {
                    self.to_array(heap, x)?
                };
                let path = a
                    .str(1, "path")?
                    .ok_or_else(|| Error::Invalid("save() needs a path".into()))?;
                let mut opts = WriteOptions::default();
                if let Some(c) = a.str(2, "codec")? {
                    opts.codec = c.parse()?;
                }
                if a.get(3, "chunks").is_some() {
                    opts.chunks = Some(a.shape(3, "chunks")?);
                }
                self.save(&x, &path, &opts)?;
                Ok(Some(heap.none()))
            }
            "array" => h(self.list_to_array(heap, a.need(0, "values")?, a.dtype(1)?)?),
            "arange" => {
                let n = a.int(0, "n")?.unwrap_or(0).max(0) as u64;
                h(self.session.arange(n, a.dtype(1)?.unwrap_or(DType::I64))?)
            }
            "zeros" | "ones" => {
                let shape = a.shape(0, "shape")?;
                let v = ConstValue::Int(i128::from(name == "ones"));
                h(self
                    .session
                    .full(&shape, v, a.dtype(1)?.unwrap_or(DType::F64))?)
            }
            "full" => {
                let shape = a.shape(0, "shape")?;
                let v = a.need(1, "fill_value")?;
                let (cv, d) = match self.operand(heap, v)? {
                    Operand::Scalar(w) => (weak_const(w), w.default_dtype()),
                    Operand::Array(_) => {
                        return Err(Error::Invalid("full(): fill_value must be a number".into()));
                    }
                };
                h(self.session.full(&shape, cv, a.dtype(2)?.unwrap_or(d))?)
            }
            "random" => {
                let shape = a.shape(0, "shape")?;
                let dist = match a.str(1, "dist")?.as_deref().unwrap_or("uniform") {
                    "uniform" => Dist::Uniform {
                        low: a.float(99, "low")?,
                        high: a.float(99, "high")?,
                    },
                    "normal" => Dist::Normal {
                        mean: a.float(99, "mean")?.unwrap_or(0.0),
                        std: a.float(99, "std")?.unwrap_or(1.0),
                    },
                    "integers" => Dist::Uniform {
                        low: a.float(99, "low")?,
                        high: a.float(99, "high")?,
                    },
                    d => {
                        return Err(Error::Invalid(format!(
                            "random(): unknown dist {d:?} (uniform, normal or integers)"
                        )));
                    }
                };
                let default = if a.str(1, "dist")?.as_deref() == Some("integers") {
                    DType::I64
                } else {
                    DType::F64
                };
                let seed = a.int(2, "seed")?.unwrap_or(0) as u64;
                h(self
                    .session
                    .random(&shape, a.dtype(3)?.unwrap_or(default), dist, seed)?)
            }
            "where" => {
                let c = self.to_array(heap, a.need(0, "condition")?)?;
                let x = self.operand(heap, a.need(1, "x")?)?;
                let y = self.operand(heap, a.need(2, "y")?)?;
                h(self.session.where_(&c, x, y)?)
            }
            "clip" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let lo = a
                    .get(1, "a_min")
                    .map(|v| self.operand(heap, v))
                    .transpose()?;
                let hi = a
                    .get(2, "a_max")
                    .map(|v| self.operand(heap, v))
                    .transpose()?;
                h(x.clip(lo, hi)?)
            }
            "minimum" | "maximum" | "logical_and" | "logical_or" | "logical_xor" => {
                let op = match name {
                    "minimum" => BinOp::Minimum,
                    "maximum" => BinOp::Maximum,
                    "logical_and" => BinOp::And,
                    "logical_or" => BinOp::Or,
                    _ => BinOp::Xor,
                };
                let x = self.to_array(heap, a.need(0, "x1")?)?;
                let y = self.operand(heap, a.need(1, "x2")?)?;
                h(x.binary(op, y)?)
            }
            "concatenate" => {
                let parts: Vec<Array> = heap
                    .items(a.need(0, "arrays")?)
                    .iter()
                    .map(|p| self.to_array(heap, p))
                    .collect::<Result<_>>()?;
                h(self.session.concatenate(&parts, a.axis(1)?.unwrap_or(0))?)
            }
            "cumsum" | "cumprod" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let op = if name == "cumsum" {
                    ScanOp::CumSum
                } else {
                    ScanOp::CumProd
                };
                h(x.scan(op, a.axis(1)?)?)
            }
            "reshape" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let rest = &args[1.min(args.len())..];
                let dims: Vec<i64> = if rest.len() == 1 && rest[0].kind() == Kind::Tuple {
                    heap.items(&rest[0])
                        .iter()
                        .map(|d| heap.as_int(d).unwrap_or(-2))
                        .collect()
                } else {
                    rest.iter().map(|d| heap.as_int(d).unwrap_or(-2)).collect()
                };
                h(x.reshape(&dims)?)
            }
            "astype" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let d: DType = a
                    .str(1, "dtype")?
                    .ok_or_else(|| Error::Invalid("astype() needs a dtype".into()))?
                    .parse()?;
                h(x.astype(d))
            }
            "explain" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                Ok(Some(heap.str(x.explain().trim_end())))
            }
            "persist" => h(self.to_array(heap, a.need(0, "a")?)?.persist()?),
            "transpose" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let axes = a.get(1, "axes").map(|t| {
                    heap.items(t)
                        .iter()
                        .map(|d| heap.as_int(d).unwrap_or(-1) as usize)
                        .collect::<Vec<_>>()
                });
                h(self.transpose(&x, axes.as_deref())?)
            }
            "sort" | "argsort" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                h(self.sort(&x, name == "argsort", a.axis(1)?)?)
            }
            "topk" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let k = a.int(1, "k")?.unwrap_or(10).max(0) as usize;
                let largest = a
                    .get(2, "largest")
                    .map(|v| heap.as_bool(v).unwrap_or(true))
                    .unwrap_or(true);
                let (vals, idx) = self
                    .session
                    .install(|| crate::kernels::sort::top_k(x.source().as_ref(), k, largest))?;
                let n = idx.len() as u64;
                let m = super::mem::MemArray::new("topk", x.dtype(), vec![n], vals)?;
                let v = self.session.wrap(Arc::new(m));
                let i = self.session.from_vec(&[n], &idx)?;
                Ok(Some(heap.tuple(&[v.handle(), i.handle()])))
            }
            _ => self.more_functions(heap, name, &a),
        }
    }

    fn truth(&self, _heap: &Heap, array: &Handle) -> Result<bool> {
        let a = self.array(array)?;
        if a.size() != 1 {
            return Err(Error::Invalid(
                "The truth value of an array with more than one element is ambiguous. Use \
                 a.any() or a.all()"
                    .into(),
            ));
        }
        Ok(a.astype(DType::F64).to_vec::<f64>()?[0] != 0.0)
    }

    fn repr(&self, _heap: &Heap, array: &Handle) -> Result<String> {
        format_array(&self.array(array)?)
    }
}

impl EngineBackend {
    fn transpose(&self, a: &Array, axes: Option<&[usize]>) -> Result<Array> {
        let src: Src = Arc::new(crate::kernels::transpose::transpose(
            a.source().clone(),
            axes,
        )?);
        Ok(self.session.wrap_derived("transpose", a, src))
    }

    fn sort(&self, a: &Array, arg: bool, axis: Option<isize>) -> Result<Array> {
        use crate::kernels::sort::{Axis, SortOptions};
        let last = match axis {
            None => false,
            Some(ax) => {
                let ax = norm_axis(ax, a.ndim())?;
                if ax + 1 != a.ndim() {
                    return Err(Error::Invalid(
                        "sort() supports axis=None (flattened) or the last axis".into(),
                    ));
                }
                true
            }
        };
        let parent = self
            .session
            .temp_dir()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("chunkheap-sorted-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, "create a temp dir in", e))?;
        let out = dir.path().join("sorted.npy");
        let out_s = out.to_string_lossy().into_owned();
        let shape = if last {
            a.shape().to_vec()
        } else {
            vec![a.size()]
        };
        let dtype = if arg { DType::I64 } else { a.dtype() };
        let writer = crate::formats::create(&out_s, dtype, &shape, &WriteOptions::default())?;
        let opts = SortOptions {
            axis: if last { Axis::Last } else { Axis::Flat },
            temp_dir: self.session.temp_dir().map(|p| p.to_path_buf()),
            ..Default::default()
        };
        let bytes = a.size() * a.dtype().size() as u64;
        self.with_progress_of(if arg { "argsort" } else { "sort" }, bytes, |p| {
            self.session.install(|| {
                if arg {
                    crate::kernels::sort::argsort(a.source().as_ref(), writer, &opts, p)
                } else {
                    crate::kernels::sort::sort(a.source().as_ref(), writer, &opts, p)
                }
            })
        })?;
        let src = crate::formats::open(&out_s)?;
        let src: Src = Arc::new(TempBacked {
            src: Arc::from(src),
            _dir: dir,
        });
        Ok(self
            .session
            .wrap_derived(if arg { "argsort" } else { "sort" }, a, src))
    }

    /// `a @ b`, deferred ([`Product`]): saved to a `.npy`, it is computed straight into the
    /// file; used any other way, it is computed once, into memory when the result is small,
    /// otherwise into a temporary Zarr store (deleted with the array) read chunk by chunk.
    fn matmul(&self, heap: &Heap, lhs: &Handle, rhs: &Handle) -> Result<Handle> {
        let a = self.to_array(heap, lhs)?;
        let b = self.to_array(heap, rhs)?;
        let parent = self
            .session
            .temp_dir()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let product = self.session.install(|| {
            Product::new(
                Arc::clone(a.source()),
                Arc::clone(b.source()),
                parent,
                self.progress.clone(),
            )
        })?;
        Ok(heap.expr_array("@", &[a.handle(), b.handle()], Arc::new(product)))
    }

    fn more_functions(&self, heap: &Heap, name: &str, a: &Args<'_>) -> Result<Option<Handle>> {
        use crate::kernels::quantile::{QuantileOptions, median, percentile, quantile};
        match name {
            "histogram" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let bins = a.int(1, "bins")?.unwrap_or(10);
                if bins < 1 {
                    return Err(Error::Invalid("`bins` must be positive".into()));
                }
                let range = match a.get(2, "range") {
                    None => None,
                    Some(r) => {
                        let v = heap.items(r);
                        let num = |h: &Handle| {
                            heap.as_float(h)
                                .or_else(|| heap.as_int(h).map(|i| i as f64))
                                .ok_or_else(|| {
                                    Error::Invalid("histogram(): range must be (lo, hi)".into())
                                })
                        };
                        if v.len() != 2 {
                            return Err(Error::Invalid(
                                "histogram(): range must be (lo, hi)".into(),
                            ));
                        }
                        Some((num(&v[0])?, num(&v[1])?))
                    }
                };
                let bytes = x.size() * x.dtype().size() as u64;
                // An autodetected range comes from the extremes of a pass already made over the
                // array (`min(a)`, `max(a)`, `argmin(a)`, `argmax(a)`) when there is one: one
                // pass, not two.
                let known = match range {
                    None => self.passes.get(x.source(), Need::EXTREMES),
                    Some(_) => None,
                };
                let hist = self.with_progress_of("histogram", bytes, |p| {
                    self.session.install(|| match &known {
                        Some(s) => crate::kernels::histogram::histogram_with_stats(
                            x.source().as_ref(),
                            bins as usize,
                            s,
                            p,
                        ),
                        None => crate::kernels::histogram::histogram(
                            x.source().as_ref(),
                            bins as usize,
                            range,
                            p,
                        ),
                    })
                })?;
                let counts: Vec<i64> = hist.counts.iter().map(|&c| c as i64).collect();
                let c = self.session.from_vec(&[counts.len() as u64], &counts)?;
                let e = self
                    .session
                    .from_vec(&[hist.edges.len() as u64], &hist.edges)?;
                Ok(Some(heap.tuple(&[c.handle(), e.handle()])))
            }
            "quantile" | "nanquantile" | "percentile" | "nanpercentile" | "median"
            | "nanmedian" => {
                let x = self.to_array(heap, a.need(0, "a")?)?;
                let skip_nan = name.starts_with("nan");
                let q = if name.ends_with("median") {
                    None
                } else {
                    Some(a.need(1, "q")?)
                };
                let (qs, many) = match q {
                    None => (vec![], false),
                    Some(h) if matches!(h.kind(), Kind::List | Kind::Tuple) => {
                        let v: Vec<f64> = heap
                            .items(h)
                            .iter()
                            .map(|e| {
                                heap.as_float(e)
                                    .or_else(|| heap.as_int(e).map(|i| i as f64))
                                    .ok_or_else(|| {
                                        Error::Invalid(format!("{name}(): q must be numbers"))
                                    })
                            })
                            .collect::<Result<_>>()?;
                        (v, true)
                    }
                    Some(_) => (vec![a.float(1, "q")?.unwrap_or(0.5)], false),
                };
                let opts = QuantileOptions {
                    skip_nan,
                    array_q: many,
                    ..Default::default()
                };
                let bytes = x.size() * x.dtype().size() as u64;
                let r = self.with_progress_of(name, bytes, |p| {
                    self.session.install(|| {
                        let s = x.source().as_ref();
                        if name.ends_with("median") {
                            median(s, &opts, p)
                        } else if name.ends_with("percentile") {
                            percentile(s, &qs, &opts, p)
                        } else {
                            quantile(s, &qs, &opts, p)
                        }
                    })
                })?;
                if many {
                    Ok(Some(
                        self.session
                            .from_vec(&[r.values.len() as u64], &r.values)?
                            .handle()
                            .clone(),
                    ))
                } else {
                    Ok(Some(heap.float(r.values[0])))
                }
            }
            _ => Ok(None),
        }
    }
}

/// A source read from a temporary file that is deleted when the source is dropped.
pub struct TempBacked {
    src: Src,
    _dir: tempfile::TempDir,
}

impl TempBacked {
    /// `src`, read from a file or store inside `dir`, which is deleted with it.
    pub fn new(src: Src, dir: tempfile::TempDir) -> TempBacked {
        TempBacked { src, _dir: dir }
    }
}

impl ChunkSource for TempBacked {
    fn info(&self) -> &crate::storage::SourceInfo {
        self.src.info()
    }

    fn read_chunk(&self, index: usize) -> Result<crate::storage::Chunk> {
        self.src.read_chunk(index)
    }

    fn read_chunk_sparse(&self, index: usize) -> Result<crate::storage::Chunk> {
        self.src.read_chunk_sparse(index)
    }

    fn read_region(&self, region: &crate::shape::Region) -> Result<crate::storage::Buffer> {
        self.src.read_region(region)
    }

    fn read_region_into(&self, region: &crate::shape::Region, out: &mut [u8]) -> Result<()> {
        self.src.read_region_into(region, out)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::kernels::histogram::test_source::{Counting, MemSource};
    use crate::script::{Interpreter, SharedBuffer};

    /// Every whole-array reduction of one array in a statement comes from one pass over it
    /// (moments, extremes and sum together; chunks of several blocks, so the one-pass squared
    /// deviations run), with the figures separate statements give.
    #[test]
    fn a_statement_reads_each_array_once() {
        let heap = Heap::new().unwrap();
        let backend = Arc::new(EngineBackend::new(heap.clone(), None));
        let mut v: Vec<f64> = (0..30_000)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 150.5)
            .collect();
        v[4321] = f64::NAN;
        let (counting, other) = (
            Arc::new(Counting::new(MemSource::vec(&v, 10_000))),
            Arc::new(Counting::new(MemSource::vec(&v, 6_000))),
        );
        let a = backend.session().wrap(counting.clone());
        let b = backend.session().wrap(other.clone());
        let out = SharedBuffer::default();
        let mut it = Interpreter::new(heap, backend.clone(), Box::new(out.clone()));
        it.set_global("a", a.handle()).unwrap();
        it.set_global("b", b.handle()).unwrap();
        let calls = [
            "nanmin(a)",
            "a.max()",
            "nansum(a)",
            "nanmean(a)",
            "nanstd(b)",
            "nanstd(a)",
            "nanargmax(a)",
            "nanvar(a, ddof=1)",
            "b.min()",
        ];
        it.run(&format!("print({})\n", calls.join(", ")), "one.chs", &[])
            .unwrap();
        let together = out.contents();
        // Three chunks of `a`, five of `b`: one pass each.
        assert_eq!(counting.reads(), 3);
        assert_eq!(other.reads(), 5);
        // A function's statements add to what the statement calling it announced.
        let third = Arc::new(Counting::new(MemSource::vec(&v, 6_000)));
        let c = backend.session().wrap(third.clone());
        it.set_global("c", c.handle()).unwrap();
        it.run(
            "def f(x):\n    return nanmin(x), nanmax(x)\nprint(f(c), c.mean(), nanargmax(c))\n",
            "nested.chs",
            &[],
        )
        .unwrap();
        assert_eq!(third.reads(), 5, "one pass over c");
        let apart: Vec<String> = calls.iter().map(|c| format!("print({c})\n")).collect();
        let out2 = SharedBuffer::default();
        let heap = Heap::new().unwrap();
        let backend = Arc::new(EngineBackend::new(heap.clone(), None));
        let mut it = Interpreter::new(heap, backend.clone(), Box::new(out2.clone()));
        it.set_global("a", backend.session().wrap(counting.clone()).handle())
            .unwrap();
        it.set_global("b", backend.session().wrap(other.clone()).handle())
            .unwrap();
        it.run(&apart.concat(), "apart.chs", &[]).unwrap();
        assert_eq!(
            together.trim_end(),
            out2.contents().replace('\n', " ").trim_end()
        );
        // (Apart, the reductions took several passes: the comparison is with other passes.)
        assert!(counting.reads() >= 3 + 3 * 3, "separate passes");
    }
}
