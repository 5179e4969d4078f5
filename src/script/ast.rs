//! The syntax tree of the script language.
//!
//! Trees compare by structure only: [`Pos`] values never take part in `==`, so a program and its
//! pretty-printed, re-parsed form compare equal (see `printer.rs`).

use std::sync::Arc;

/// A position in a script: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub col: u32,
}

impl PartialEq for Pos {
    /// Always true: positions are not part of a tree's structure.
    fn eq(&self, _: &Pos) -> bool {
        true
    }
}

/// A parsed script.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Module {
    /// Its statements, in order.
    pub body: Vec<Stmt>,
}

/// A statement with its position (its first token).
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// Where it starts.
    pub pos: Pos,
    /// What it is.
    pub kind: StmtKind,
}

/// The statements.
#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// An expression evaluated for its effect.
    Expr(Expr),
    /// `t1 = t2 = value`: every target gets the value (targets are names, tuples/lists of
    /// targets, subscripts or attributes).
    Assign {
        /// The targets, left to right.
        targets: Vec<Expr>,
        /// The value.
        value: Expr,
    },
    /// `target op= value`.
    AugAssign {
        /// A name, subscript or attribute.
        target: Expr,
        /// The operator.
        op: BinOp,
        /// The right-hand side.
        value: Expr,
    },
    /// `del t1, t2`.
    Del(Vec<Expr>),
    /// `if test: body elif ...: ... else: orelse` (an `elif` is an `If` alone in `orelse`).
    If {
        /// The condition.
        test: Expr,
        /// Runs when it holds.
        body: Vec<Stmt>,
        /// Runs otherwise (may be empty).
        orelse: Vec<Stmt>,
    },
    /// `while test: body`.
    While {
        /// The condition.
        test: Expr,
        /// The loop body.
        body: Vec<Stmt>,
    },
    /// `for target in iter: body`.
    For {
        /// A name or tuple of targets.
        target: Expr,
        /// What to iterate over.
        iter: Expr,
        /// The loop body.
        body: Vec<Stmt>,
    },
    /// `break`.
    Break,
    /// `continue`.
    Continue,
    /// `pass`.
    Pass,
    /// `return [value]`.
    Return(Option<Expr>),
    /// `def name(params): body`.
    Def(Arc<FuncDef>),
    /// `global a, b`.
    Global(Vec<String>),
    /// `assert test[, msg]`.
    Assert {
        /// The condition.
        test: Expr,
        /// The message when it fails.
        msg: Option<Expr>,
    },
}

/// A function definition.
#[derive(Clone, Debug, PartialEq)]
pub struct FuncDef {
    /// Its name.
    pub name: String,
    /// Its parameters in order; those with defaults come last.
    pub params: Vec<Param>,
    /// Its body.
    pub body: Vec<Stmt>,
    /// Names local to the function (parameters and names it binds, less those declared
    /// `global`), sorted: derived from the body by the parser.
    pub locals: Vec<String>,
}

/// A parameter, with its default value if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its default value (evaluated when the `def` runs).
    pub default: Option<Expr>,
}

/// An expression with its position (its operator for operations, its start otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// Where it is.
    pub pos: Pos,
    /// What it is.
    pub kind: ExprKind,
}

/// The expressions.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal (adjacent literals already joined).
    Str(String),
    /// A name.
    Name(String),
    /// `[a, b]`.
    List(Vec<Expr>),
    /// `(a, b)` or `a, b`.
    Tuple(Vec<Expr>),
    /// `{k: v}`.
    Dict(Vec<(Expr, Expr)>),
    /// `op operand`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        operand: Box<Expr>,
    },
    /// `left op right`.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `left and right` / `left or right` (short-circuit; yields an operand).
    BoolOp {
        /// `and` or `or`.
        op: BoolOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `left op1 e1 op2 e2 ...` (chained: `a < b < c` is `a < b and b < c`, `b` evaluated once).
    Compare {
        /// The first operand.
        left: Box<Expr>,
        /// The operators and the operands that follow them.
        rest: Vec<(CmpOp, Expr)>,
    },
    /// `body if test else orelse`.
    IfExp {
        /// The condition.
        test: Box<Expr>,
        /// The value when it holds.
        body: Box<Expr>,
        /// The value otherwise.
        orelse: Box<Expr>,
    },
    /// `func(args, name=value)`.
    Call {
        /// The callee.
        func: Box<Expr>,
        /// Positional arguments.
        args: Vec<Expr>,
        /// Keyword arguments, in order.
        kwargs: Vec<(String, Expr)>,
    },
    /// `value.name`.
    Attribute {
        /// The object.
        value: Box<Expr>,
        /// The attribute.
        name: String,
    },
    /// `value[index]` (`x[a:b, 3]` has a tuple index holding a slice).
    Subscript {
        /// The object.
        value: Box<Expr>,
        /// The index.
        index: Box<Expr>,
    },
    /// `lower:upper:step` (only inside a subscript).
    Slice {
        /// Start.
        lower: Option<Box<Expr>>,
        /// Stop.
        upper: Option<Box<Expr>>,
        /// Step.
        step: Option<Box<Expr>>,
    },
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `//`
    FloorDiv,
    /// `%`
    Mod,
    /// `**`
    Pow,
    /// `@`
    MatMul,
    /// `<<`
    LShift,
    /// `>>`
    RShift,
    /// `&`
    BitAnd,
    /// `|`
    BitOr,
    /// `^`
    BitXor,
}

impl BinOp {
    /// The operator as written.
    pub const fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Pow => "**",
            BinOp::MatMul => "@",
            BinOp::LShift => "<<",
            BinOp::RShift => ">>",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
        }
    }

    /// Binding strength (higher binds tighter), as in Python's grammar.
    pub(crate) const fn precedence(self) -> u8 {
        match self {
            BinOp::BitOr => 1,
            BinOp::BitXor => 2,
            BinOp::BitAnd => 3,
            BinOp::LShift | BinOp::RShift => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::FloorDiv | BinOp::Mod | BinOp::MatMul => 6,
            BinOp::Pow => 8,
        }
    }

    /// All operators (for tests and tables).
    pub const ALL: [BinOp; 13] = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::FloorDiv,
        BinOp::Mod,
        BinOp::Pow,
        BinOp::MatMul,
        BinOp::LShift,
        BinOp::RShift,
        BinOp::BitAnd,
        BinOp::BitOr,
        BinOp::BitXor,
    ];
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `+x`
    Pos,
    /// `~x`
    Invert,
    /// `not x`
    Not,
}

impl UnaryOp {
    /// The operator as written.
    pub const fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Pos => "+",
            UnaryOp::Invert => "~",
            UnaryOp::Not => "not",
        }
    }
}

/// `and` / `or`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoolOp {
    /// `and`
    And,
    /// `or`
    Or,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `not in`
    NotIn,
    /// `is`
    Is,
    /// `is not`
    IsNot,
}

impl CmpOp {
    /// The operator as written.
    pub const fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
            CmpOp::Is => "is",
            CmpOp::IsNot => "is not",
        }
    }
}

impl Expr {
    /// An expression at `pos`.
    pub fn new(pos: Pos, kind: ExprKind) -> Expr {
        Expr { pos, kind }
    }

    /// Calls `f` on this expression and then on every expression inside it, depth first in
    /// source order (both branches of a conditional included).
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match &self.kind {
            ExprKind::None
            | ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Name(_) => {}
            ExprKind::List(v) | ExprKind::Tuple(v) => v.iter().for_each(|e| e.walk(f)),
            ExprKind::Dict(kv) => kv.iter().for_each(|(k, v)| {
                k.walk(f);
                v.walk(f);
            }),
            ExprKind::Unary { operand, .. } => operand.walk(f),
            ExprKind::Binary { left, right, .. } | ExprKind::BoolOp { left, right, .. } => {
                left.walk(f);
                right.walk(f);
            }
            ExprKind::Compare { left, rest } => {
                left.walk(f);
                rest.iter().for_each(|(_, e)| e.walk(f));
            }
            ExprKind::IfExp { test, body, orelse } => {
                test.walk(f);
                body.walk(f);
                orelse.walk(f);
            }
            ExprKind::Call { func, args, kwargs } => {
                func.walk(f);
                args.iter().for_each(|e| e.walk(f));
                kwargs.iter().for_each(|(_, e)| e.walk(f));
            }
            ExprKind::Attribute { value, .. } => value.walk(f),
            ExprKind::Subscript { value, index } => {
                value.walk(f);
                index.walk(f);
            }
            ExprKind::Slice { lower, upper, step } => {
                for e in [lower, upper, step].into_iter().flatten() {
                    e.walk(f);
                }
            }
        }
    }
}
