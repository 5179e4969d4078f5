//! The batch-script language: a small Python-flavoured language whose every value lives on the
//! managed [`heap`](crate::heap).
//!
//! ```text
//! source ─lexer→ tokens (INDENT/DEDENT) ─parser→ ast::Module ─interp→ heap objects
//!                                                       │ arrays (Kind::Array / Kind::Expr)
//!                                                       └──────────→ ArrayBackend (the engine)
//! ```
//!
//! - **Syntax**: Python's statements `=` (chained, tuple unpacking, subscripts), `op=`, `del`,
//!   `if/elif/else`, `while`, `for`, `break`, `continue`, `def` (positional, default and keyword
//!   arguments), `return`, `global`, `assert`, `pass`; Python's expression grammar and
//!   precedence, chained comparisons, conditional expressions, slices (`x[1:10:2]`,
//!   `x[:, 3]`). Not supported (a clear `SyntaxError`): classes, `try`, `import`, `lambda`,
//!   comprehensions, f-strings, `*args`, closures over enclosing functions' locals (a nested
//!   `def` sees its own locals and the globals).
//! - **Values**: `None`, `bool`, `int` (64-bit: overflow raises `OverflowError` instead of
//!   promoting), `float`, `str`, `list`, `tuple`, `dict` (string keys only), functions, slices,
//!   modules, and arrays from the [`ArrayBackend`]. `range()` is lazy in a `for` header and a
//!   list elsewhere.
//! - **Semantics** follow CPython 3.11: floor division and modulo signs, true division,
//!   `int ** -n`, exact int/float comparisons, `repr` of floats and strings, error kinds and
//!   most messages, `sys.getrefcount` (the argument's own reference included), `gc`'s API.
//!   `sum` adds left to right (as 3.11; 3.12 compensates float sums).
//! - **Memory**: every value is a heap object; the interpreter holds real handles (globals in a
//!   heap dict, locals in frames dropped on return), so reference counts are truthful and
//!   cycles wait for `gc.collect()` or the automatic collector.
//! - **Safety**: no input panics or overflows the stack: parsing limits nesting and tree height
//!   (`SyntaxError`), running limits calls (`sys.setrecursionlimit`, default 1000) and native
//!   nesting (`RecursionError`) on a thread with a large stack. Ctrl-C goes through
//!   [`Interpreter::interrupt_flag`].

pub mod ast;
mod backend;
mod builtins;
mod error;
mod format;
mod interp;
mod lexer;
mod modules;
mod ops;
mod parser;
mod printer;
mod protocol;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::sync::{Arc, Mutex};

pub use backend::{ArrayBackend, BinaryOp, NoArrays, is_array};
pub use error::{ErrorKind, ScriptError, TraceFrame};
pub use interp::{DEFAULT_RECURSION_LIMIT, Interpreter, MAX_RECURSION_LIMIT};
pub use ops::{float_repr, str_repr};
pub use parser::{MAX_HEIGHT, MAX_NESTING};
pub use printer::{unparse, unparse_expr};

/// Parses `source` (named `script_name` in errors) into a syntax tree.
pub fn parse(source: &str, script_name: &str) -> Result<ast::Module, ScriptError> {
    Interpreter::parse(source, script_name)
}

/// An in-memory output for scripts (cloning shares the buffer): handy for tests and for
/// capturing what a script prints.
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn contents(&self) -> String {
        let b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Empties the buffer.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
