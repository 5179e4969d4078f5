//! The hook through which scripts reach arrays: the interpreter knows nothing of array math and
//! hands every operation on an array-kind object ([`Kind::Array`] or [`Kind::Expr`]) to an
//! [`ArrayBackend`].

use crate::error::{Error, Result};
use crate::heap::{Handle, Heap, Kind};

use super::ast::{BinOp, CmpOp, UnaryOp};

/// A binary operation handed to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `+ - * / // % ** @ << >> & | ^`.
    Arith(BinOp),
    /// `== != < <= > >= in` and `not in` (never `is`/`is not`, which compare identity).
    Compare(CmpOp),
}

/// True for objects the backend handles: arrays and lazy expressions over them.
pub fn is_array(kind: Kind) -> bool {
    matches!(kind, Kind::Array | Kind::Expr)
}

/// What the interpreter asks of the array engine.
///
/// Operands and results are heap objects of the interpreter's heap (a handle from another heap
/// is refused as a `RuntimeError`). Errors are library [`Error`]s; the interpreter turns them
/// into script errors at the position of the failing expression (`Error::Invalid` becomes a
/// `ValueError`, I/O and format errors an `OSError`, budget refusals a `MemoryError`).
pub trait ArrayBackend: Send + Sync {
    /// `lhs op rhs` where at least one operand is an array; the operands are passed in source
    /// order (`2 - a` arrives as `(Sub, 2, a)`; `x in a` as `(Compare(In), x, a)`).
    fn binary(&self, heap: &Heap, op: BinaryOp, lhs: &Handle, rhs: &Handle) -> Result<Handle>;

    /// `-a`, `+a`, `~a` (`not a` is the interpreter's, through [`truth`](Self::truth)).
    fn unary(&self, heap: &Heap, op: UnaryOp, operand: &Handle) -> Result<Handle>;

    /// `a[index]`: `index` is any heap value: an int, a slice object (`Kind::Slice`), a tuple
    /// of those for `a[1:3, ::2]`, `None`, another array...
    fn subscript(&self, heap: &Heap, array: &Handle, index: &Handle) -> Result<Handle>;

    /// `a[index] = value`. Arrays are read-only unless a backend says otherwise.
    fn set_subscript(
        &self,
        heap: &Heap,
        array: &Handle,
        index: &Handle,
        value: &Handle,
    ) -> Result<()> {
        let _ = (heap, array, index, value);
        Err(Error::Invalid(
            "array objects do not support item assignment".into(),
        ))
    }

    /// `a.name` for a non-call attribute (`shape`, `dtype`, `ndim`, `size`, ...).
    fn attribute(&self, heap: &Heap, array: &Handle, name: &str) -> Result<Handle>;

    /// `a.name(args, key=value)`.
    fn call_method(
        &self,
        heap: &Heap,
        array: &Handle,
        name: &str,
        args: &[Handle],
        kwargs: &[(String, Handle)],
    ) -> Result<Handle>;

    /// A call of the free function `name` that the script does not define: `Ok(None)` when the
    /// backend does not know the name. Also asked first for the script's own builtins (`len`,
    /// `sum`, `float`, `print`, ...) when an argument is an array; answering `None` then lets
    /// the script builtin run.
    fn call_function(
        &self,
        heap: &Heap,
        name: &str,
        args: &[Handle],
        kwargs: &[(String, Handle)],
    ) -> Result<Option<Handle>>;

    /// `bool(a)`, `if a:`, `a and b`: NumPy's rule is an error unless the array has exactly
    /// one element.
    fn truth(&self, heap: &Heap, array: &Handle) -> Result<bool>;

    /// `repr(a)`, and `a` printed inside a container.
    fn repr(&self, heap: &Heap, array: &Handle) -> Result<String>;

    /// `str(a)` and `print(a)`; defaults to [`repr`](Self::repr).
    fn str(&self, heap: &Heap, array: &Handle) -> Result<String> {
        self.repr(heap, array)
    }

    /// Told before a statement runs which calls of the form `name(array)` or `array.name()` it
    /// holds (without an `axis`), when it holds two or more: a backend may then compute what
    /// all of them need in one pass over each array (`mean(a), std(a), max(a)`). Statements
    /// run inside it (a function's) add theirs, until [`statement_done`](Self::statement_done).
    /// A hint must never change a result; the default ignores it.
    fn expect_calls(&self, heap: &Heap, calls: &[(Handle, &str)]) {
        let _ = (heap, calls);
    }

    /// The outermost statement that announced calls has ended: nothing announced is expected
    /// any more.
    fn statement_done(&self) {}
}

/// A backend without arrays: every hook says the operation is not available (for scripts that
/// use no arrays, and for tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoArrays;

fn none_available(what: &str) -> Error {
    Error::Invalid(format!(
        "{what}: no array engine is attached to this interpreter"
    ))
}

impl ArrayBackend for NoArrays {
    fn binary(&self, _: &Heap, op: BinaryOp, _: &Handle, _: &Handle) -> Result<Handle> {
        let sym = match op {
            BinaryOp::Arith(b) => b.symbol(),
            BinaryOp::Compare(c) => c.symbol(),
        };
        Err(none_available(&format!("array operation '{sym}'")))
    }

    fn unary(&self, _: &Heap, op: UnaryOp, _: &Handle) -> Result<Handle> {
        Err(none_available(&format!(
            "array operation '{}'",
            op.symbol()
        )))
    }

    fn subscript(&self, _: &Heap, _: &Handle, _: &Handle) -> Result<Handle> {
        Err(none_available("array indexing"))
    }

    fn attribute(&self, _: &Heap, _: &Handle, name: &str) -> Result<Handle> {
        Err(none_available(&format!("array attribute '{name}'")))
    }

    fn call_method(
        &self,
        _: &Heap,
        _: &Handle,
        name: &str,
        _: &[Handle],
        _: &[(String, Handle)],
    ) -> Result<Handle> {
        Err(none_available(&format!("array method '{name}'")))
    }

    fn call_function(
        &self,
        _: &Heap,
        _: &str,
        _: &[Handle],
        _: &[(String, Handle)],
    ) -> Result<Option<Handle>> {
        Ok(None)
    }

    fn truth(&self, _: &Heap, _: &Handle) -> Result<bool> {
        Err(none_available("array truth value"))
    }

    fn repr(&self, _: &Heap, a: &Handle) -> Result<String> {
        Ok(format!("<{} #{}>", a.kind(), a.id()))
    }
}
