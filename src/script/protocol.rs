//! The value protocol of the interpreter: operators, comparisons, truth, indexing,
//! iteration and `repr`/`str` over heap objects (arrays go to the [`ArrayBackend`]).
//!
//! [`ArrayBackend`]: super::ArrayBackend

use crate::heap::{Handle, Kind};

use super::ast::*;
use super::backend::{BinaryOp, is_array};
use super::error::*;
use super::interp::{Code, Interpreter, Iter, V, check_repeat};
use super::ops::{self, Num};

impl Interpreter {
    // ----- operators -----

    pub(crate) fn unary(&mut self, op: UnaryOp, v: &Handle) -> R<Handle> {
        if op == UnaryOp::Not {
            let t = self.truth(v)?;
            return Ok(self.bool(!t));
        }
        if is_array(v.kind()) {
            let r = self.backend.unary(&self.heap, op, v);
            let h = self.lib(r)?;
            return self.own(h);
        }
        let r = match (op, self.num(v)) {
            (UnaryOp::Neg, Some(Num::Int(i))) => Num::Int(i.checked_neg().ok_or_else(|| {
                exc(
                    ErrorKind::OverflowError,
                    format!("integer overflow: -({i}) does not fit in a 64-bit int"),
                )
            })?),
            (UnaryOp::Neg, Some(Num::Float(f))) => Num::Float(-f),
            (UnaryOp::Pos, Some(n)) => n,
            (UnaryOp::Invert, Some(Num::Int(i))) => Num::Int(!i),
            _ => {
                return Err(type_err(format!(
                    "bad operand type for unary {}: '{}'",
                    op.symbol(),
                    self.type_name(v)
                )));
            }
        };
        Ok(self.num_handle(r))
    }

    pub(crate) fn binop(&mut self, op: BinOp, a: &Handle, b: &Handle) -> R<Handle> {
        let (ka, kb) = (a.kind(), b.kind());
        if is_array(ka) || is_array(kb) {
            let r = self.backend.binary(&self.heap, BinaryOp::Arith(op), a, b);
            let h = self.lib(r)?;
            return self.own(h);
        }
        if let (Some(x), Some(y)) = (self.num(a), self.num(b)) {
            let both_int = matches!((x, y), (Num::Int(_), Num::Int(_)));
            if both_int || ops::float_op(op) {
                if ka == Kind::Bool
                    && kb == Kind::Bool
                    && matches!(op, BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor)
                {
                    let r = ops::arith(op, x, y)?;
                    return Ok(self.bool(r == Num::Int(1)));
                }
                let r = ops::arith(op, x, y)?;
                return Ok(self.num_handle(r));
            }
        }
        match (op, self.view(a), self.view(b)) {
            (BinOp::Add, V::Str(x), V::Str(y)) => {
                check_repeat(x.len() + y.len(), 1)?;
                return Ok(self.heap.str(&(x + &y)));
            }
            (BinOp::Add, V::Str(_), _) => {
                return Err(type_err(format!(
                    "can only concatenate str (not \"{}\") to str",
                    self.type_name(b)
                )));
            }
            (BinOp::Add, V::List, V::List) | (BinOp::Add, V::Tuple, V::Tuple) => {
                let mut items = self.heap.items(a);
                items.extend(self.heap.items(b));
                let refs: Vec<&Handle> = items.iter().collect();
                return Ok(if ka == Kind::List {
                    self.heap.list(&refs)
                } else {
                    self.heap.tuple(&refs)
                });
            }
            (BinOp::Add, V::List | V::Tuple, _) => {
                return Err(type_err(format!(
                    "can only concatenate {} (not \"{}\") to {}",
                    ka.name(),
                    self.type_name(b),
                    ka.name()
                )));
            }
            (BinOp::Mul, V::Str(_) | V::List | V::Tuple, _)
            | (BinOp::Mul, _, V::Str(_) | V::List | V::Tuple) => {
                let (seq, n) = if matches!(ka, Kind::Str | Kind::List | Kind::Tuple) {
                    (a, b)
                } else {
                    (b, a)
                };
                let Some(count) = self.as_index(n) else {
                    return Err(type_err(format!(
                        "can't multiply sequence by non-int of type '{}'",
                        self.type_name(n)
                    )));
                };
                return self.repeat(seq, count);
            }
            _ => {}
        }
        let sym = if op == BinOp::Pow {
            "** or pow()"
        } else {
            op.symbol()
        };
        Err(type_err(format!(
            "unsupported operand type(s) for {sym}: '{}' and '{}'",
            self.type_name(a),
            self.type_name(b)
        )))
    }

    pub(crate) fn repeat(&mut self, seq: &Handle, count: i64) -> R<Handle> {
        match self.view(seq) {
            V::Str(s) => {
                let n = check_repeat(s.len(), count)?;
                Ok(self
                    .heap
                    .str(&s.repeat(if s.is_empty() { 0 } else { n / s.len() })))
            }
            _ => {
                let items = self.heap.items(seq);
                let n = check_repeat(items.len(), count)?;
                let refs: Vec<&Handle> = (0..n).map(|i| &items[i % items.len()]).collect();
                Ok(if seq.kind() == Kind::List {
                    self.heap.list(&refs)
                } else {
                    self.heap.tuple(&refs)
                })
            }
        }
    }

    /// One comparison of a chain.
    pub(crate) fn compare(&mut self, op: CmpOp, a: &Handle, b: &Handle) -> R<Handle> {
        match op {
            CmpOp::Is => return Ok(self.bool(a.same(b))),
            CmpOp::IsNot => return Ok(self.bool(!a.same(b))),
            _ => {}
        }
        if is_array(a.kind()) || is_array(b.kind()) {
            let r = self.backend.binary(&self.heap, BinaryOp::Compare(op), a, b);
            let h = self.lib(r)?;
            return self.own(h);
        }
        let r = match op {
            CmpOp::In => self.contains(b, a)?,
            CmpOp::NotIn => !self.contains(b, a)?,
            CmpOp::Eq => self.eq(a, b)?,
            CmpOp::Ne => !self.eq(a, b)?,
            _ => self.order(op, a, b)?,
        };
        Ok(self.bool(r))
    }

    /// `item in container`.
    pub(crate) fn contains(&mut self, container: &Handle, item: &Handle) -> R<bool> {
        match self.view(container) {
            V::Str(s) => match self.view(item) {
                V::Str(sub) => Ok(s.contains(&sub)),
                _ => Err(type_err(format!(
                    "'in <string>' requires string as left operand, not {}",
                    self.type_name(item)
                ))),
            },
            V::List | V::Tuple => {
                for x in self.heap.items(container) {
                    if x.same(item) || self.eq(&x, item)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            V::Dict => match self.view(item) {
                V::Str(k) => Ok(self.lib(self.heap.dict_get(container, &k))?.is_some()),
                _ => Ok(false),
            },
            V::Array => {
                let r =
                    self.backend
                        .binary(&self.heap, BinaryOp::Compare(CmpOp::In), item, container);
                let h = self.lib(r)?;
                let h = self.own(h)?;
                self.truth(&h)
            }
            _ => Err(type_err(format!(
                "argument of type '{}' is not iterable",
                self.type_name(container)
            ))),
        }
    }

    /// `a == b` as a bool (items of containers compare by identity first, as in Python).
    pub(crate) fn eq(&mut self, a: &Handle, b: &Handle) -> R<bool> {
        self.enter()?;
        let r = self.eq_inner(a, b);
        self.leave();
        r
    }

    pub(crate) fn eq_inner(&mut self, a: &Handle, b: &Handle) -> R<bool> {
        if is_array(a.kind()) || is_array(b.kind()) {
            let h = self.compare(CmpOp::Eq, a, b)?;
            return self.truth(&h);
        }
        if let (Some(x), Some(y)) = (self.num(a), self.num(b)) {
            return Ok(ops::cmp_num(x, y) == Some(std::cmp::Ordering::Equal));
        }
        Ok(match (self.view(a), self.view(b)) {
            (V::None, V::None) => true,
            (V::Str(x), V::Str(y)) => x == y,
            (V::List, V::List) | (V::Tuple, V::Tuple) => {
                if self.heap.len(a) != self.heap.len(b) {
                    return Ok(false);
                }
                for (x, y) in self.heap.items(a).iter().zip(self.heap.items(b).iter()) {
                    if !(x.same(y) || self.eq(x, y)?) {
                        return Ok(false);
                    }
                }
                true
            }
            (V::Dict, V::Dict) => {
                if self.heap.len(a) != self.heap.len(b) {
                    return Ok(false);
                }
                for (k, x) in self.lib(self.heap.dict_entries(a))? {
                    match self.lib(self.heap.dict_get(b, &k))? {
                        Some(y) if x.same(&y) || self.eq(&x, &y)? => {}
                        _ => return Ok(false),
                    }
                }
                true
            }
            (V::Slice(x), V::Slice(y)) => x == y,
            _ => a.same(b),
        })
    }

    /// `a < b` and friends as a bool.
    pub(crate) fn order(&mut self, op: CmpOp, a: &Handle, b: &Handle) -> R<bool> {
        self.enter()?;
        let r = self.order_inner(op, a, b);
        self.leave();
        r
    }

    pub(crate) fn order_inner(&mut self, op: CmpOp, a: &Handle, b: &Handle) -> R<bool> {
        use std::cmp::Ordering::*;
        if is_array(a.kind()) || is_array(b.kind()) {
            let h = self.compare(op, a, b)?;
            return self.truth(&h);
        }
        let apply = |o: Option<std::cmp::Ordering>| match (op, o) {
            (_, None) => false,
            (CmpOp::Lt, Some(o)) => o == Less,
            (CmpOp::Le, Some(o)) => o != Greater,
            (CmpOp::Gt, Some(o)) => o == Greater,
            (CmpOp::Ge, Some(o)) => o != Less,
            (CmpOp::Eq, Some(o)) => o == Equal,
            (_, Some(o)) => o != Equal,
        };
        if let (Some(x), Some(y)) = (self.num(a), self.num(b)) {
            return Ok(apply(ops::cmp_num(x, y)));
        }
        match (self.view(a), self.view(b)) {
            (V::Str(x), V::Str(y)) => Ok(apply(Some(x.cmp(&y)))),
            (V::List, V::List) | (V::Tuple, V::Tuple) => {
                let (xs, ys) = (self.heap.items(a), self.heap.items(b));
                for (x, y) in xs.iter().zip(ys.iter()) {
                    if !(x.same(y) || self.eq(x, y)?) {
                        return self.order(op, x, y);
                    }
                }
                Ok(apply(Some(xs.len().cmp(&ys.len()))))
            }
            _ => Err(type_err(format!(
                "'{}' not supported between instances of '{}' and '{}'",
                op.symbol(),
                self.type_name(a),
                self.type_name(b)
            ))),
        }
    }

    /// The truth value of `v`.
    pub(crate) fn truth(&mut self, v: &Handle) -> R<bool> {
        Ok(match self.view(v) {
            V::None => false,
            V::Bool(b) => b,
            V::Int(i) => i != 0,
            V::Float(f) => f != 0.0,
            V::Str(s) => !s.is_empty(),
            V::List | V::Tuple | V::Dict => self.heap.len(v) > 0,
            V::Array => {
                let r = self.backend.truth(&self.heap, v);
                self.lib(r)?
            }
            _ => true,
        })
    }

    // ----- indexing -----

    /// A dict key (keys are strings in this language).
    pub(crate) fn dict_key(&self, k: &Handle) -> R<String> {
        match self.view(k) {
            V::Str(s) => Ok(s),
            _ => Err(type_err(format!(
                "dict keys must be str in this language, not '{}'",
                self.type_name(k)
            ))),
        }
    }

    pub(crate) fn getitem(&mut self, v: &Handle, i: &Handle) -> R<Handle> {
        let kind = v.kind();
        match self.view(v) {
            V::Array => {
                let r = self.backend.subscript(&self.heap, v, i);
                let h = self.lib(r)?;
                self.own(h)
            }
            V::List | V::Tuple => {
                let len = self.heap.len(v);
                if let Some(ix) = self.as_index(i) {
                    let pos = ops::seq_index(ix, len).ok_or_else(|| {
                        exc(ErrorKind::IndexError, format!("{kind} index out of range"))
                    })?;
                    return self.heap.item(v, pos).ok_or_else(|| {
                        exc(ErrorKind::IndexError, format!("{kind} index out of range"))
                    });
                }
                if let V::Slice(parts) = self.view(i) {
                    let idx = ops::slice_indices(parts, len)?;
                    let items = self.heap.items(v);
                    let refs: Vec<&Handle> = idx.iter().map(|&j| &items[j]).collect();
                    return Ok(if kind == Kind::List {
                        self.heap.list(&refs)
                    } else {
                        self.heap.tuple(&refs)
                    });
                }
                Err(type_err(format!(
                    "{kind} indices must be integers or slices, not {}",
                    self.type_name(i)
                )))
            }
            V::Str(s) => {
                let chars: Vec<char> = s.chars().collect();
                if let Some(ix) = self.as_index(i) {
                    let pos = ops::seq_index(ix, chars.len())
                        .ok_or_else(|| exc(ErrorKind::IndexError, "string index out of range"))?;
                    return Ok(self.heap.str(&chars[pos].to_string()));
                }
                if let V::Slice(parts) = self.view(i) {
                    let idx = ops::slice_indices(parts, chars.len())?;
                    let s: String = idx.iter().map(|&j| chars[j]).collect();
                    return Ok(self.heap.str(&s));
                }
                Err(type_err(format!(
                    "string indices must be integers, not '{}'",
                    self.type_name(i)
                )))
            }
            V::Dict => {
                let found = match self.view(i) {
                    V::Str(k) => self.lib(self.heap.dict_get(v, &k))?,
                    _ => None,
                };
                match found {
                    Some(h) => Ok(h),
                    None => Err(exc(ErrorKind::KeyError, self.repr(i)?)),
                }
            }
            _ => Err(type_err(format!(
                "'{}' object is not subscriptable",
                self.type_name(v)
            ))),
        }
    }

    pub(crate) fn setitem(&mut self, v: &Handle, i: &Handle, value: &Handle) -> R<()> {
        match self.view(v) {
            V::Array => {
                let r = self.backend.set_subscript(&self.heap, v, i, value);
                self.lib(r)
            }
            V::List => {
                if let Some(ix) = self.as_index(i) {
                    let pos = ops::seq_index(ix, self.heap.len(v)).ok_or_else(|| {
                        exc(ErrorKind::IndexError, "list assignment index out of range")
                    })?;
                    return self.lib(self.heap.list_set(v, pos, value));
                }
                if i.kind() == Kind::Slice {
                    return Err(type_err("slice assignment is not supported"));
                }
                Err(type_err(format!(
                    "list indices must be integers or slices, not {}",
                    self.type_name(i)
                )))
            }
            V::Dict => {
                let k = self.dict_key(i)?;
                self.lib(self.heap.dict_set(v, &k, value))
            }
            _ => Err(type_err(format!(
                "'{}' object does not support item assignment",
                self.type_name(v)
            ))),
        }
    }

    pub(crate) fn delitem(&mut self, v: &Handle, i: &Handle) -> R<()> {
        match self.view(v) {
            V::List => {
                let len = self.heap.len(v);
                if let Some(ix) = self.as_index(i) {
                    let pos = ops::seq_index(ix, len).ok_or_else(|| {
                        exc(ErrorKind::IndexError, "list assignment index out of range")
                    })?;
                    self.lib(self.heap.list_remove(v, pos))?;
                    return Ok(());
                }
                if let V::Slice(parts) = self.view(i) {
                    let gone = ops::slice_indices(parts, len)?;
                    let mut drop_mask = vec![false; len];
                    for j in gone {
                        drop_mask[j] = true;
                    }
                    let keep: Vec<Handle> = self
                        .heap
                        .items(v)
                        .into_iter()
                        .zip(drop_mask)
                        .filter(|(_, d)| !d)
                        .map(|(h, _)| h)
                        .collect();
                    self.lib(self.heap.clear(v))?;
                    for h in &keep {
                        self.lib(self.heap.list_append(v, h))?;
                    }
                    return Ok(());
                }
                Err(type_err(format!(
                    "list indices must be integers or slices, not {}",
                    self.type_name(i)
                )))
            }
            V::Dict => {
                let removed = match self.view(i) {
                    V::Str(k) => self.lib(self.heap.dict_remove(v, &k))?,
                    _ => None,
                };
                match removed {
                    Some(_) => Ok(()),
                    None => Err(exc(ErrorKind::KeyError, self.repr(i)?)),
                }
            }
            _ => Err(type_err(format!(
                "'{}' object doesn't support item deletion",
                self.type_name(v)
            ))),
        }
    }

    // ----- iteration -----

    pub(crate) fn make_iter(&mut self, v: &Handle) -> R<Iter> {
        Ok(match self.view(v) {
            V::List | V::Tuple => Iter::Items(self.heap.items(v).into_iter()),
            V::Str(s) => {
                let chars: Vec<Handle> = s.chars().map(|c| self.heap.str(&c.to_string())).collect();
                Iter::Items(chars.into_iter())
            }
            V::Dict => {
                let keys: Vec<Handle> = self
                    .lib(self.heap.dict_entries(v))?
                    .into_iter()
                    .map(|(k, _)| self.heap.str(&k))
                    .collect();
                Iter::Items(keys.into_iter())
            }
            V::Array => {
                let len = self.array_len(v)?;
                Iter::Array {
                    array: v.clone(),
                    len,
                    next: 0,
                }
            }
            _ => {
                return Err(type_err(format!(
                    "'{}' object is not iterable",
                    self.type_name(v)
                )));
            }
        })
    }

    /// The length of an array's first axis (from its `shape`).
    pub(crate) fn array_len(&mut self, v: &Handle) -> R<i64> {
        let r = self.backend.attribute(&self.heap, v, "shape");
        let shape = self.own(self.lib(r)?)?;
        let first = self.heap.item(&shape, 0);
        match first.and_then(|h| self.as_index(&h)) {
            Some(n) => Ok(n),
            None => Err(type_err("iteration over a 0-d array")),
        }
    }

    pub(crate) fn next(&mut self, it: &mut Iter) -> R<Option<Handle>> {
        Ok(match it {
            Iter::Items(items) => items.next(),
            Iter::Range { next, stop, step } => {
                if (*step > 0 && *next < *stop) || (*step < 0 && *next > *stop) {
                    let v = *next;
                    match next.checked_add(*step) {
                        Some(n) => *next = n,
                        None => *next = *stop,
                    }
                    Some(self.int(v))
                } else {
                    None
                }
            }
            Iter::Array { array, len, next } => {
                if *next >= *len {
                    None
                } else {
                    let i = self.int(*next);
                    *next += 1;
                    let r = self.backend.subscript(&self.heap, array, &i);
                    Some(self.own(self.lib(r)?)?)
                }
            }
        })
    }

    /// All items of an iterable.
    pub(crate) fn collect(&mut self, v: &Handle) -> R<Vec<Handle>> {
        let mut it = self.make_iter(v)?;
        let mut out = Vec::new();
        while let Some(x) = self.next(&mut it)? {
            out.push(x);
        }
        Ok(out)
    }

    // ----- text -----

    /// `str(v)`.
    pub(crate) fn str_of(&mut self, v: &Handle) -> R<String> {
        match self.view(v) {
            V::Str(s) => Ok(s),
            V::Array => {
                let r = self.backend.str(&self.heap, v);
                self.lib(r)
            }
            _ => self.repr(v),
        }
    }

    /// `repr(v)` (a container that holds itself shows `[...]`).
    pub(crate) fn repr(&mut self, v: &Handle) -> R<String> {
        let mut out = String::new();
        let mut stack = Vec::new();
        self.repr_into(v, &mut out, &mut stack)?;
        Ok(out)
    }

    pub(crate) fn repr_into(
        &mut self,
        v: &Handle,
        out: &mut String,
        stack: &mut Vec<u32>,
    ) -> R<()> {
        self.enter()?;
        let r = self.repr_inner(v, out, stack);
        self.leave();
        r
    }

    pub(crate) fn repr_inner(
        &mut self,
        v: &Handle,
        out: &mut String,
        stack: &mut Vec<u32>,
    ) -> R<()> {
        match self.view(v) {
            V::None => out.push_str("None"),
            V::Bool(b) => out.push_str(if b { "True" } else { "False" }),
            V::Int(i) => out.push_str(&i.to_string()),
            V::Float(f) => out.push_str(&ops::float_repr(f)),
            V::Str(s) => out.push_str(&ops::str_repr(&s)),
            kind @ (V::List | V::Tuple | V::Dict) => {
                let (open, close) = match kind {
                    V::List => ("[", "]"),
                    V::Tuple => ("(", ")"),
                    _ => ("{", "}"),
                };
                if stack.contains(&v.id()) {
                    out.push_str(open);
                    out.push_str("...");
                    out.push_str(close);
                    return Ok(());
                }
                stack.push(v.id());
                out.push_str(open);
                if let V::Dict = kind {
                    for (i, (k, x)) in self.lib(self.heap.dict_entries(v))?.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        out.push_str(&ops::str_repr(k));
                        out.push_str(": ");
                        self.repr_into(x, out, stack)?;
                    }
                } else {
                    let items = self.heap.items(v);
                    for (i, x) in items.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        self.repr_into(x, out, stack)?;
                    }
                    if matches!(kind, V::Tuple) && items.len() == 1 {
                        out.push(',');
                    }
                }
                out.push_str(close);
                stack.pop();
            }
            V::Array => {
                let r = self.backend.repr(&self.heap, v);
                out.push_str(&self.lib(r)?);
            }
            V::Function => {
                let name = self.heap.function_name(v).unwrap_or_default();
                match self.code(v).as_deref() {
                    Some(Code::User { .. }) => out.push_str(&format!("<function {name}>")),
                    Some(Code::Method(_)) => {
                        let recv = self.heap.items(v).into_iter().next();
                        let t = recv.map(|r| self.type_name(&r)).unwrap_or_default();
                        out.push_str(&format!("<built-in method {name} of {t} object>"));
                    }
                    Some(Code::ModuleFn(m, n)) => {
                        out.push_str(&format!("<built-in function {m}.{n}>"))
                    }
                    _ => out.push_str(&format!("<built-in function {name}>")),
                }
            }
            V::Slice(p) => {
                let part = |x: Option<i64>| x.map_or("None".to_string(), |v| v.to_string());
                out.push_str(&format!(
                    "slice({}, {}, {})",
                    part(p[0]),
                    part(p[1]),
                    part(p[2])
                ));
            }
            V::Module(m) => out.push_str(&format!("<module '{m}'>")),
            V::Other => out.push_str(&format!("<{} object #{}>", v.kind(), v.id())),
        }
        Ok(())
    }

    /// Writes text to the script's output.
    pub(crate) fn write_out(&mut self, s: &str) -> R<()> {
        self.out
            .write_all(s.as_bytes())
            .map_err(|e| exc(ErrorKind::OSError, format!("writing the output: {e}")))
    }
}
