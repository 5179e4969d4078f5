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
use super::backend::{ArrayBackend, is_array};
use super::error::*;
use super::ops::Num;
use super::parser::parse_module;

/// Python's default recursion limit (calls of script functions).
pub const DEFAULT_RECURSION_LIMIT: usize = 1000;
/// The most the recursion limit can be raised to (`sys.setrecursionlimit`).
pub const MAX_RECURSION_LIMIT: usize = 10_000;
/// Native nesting allowed (statements, expressions, container reprs and comparisons, summed
/// over all active calls). Measured in release builds: about 1.1-1.4 KiB of stack per level
/// (3.2 KiB per script call through a builtin), so 60 000 levels need under 100 MiB; debug
/// builds have frames several times larger and a lower cap.
const MAX_NEST: usize = if cfg!(debug_assertions) {
    15_000
} else {
    60_000
};
/// Stack of the thread scripts run on: address space reserved up front, pages touched only as
/// the nesting grows.
const STACK_BYTES: usize = 512 << 20;

/// Keyword arguments, in call order.
pub(crate) type Kwargs = Vec<(String, Handle)>;

/// What a function object runs.
pub(crate) enum Code {
    /// A `def` of a script.
    User {
        def: Arc<FuncDef>,
        name: Arc<str>,
        script: Arc<str>,
    },
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
    /// A function's definition (its sorted local names) and one slot per local name; `None`
    /// at the top level, whose variables are the globals.
    locals: Option<(Arc<FuncDef>, Vec<Option<Handle>>)>,
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
    /// Whether the outermost statement running has announced calls to the backend.
    announced: bool,
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
            announced: false,
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
        self.heap.function_code(h)?.downcast::<Code>().ok()
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
        // The end of an outermost statement: what it announced (itself, or the statements of
        // the functions and blocks it ran) is no longer expected.
        if self.nest == 0 && self.announced {
            self.announced = false;
            self.backend.statement_done();
        }
        r.map_err(|e| self.locate(e, s.pos))
    }

    /// Tells the backend about the calls `f(x)` and `x.f()` on an array variable `x` (no other
    /// arguments but `ddof`) in `e`, when there are two or more: see
    /// [`ArrayBackend::expect_calls`]. Only variables are looked up (no builtin or error
    /// object is made for other names).
    fn announce_calls(&mut self, e: &Expr) {
        let mut calls: Vec<(Handle, &str)> = Vec::new();
        e.walk(&mut |e| {
            let ExprKind::Call { func, args, kwargs } = &e.kind else {
                return;
            };
            if kwargs.iter().any(|(k, _)| k != "ddof") {
                return;
            }
            let (name, target) = match (&func.kind, args.as_slice()) {
                (ExprKind::Name(f), [x]) => (f, x),
                (ExprKind::Attribute { value, name }, []) => (name, &**value),
                _ => return,
            };
            if let ExprKind::Name(x) = &target.kind
                && self.is_bound(x)
                && let Ok(h) = self.load(x)
                && is_array(h.kind())
            {
                calls.push((h, name));
            }
        });
        if calls.len() >= 2 {
            self.backend.expect_calls(&self.heap, &calls);
            self.announced = true;
        }
    }

    fn exec_inner(&mut self, s: &Stmt) -> R<Flow> {
        match &s.kind {
            StmtKind::Expr(e) => {
                self.announce_calls(e);
                self.eval(e)?;
            }
            StmtKind::Assign { targets, value } => {
                self.announce_calls(value);
                let v = self.eval(value)?;
                for t in targets {
                    self.assign(t, &v)?;
                }
            }
            StmtKind::AugAssign { target, op, value } => {
                self.announce_calls(value);
                self.aug_assign(target, *op, value)?
            }
            StmtKind::Del(targets) => {
                for t in targets {
                    self.delete(t)?;
                }
            }
            StmtKind::If { test, body, orelse } => {
                self.announce_calls(test);
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
                    Some(e) => {
                        self.announce_calls(e);
                        self.eval(e)?
                    }
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
                    name: Arc::from(def.name.as_str()),
                    script,
                };
                let refs: Vec<&Handle> = defaults.iter().collect();
                let f = self.heap.function(&def.name, Arc::new(code), &refs);
                self.store(&def.name, f)?;
            }
            StmtKind::Assert { test, msg } => {
                self.announce_calls(test);
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

    /// The slot of `name` if it is a local of the running function.
    fn local_slot(&self, name: &str) -> Option<usize> {
        match self.frames.last() {
            Some(Frame {
                locals: Some((def, _)),
                ..
            }) => def.locals.binary_search_by(|l| l.as_str().cmp(name)).ok(),
            _ => None,
        }
    }

    fn slots(&mut self) -> Option<&mut Vec<Option<Handle>>> {
        match self.frames.last_mut() {
            Some(Frame {
                locals: Some((_, slots)),
                ..
            }) => Some(slots),
            _ => None,
        }
    }

    /// True if `name` names a variable of the current scope or a global (so it shadows the
    /// builtins and the backend's functions).
    pub(crate) fn is_bound(&self, name: &str) -> bool {
        self.local_slot(name).is_some()
            || matches!(self.heap.dict_get(&self.globals, name), Ok(Some(_)))
    }

    pub(crate) fn load(&self, name: &str) -> R<Handle> {
        if let Some(i) = self.local_slot(name) {
            if let Some(Frame {
                locals: Some((_, slots)),
                ..
            }) = self.frames.last()
                && let Some(Some(v)) = slots.get(i)
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
        if let Some(i) = self.local_slot(name)
            && let Some(slot) = self.slots().and_then(|s| s.get_mut(i))
        {
            // The old value (if any) is dropped here, after the new one is in place.
            *slot = Some(value);
            return Ok(());
        }
        self.lib(self.heap.dict_set(&self.globals, name, &value))
    }

    fn remove_name(&mut self, name: &str) -> R<()> {
        let removed = match self.local_slot(name) {
            Some(i) => self
                .slots()
                .and_then(|s| s.get_mut(i))
                .and_then(Option::take)
                .is_some(),
            None => self
                .lib(self.heap.dict_remove(&self.globals, name))?
                .is_some(),
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
            Code::User { def, name, script } => self.call_user(f, def, name, script, args, kwargs),
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

    #[allow(clippy::too_many_arguments)]
    fn call_user(
        &mut self,
        f: &Handle,
        def: &Arc<FuncDef>,
        fname: &Arc<str>,
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
        let mut vars: Vec<Option<Handle>> = vec![None; def.locals.len()];
        for (i, slot) in slots.into_iter().enumerate() {
            let v = match slot {
                Some(v) => v,
                None if i >= first_default => defaults[i - first_default].clone(),
                None => {
                    missing.push(format!("'{}'", params[i].name));
                    continue;
                }
            };
            if let Ok(slot) = def.locals.binary_search(&params[i].name) {
                vars[slot] = Some(v);
            }
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
            function: fname.clone(),
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
