//! The tree-walking interpreter: statements, expressions, calls, and the value protocol
//! (truth, equality, ordering, indexing, iteration, repr) over heap objects.
//!
//! Every value is a [`Handle`]. The interpreter's own references are handles too: globals live
//! in a heap dict, a call's locals in its frame (dropped on return), operands and arguments in
//! Rust locals and vectors for exactly as long as they are in use. So reference counts are what
//! the script can see through `sys.getrefcount`, and garbage cycles are left for `gc.collect`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use crate::heap::{Handle, Heap, Kind};

use super::ast::*;
use super::backend::{ArrayBackend, BinaryOp, is_array};
use super::error::*;
use super::ops::{self, Num};
use super::parser::parse_module;

/// Python's default recursion limit (calls of script functions).
pub const DEFAULT_RECURSION_LIMIT: usize = 1000;
/// The most the recursion limit can be raised to (`sys.setrecursionlimit`).
pub const MAX_RECURSION_LIMIT: usize = 10_000;
/// Native nesting allowed (statements, expressions, container reprs and comparisons, summed
/// over all active calls); the interpreter thread's stack is sized for it.
const MAX_NEST: usize = 60_000;
/// Stack of the thread scripts run on (reserved address space; pages are touched as used).
const STACK_BYTES: usize = 1 << 30;

/// Keyword arguments, in call order.
pub(crate) type Kwargs = Vec<(String, Handle)>;

/// What a function object runs.
pub(crate) enum Code {
    /// A `def` of a script.
    User { def: Arc<FuncDef>, script: Arc<str> },
    /// A builtin function (`len`, ...).
    Builtin(&'static str),
    /// A method bound to its receiver (the function's only reference).
    Method(String),
    /// A function of a module (`gc.collect`).
    ModuleFn(String, String),
}

/// A decoded value, for dispatch.
pub(crate) enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List,
    Tuple,
    Dict,
    Array,
    Function,
    Slice([Option<i64>; 3]),
    Module(String),
    Other,
}

/// The outcome of running statements.
enum Flow {
    Normal,
    Break,
    Continue,
    Return(Handle),
}

/// An active call.
struct Frame {
    function: Arc<str>,
    script: Arc<str>,
    line: u32,
    /// A function's definition (for its local names) and local variables; `None` at the top
    /// level, whose variables are the globals.
    locals: Option<(Arc<FuncDef>, HashMap<String, Handle>)>,
}

/// A running iteration.
pub(crate) enum Iter {
    Items(std::vec::IntoIter<Handle>),
    Range { next: i64, stop: i64, step: i64 },
    Array { array: Handle, len: i64, next: i64 },
}

/// Runs scripts on a heap.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use chunkheap::heap::Heap;
/// use chunkheap::script::{Interpreter, NoArrays, SharedBuffer};
///
/// let out = SharedBuffer::default();
/// let mut it = Interpreter::new(Heap::new().unwrap(), Arc::new(NoArrays), Box::new(out.clone()));
/// it.run("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib(20), 7 / 2, -7 // 2)\n",
///        "fib.chs", &[]).unwrap();
/// assert_eq!(out.contents(), "6765 3.5 -4\n");
/// ```
pub struct Interpreter {
    pub(crate) heap: Heap,
    pub(crate) backend: Arc<dyn ArrayBackend>,
    pub(crate) out: Box<dyn Write + Send>,
    interrupt: Arc<AtomicBool>,
    pub(crate) globals: Handle,
    pub(crate) argv: Handle,
    pub(crate) none: Handle,
    true_: Handle,
    false_: Handle,
    small_ints: Vec<Handle>,
    frames: Vec<Frame>,
    pub(crate) recursion_limit: usize,
    nest: usize,
    sources: HashMap<String, Arc<Vec<String>>>,
}

const SMALL_INT_MIN: i64 = -5;
const SMALL_INT_MAX: i64 = 256;

impl Interpreter {
    /// An interpreter over `heap`, handing array operations to `backend` and printing to
    /// `stdout`. Globals persist from one [`run`](Self::run) to the next.
    pub fn new(heap: Heap, backend: Arc<dyn ArrayBackend>, stdout: Box<dyn Write + Send>) -> Self {
        let small_ints = (SMALL_INT_MIN..=SMALL_INT_MAX)
            .map(|v| heap.int(v))
            .collect();
        Interpreter {
            globals: heap.dict(&[]),
            argv: heap.list(&[]),
            none: heap.none(),
            true_: heap.bool(true),
            false_: heap.bool(false),
            small_ints,
            backend,
            out: stdout,
            interrupt: Arc::new(AtomicBool::new(false)),
            frames: Vec::new(),
            recursion_limit: DEFAULT_RECURSION_LIMIT,
            nest: 0,
            sources: HashMap::new(),
            heap,
        }
    }

    /// The heap values live on.
    pub fn heap(&self) -> &Heap {
        &self.heap
    }

    /// The flag that interrupts a running script: set it (from a Ctrl-C handler) and the
    /// script stops with a `KeyboardInterrupt` at its next statement or loop iteration. It is
    /// cleared when the interrupt is raised.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// A global variable's value, if set.
    pub fn global(&self, name: &str) -> Option<Handle> {
        self.heap.dict_get(&self.globals, name).ok().flatten()
    }

    /// Sets a global variable.
    pub fn set_global(&self, name: &str, value: &Handle) -> crate::Result<()> {
        self.heap.dict_set(&self.globals, name, value)
    }

    /// Runs `source` (named `script_name` in errors) with `sys.argv == [script_name, *args]`.
    ///
    /// Runs on a thread of its own with a large stack, so deep recursion ends in a
    /// `RecursionError`, never a stack overflow; the call returns when the script ends.
    pub fn run(
        &mut self,
        source: &str,
        script_name: &str,
        args: &[String],
    ) -> Result<(), ScriptError> {
        let joined = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("chunkheap-script".into())
                .stack_size(STACK_BYTES)
                .spawn_scoped(s, || self.run_here(source, script_name, args))
                .map(|t| t.join())
        });
        let internal = |msg: String| ScriptError {
            kind: ErrorKind::RuntimeError,
            message: msg,
            script: script_name.to_string(),
            line: 0,
            column: 0,
            source_line: None,
            traceback: Vec::new(),
            cause: None,
        };
        match joined {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => {
                self.frames.clear();
                self.nest = 0;
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(internal(format!("internal error (a bug): {what}")))
            }
            Err(e) => Err(internal(format!("cannot start the script thread: {e}"))),
        }
    }

    /// Parses a script without running it.
    pub fn parse(source: &str, script_name: &str) -> Result<Module, ScriptError> {
        parse_module(source).map_err(|e| {
            let lines: Vec<&str> = source.lines().collect();
            e.into_script_error(script_name, &lines)
        })
    }

    fn run_here(
        &mut self,
        source: &str,
        script_name: &str,
        args: &[String],
    ) -> Result<(), ScriptError> {
        let module = Self::parse(source, script_name)?;
        self.sources.insert(
            script_name.to_string(),
            Arc::new(source.lines().map(str::to_string).collect()),
        );
        let setup = (|| -> crate::Result<()> {
            self.heap.clear(&self.argv)?;
            self.heap
                .list_append(&self.argv, &self.heap.str(script_name))?;
            for a in args {
                self.heap.list_append(&self.argv, &self.heap.str(a))?;
            }
            Ok(())
        })();
        let script: Arc<str> = Arc::from(script_name);
        self.frames.clear();
        self.nest = 0;
        self.frames.push(Frame {
            function: Arc::from("<module>"),
            script: script.clone(),
            line: 1,
            locals: None,
        });
        let r = match setup {
            Ok(()) => self.exec_block(&module.body).map(|_| ()),
            Err(e) => Err(from_lib(e)),
        };
        self.frames.clear();
        let flushed = self.out.flush();
        match (r, flushed) {
            (Err(e), _) => Err(self.script_error(*e, script_name)),
            (Ok(()), Err(e)) => Err(self.script_error(
                *exc(ErrorKind::OSError, format!("writing the output: {e}")),
                script_name,
            )),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    fn script_error(&self, e: Exc, run_script: &str) -> ScriptError {
        let script = e
            .trace
            .last()
            .map(|f| f.script.clone())
            .unwrap_or_else(|| run_script.to_string());
        let lines = self.sources.get(&script).cloned().unwrap_or_default();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        e.into_script_error(&script, &refs)
    }

    // ----- errors and small helpers -----

    /// Gives an error without a position the position `pos`, and the traceback of now.
    fn locate(&self, mut e: Box<Exc>, pos: Pos) -> Box<Exc> {
        if e.pos.is_none() {
            e.pos = Some(pos);
            e.trace = self
                .frames
                .iter()
                .map(|f| TraceFrame {
                    script: f.script.to_string(),
                    line: f.line,
                    function: f.function.to_string(),
                })
                .collect();
            if let Some(last) = e.trace.last_mut() {
                last.line = pos.line;
            }
        }
        e
    }

    pub(crate) fn enter(&mut self) -> R<()> {
        if self.nest >= MAX_NEST {
            return Err(exc(
                ErrorKind::RecursionError,
                "maximum recursion depth exceeded (nesting too deep)",
            ));
        }
        self.nest += 1;
        Ok(())
    }

    pub(crate) fn leave(&mut self) {
        self.nest -= 1;
    }

    fn check_interrupt(&self) -> R<()> {
        if self.interrupt.load(AtomicOrdering::Relaxed)
            && self.interrupt.swap(false, AtomicOrdering::Relaxed)
        {
            return Err(exc(ErrorKind::KeyboardInterrupt, "interrupted"));
        }
        Ok(())
    }

    /// A library result as a script result.
    pub(crate) fn lib<T>(&self, r: crate::Result<T>) -> R<T> {
        r.map_err(from_lib)
    }

    /// Checks that a handle from the backend belongs to this heap.
    pub(crate) fn own(&self, h: Handle) -> R<Handle> {
        if self.heap.owns(&h) {
            Ok(h)
        } else {
            Err(exc(
                ErrorKind::RuntimeError,
                "the array backend returned an object of another heap",
            ))
        }
    }

    /// An int object (small ones are shared, as in CPython).
    pub(crate) fn int(&self, v: i64) -> Handle {
        if (SMALL_INT_MIN..=SMALL_INT_MAX).contains(&v) {
            self.small_ints[(v - SMALL_INT_MIN) as usize].clone()
        } else {
            self.heap.int(v)
        }
    }

    /// `True` or `False`.
    pub(crate) fn bool(&self, b: bool) -> Handle {
        if b {
            self.true_.clone()
        } else {
            self.false_.clone()
        }
    }

    pub(crate) fn num_handle(&self, n: Num) -> Handle {
        match n {
            Num::Int(v) => self.int(v),
            Num::Float(v) => self.heap.float(v),
        }
    }

    pub(crate) fn view(&self, h: &Handle) -> V {
        let heap = &self.heap;
        match h.kind() {
            Kind::None => V::None,
            Kind::Bool => V::Bool(heap.as_bool(h).unwrap_or(false)),
            Kind::Int => V::Int(heap.as_int(h).unwrap_or(0)),
            Kind::Float => V::Float(heap.as_float(h).unwrap_or(0.0)),
            Kind::Str => V::Str(heap.as_str(h).unwrap_or_default()),
            Kind::List => V::List,
            Kind::Tuple => V::Tuple,
            Kind::Dict => V::Dict,
            Kind::Array | Kind::Expr => V::Array,
            Kind::Function => V::Function,
            Kind::Slice => V::Slice(heap.as_slice(h).unwrap_or([None; 3])),
            Kind::Module => V::Module(heap.as_module(h).unwrap_or_default()),
            _ => V::Other,
        }
    }

    /// A number operand (`bool` counts as an int).
    pub(crate) fn num(&self, h: &Handle) -> Option<Num> {
        match h.kind() {
            Kind::Int => self.heap.as_int(h).map(Num::Int),
            Kind::Bool => self.heap.as_bool(h).map(|b| Num::Int(i64::from(b))),
            Kind::Float => self.heap.as_float(h).map(Num::Float),
            _ => None,
        }
    }

    /// An int operand (`bool` counts).
    pub(crate) fn as_index(&self, h: &Handle) -> Option<i64> {
        match self.num(h) {
            Some(Num::Int(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn code(&self, h: &Handle) -> Option<Arc<Code>> {
        let (_, code) = self.heap.function_code(h)?;
        code.downcast::<Code>().ok()
    }

    /// The Python type name of a value.
    pub(crate) fn type_name(&self, h: &Handle) -> String {
        match h.kind() {
            Kind::None => "NoneType".into(),
            Kind::Array | Kind::Expr => "array".into(),
            Kind::Function => match self.code(h).as_deref() {
                Some(Code::User { .. }) => "function".into(),
                Some(Code::Method(_)) => "builtin_function_or_method".into(),
                _ => "builtin_function_or_method".into(),
            },
            k => k.name().into(),
        }
    }

    // ----- statements -----

    fn exec_block(&mut self, body: &[Stmt]) -> R<Flow> {
        for s in body {
            match self.exec_stmt(s)? {
                Flow::Normal => {}
                f => return Ok(f),
            }
        }
        Ok(Flow::Normal)
    }

    fn exec_stmt(&mut self, s: &Stmt) -> R<Flow> {
        if let Some(f) = self.frames.last_mut() {
            f.line = s.pos.line;
        }
        let r = match self.check_interrupt().and_then(|_| self.enter()) {
            Ok(()) => {
                let r = self.exec_inner(s);
                self.leave();
                r
            }
            Err(e) => Err(e),
        };
        r.map_err(|e| self.locate(e, s.pos))
    }

    fn exec_inner(&mut self, s: &Stmt) -> R<Flow> {
        match &s.kind {
            StmtKind::Expr(e) => {
                self.eval(e)?;
            }
            StmtKind::Assign { targets, value } => {
                let v = self.eval(value)?;
                for t in targets {
                    self.assign(t, &v)?;
                }
            }
            StmtKind::AugAssign { target, op, value } => self.aug_assign(target, *op, value)?,
            StmtKind::Del(targets) => {
                for t in targets {
                    self.delete(t)?;
                }
            }
            StmtKind::If { test, body, orelse } => {
                let t = self.eval(test)?;
                let b = self.truth(&t).map_err(|e| self.locate(e, test.pos))?;
                drop(t);
                return self.exec_block(if b { body } else { orelse });
            }
            StmtKind::While { test, body } => loop {
                self.check_interrupt()?;
                let t = self.eval(test)?;
                if !self.truth(&t).map_err(|e| self.locate(e, test.pos))? {
                    break;
                }
                drop(t);
                match self.exec_block(body)? {
                    Flow::Break => break,
                    Flow::Normal | Flow::Continue => {}
                    r @ Flow::Return(_) => return Ok(r),
                }
            },
            StmtKind::For { target, iter, body } => {
                let mut it = self.for_iter(iter)?;
                loop {
                    self.check_interrupt()?;
                    let Some(item) = self.next(&mut it).map_err(|e| self.locate(e, iter.pos))?
                    else {
                        break;
                    };
                    self.assign(target, &item)?;
                    drop(item);
                    match self.exec_block(body)? {
                        Flow::Break => break,
                        Flow::Normal | Flow::Continue => {}
                        r @ Flow::Return(_) => return Ok(r),
                    }
                }
            }
            StmtKind::Break => return Ok(Flow::Break),
            StmtKind::Continue => return Ok(Flow::Continue),
            StmtKind::Pass | StmtKind::Global(_) => {}
            StmtKind::Return(v) => {
                let v = match v {
                    Some(e) => self.eval(e)?,
                    None => self.none.clone(),
                };
                return Ok(Flow::Return(v));
            }
            StmtKind::Def(def) => {
                let mut defaults = Vec::new();
                for p in &def.params {
                    if let Some(d) = &p.default {
                        defaults.push(self.eval(d)?);
                    }
                }
                let script = self
                    .frames
                    .last()
                    .map(|f| f.script.clone())
                    .unwrap_or_else(|| Arc::from(""));
                let code = Code::User {
                    def: def.clone(),
                    script,
                };
                let refs: Vec<&Handle> = defaults.iter().collect();
                let f = self.heap.function(&def.name, Arc::new(code), &refs);
                self.store(&def.name, f)?;
            }
            StmtKind::Assert { test, msg } => {
                let t = self.eval(test)?;
                if !self.truth(&t).map_err(|e| self.locate(e, test.pos))? {
                    let m = match msg {
                        Some(m) => {
                            let v = self.eval(m)?;
                            self.str_of(&v)?
                        }
                        None => String::new(),
                    };
                    return Err(exc(ErrorKind::AssertionError, m));
                }
            }
        }
        Ok(Flow::Normal)
    }

    fn for_iter(&mut self, iter: &Expr) -> R<Iter> {
        // `for i in range(...)` counts without building a list.
        if let ExprKind::Call { func, args, kwargs } = &iter.kind
            && let ExprKind::Name(n) = &func.kind
            && n == "range"
            && kwargs.is_empty()
            && !self.is_bound(n)
        {
            let mut vals = Vec::new();
            for a in args {
                vals.push(self.eval(a)?);
            }
            if !vals.iter().any(|v| is_array(v.kind())) {
                let (next, stop, step) = self
                    .range_args(&vals)
                    .map_err(|e| self.locate(e, iter.pos))?;
                return Ok(Iter::Range { next, stop, step });
            }
        }
        let v = self.eval(iter)?;
        self.make_iter(&v).map_err(|e| self.locate(e, iter.pos))
    }

    /// `range(stop)`, `range(start, stop[, step])` arguments.
    pub(crate) fn range_args(&self, vals: &[Handle]) -> R<(i64, i64, i64)> {
        if vals.is_empty() || vals.len() > 3 {
            return Err(type_err(format!(
                "range expected 1 to 3 arguments, got {}",
                vals.len()
            )));
        }
        let mut ints = Vec::new();
        for v in vals {
            ints.push(self.as_index(v).ok_or_else(|| {
                type_err(format!(
                    "'{}' object cannot be interpreted as an integer",
                    self.type_name(v)
                ))
            })?);
        }
        let (start, stop, step) = match ints[..] {
            [stop] => (0, stop, 1),
            [start, stop] => (start, stop, 1),
            [start, stop, step] => (start, stop, step),
            _ => unreachable!("1 to 3 arguments"),
        };
        if step == 0 {
            return Err(value_err("range() arg 3 must not be zero"));
        }
        Ok((start, stop, step))
    }

    fn assign(&mut self, target: &Expr, value: &Handle) -> R<()> {
        let r = self.assign_inner(target, value);
        r.map_err(|e| self.locate(e, target.pos))
    }

    fn assign_inner(&mut self, target: &Expr, value: &Handle) -> R<()> {
        match &target.kind {
            ExprKind::Name(n) => self.store(n, value.clone()),
            ExprKind::Tuple(ts) | ExprKind::List(ts) => {
                let items = self.unpack(value, ts.len())?;
                for (t, v) in ts.iter().zip(items) {
                    self.assign(t, &v)?;
                }
                Ok(())
            }
            ExprKind::Subscript { value: obj, index } => {
                let o = self.eval(obj)?;
                let i = self.eval(index)?;
                self.setitem(&o, &i, value)
            }
            ExprKind::Attribute { value: obj, name } => {
                let o = self.eval(obj)?;
                Err(exc(
                    ErrorKind::AttributeError,
                    format!(
                        "'{}' object attribute '{name}' is read-only",
                        self.type_name(&o)
                    ),
                ))
            }
            _ => Err(exc(ErrorKind::SyntaxError, "cannot assign to expression")),
        }
    }

    /// Exactly `n` items of an iterable.
    fn unpack(&mut self, value: &Handle, n: usize) -> R<Vec<Handle>> {
        let mut it = self.make_iter(value)?;
        let mut out = Vec::with_capacity(n);
        while let Some(v) = self.next(&mut it)? {
            if out.len() == n {
                return Err(value_err(format!(
                    "too many values to unpack (expected {n})"
                )));
            }
            out.push(v);
        }
        if out.len() < n {
            return Err(value_err(format!(
                "not enough values to unpack (expected {n}, got {})",
                out.len()
            )));
        }
        Ok(out)
    }

    fn aug_assign(&mut self, target: &Expr, op: BinOp, value: &Expr) -> R<()> {
        match &target.kind {
            ExprKind::Name(n) => {
                let cur = self.load(n).map_err(|e| self.locate(e, target.pos))?;
                let rhs = self.eval(value)?;
                let new = self
                    .inplace(op, cur, &rhs)
                    .map_err(|e| self.locate(e, target.pos))?;
                self.store(n, new)
            }
            ExprKind::Subscript { value: obj, index } => {
                let o = self.eval(obj)?;
                let i = self.eval(index)?;
                let cur = self
                    .getitem(&o, &i)
                    .map_err(|e| self.locate(e, target.pos))?;
                let rhs = self.eval(value)?;
                let new = self
                    .inplace(op, cur, &rhs)
                    .map_err(|e| self.locate(e, target.pos))?;
                self.setitem(&o, &i, &new)
                    .map_err(|e| self.locate(e, target.pos))
            }
            _ => {
                let none = self.none.clone();
                self.assign(target, &none)
            }
        }
    }

    /// `cur op= rhs`: lists grow in place (`+=` extends, `*=` repeats), as in Python.
    fn inplace(&mut self, op: BinOp, cur: Handle, rhs: &Handle) -> R<Handle> {
        if cur.kind() == Kind::List && op == BinOp::Add {
            let mut it = self.make_iter(rhs)?;
            let mut items = Vec::new();
            while let Some(v) = self.next(&mut it)? {
                items.push(v);
            }
            for v in items {
                self.lib(self.heap.list_append(&cur, &v))?;
            }
            return Ok(cur);
        }
        if cur.kind() == Kind::List
            && op == BinOp::Mul
            && let Some(n) = self.as_index(rhs)
        {
            let items = self.heap.items(&cur);
            let total = check_repeat(items.len(), n)?;
            self.lib(self.heap.clear(&cur))?;
            for k in 0..total {
                self.lib(self.heap.list_append(&cur, &items[k % items.len()]))?;
            }
            return Ok(cur);
        }
        self.binop(op, &cur, rhs)
    }

    fn delete(&mut self, target: &Expr) -> R<()> {
        let r = self.delete_inner(target);
        r.map_err(|e| self.locate(e, target.pos))
    }

    fn delete_inner(&mut self, target: &Expr) -> R<()> {
        match &target.kind {
            ExprKind::Name(n) => self.remove_name(n),
            ExprKind::Tuple(ts) | ExprKind::List(ts) => ts.iter().try_for_each(|t| self.delete(t)),
            ExprKind::Subscript { value, index } => {
                let o = self.eval(value)?;
                let i = self.eval(index)?;
                self.delitem(&o, &i)
            }
            ExprKind::Attribute { value, name } => {
                let o = self.eval(value)?;
                Err(exc(
                    ErrorKind::AttributeError,
                    format!(
                        "'{}' object attribute '{name}' is read-only",
                        self.type_name(&o)
                    ),
                ))
            }
            _ => Err(exc(ErrorKind::SyntaxError, "cannot delete expression")),
        }
    }

    // ----- names -----

    fn local_def(&self, name: &str) -> bool {
        match self.frames.last() {
            Some(Frame {
                locals: Some((def, _)),
                ..
            }) => def
                .locals
                .binary_search_by(|l| l.as_str().cmp(name))
                .is_ok(),
            _ => false,
        }
    }

    /// True if `name` names a variable of the current scope or a global (so it shadows the
    /// builtins and the backend's functions).
    pub(crate) fn is_bound(&self, name: &str) -> bool {
        self.local_def(name) || matches!(self.heap.dict_get(&self.globals, name), Ok(Some(_)))
    }

    pub(crate) fn load(&self, name: &str) -> R<Handle> {
        if self.local_def(name) {
            if let Some(Frame {
                locals: Some((_, vars)),
                ..
            }) = self.frames.last()
                && let Some(v) = vars.get(name)
            {
                return Ok(v.clone());
            }
            return Err(exc(
                ErrorKind::UnboundLocalError,
                format!(
                    "cannot access local variable '{name}' where it is not associated with a value"
                ),
            ));
        }
        if let Some(v) = self.lib(self.heap.dict_get(&self.globals, name))? {
            return Ok(v);
        }
        if let Some(v) = self.builtin_value(name) {
            return Ok(v);
        }
        Err(exc(
            ErrorKind::NameError,
            format!("name '{name}' is not defined"),
        ))
    }

    fn store(&mut self, name: &str, value: Handle) -> R<()> {
        if self.local_def(name)
            && let Some(Frame {
                locals: Some((_, vars)),
                ..
            }) = self.frames.last_mut()
        {
            // The old value (if any) is dropped here, after the new one is in place.
            vars.insert(name.to_string(), value);
            return Ok(());
        }
        self.lib(self.heap.dict_set(&self.globals, name, &value))
    }

    fn remove_name(&mut self, name: &str) -> R<()> {
        let removed = if self.local_def(name) {
            match self.frames.last_mut() {
                Some(Frame {
                    locals: Some((_, vars)),
                    ..
                }) => vars.remove(name).is_some(),
                _ => false,
            }
        } else {
            self.lib(self.heap.dict_remove(&self.globals, name))?
                .is_some()
        };
        if removed {
            Ok(())
        } else {
            Err(exc(
                ErrorKind::NameError,
                format!("name '{name}' is not defined"),
            ))
        }
    }

    // ----- expressions -----

    pub(crate) fn eval(&mut self, e: &Expr) -> R<Handle> {
        self.enter().map_err(|x| self.locate(x, e.pos))?;
        let r = self.eval_inner(e);
        self.leave();
        r.map_err(|x| self.locate(x, e.pos))
    }

    fn eval_inner(&mut self, e: &Expr) -> R<Handle> {
        Ok(match &e.kind {
            ExprKind::None => self.none.clone(),
            ExprKind::Bool(b) => self.bool(*b),
            ExprKind::Int(v) => self.int(*v),
            ExprKind::Float(v) => self.heap.float(*v),
            ExprKind::Str(s) => self.heap.str(s),
            ExprKind::Name(n) => self.load(n)?,
            ExprKind::List(items) | ExprKind::Tuple(items) => {
                let mut vals = Vec::with_capacity(items.len());
                for x in items {
                    vals.push(self.eval(x)?);
                }
                let refs: Vec<&Handle> = vals.iter().collect();
                if matches!(e.kind, ExprKind::List(_)) {
                    self.heap.list(&refs)
                } else {
                    self.heap.tuple(&refs)
                }
            }
            ExprKind::Dict(items) => {
                let d = self.heap.dict(&[]);
                for (k, v) in items {
                    let kh = self.eval(k)?;
                    let key = self.dict_key(&kh).map_err(|x| self.locate(x, k.pos))?;
                    let vh = self.eval(v)?;
                    self.lib(self.heap.dict_set(&d, &key, &vh))?;
                }
                d
            }
            ExprKind::Unary { op, operand } => {
                let v = self.eval(operand)?;
                self.unary(*op, &v)?
            }
            ExprKind::Binary { op, left, right } => {
                let l = self.eval(left)?;
                let r = self.eval(right)?;
                self.binop(*op, &l, &r)?
            }
            ExprKind::BoolOp { op, left, right } => {
                let l = self.eval(left)?;
                let t = self.truth(&l)?;
                match (op, t) {
                    (BoolOp::And, false) | (BoolOp::Or, true) => l,
                    _ => {
                        drop(l);
                        self.eval(right)?
                    }
                }
            }
            ExprKind::Compare { left, rest } => {
                let mut l = self.eval(left)?;
                let mut result = self.true_.clone();
                for (i, (op, x)) in rest.iter().enumerate() {
                    let r = self.eval(x)?;
                    result = self.compare(*op, &l, &r)?;
                    if i + 1 < rest.len() && !self.truth(&result)? {
                        return Ok(result);
                    }
                    l = r;
                }
                result
            }
            ExprKind::IfExp { test, body, orelse } => {
                let t = self.eval(test)?;
                let b = self.truth(&t)?;
                drop(t);
                self.eval(if b { body } else { orelse })?
            }
            ExprKind::Call { func, args, kwargs } => self.eval_call(func, args, kwargs)?,
            ExprKind::Attribute { value, name } => {
                let v = self.eval(value)?;
                self.get_attr(&v, name)?
            }
            ExprKind::Subscript { value, index } => {
                let v = self.eval(value)?;
                let i = self.eval(index)?;
                self.getitem(&v, &i)?
            }
            ExprKind::Slice { lower, upper, step } => {
                let mut parts = [None; 3];
                for (slot, x) in parts.iter_mut().zip([lower, upper, step]) {
                    if let Some(x) = x {
                        let v = self.eval(x)?;
                        if v.kind() != Kind::None {
                            *slot = Some(self.as_index(&v).ok_or_else(|| {
                                type_err("slice indices must be integers or None")
                            })?);
                        }
                    }
                }
                self.heap.slice(parts)
            }
        })
    }

    fn eval_args(&mut self, args: &[Expr], kwargs: &[(String, Expr)]) -> R<(Vec<Handle>, Kwargs)> {
        let mut a = Vec::with_capacity(args.len());
        for x in args {
            a.push(self.eval(x)?);
        }
        let mut k = Vec::with_capacity(kwargs.len());
        for (n, x) in kwargs {
            k.push((n.clone(), self.eval(x)?));
        }
        Ok((a, k))
    }

    fn eval_call(&mut self, func: &Expr, args: &[Expr], kwargs: &[(String, Expr)]) -> R<Handle> {
        match &func.kind {
            ExprKind::Name(n) if !self.is_bound(n) => {
                let (a, k) = self.eval_args(args, kwargs)?;
                self.call_free(n, a, k)
            }
            ExprKind::Attribute { value, name } => {
                let recv = self.eval(value)?;
                let (a, k) = self.eval_args(args, kwargs)?;
                self.call_attr(&recv, name, a, k)
            }
            _ => {
                let f = self.eval(func)?;
                let (a, k) = self.eval_args(args, kwargs)?;
                self.call_value(&f, a, k)
            }
        }
    }

    /// `recv.name(args)`.
    fn call_attr(
        &mut self,
        recv: &Handle,
        name: &str,
        args: Vec<Handle>,
        kwargs: Vec<(String, Handle)>,
    ) -> R<Handle> {
        match self.view(recv) {
            V::Module(m) => self.call_module_fn(&m, name, args, kwargs),
            V::Array => {
                let r = self
                    .backend
                    .call_method(&self.heap, recv, name, &args, &kwargs);
                let h = self.lib(r)?;
                self.own(h)
            }
            _ => self.call_method(recv, name, args, kwargs),
        }
    }

    /// A call of a name the script does not bind: a builtin or the backend's function.
    fn call_free(
        &mut self,
        name: &str,
        args: Vec<Handle>,
        kwargs: Vec<(String, Handle)>,
    ) -> R<Handle> {
        let builtin = super::builtins::builtin_name(name);
        let any_array = args
            .iter()
            .chain(kwargs.iter().map(|(_, v)| v))
            .any(|h| is_array(h.kind()));
        if let Some(b) = builtin
            && !any_array
        {
            return self.call_builtin(b, args, kwargs);
        }
        let r = self.backend.call_function(&self.heap, name, &args, &kwargs);
        if let Some(h) = self.lib(r)? {
            return self.own(h);
        }
        if let Some(b) = builtin {
            return self.call_builtin(b, args, kwargs);
        }
        if super::builtins::is_module(name) {
            return Err(type_err("'module' object is not callable"));
        }
        Err(exc(
            ErrorKind::NameError,
            format!("name '{name}' is not defined"),
        ))
    }

    /// Calls a function value.
    pub(crate) fn call_value(
        &mut self,
        f: &Handle,
        args: Vec<Handle>,
        kwargs: Vec<(String, Handle)>,
    ) -> R<Handle> {
        let Some(code) = self.code(f) else {
            return Err(type_err(format!(
                "'{}' object is not callable",
                self.type_name(f)
            )));
        };
        match &*code {
            Code::User { def, script } => self.call_user(f, def, script, args, kwargs),
            Code::Builtin(name) => self.call_free(name, args, kwargs),
            Code::Method(name) => {
                let recv = self
                    .heap
                    .items(f)
                    .into_iter()
                    .next()
                    .ok_or_else(|| exc(ErrorKind::RuntimeError, "method without receiver"))?;
                self.call_attr(&recv, name, args, kwargs)
            }
            Code::ModuleFn(m, name) => self.call_module_fn(m, name, args, kwargs),
        }
    }

    fn call_user(
        &mut self,
        f: &Handle,
        def: &Arc<FuncDef>,
        script: &Arc<str>,
        args: Vec<Handle>,
        kwargs: Vec<(String, Handle)>,
    ) -> R<Handle> {
        if self.frames.len() > self.recursion_limit {
            return Err(exc(
                ErrorKind::RecursionError,
                "maximum recursion depth exceeded",
            ));
        }
        let name = &def.name;
        let params = &def.params;
        let n = params.len();
        let defaults = self.heap.items(f);
        let first_default = n.saturating_sub(defaults.len());
        if args.len() > n {
            let takes = if first_default == n {
                format!("{n} positional argument{}", plural(n))
            } else {
                format!("from {first_default} to {n} positional arguments")
            };
            let given = args.len();
            let was = if given == 1 { "was" } else { "were" };
            return Err(type_err(format!(
                "{name}() takes {takes} but {given} {was} given"
            )));
        }
        let mut slots: Vec<Option<Handle>> = vec![None; n];
        for (slot, a) in slots.iter_mut().zip(args) {
            *slot = Some(a);
        }
        for (k, v) in kwargs {
            match params.iter().position(|p| p.name == k) {
                None => {
                    return Err(type_err(format!(
                        "{name}() got an unexpected keyword argument '{k}'"
                    )));
                }
                Some(i) if slots[i].is_some() => {
                    return Err(type_err(format!(
                        "{name}() got multiple values for argument '{k}'"
                    )));
                }
                Some(i) => slots[i] = Some(v),
            }
        }
        let mut missing = Vec::new();
        let mut vars = HashMap::with_capacity(n);
        for (i, slot) in slots.into_iter().enumerate() {
            let v = match slot {
                Some(v) => v,
                None if i >= first_default => defaults[i - first_default].clone(),
                None => {
                    missing.push(format!("'{}'", params[i].name));
                    continue;
                }
            };
            vars.insert(params[i].name.clone(), v);
        }
        if !missing.is_empty() {
            let k = missing.len();
            let names = match k {
                1 => missing[0].clone(),
                2 => format!("{} and {}", missing[0], missing[1]),
                _ => format!("{}, and {}", missing[..k - 1].join(", "), missing[k - 1]),
            };
            return Err(type_err(format!(
                "{name}() missing {k} required positional argument{}: {names}",
                plural(k)
            )));
        }
        self.frames.push(Frame {
            function: Arc::from(name.as_str()),
            script: script.clone(),
            line: def.body.first().map_or(0, |s| s.pos.line),
            locals: Some((def.clone(), vars)),
        });
        let r = self.exec_block(&def.body);
        // The frame (and every local reference) goes now.
        self.frames.pop();
        match r? {
            Flow::Return(v) => Ok(v),
            _ => Ok(self.none.clone()),
        }
    }

    /// `x.name` (not called).
    fn get_attr(&mut self, v: &Handle, name: &str) -> R<Handle> {
        match self.view(v) {
            V::Module(m) => self.module_attr(&m, name),
            V::Array => {
                let r = self.backend.attribute(&self.heap, v, name);
                let h = self.lib(r)?;
                self.own(h)
            }
            _ => {
                if super::builtins::has_method(v.kind(), name) {
                    let code = Code::Method(name.to_string());
                    Ok(self.heap.function(name, Arc::new(code), &[v]))
                } else {
                    Err(exc(
                        ErrorKind::AttributeError,
                        format!("'{}' object has no attribute '{name}'", self.type_name(v)),
                    ))
                }
            }
        }
    }

    // ----- operators -----

    fn unary(&mut self, op: UnaryOp, v: &Handle) -> R<Handle> {
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

    fn repeat(&mut self, seq: &Handle, count: i64) -> R<Handle> {
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
    fn compare(&mut self, op: CmpOp, a: &Handle, b: &Handle) -> R<Handle> {
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

    fn eq_inner(&mut self, a: &Handle, b: &Handle) -> R<bool> {
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

    fn order_inner(&mut self, op: CmpOp, a: &Handle, b: &Handle) -> R<bool> {
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

    fn setitem(&mut self, v: &Handle, i: &Handle, value: &Handle) -> R<()> {
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

    fn delitem(&mut self, v: &Handle, i: &Handle) -> R<()> {
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

    fn repr_into(&mut self, v: &Handle, out: &mut String, stack: &mut Vec<u32>) -> R<()> {
        self.enter()?;
        let r = self.repr_inner(v, out, stack);
        self.leave();
        r
    }

    fn repr_inner(&mut self, v: &Handle, out: &mut String, stack: &mut Vec<u32>) -> R<()> {
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
                let name = self
                    .heap
                    .function_code(v)
                    .map(|(n, _)| n)
                    .unwrap_or_default();
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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Items in `len` repeated `count` times, refused beyond 2^28 (the language builds sequences
/// in memory; larger data belongs in arrays).
pub(crate) fn check_repeat(len: usize, count: i64) -> R<usize> {
    const MAX: u64 = 1 << 28;
    let count = count.max(0) as u64;
    let total = (len as u64).saturating_mul(count);
    if total > MAX {
        return Err(exc(
            ErrorKind::MemoryError,
            format!(
                "a sequence of {total} items is too large (limit {MAX}); use arrays for big data"
            ),
        ));
    }
    Ok(total as usize)
}
