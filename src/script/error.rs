//! Script errors: a kind (as Python's exception classes), a message, where it happened and the
//! chain of `def` calls that led there.

use std::fmt;

use super::ast::Pos;

/// The kinds of script errors, named after Python's exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The source does not parse (indentation errors included).
    SyntaxError,
    /// A name that is not defined.
    NameError,
    /// A function's local variable read before it is assigned.
    UnboundLocalError,
    /// An operation on a value of the wrong type.
    TypeError,
    /// A value of the right type but wrong content.
    ValueError,
    /// A sequence index out of range.
    IndexError,
    /// A dict key that is not there.
    KeyError,
    /// Division or modulo by zero.
    ZeroDivisionError,
    /// An integer result that does not fit in 64 bits, or a float result out of range.
    OverflowError,
    /// An attribute or method that does not exist.
    AttributeError,
    /// Nesting too deep: calls beyond the recursion limit, or expressions, containers or
    /// source too deeply nested.
    RecursionError,
    /// A failed `assert`.
    AssertionError,
    /// Interrupted (Ctrl-C) through [`Interpreter::interrupt_flag`](super::Interpreter::interrupt_flag).
    KeyboardInterrupt,
    /// The memory budget refused a reservation.
    MemoryError,
    /// A file or I/O error (from the array engine or the output writer).
    OSError,
    /// Anything else.
    RuntimeError,
}

impl ErrorKind {
    /// The Python name (`TypeError`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::SyntaxError => "SyntaxError",
            ErrorKind::NameError => "NameError",
            ErrorKind::UnboundLocalError => "UnboundLocalError",
            ErrorKind::TypeError => "TypeError",
            ErrorKind::ValueError => "ValueError",
            ErrorKind::IndexError => "IndexError",
            ErrorKind::KeyError => "KeyError",
            ErrorKind::ZeroDivisionError => "ZeroDivisionError",
            ErrorKind::OverflowError => "OverflowError",
            ErrorKind::AttributeError => "AttributeError",
            ErrorKind::RecursionError => "RecursionError",
            ErrorKind::AssertionError => "AssertionError",
            ErrorKind::KeyboardInterrupt => "KeyboardInterrupt",
            ErrorKind::MemoryError => "MemoryError",
            ErrorKind::OSError => "OSError",
            ErrorKind::RuntimeError => "RuntimeError",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One frame of a traceback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFrame {
    /// The script.
    pub script: String,
    /// The line being run in that frame.
    pub line: u32,
    /// The function (`<module>` for the top level).
    pub function: String,
}

/// An error from parsing or running a script.
///
/// Its `Display` prints the position, kind and message, the source line with a caret under the
/// column, and the traceback of `def` calls (outermost first, like Python):
///
/// ```text
/// script.chs:3:11: TypeError: unsupported operand type(s) for +: 'int' and 'str'
///     x = 1 + "a"
///           ^
/// traceback (most recent call last):
///   script.chs:7 in <module>
///   script.chs:3 in f
/// ```
#[derive(Debug)]
pub struct ScriptError {
    /// What kind of error.
    pub kind: ErrorKind,
    /// The message (for `KeyError`, the key's repr, as Python).
    pub message: String,
    /// The script's name as given to `run`.
    pub script: String,
    /// 1-based line (0 if unknown).
    pub line: u32,
    /// 1-based column in characters (0 if unknown): the operator of a failing operation, the
    /// callee of a failing call, the `[` of a failing subscript, the start of anything else.
    pub column: u32,
    /// The text of that line, if known.
    pub source_line: Option<String>,
    /// The frames active when it happened, outermost first (empty for syntax errors).
    pub traceback: Vec<TraceFrame>,
    /// The library error behind it, for errors raised by the array backend or the heap.
    pub cause: Option<Box<crate::Error>>,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.script)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        write!(f, ": {}: {}", self.kind, self.message)?;
        if let Some(src) = &self.source_line {
            let trimmed = src.trim_start();
            let indent = src.chars().count() - trimmed.chars().count();
            let trimmed = trimmed.trim_end();
            write!(f, "\n    {trimmed}")?;
            if self.column as usize > indent {
                let pad = self.column as usize - 1 - indent;
                write!(f, "\n    {}^", " ".repeat(pad))?;
            }
        }
        if !self.traceback.is_empty() {
            write!(f, "\ntraceback (most recent call last):")?;
            for fr in &self.traceback {
                write!(f, "\n  {}:{} in {}", fr.script, fr.line, fr.function)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An error while it propagates inside the interpreter (before it knows the script's text).
#[derive(Debug)]
pub(crate) struct Exc {
    pub(crate) kind: ErrorKind,
    pub(crate) msg: String,
    pub(crate) pos: Option<Pos>,
    pub(crate) trace: Vec<TraceFrame>,
    pub(crate) cause: Option<Box<crate::Error>>,
}

/// Results inside the interpreter (errors boxed to keep results small).
pub(crate) type R<T> = Result<T, Box<Exc>>;

/// A new error of `kind`.
pub(crate) fn exc(kind: ErrorKind, msg: impl Into<String>) -> Box<Exc> {
    Box::new(Exc {
        kind,
        msg: msg.into(),
        pos: None,
        trace: Vec::new(),
        cause: None,
    })
}

/// A `TypeError`.
pub(crate) fn type_err(msg: impl Into<String>) -> Box<Exc> {
    exc(ErrorKind::TypeError, msg)
}

/// A `ValueError`.
pub(crate) fn value_err(msg: impl Into<String>) -> Box<Exc> {
    exc(ErrorKind::ValueError, msg)
}

/// A `SyntaxError` at `pos`.
pub(crate) fn syntax_err(pos: Pos, msg: impl Into<String>) -> Box<Exc> {
    let mut e = exc(ErrorKind::SyntaxError, msg);
    e.pos = Some(pos);
    e
}

/// The script error for a library error (from the array backend or the heap): I/O and format
/// problems are `OSError`, budget refusals `MemoryError`, unknown dtypes `TypeError`, invalid
/// arguments `ValueError`.
pub(crate) fn from_lib(e: crate::Error) -> Box<Exc> {
    use crate::Error as E;
    let kind = match &e {
        E::Io { .. }
        | E::Corrupt { .. }
        | E::Truncated { .. }
        | E::Unsupported { .. }
        | E::UnknownFormat { .. }
        | E::Column { .. } => ErrorKind::OSError,
        E::OutOfMemoryBudget { .. } => ErrorKind::MemoryError,
        E::UnknownDType(_) => ErrorKind::TypeError,
        E::Invalid(_) => ErrorKind::ValueError,
    };
    let mut x = exc(kind, e.to_string());
    x.cause = Some(Box::new(e));
    x
}

impl Exc {
    /// The public error, with the script's text for the caret line.
    pub(crate) fn into_script_error(self, script: &str, lines: &[&str]) -> ScriptError {
        let pos = self.pos.unwrap_or_default();
        let source_line = (pos.line > 0)
            .then(|| lines.get(pos.line as usize - 1).map(|l| l.to_string()))
            .flatten();
        ScriptError {
            kind: self.kind,
            message: self.msg,
            script: script.to_string(),
            line: pos.line,
            column: pos.col,
            source_line,
            traceback: self.trace,
            cause: self.cause,
        }
    }
}
