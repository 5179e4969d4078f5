//! Builtin functions, methods of the built-in types, and the `gc`, `sys` and `heap` modules.

use std::sync::Arc;

use crate::heap::{Handle, Kind};

use super::ast::CmpOp;
use super::error::*;
use super::format::{format_spec, format_template};
use super::interp::{Code, Interpreter, V, check_repeat};
use super::ops::{self, Num};

/// The builtin functions.
const BUILTINS: [&str; 27] = [
    "abs",
    "all",
    "any",
    "bool",
    "chr",
    "dict",
    "divmod",
    "enumerate",
    "float",
    "format",
    "int",
    "isinstance",
    "len",
    "list",
    "max",
    "min",
    "ord",
    "print",
    "range",
    "repr",
    "reversed",
    "round",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
];

/// The modules.
const MODULES: [&str; 3] = ["gc", "sys", "heap"];

const LIST_METHODS: [&str; 11] = [
    "append", "extend", "pop", "insert", "remove", "index", "count", "reverse", "sort", "copy",
    "clear",
];
const DICT_METHODS: [&str; 9] = [
    "keys",
    "values",
    "items",
    "get",
    "pop",
    "update",
    "setdefault",
    "copy",
    "clear",
];
const STR_METHODS: [&str; 16] = [
    "split",
    "join",
    "strip",
    "lstrip",
    "rstrip",
    "upper",
    "lower",
    "replace",
    "startswith",
    "endswith",
    "find",
    "count",
    "format",
    "isdigit",
    "isalpha",
    "isspace",
];
const TUPLE_METHODS: [&str; 2] = ["index", "count"];

/// The builtin called `name`, if there is one.
pub(crate) fn builtin_name(name: &str) -> Option<&'static str> {
    BUILTINS.iter().copied().find(|b| *b == name)
}

/// True for the names of modules.
pub(crate) fn is_module(name: &str) -> bool {
    MODULES.contains(&name)
}

/// True if values of `kind` have a method `name`.
pub(crate) fn has_method(kind: Kind, name: &str) -> bool {
    match kind {
        Kind::List => LIST_METHODS.contains(&name),
        Kind::Dict => DICT_METHODS.contains(&name),
        Kind::Str => STR_METHODS.contains(&name),
        Kind::Tuple => TUPLE_METHODS.contains(&name),
        _ => false,
    }
}

/// The arguments of a builtin call.
pub(crate) struct Args {
    pub(crate) name: String,
    pub(crate) pos: Vec<Handle>,
    pub(crate) kw: Vec<(String, Handle)>,
}

impl Args {
    pub(crate) fn new(name: &str, pos: Vec<Handle>, kw: Vec<(String, Handle)>) -> Args {
        Args {
            name: name.to_string(),
            pos,
            kw,
        }
    }

    /// Takes keyword `k`.
    pub(crate) fn kw(&mut self, k: &str) -> Option<Handle> {
        let i = self.kw.iter().position(|(n, _)| n == k)?;
        Some(self.kw.remove(i).1)
    }

    /// Checks the positional count and that no keyword is left.
    pub(crate) fn check(&self, min: usize, max: usize) -> R<()> {
        if let Some((k, _)) = self.kw.first() {
            return Err(type_err(format!(
                "{}() got an unexpected keyword argument '{k}'",
                self.name
            )));
        }
        let n = self.pos.len();
        if n < min || n > max {
            let want = if min == max {
                format!("exactly {min} argument{}", if min == 1 { "" } else { "s" })
            } else if n < min {
                format!("at least {min} argument{}", if min == 1 { "" } else { "s" })
            } else {
                format!("at most {max} argument{}", if max == 1 { "" } else { "s" })
            };
            return Err(type_err(format!(
                "{}() takes {want} ({n} given)",
                self.name
            )));
        }
        Ok(())
    }
}

impl Interpreter {
    /// The value of a builtin name (a function or module object), if it is one.
    pub(crate) fn builtin_value(&self, name: &str) -> Option<Handle> {
        if let Some(b) = builtin_name(name) {
            return Some(self.heap.function(b, Arc::new(Code::Builtin(b)), &[]));
        }
        is_module(name).then(|| self.heap.module(name))
    }

    pub(crate) fn int_arg(&self, fname: &str, h: &Handle) -> R<i64> {
        self.as_index(h).ok_or_else(|| {
            type_err(format!(
                "{fname}(): '{}' object cannot be interpreted as an integer",
                self.type_name(h)
            ))
        })
    }

    pub(crate) fn str_arg(&self, fname: &str, h: &Handle) -> R<String> {
        match self.view(h) {
            V::Str(s) => Ok(s),
            _ => Err(type_err(format!(
                "{fname}() argument must be str, not {}",
                self.type_name(h)
            ))),
        }
    }

    pub(crate) fn list_of(&self, items: &[Handle]) -> Handle {
        let refs: Vec<&Handle> = items.iter().collect();
        self.heap.list(&refs)
    }

    pub(crate) fn tuple_of(&self, items: &[Handle]) -> Handle {
        let refs: Vec<&Handle> = items.iter().collect();
        self.heap.tuple(&refs)
    }

    pub(crate) fn u64_handle(&self, v: u64) -> Handle {
        self.int(i64::try_from(v).unwrap_or(i64::MAX))
    }

    /// Runs builtin `name`.
    pub(crate) fn call_builtin(
        &mut self,
        name: &'static str,
        args: Vec<Handle>,
        kwargs: Vec<(String, Handle)>,
    ) -> R<Handle> {
        let mut a = Args::new(name, args, kwargs);
        match name {
            "print" => {
                let sep = match a.kw("sep") {
                    Some(s) if s.kind() != Kind::None => self.str_arg("print", &s)?,
                    _ => " ".into(),
                };
                let end = match a.kw("end") {
                    Some(s) if s.kind() != Kind::None => self.str_arg("print", &s)?,
                    _ => "\n".into(),
                };
                let flush = match a.kw("flush") {
                    Some(f) => self.truth(&f)?,
                    None => false,
                };
                a.check(0, usize::MAX)?;
                let mut text = String::new();
                for (i, v) in a.pos.iter().enumerate() {
                    if i > 0 {
                        text.push_str(&sep);
                    }
                    text.push_str(&self.str_of(v)?);
                }
                text.push_str(&end);
                self.write_out(&text)?;
                if flush {
                    self.out
                        .flush()
                        .map_err(|e| exc(ErrorKind::OSError, format!("writing the output: {e}")))?;
                }
                Ok(self.none.clone())
            }
            "len" => {
                a.check(1, 1)?;
                let v = &a.pos[0];
                let n = match self.view(v) {
                    V::Str(s) => s.chars().count() as i64,
                    V::List | V::Tuple | V::Dict => self.heap.len(v) as i64,
                    V::Array => self
                        .array_len(v)
                        .map_err(|_| type_err("len() of unsized object"))?,
                    _ => {
                        return Err(type_err(format!(
                            "object of type '{}' has no len()",
                            self.type_name(v)
                        )));
                    }
                };
                Ok(self.int(n))
            }
            "range" => {
                a.check(1, 3)?;
                let (start, stop, step) = self.range_args(&a.pos)?;
                let count = if (step > 0 && start < stop) || (step < 0 && start > stop) {
                    let span = (stop as i128 - start as i128).unsigned_abs();
                    span.div_ceil(step.unsigned_abs() as u128)
                } else {
                    0
                };
                let n = check_repeat(1, i64::try_from(count).unwrap_or(i64::MAX)).map_err(|_| {
                    exc(
                        ErrorKind::MemoryError,
                        format!(
                            "range() of {count} items is too large to build as a list (a `for` loop over range() does not build one)"
                        ),
                    )
                })?;
                let items: Vec<Handle> =
                    (0..n as i64).map(|i| self.int(start + i * step)).collect();
                Ok(self.list_of(&items))
            }
            "str" => {
                a.check(0, 1)?;
                match a.pos.first() {
                    Some(v) => {
                        let s = self.str_of(v)?;
                        Ok(self.heap.str(&s))
                    }
                    None => Ok(self.heap.str("")),
                }
            }
            "repr" => {
                a.check(1, 1)?;
                let s = self.repr(&a.pos[0])?;
                Ok(self.heap.str(&s))
            }
            "bool" => {
                a.check(0, 1)?;
                let b = match a.pos.first() {
                    Some(v) => self.truth(v)?,
                    None => false,
                };
                Ok(self.bool(b))
            }
            "int" => {
                let base = a.kw("base");
                a.check(0, 2)?;
                let base = match (a.pos.get(1).cloned(), base) {
                    (Some(b), _) | (None, Some(b)) => Some(self.int_arg("int", &b)?),
                    _ => None,
                };
                let Some(v) = a.pos.first() else {
                    return Ok(self.int(0));
                };
                if let Some(b) = base {
                    let V::Str(s) = self.view(v) else {
                        return Err(type_err(
                            "int() can't convert non-string with explicit base",
                        ));
                    };
                    return Ok(self.int(parse_int(&s, b)?));
                }
                match self.view(v) {
                    V::Int(i) => Ok(self.int(i)),
                    V::Bool(b) => Ok(self.int(i64::from(b))),
                    V::Float(f) => Ok(self.int(float_to_int(f)?)),
                    V::Str(s) => Ok(self.int(parse_int(&s, 10)?)),
                    _ => Err(type_err(format!(
                        "int() argument must be a string or a real number, not '{}'",
                        self.type_name(v)
                    ))),
                }
            }
            "float" => {
                a.check(0, 1)?;
                let Some(v) = a.pos.first() else {
                    return Ok(self.heap.float(0.0));
                };
                let f = match self.view(v) {
                    V::Int(i) => i as f64,
                    V::Bool(b) => f64::from(u8::from(b)),
                    V::Float(f) => f,
                    V::Str(s) => parse_float(&s)?,
                    _ => {
                        return Err(type_err(format!(
                            "float() argument must be a string or a real number, not '{}'",
                            self.type_name(v)
                        )));
                    }
                };
                Ok(self.heap.float(f))
            }
            "list" | "tuple" => {
                a.check(0, 1)?;
                let items = match a.pos.first() {
                    Some(v) => self.collect(v)?,
                    None => Vec::new(),
                };
                Ok(if name == "list" {
                    self.list_of(&items)
                } else {
                    self.tuple_of(&items)
                })
            }
            "dict" => {
                let kw = std::mem::take(&mut a.kw);
                a.check(0, 1)?;
                let d = self.heap.dict(&[]);
                if let Some(src) = a.pos.first() {
                    self.dict_update(&d, src)?;
                }
                for (k, v) in kw {
                    self.lib(self.heap.dict_set(&d, &k, &v))?;
                }
                Ok(d)
            }
            "min" | "max" => self.min_max(a),
            "abs" => {
                a.check(1, 1)?;
                let v = &a.pos[0];
                match self.num(v) {
                    Some(Num::Int(i)) => Ok(self.int(i.checked_abs().ok_or_else(|| {
                        exc(
                            ErrorKind::OverflowError,
                            format!("integer overflow: abs({i}) does not fit in a 64-bit int"),
                        )
                    })?)),
                    Some(Num::Float(f)) => Ok(self.heap.float(f.abs())),
                    None => Err(type_err(format!(
                        "bad operand type for abs(): '{}'",
                        self.type_name(v)
                    ))),
                }
            }
            "sum" => {
                let start = a.kw("start");
                a.check(1, 2)?;
                let mut acc = match a.pos.get(1).cloned().or(start) {
                    Some(s) => s,
                    None => self.int(0),
                };
                if acc.kind() == Kind::Str {
                    return Err(type_err(
                        "sum() can't sum strings [use ''.join(seq) instead]",
                    ));
                }
                let mut it = self.make_iter(&a.pos[0])?;
                while let Some(x) = self.next(&mut it)? {
                    acc = self.binop(super::ast::BinOp::Add, &acc, &x)?;
                }
                Ok(acc)
            }
            "enumerate" => {
                let start = a.kw("start");
                a.check(1, 2)?;
                let start = match a.pos.get(1).cloned().or(start) {
                    Some(s) => self.int_arg("enumerate", &s)?,
                    None => 0,
                };
                let items = self.collect(&a.pos[0])?;
                let mut out = Vec::with_capacity(items.len());
                for (i, x) in items.into_iter().enumerate() {
                    let n = start.checked_add(i as i64).ok_or_else(|| {
                        exc(
                            ErrorKind::OverflowError,
                            "enumerate() count overflows a 64-bit int",
                        )
                    })?;
                    out.push(self.tuple_of(&[self.int(n), x]));
                }
                Ok(self.list_of(&out))
            }
            "zip" => {
                a.check(0, usize::MAX)?;
                let mut cols = Vec::new();
                for v in &a.pos {
                    cols.push(self.collect(v)?);
                }
                let n = cols.iter().map(Vec::len).min().unwrap_or(0);
                let rows: Vec<Handle> = (0..n)
                    .map(|i| {
                        let row: Vec<Handle> = cols.iter().map(|c| c[i].clone()).collect();
                        self.tuple_of(&row)
                    })
                    .collect();
                Ok(self.list_of(&rows))
            }
            "sorted" => {
                let key = a.kw("key");
                let reverse = match a.kw("reverse") {
                    Some(r) => self.truth(&r)?,
                    None => false,
                };
                a.check(1, 1)?;
                let items = self.collect(&a.pos[0])?;
                let sorted = self.sort_items(items, key, reverse)?;
                Ok(self.list_of(&sorted))
            }
            "reversed" => {
                a.check(1, 1)?;
                let mut items = self.collect(&a.pos[0])?;
                items.reverse();
                Ok(self.list_of(&items))
            }
            "any" | "all" => {
                a.check(1, 1)?;
                let mut it = self.make_iter(&a.pos[0])?;
                let want = name == "any";
                while let Some(x) = self.next(&mut it)? {
                    if self.truth(&x)? == want {
                        return Ok(self.bool(want));
                    }
                }
                Ok(self.bool(!want))
            }
            "isinstance" => {
                a.check(2, 2)?;
                let types = match a.pos[1].kind() {
                    Kind::Tuple => self.heap.items(&a.pos[1]),
                    _ => vec![a.pos[1].clone()],
                };
                let k = a.pos[0].kind();
                for t in &types {
                    let tname = match self.code(t).as_deref() {
                        Some(Code::Builtin(n)) => *n,
                        _ => "",
                    };
                    let hit = match tname {
                        "int" => matches!(k, Kind::Int | Kind::Bool),
                        "bool" => k == Kind::Bool,
                        "float" => k == Kind::Float,
                        "str" => k == Kind::Str,
                        "list" => k == Kind::List,
                        "tuple" => k == Kind::Tuple,
                        "dict" => k == Kind::Dict,
                        _ => {
                            return Err(type_err(
                                "isinstance() arg 2 must be a type or tuple of types",
                            ));
                        }
                    };
                    if hit {
                        return Ok(self.bool(true));
                    }
                }
                Ok(self.bool(false))
            }
            "divmod" => {
                a.check(2, 2)?;
                let q = self.binop(super::ast::BinOp::FloorDiv, &a.pos[0], &a.pos[1])?;
                let r = self.binop(super::ast::BinOp::Mod, &a.pos[0], &a.pos[1])?;
                Ok(self.tuple_of(&[q, r]))
            }
            "round" => {
                let nd = a.kw("ndigits");
                a.check(1, 2)?;
                let nd = match a.pos.get(1).cloned().or(nd) {
                    Some(n) if n.kind() != Kind::None => Some(self.int_arg("round", &n)?),
                    _ => None,
                };
                let v = &a.pos[0];
                match (self.num(v), nd) {
                    (Some(Num::Int(i)), None) => Ok(self.int(i)),
                    (Some(Num::Int(i)), Some(n)) => Ok(self.int(round_int(i, n)?)),
                    (Some(Num::Float(f)), None) => Ok(self.int(float_to_int(f.round_ties_even())?)),
                    (Some(Num::Float(f)), Some(n)) => Ok(self.heap.float(round_float(f, n))),
                    _ => Err(type_err(format!(
                        "type {} doesn't define __round__ method",
                        self.type_name(v)
                    ))),
                }
            }
            "chr" => {
                a.check(1, 1)?;
                let i = self.int_arg("chr", &a.pos[0])?;
                let c = u32::try_from(i)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| value_err("chr() arg not in range(0x110000)"))?;
                Ok(self.heap.str(&c.to_string()))
            }
            "ord" => {
                a.check(1, 1)?;
                let s = self.str_arg("ord", &a.pos[0])?;
                let mut cs = s.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) => Ok(self.int(c as i64)),
                    _ => Err(type_err(format!(
                        "ord() expected a character, but string of length {} found",
                        s.chars().count()
                    ))),
                }
            }
            "format" => {
                a.check(1, 2)?;
                let spec = match a.pos.get(1) {
                    Some(s) => self.str_arg("format", s)?,
                    None => String::new(),
                };
                let s = format_spec(self, &a.pos[0], &spec)?;
                Ok(self.heap.str(&s))
            }
            _ => Err(exc(
                ErrorKind::NameError,
                format!("name '{name}' is not defined"),
            )),
        }
    }

    fn min_max(&mut self, mut a: Args) -> R<Handle> {
        let is_min = a.name == "min";
        let key = a.kw("key");
        let default = a.kw("default");
        a.check(1, usize::MAX)?;
        let items = if a.pos.len() == 1 {
            self.collect(&a.pos[0])?
        } else {
            if default.is_some() {
                return Err(type_err(format!(
                    "Cannot specify a default for {}() with multiple positional arguments",
                    a.name
                )));
            }
            std::mem::take(&mut a.pos)
        };
        let mut best: Option<(Handle, Handle)> = None;
        for x in items {
            let k = match &key {
                Some(f) if f.kind() != Kind::None => {
                    self.call_value(f, vec![x.clone()], Vec::new())?
                }
                _ => x.clone(),
            };
            let better = match &best {
                None => true,
                Some((bk, _)) if is_min => self.order(CmpOp::Lt, &k, bk)?,
                Some((bk, _)) => self.order(CmpOp::Lt, bk, &k)?,
            };
            if better {
                best = Some((k, x));
            }
        }
        match (best, default) {
            (Some((_, x)), _) => Ok(x),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(value_err(format!("{}() arg is an empty sequence", a.name))),
        }
    }

    /// A stable merge sort by `<` (Python's `sorted`), failing cleanly on incomparable items.
    fn sort_items(
        &mut self,
        mut items: Vec<Handle>,
        key: Option<Handle>,
        reverse: bool,
    ) -> R<Vec<Handle>> {
        if reverse {
            items.reverse();
        }
        let keys = match key {
            Some(f) if f.kind() != Kind::None => {
                let mut ks = Vec::with_capacity(items.len());
                for x in &items {
                    ks.push(self.call_value(&f, vec![x.clone()], Vec::new())?);
                }
                ks
            }
            _ => items.clone(),
        };
        let n = items.len();
        let mut idx: Vec<usize> = (0..n).collect();
        let mut buf = vec![0usize; n];
        let mut width = 1;
        while width < n {
            let mut lo = 0;
            while lo < n {
                let mid = (lo + width).min(n);
                let hi = (lo + 2 * width).min(n);
                let (mut l, mut r, mut k) = (lo, mid, lo);
                while l < mid && r < hi {
                    if self.order(CmpOp::Lt, &keys[idx[r]], &keys[idx[l]])? {
                        buf[k] = idx[r];
                        r += 1;
                    } else {
                        buf[k] = idx[l];
                        l += 1;
                    }
                    k += 1;
                }
                buf[k..k + (mid - l)].copy_from_slice(&idx[l..mid]);
                k += mid - l;
                buf[k..k + (hi - r)].copy_from_slice(&idx[r..hi]);
                lo += 2 * width;
            }
            std::mem::swap(&mut idx, &mut buf);
            width *= 2;
        }
        let mut out: Vec<Handle> = idx.into_iter().map(|i| items[i].clone()).collect();
        if reverse {
            out.reverse();
        }
        Ok(out)
    }

    /// `d.update(src)`: from a dict or an iterable of key/value pairs.
    fn dict_update(&mut self, d: &Handle, src: &Handle) -> R<()> {
        if src.kind() == Kind::Dict {
            for (k, v) in self.lib(self.heap.dict_entries(src))? {
                self.lib(self.heap.dict_set(d, &k, &v))?;
            }
            return Ok(());
        }
        let items = self.collect(src)?;
        for (i, pair) in items.iter().enumerate() {
            let kv = self.collect(pair).map_err(|_| {
                type_err(format!(
                    "cannot convert dictionary update sequence element #{i} to a sequence"
                ))
            })?;
            if kv.len() != 2 {
                return Err(value_err(format!(
                    "dictionary update sequence element #{i} has length {}; 2 is required",
                    kv.len()
                )));
            }
            let k = self.dict_key(&kv[0])?;
            self.lib(self.heap.dict_set(d, &k, &kv[1]))?;
        }
        Ok(())
    }

    /// `recv.name(args)` for lists, dicts, strings and tuples.
    pub(crate) fn call_method(
        &mut self,
        recv: &Handle,
        name: &str,
        args: Vec<Handle>,
        kwargs: Vec<(String, Handle)>,
    ) -> R<Handle> {
        let kind = recv.kind();
        if !has_method(kind, name) {
            return Err(exc(
                ErrorKind::AttributeError,
                format!(
                    "'{}' object has no attribute '{name}'",
                    self.type_name(recv)
                ),
            ));
        }
        let a = Args::new(&format!("{}.{name}", kind.name()), args, kwargs);
        match kind {
            Kind::List => self.list_method(recv, name, a),
            Kind::Dict => self.dict_method(recv, name, a),
            Kind::Str => {
                let s = self.heap.as_str(recv).unwrap_or_default();
                self.str_method(&s, name, a)
            }
            _ => {
                a.check(1, 1)?;
                self.seq_search(recv, name, &a.pos[0])
            }
        }
    }

    /// `index` / `count` of lists and tuples.
    fn seq_search(&mut self, recv: &Handle, name: &str, x: &Handle) -> R<Handle> {
        let items = self.heap.items(recv);
        if name == "count" {
            let mut n = 0;
            for y in &items {
                if y.same(x) || self.eq(y, x)? {
                    n += 1;
                }
            }
            return Ok(self.int(n));
        }
        for (i, y) in items.iter().enumerate() {
            if y.same(x) || self.eq(y, x)? {
                return Ok(self.int(i as i64));
            }
        }
        let what = if recv.kind() == Kind::List {
            format!("{} is not in list", self.repr(x)?)
        } else {
            "tuple.index(x): x not in tuple".to_string()
        };
        Err(value_err(what))
    }

    fn list_method(&mut self, l: &Handle, name: &str, mut a: Args) -> R<Handle> {
        let none = self.none.clone();
        match name {
            "append" => {
                a.check(1, 1)?;
                self.lib(self.heap.list_append(l, &a.pos[0]))?;
            }
            "extend" => {
                a.check(1, 1)?;
                for x in self.collect(&a.pos[0])? {
                    self.lib(self.heap.list_append(l, &x))?;
                }
            }
            "pop" => {
                a.check(0, 1)?;
                let len = self.heap.len(l);
                if len == 0 {
                    return Err(exc(ErrorKind::IndexError, "pop from empty list"));
                }
                let i = match a.pos.first() {
                    Some(i) => self.int_arg("pop", i)?,
                    None => -1,
                };
                let pos = ops::seq_index(i, len)
                    .ok_or_else(|| exc(ErrorKind::IndexError, "pop index out of range"))?;
                let v = self.lib(self.heap.list_remove(l, pos))?;
                return v.ok_or_else(|| exc(ErrorKind::IndexError, "pop index out of range"));
            }
            "insert" => {
                a.check(2, 2)?;
                let i = self.int_arg("insert", &a.pos[0])?;
                let len = self.heap.len(l) as i64;
                let pos = if i < 0 { (i + len).max(0) } else { i.min(len) };
                self.lib(self.heap.list_insert(l, pos as usize, &a.pos[1]))?;
            }
            "remove" => {
                a.check(1, 1)?;
                let items = self.heap.items(l);
                let mut found = None;
                for (i, y) in items.iter().enumerate() {
                    if y.same(&a.pos[0]) || self.eq(y, &a.pos[0])? {
                        found = Some(i);
                        break;
                    }
                }
                drop(items);
                let i = found.ok_or_else(|| value_err("list.remove(x): x not in list"))?;
                self.lib(self.heap.list_remove(l, i))?;
            }
            "index" | "count" => {
                a.check(1, 1)?;
                return self.seq_search(l, name, &a.pos[0]);
            }
            "reverse" | "sort" | "clear" => {
                let items = self.heap.items(l);
                let new = match name {
                    "reverse" => {
                        a.check(0, 0)?;
                        items.into_iter().rev().collect()
                    }
                    "sort" => {
                        let key = a.kw("key");
                        let reverse = match a.kw("reverse") {
                            Some(r) => self.truth(&r)?,
                            None => false,
                        };
                        a.check(0, 0)?;
                        self.sort_items(items, key, reverse)?
                    }
                    _ => {
                        a.check(0, 0)?;
                        Vec::new()
                    }
                };
                self.lib(self.heap.clear(l))?;
                for x in &new {
                    self.lib(self.heap.list_append(l, x))?;
                }
            }
            "copy" => {
                a.check(0, 0)?;
                let items = self.heap.items(l);
                return Ok(self.list_of(&items));
            }
            _ => unreachable!("has_method checked"),
        }
        Ok(none)
    }

    fn dict_method(&mut self, d: &Handle, name: &str, mut a: Args) -> R<Handle> {
        match name {
            "keys" | "values" | "items" => {
                a.check(0, 0)?;
                let entries = self.lib(self.heap.dict_entries(d))?;
                let out: Vec<Handle> = entries
                    .into_iter()
                    .map(|(k, v)| match name {
                        "keys" => self.heap.str(&k),
                        "values" => v,
                        _ => self.tuple_of(&[self.heap.str(&k), v]),
                    })
                    .collect();
                Ok(self.list_of(&out))
            }
            "get" => {
                a.check(1, 2)?;
                let found = match self.view(&a.pos[0]) {
                    V::Str(k) => self.lib(self.heap.dict_get(d, &k))?,
                    _ => None,
                };
                Ok(found.unwrap_or_else(|| a.pos.get(1).cloned().unwrap_or(self.none.clone())))
            }
            "pop" => {
                a.check(1, 2)?;
                let found = match self.view(&a.pos[0]) {
                    V::Str(k) => self.lib(self.heap.dict_remove(d, &k))?,
                    _ => None,
                };
                match (found, a.pos.get(1)) {
                    (Some(v), _) => Ok(v),
                    (None, Some(default)) => Ok(default.clone()),
                    (None, None) => Err(exc(ErrorKind::KeyError, self.repr(&a.pos[0])?)),
                }
            }
            "setdefault" => {
                a.check(1, 2)?;
                let k = self.dict_key(&a.pos[0])?;
                if let Some(v) = self.lib(self.heap.dict_get(d, &k))? {
                    return Ok(v);
                }
                let v = a.pos.get(1).cloned().unwrap_or(self.none.clone());
                self.lib(self.heap.dict_set(d, &k, &v))?;
                Ok(v)
            }
            "update" => {
                let kw = std::mem::take(&mut a.kw);
                a.check(0, 1)?;
                if let Some(src) = a.pos.first() {
                    self.dict_update(d, src)?;
                }
                for (k, v) in kw {
                    self.lib(self.heap.dict_set(d, &k, &v))?;
                }
                Ok(self.none.clone())
            }
            "copy" => {
                a.check(0, 0)?;
                let c = self.heap.dict(&[]);
                self.dict_update(&c, d)?;
                Ok(c)
            }
            "clear" => {
                a.check(0, 0)?;
                self.lib(self.heap.clear(d))?;
                Ok(self.none.clone())
            }
            _ => unreachable!("has_method checked"),
        }
    }

    fn str_method(&mut self, s: &str, name: &str, mut a: Args) -> R<Handle> {
        let text = |it: &Interpreter, v: String| it.heap.str(&v);
        match name {
            "upper" | "lower" | "isdigit" | "isalpha" | "isspace" => {
                a.check(0, 0)?;
                Ok(match name {
                    "upper" => text(self, s.to_uppercase()),
                    "lower" => text(self, s.to_lowercase()),
                    "isdigit" => self.bool(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
                    "isalpha" => self.bool(!s.is_empty() && s.chars().all(char::is_alphabetic)),
                    _ => self.bool(!s.is_empty() && s.chars().all(char::is_whitespace)),
                })
            }
            "strip" | "lstrip" | "rstrip" => {
                a.check(0, 1)?;
                let chars: Option<Vec<char>> = match a.pos.first() {
                    Some(c) if c.kind() != Kind::None => {
                        Some(self.str_arg(name, c)?.chars().collect())
                    }
                    _ => None,
                };
                let pat = |c: char| match &chars {
                    Some(cs) => cs.contains(&c),
                    None => c.is_whitespace(),
                };
                let r = match name {
                    "strip" => s.trim_matches(pat),
                    "lstrip" => s.trim_start_matches(pat),
                    _ => s.trim_end_matches(pat),
                };
                Ok(text(self, r.to_string()))
            }
            "split" => {
                let sep_kw = a.kw("sep");
                let max_kw = a.kw("maxsplit");
                a.check(0, 2)?;
                let sep = match a.pos.first().cloned().or(sep_kw) {
                    Some(x) if x.kind() != Kind::None => Some(self.str_arg("split", &x)?),
                    _ => None,
                };
                let maxsplit = match a.pos.get(1).cloned().or(max_kw) {
                    Some(m) => self.int_arg("split", &m)?,
                    None => -1,
                };
                let parts = split(s, sep.as_deref(), maxsplit)?;
                let hs: Vec<Handle> = parts.into_iter().map(|p| self.heap.str(&p)).collect();
                Ok(self.list_of(&hs))
            }
            "join" => {
                a.check(1, 1)?;
                let items = self.collect(&a.pos[0])?;
                let mut out = String::new();
                for (i, x) in items.iter().enumerate() {
                    let V::Str(t) = self.view(x) else {
                        return Err(type_err(format!(
                            "sequence item {i}: expected str instance, {} found",
                            self.type_name(x)
                        )));
                    };
                    if i > 0 {
                        out.push_str(s);
                    }
                    out.push_str(&t);
                    check_repeat(out.len(), 1)?;
                }
                Ok(text(self, out))
            }
            "replace" => {
                a.check(2, 3)?;
                let old = self.str_arg("replace", &a.pos[0])?;
                let new = self.str_arg("replace", &a.pos[1])?;
                let count = match a.pos.get(2) {
                    Some(c) => self.int_arg("replace", c)?,
                    None => -1,
                };
                let r = if count < 0 {
                    if old.is_empty() {
                        replace_empty(s, &new, usize::MAX)
                    } else {
                        s.replace(&old, &new)
                    }
                } else if old.is_empty() {
                    replace_empty(s, &new, count as usize)
                } else {
                    s.replacen(&old, &new, count as usize)
                };
                check_repeat(r.len(), 1)?;
                Ok(text(self, r))
            }
            "startswith" | "endswith" => {
                a.check(1, 1)?;
                let pats = match a.pos[0].kind() {
                    Kind::Tuple => self.heap.items(&a.pos[0]),
                    _ => vec![a.pos[0].clone()],
                };
                for p in &pats {
                    let p = self.str_arg(name, p)?;
                    let hit = if name == "startswith" {
                        s.starts_with(&p)
                    } else {
                        s.ends_with(&p)
                    };
                    if hit {
                        return Ok(self.bool(true));
                    }
                }
                Ok(self.bool(false))
            }
            "find" | "count" => {
                a.check(1, 1)?;
                let sub = self.str_arg(name, &a.pos[0])?;
                if name == "count" {
                    let n = if sub.is_empty() {
                        s.chars().count() + 1
                    } else {
                        s.matches(&sub).count()
                    };
                    return Ok(self.int(n as i64));
                }
                Ok(self.int(match s.find(&sub) {
                    Some(b) => s[..b].chars().count() as i64,
                    None => -1,
                }))
            }
            "format" => {
                let args = std::mem::take(&mut a.pos);
                let kwargs = std::mem::take(&mut a.kw);
                let r = format_template(self, s, &args, &kwargs)?;
                Ok(text(self, r))
            }
            _ => unreachable!("has_method checked"),
        }
    }
}

/// `int(float)`: truncation toward zero.
fn float_to_int(f: f64) -> R<i64> {
    if f.is_nan() {
        return Err(value_err("cannot convert float NaN to integer"));
    }
    if f.is_infinite() {
        return Err(exc(
            ErrorKind::OverflowError,
            "cannot convert float infinity to integer",
        ));
    }
    let t = f.trunc();
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&t) {
        return Err(exc(
            ErrorKind::OverflowError,
            format!("{} does not fit in a 64-bit int", ops::float_repr(f)),
        ));
    }
    Ok(t as i64)
}

/// `int(text, base)` with Python's rules (sign, whitespace, underscores between digits,
/// `0x`/`0o`/`0b` prefixes for their base or base 0).
fn parse_int(text: &str, base: i64) -> R<i64> {
    let bad = || {
        value_err(format!(
            "invalid literal for int() with base {base}: {}",
            ops::str_repr(text)
        ))
    };
    if base != 0 && !(2..=36).contains(&base) {
        return Err(value_err("int() base must be >= 2 and <= 36, or 0"));
    }
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = t.to_ascii_lowercase();
    let prefixed = |p: &str, b: i64| (base == b || base == 0) && lower.starts_with(p);
    let (radix, digits) = if prefixed("0x", 16) {
        (16, &t[2..])
    } else if prefixed("0o", 8) {
        (8, &t[2..])
    } else if prefixed("0b", 2) {
        (2, &t[2..])
    } else if base == 0 {
        if t.len() > 1 && t.starts_with('0') && t.chars().any(|c| c != '0' && c != '_') {
            return Err(bad());
        }
        (10, t)
    } else {
        (base as u32, t)
    };
    let digits = if digits.len() < t.len() {
        digits.strip_prefix('_').unwrap_or(digits)
    } else {
        digits
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(bad());
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if !clean.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let signed = if neg { format!("-{clean}") } else { clean };
    i64::from_str_radix(&signed, radix).map_err(|_| {
        exc(
            ErrorKind::OverflowError,
            format!(
                "int() result {} does not fit in a 64-bit int",
                ops::str_repr(text)
            ),
        )
    })
}

/// `float(text)` with Python's rules.
fn parse_float(text: &str) -> R<f64> {
    let bad = || {
        value_err(format!(
            "could not convert string to float: {}",
            ops::str_repr(text)
        ))
    };
    let t = text.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        b => {
            let ok_chars = b
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-' | '_'));
            let bad_underscore = b.starts_with('_')
                || b.ends_with('_')
                || b.contains("__")
                || b.contains("_.")
                || b.contains("._")
                || b.contains("_e")
                || b.contains("e_");
            if b.is_empty() || !ok_chars || bad_underscore || !b.chars().any(|c| c.is_ascii_digit())
            {
                return Err(bad());
            }
            let clean: String = b.chars().filter(|&c| c != '_').collect();
            clean.parse::<f64>().map_err(|_| bad())?
        }
    };
    Ok(if neg { -v } else { v })
}

/// `round(int, n)`: exact, ties to even.
fn round_int(i: i64, n: i64) -> R<i64> {
    if n >= 0 {
        return Ok(i);
    }
    if n < -18 {
        return Ok(0);
    }
    let p = 10i64.pow((-n) as u32);
    let q = i.div_euclid(p);
    let r = i.rem_euclid(p);
    let up = r * 2 > p || (r * 2 == p && q % 2 != 0);
    let q = if up { q + 1 } else { q };
    q.checked_mul(p).ok_or_else(|| {
        exc(
            ErrorKind::OverflowError,
            format!("round({i}, {n}) does not fit in a 64-bit int"),
        )
    })
}

/// `round(float, n)`: the decimal value nearest to `f` with `n` digits after the point (ties
/// to even on the exact binary value, as CPython).
fn round_float(f: f64, n: i64) -> f64 {
    if !f.is_finite() || f == 0.0 {
        return f;
    }
    if n >= 0 {
        if n > 330 {
            return f;
        }
        return format!("{:.*}", n as usize, f).parse().unwrap_or(f);
    }
    // Round the exact integer digits at position -n; the fraction only breaks ties.
    let k = (-n) as usize;
    let t = f.trunc();
    let frac = f - t;
    let digits = format!("{:.0}", t.abs());
    if k > digits.len() {
        return 0.0f64.copysign(f);
    }
    let (head, tail) = digits.split_at(digits.len() - k);
    let first = tail.as_bytes()[0];
    let rest_zero = tail[1..].bytes().all(|b| b == b'0') && frac == 0.0;
    let head_val: f64 = if head.is_empty() {
        0.0
    } else {
        head.parse().unwrap_or(0.0)
    };
    let odd = head.as_bytes().last().is_some_and(|d| (d - b'0') % 2 == 1);
    let up = first > b'5' || (first == b'5' && (!rest_zero || odd));
    let m = if up { head_val + 1.0 } else { head_val };
    let r: f64 = format!("{m:.0}e{k}").parse().unwrap_or(f);
    r.copysign(f)
}

/// `str.split`.
fn split(s: &str, sep: Option<&str>, maxsplit: i64) -> R<Vec<String>> {
    let max = if maxsplit < 0 {
        usize::MAX
    } else {
        maxsplit as usize
    };
    match sep {
        Some("") => Err(value_err("empty separator")),
        Some(sep) => {
            let mut out = Vec::new();
            let mut rest = s;
            while out.len() < max {
                match rest.find(sep) {
                    Some(i) => {
                        out.push(rest[..i].to_string());
                        rest = &rest[i + sep.len()..];
                    }
                    None => break,
                }
            }
            out.push(rest.to_string());
            Ok(out)
        }
        None => {
            let mut out = Vec::new();
            let mut rest = s.trim_start();
            while !rest.is_empty() {
                if out.len() == max {
                    out.push(rest.to_string());
                    break;
                }
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                out.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
            Ok(out)
        }
    }
}

/// `s.replace("", new, count)`: inserts `new` around every character.
fn replace_empty(s: &str, new: &str, count: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        if n < count {
            out.push_str(new);
            n += 1;
        }
        out.push(c);
    }
    if n < count {
        out.push_str(new);
    }
    out
}
