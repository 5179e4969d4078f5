//! Recursive-descent parser with Python's precedence:
//!
//! ```text
//! test      := or_test ['if' or_test 'else' test]
//! or_test   := and_test ('or' and_test)*          and_test := not_test ('and' not_test)*
//! not_test  := 'not' not_test | comparison         comparison := bitor (cmp_op bitor)*
//! bitor | bitxor | bitand | shift | arith | term    (left-associative, by precedence climbing)
//! factor    := ('-'|'+'|'~') factor | power        power := primary ['**' factor]
//! primary   := atom ('(' args ')' | '[' subscript ']' | '.' NAME)*
//! ```
//!
//! so `-2 ** 2 == -4`, `2 ** -1 == 0.5` and `2 ** 3 ** 2 == 512`, as in Python.
//!
//! Two limits keep arbitrary input from exhausting the stack: nesting (brackets, unary
//! operators, `**` chains, blocks) is capped at [`MAX_NESTING`], and every expression tree at
//! [`MAX_HEIGHT`] nodes from root to leaf (long `a + b + ...` chains build tall trees without
//! nesting). Both raise a `SyntaxError` naming the limit, never a stack overflow.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::ast::*;
use super::error::{R, syntax_err};
use super::lexer::{KEYWORDS, Tok, tokenize};

/// Most nested brackets, unary operators, `**` exponents and blocks.
pub const MAX_NESTING: usize = 150;
/// Tallest expression tree.
pub const MAX_HEIGHT: u32 = 1000;

/// Parses a whole script.
pub(crate) fn parse_module(source: &str) -> R<Module> {
    let toks = tokenize(source)?;
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
        h: 0,
        loops: 0,
        in_def: false,
    };
    let mut body = Vec::new();
    while !matches!(p.peek(), Tok::Eof) {
        body.extend(p.statement()?);
    }
    Ok(Module { body })
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    i: usize,
    /// Current nesting.
    depth: usize,
    /// Height of the expression last returned.
    h: u32,
    /// Loops around the statement being parsed (within the current function).
    loops: usize,
    /// True inside a `def`.
    in_def: bool,
}

fn is_keyword(name: &str) -> bool {
    KEYWORDS.contains(&name)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }

    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.i + k).min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> Pos {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }

    fn advance(&mut self) {
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let hit = self.is_op(op);
        if hit {
            self.advance();
        }
        hit
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Name(n) if n == kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.is_kw(kw);
        if hit {
            self.advance();
        }
        hit
    }

    fn describe(&self) -> String {
        match self.peek() {
            Tok::Name(n) => format!("'{n}'"),
            Tok::Int(_) | Tok::Float(_) => "a number".into(),
            Tok::Str(_) => "a string".into(),
            Tok::Op(o) => format!("'{o}'"),
            Tok::Newline => "end of line".into(),
            Tok::Indent => "an indent".into(),
            Tok::Dedent => "a dedent".into(),
            Tok::Eof => "end of input".into(),
        }
    }

    fn fail<T>(&self, what: &str) -> R<T> {
        Err(syntax_err(
            self.pos(),
            format!("expected {what}, found {}", self.describe()),
        ))
    }

    fn expect_op(&mut self, op: &str) -> R<Pos> {
        let p = self.pos();
        if self.eat_op(op) {
            Ok(p)
        } else {
            self.fail(&format!("'{op}'"))
        }
    }

    fn expect_kw(&mut self, kw: &str) -> R<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.fail(&format!("'{kw}'"))
        }
    }

    fn name(&mut self) -> R<String> {
        match self.peek() {
            Tok::Name(n) if !is_keyword(n) => {
                let n = n.clone();
                self.advance();
                Ok(n)
            }
            _ => self.fail("a name"),
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(syntax_err(
                self.pos(),
                format!("too many nested parentheses, operators or blocks (limit {MAX_NESTING})"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Records the height of a new node over children of height at most `child`.
    fn grow(&mut self, child: u32, pos: Pos) -> R<()> {
        self.h = child + 1;
        if self.h > MAX_HEIGHT {
            return Err(syntax_err(
                pos,
                format!("expression too deeply nested (limit {MAX_HEIGHT} levels)"),
            ));
        }
        Ok(())
    }

    // ----- statements -----

    fn statement(&mut self) -> R<Vec<Stmt>> {
        let pos = self.pos();
        match self.peek() {
            Tok::Indent => return Err(syntax_err(pos, "unexpected indent")),
            Tok::Newline => {
                self.advance();
                return Ok(Vec::new());
            }
            Tok::Name(n) => match n.as_str() {
                "if" => return Ok(vec![self.if_stmt()?]),
                "while" => return Ok(vec![self.while_stmt()?]),
                "for" => return Ok(vec![self.for_stmt()?]),
                "def" => return Ok(vec![self.def_stmt()?]),
                "class" | "try" | "with" | "import" | "from" | "raise" | "lambda" | "yield"
                | "async" | "await" | "nonlocal" | "except" | "finally" => {
                    return Err(syntax_err(pos, format!("'{n}' is not supported")));
                }
                _ => {}
            },
            _ => {}
        }
        self.simple_stmts()
    }

    fn simple_stmts(&mut self) -> R<Vec<Stmt>> {
        let mut out = vec![self.small_stmt()?];
        while self.eat_op(";") {
            if matches!(self.peek(), Tok::Newline) {
                break;
            }
            out.push(self.small_stmt()?);
        }
        if !matches!(self.peek(), Tok::Newline) {
            return self.fail("end of line");
        }
        self.advance();
        Ok(out)
    }

    fn small_stmt(&mut self) -> R<Stmt> {
        let pos = self.pos();
        let kind = if self.eat_kw("pass") {
            StmtKind::Pass
        } else if self.eat_kw("break") {
            if self.loops == 0 {
                return Err(syntax_err(pos, "'break' outside loop"));
            }
            StmtKind::Break
        } else if self.eat_kw("continue") {
            if self.loops == 0 {
                return Err(syntax_err(pos, "'continue' not properly in loop"));
            }
            StmtKind::Continue
        } else if self.eat_kw("return") {
            if !self.in_def {
                return Err(syntax_err(pos, "'return' outside function"));
            }
            if self.starts_expr() {
                StmtKind::Return(Some(self.testlist()?))
            } else {
                StmtKind::Return(None)
            }
        } else if self.eat_kw("del") {
            let mut targets = vec![self.target()?];
            while self.eat_op(",") {
                if !self.starts_expr() {
                    break;
                }
                targets.push(self.target()?);
            }
            for t in &targets {
                check_target(t, true)?;
            }
            StmtKind::Del(targets)
        } else if self.eat_kw("global") {
            let mut names = vec![self.name()?];
            while self.eat_op(",") {
                names.push(self.name()?);
            }
            StmtKind::Global(names)
        } else if self.eat_kw("assert") {
            let test = self.test()?;
            let msg = if self.eat_op(",") {
                Some(self.test()?)
            } else {
                None
            };
            StmtKind::Assert { test, msg }
        } else {
            self.expr_stmt()?
        };
        Ok(Stmt { pos, kind })
    }

    fn expr_stmt(&mut self) -> R<StmtKind> {
        let first = self.testlist()?;
        if let Tok::Op(op) = self.peek()
            && let Some(bin) = aug_op(op)
        {
            let p = self.pos();
            if !matches!(
                first.kind,
                ExprKind::Name(_) | ExprKind::Subscript { .. } | ExprKind::Attribute { .. }
            ) {
                return Err(syntax_err(p, "illegal expression for augmented assignment"));
            }
            self.advance();
            let value = self.testlist()?;
            return Ok(StmtKind::AugAssign {
                target: first,
                op: bin,
                value,
            });
        }
        if !self.is_op("=") {
            return Ok(StmtKind::Expr(first));
        }
        let mut targets = vec![first];
        while self.eat_op("=") {
            targets.push(self.testlist()?);
        }
        let value = targets
            .pop()
            .unwrap_or_else(|| Expr::new(Pos::default(), ExprKind::None));
        for t in &targets {
            check_target(t, false)?;
        }
        Ok(StmtKind::Assign { targets, value })
    }

    fn block(&mut self) -> R<Vec<Stmt>> {
        self.expect_op(":")?;
        self.enter()?;
        let body = if matches!(self.peek(), Tok::Newline) {
            self.advance();
            if !matches!(self.peek(), Tok::Indent) {
                return self.fail("an indented block");
            }
            self.advance();
            let mut body = Vec::new();
            while !matches!(self.peek(), Tok::Dedent | Tok::Eof) {
                body.extend(self.statement()?);
            }
            self.advance();
            body
        } else {
            self.simple_stmts()?
        };
        self.leave();
        Ok(body)
    }

    fn loop_body(&mut self) -> R<Vec<Stmt>> {
        self.loops += 1;
        let body = self.block();
        self.loops -= 1;
        body
    }

    fn if_stmt(&mut self) -> R<Stmt> {
        let pos = self.pos();
        self.advance();
        let test = self.test()?;
        let body = self.block()?;
        let mut arms = vec![(pos, test, body)];
        let mut orelse = Vec::new();
        loop {
            let p = self.pos();
            if self.eat_kw("elif") {
                let t = self.test()?;
                let b = self.block()?;
                arms.push((p, t, b));
            } else {
                if self.eat_kw("else") {
                    orelse = self.block()?;
                }
                break;
            }
        }
        while let Some((pos, test, body)) = arms.pop() {
            orelse = vec![Stmt {
                pos,
                kind: StmtKind::If { test, body, orelse },
            }];
        }
        Ok(orelse.pop().unwrap_or(Stmt {
            pos,
            kind: StmtKind::Pass,
        }))
    }

    fn while_stmt(&mut self) -> R<Stmt> {
        let pos = self.pos();
        self.advance();
        let test = self.test()?;
        let body = self.loop_body()?;
        if self.is_kw("else") {
            return Err(syntax_err(
                self.pos(),
                "'else' after a loop is not supported",
            ));
        }
        Ok(Stmt {
            pos,
            kind: StmtKind::While { test, body },
        })
    }

    fn for_stmt(&mut self) -> R<Stmt> {
        let pos = self.pos();
        self.advance();
        let first = self.target()?;
        let target = if self.is_op(",") {
            let mut items = vec![first];
            while self.eat_op(",") {
                if self.is_kw("in") {
                    break;
                }
                items.push(self.target()?);
            }
            let p = items[0].pos;
            Expr::new(p, ExprKind::Tuple(items))
        } else {
            first
        };
        check_target(&target, false)?;
        self.expect_kw("in")?;
        let iter = self.testlist()?;
        let body = self.loop_body()?;
        if self.is_kw("else") {
            return Err(syntax_err(
                self.pos(),
                "'else' after a loop is not supported",
            ));
        }
        Ok(Stmt {
            pos,
            kind: StmtKind::For { target, iter, body },
        })
    }

    fn def_stmt(&mut self) -> R<Stmt> {
        let pos = self.pos();
        self.advance();
        let name = self.name()?;
        self.expect_op("(")?;
        let mut params: Vec<Param> = Vec::new();
        while !self.is_op(")") {
            if self.is_op("*") || self.is_op("**") || self.is_op("/") {
                return Err(syntax_err(
                    self.pos(),
                    "'*', '**' and '/' parameters are not supported",
                ));
            }
            let p = self.pos();
            let pname = self.name()?;
            if params.iter().any(|q| q.name == pname) {
                return Err(syntax_err(
                    p,
                    format!("duplicate argument '{pname}' in function definition"),
                ));
            }
            let default = if self.eat_op("=") {
                Some(self.test()?)
            } else {
                if params.iter().any(|q| q.default.is_some()) {
                    return Err(syntax_err(
                        p,
                        "non-default argument follows default argument",
                    ));
                }
                None
            };
            if self.is_op(":") {
                return Err(syntax_err(self.pos(), "annotations are not supported"));
            }
            params.push(Param {
                name: pname,
                default,
            });
            if !self.eat_op(",") {
                break;
            }
        }
        self.expect_op(")")?;
        if self.is_op("->") {
            return Err(syntax_err(self.pos(), "annotations are not supported"));
        }
        let outer = (self.loops, self.in_def);
        self.loops = 0;
        self.in_def = true;
        let body = self.block();
        (self.loops, self.in_def) = outer;
        let body = body?;
        let locals = function_locals(&params, &body)?;
        Ok(Stmt {
            pos,
            kind: StmtKind::Def(Arc::new(FuncDef {
                name,
                params,
                body,
                locals,
            })),
        })
    }

    // ----- expressions -----

    fn starts_expr(&self) -> bool {
        match self.peek() {
            Tok::Name(n) => {
                !is_keyword(n) || matches!(n.as_str(), "None" | "True" | "False" | "not")
            }
            Tok::Int(_) | Tok::Float(_) | Tok::Str(_) => true,
            Tok::Op(o) => matches!(*o, "(" | "[" | "{" | "-" | "+" | "~"),
            _ => false,
        }
    }

    /// `test (',' test)* [',']`: a tuple if there is a comma.
    fn testlist(&mut self) -> R<Expr> {
        let first = self.test()?;
        if !self.is_op(",") {
            return Ok(first);
        }
        let pos = first.pos;
        let mut hmax = self.h;
        let mut items = vec![first];
        while self.eat_op(",") {
            if !self.starts_expr() {
                break;
            }
            items.push(self.test()?);
            hmax = hmax.max(self.h);
        }
        self.grow(hmax, pos)?;
        Ok(Expr::new(pos, ExprKind::Tuple(items)))
    }

    /// A target of `for` or `del`: an expression above the comparisons (so `in` ends it).
    fn target(&mut self) -> R<Expr> {
        self.enter()?;
        let r = self.binary(1);
        self.leave();
        r
    }

    fn test(&mut self) -> R<Expr> {
        self.enter()?;
        let r = self.test_inner();
        self.leave();
        r
    }

    fn test_inner(&mut self) -> R<Expr> {
        if self.is_kw("lambda") {
            return Err(syntax_err(self.pos(), "'lambda' is not supported"));
        }
        let body = self.or_test()?;
        if !self.is_kw("if") {
            return Ok(body);
        }
        let pos = self.pos();
        let hb = self.h;
        self.advance();
        let test = self.or_test()?;
        let ht = self.h;
        self.expect_kw("else")?;
        let orelse = self.test()?;
        let ho = self.h;
        self.grow(hb.max(ht).max(ho), pos)?;
        Ok(Expr::new(
            pos,
            ExprKind::IfExp {
                test: Box::new(test),
                body: Box::new(body),
                orelse: Box::new(orelse),
            },
        ))
    }

    fn or_test(&mut self) -> R<Expr> {
        let mut left = self.and_test()?;
        while self.is_kw("or") {
            let pos = self.pos();
            let hl = self.h;
            self.advance();
            let right = self.and_test()?;
            self.grow(hl.max(self.h), pos)?;
            left = Expr::new(
                pos,
                ExprKind::BoolOp {
                    op: BoolOp::Or,
                    left: Box::new(left),
                    right: Box::new(right),
                },
            );
        }
        Ok(left)
    }

    fn and_test(&mut self) -> R<Expr> {
        let mut left = self.not_test()?;
        while self.is_kw("and") {
            let pos = self.pos();
            let hl = self.h;
            self.advance();
            let right = self.not_test()?;
            self.grow(hl.max(self.h), pos)?;
            left = Expr::new(
                pos,
                ExprKind::BoolOp {
                    op: BoolOp::And,
                    left: Box::new(left),
                    right: Box::new(right),
                },
            );
        }
        Ok(left)
    }

    fn not_test(&mut self) -> R<Expr> {
        if !self.is_kw("not") {
            return self.comparison();
        }
        let pos = self.pos();
        self.advance();
        self.enter()?;
        let operand = self.not_test();
        self.leave();
        let operand = operand?;
        self.grow(self.h, pos)?;
        Ok(Expr::new(
            pos,
            ExprKind::Unary {
                op: UnaryOp::Not,
                operand: Box::new(operand),
            },
        ))
    }

    fn cmp_op(&mut self) -> Option<CmpOp> {
        let op = match self.peek() {
            Tok::Op("==") => CmpOp::Eq,
            Tok::Op("!=") => CmpOp::Ne,
            Tok::Op("<") => CmpOp::Lt,
            Tok::Op("<=") => CmpOp::Le,
            Tok::Op(">") => CmpOp::Gt,
            Tok::Op(">=") => CmpOp::Ge,
            Tok::Name(n) if n == "in" => CmpOp::In,
            Tok::Name(n) if n == "not" && matches!(self.peek_at(1), Tok::Name(m) if m == "in") => {
                self.advance();
                CmpOp::NotIn
            }
            Tok::Name(n) if n == "is" => {
                if matches!(self.peek_at(1), Tok::Name(m) if m == "not") {
                    self.advance();
                    CmpOp::IsNot
                } else {
                    CmpOp::Is
                }
            }
            _ => return None,
        };
        self.advance();
        Some(op)
    }

    fn comparison(&mut self) -> R<Expr> {
        let left = self.binary(1)?;
        let mut hmax = self.h;
        let pos = self.pos();
        let mut rest = Vec::new();
        while let Some(op) = self.cmp_op() {
            let e = self.binary(1)?;
            hmax = hmax.max(self.h);
            rest.push((op, e));
        }
        if rest.is_empty() {
            return Ok(left);
        }
        self.grow(hmax, pos)?;
        Ok(Expr::new(
            pos,
            ExprKind::Compare {
                left: Box::new(left),
                rest,
            },
        ))
    }

    fn bin_op(&self) -> Option<BinOp> {
        Some(match self.peek() {
            Tok::Op("|") => BinOp::BitOr,
            Tok::Op("^") => BinOp::BitXor,
            Tok::Op("&") => BinOp::BitAnd,
            Tok::Op("<<") => BinOp::LShift,
            Tok::Op(">>") => BinOp::RShift,
            Tok::Op("+") => BinOp::Add,
            Tok::Op("-") => BinOp::Sub,
            Tok::Op("*") => BinOp::Mul,
            Tok::Op("/") => BinOp::Div,
            Tok::Op("//") => BinOp::FloorDiv,
            Tok::Op("%") => BinOp::Mod,
            Tok::Op("@") => BinOp::MatMul,
            _ => return None,
        })
    }

    /// Left-associative binary operators of precedence `min` and above (precedence climbing;
    /// the recursion is bounded by the number of precedence levels).
    fn binary(&mut self, min: u8) -> R<Expr> {
        let mut left = self.factor()?;
        while let Some(op) = self.bin_op() {
            let prec = op.precedence();
            if prec < min {
                break;
            }
            let pos = self.pos();
            let hl = self.h;
            self.advance();
            let right = self.binary(prec + 1)?;
            self.grow(hl.max(self.h), pos)?;
            left = Expr::new(
                pos,
                ExprKind::Binary {
                    op,
                    left: Box::new(left),
                    right: Box::new(right),
                },
            );
        }
        Ok(left)
    }

    fn factor(&mut self) -> R<Expr> {
        let op = match self.peek() {
            Tok::Op("-") => UnaryOp::Neg,
            Tok::Op("+") => UnaryOp::Pos,
            Tok::Op("~") => UnaryOp::Invert,
            _ => return self.power(),
        };
        let pos = self.pos();
        self.advance();
        self.enter()?;
        let operand = self.factor();
        self.leave();
        let operand = operand?;
        self.grow(self.h, pos)?;
        Ok(Expr::new(
            pos,
            ExprKind::Unary {
                op,
                operand: Box::new(operand),
            },
        ))
    }

    fn power(&mut self) -> R<Expr> {
        let base = self.primary()?;
        if !self.is_op("**") {
            return Ok(base);
        }
        let pos = self.pos();
        let hb = self.h;
        self.advance();
        self.enter()?;
        let exp = self.factor();
        self.leave();
        let exp = exp?;
        self.grow(hb.max(self.h), pos)?;
        Ok(Expr::new(
            pos,
            ExprKind::Binary {
                op: BinOp::Pow,
                left: Box::new(base),
                right: Box::new(exp),
            },
        ))
    }

    fn primary(&mut self) -> R<Expr> {
        let mut e = self.atom()?;
        loop {
            if self.is_op("(") {
                let pos = e.pos;
                let hf = self.h;
                self.advance();
                let (args, kwargs, ha) = self.call_args()?;
                self.grow(hf.max(ha), pos)?;
                e = Expr::new(
                    pos,
                    ExprKind::Call {
                        func: Box::new(e),
                        args,
                        kwargs,
                    },
                );
            } else if self.is_op("[") {
                let pos = self.pos();
                let hv = self.h;
                self.advance();
                let index = self.subscript()?;
                self.grow(hv.max(self.h), pos)?;
                e = Expr::new(
                    pos,
                    ExprKind::Subscript {
                        value: Box::new(e),
                        index: Box::new(index),
                    },
                );
            } else if self.is_op(".") {
                self.advance();
                let pos = self.pos();
                let hv = self.h;
                let name = self.name()?;
                self.grow(hv, pos)?;
                e = Expr::new(
                    pos,
                    ExprKind::Attribute {
                        value: Box::new(e),
                        name,
                    },
                );
            } else {
                return Ok(e);
            }
        }
    }

    /// Arguments after `(`, through `)`; returns the tallest argument's height too.
    #[allow(clippy::type_complexity)]
    fn call_args(&mut self) -> R<(Vec<Expr>, Vec<(String, Expr)>, u32)> {
        let mut args = Vec::new();
        let mut kwargs: Vec<(String, Expr)> = Vec::new();
        let mut hmax = 0;
        while !self.is_op(")") {
            if self.is_op("*") || self.is_op("**") {
                return Err(syntax_err(
                    self.pos(),
                    "'*' and '**' arguments are not supported",
                ));
            }
            let p = self.pos();
            if let Tok::Name(n) = self.peek()
                && matches!(self.peek_at(1), Tok::Op("="))
            {
                let n = n.clone();
                if is_keyword(&n) {
                    return self.fail("an argument");
                }
                self.advance();
                self.advance();
                if kwargs.iter().any(|(k, _)| *k == n) {
                    return Err(syntax_err(p, format!("keyword argument repeated: {n}")));
                }
                let v = self.test()?;
                hmax = hmax.max(self.h);
                kwargs.push((n, v));
            } else {
                let v = self.test()?;
                hmax = hmax.max(self.h);
                if !kwargs.is_empty() {
                    return Err(syntax_err(
                        p,
                        "positional argument follows keyword argument",
                    ));
                }
                if self.is_kw("for") {
                    return Err(syntax_err(self.pos(), "comprehensions are not supported"));
                }
                args.push(v);
            }
            if !self.eat_op(",") {
                break;
            }
        }
        self.expect_op(")")?;
        Ok((args, kwargs, hmax))
    }

    /// The index after `[`, through `]`: one item, or a tuple of items (slices allowed).
    fn subscript(&mut self) -> R<Expr> {
        let first = self.slice_item()?;
        let mut hmax = self.h;
        if self.eat_op("]") {
            self.h = hmax;
            return Ok(first);
        }
        if !self.is_op(",") {
            return self.fail("']'");
        }
        let pos = first.pos;
        let mut items = vec![first];
        while self.eat_op(",") {
            if self.is_op("]") {
                break;
            }
            items.push(self.slice_item()?);
            hmax = hmax.max(self.h);
        }
        self.expect_op("]")?;
        self.grow(hmax, pos)?;
        Ok(Expr::new(pos, ExprKind::Tuple(items)))
    }

    fn slice_item(&mut self) -> R<Expr> {
        let pos = self.pos();
        let lower = if self.is_op(":") {
            None
        } else {
            Some(self.test()?)
        };
        if !self.is_op(":") {
            return lower.map_or_else(|| self.fail("an index"), Ok);
        }
        let mut hmax = if lower.is_some() { self.h } else { 0 };
        self.advance();
        let ends = |p: &Parser| p.is_op(":") || p.is_op("]") || p.is_op(",");
        let upper = if ends(self) {
            None
        } else {
            let u = self.test()?;
            hmax = hmax.max(self.h);
            Some(u)
        };
        let mut step = None;
        if self.eat_op(":") && !(self.is_op("]") || self.is_op(",")) {
            step = Some(self.test()?);
            hmax = hmax.max(self.h);
        }
        self.grow(hmax, pos)?;
        Ok(Expr::new(
            pos,
            ExprKind::Slice {
                lower: lower.map(Box::new),
                upper: upper.map(Box::new),
                step: step.map(Box::new),
            },
        ))
    }

    fn atom(&mut self) -> R<Expr> {
        let pos = self.pos();
        self.h = 1;
        let kind = match self.peek().clone() {
            Tok::Name(n) => {
                let k = match n.as_str() {
                    "None" => ExprKind::None,
                    "True" => ExprKind::Bool(true),
                    "False" => ExprKind::Bool(false),
                    "lambda" => return Err(syntax_err(pos, "'lambda' is not supported")),
                    "yield" | "await" => {
                        return Err(syntax_err(pos, format!("'{n}' is not supported")));
                    }
                    k if is_keyword(k) => return self.fail("an expression"),
                    _ => ExprKind::Name(n),
                };
                self.advance();
                k
            }
            Tok::Int(v) => {
                self.advance();
                ExprKind::Int(v)
            }
            Tok::Float(v) => {
                self.advance();
                ExprKind::Float(v)
            }
            Tok::Str(s) => {
                self.advance();
                let mut s = s;
                while let Tok::Str(more) = self.peek() {
                    s.push_str(more);
                    self.advance();
                }
                ExprKind::Str(s)
            }
            Tok::Op("(") => {
                self.advance();
                if self.eat_op(")") {
                    return Ok(Expr::new(pos, ExprKind::Tuple(Vec::new())));
                }
                let first = self.test()?;
                if self.is_kw("for") {
                    return Err(syntax_err(self.pos(), "comprehensions are not supported"));
                }
                if self.eat_op(")") {
                    // Parentheses group; they make no node.
                    return Ok(first);
                }
                if !self.is_op(",") {
                    return self.fail("')' or ','");
                }
                let mut hmax = self.h;
                let mut items = vec![first];
                while self.eat_op(",") {
                    if self.is_op(")") {
                        break;
                    }
                    items.push(self.test()?);
                    hmax = hmax.max(self.h);
                }
                self.expect_op(")")?;
                self.grow(hmax, pos)?;
                return Ok(Expr::new(pos, ExprKind::Tuple(items)));
            }
            Tok::Op("[") => {
                self.advance();
                let mut items = Vec::new();
                let mut hmax = 0;
                while !self.is_op("]") {
                    items.push(self.test()?);
                    hmax = hmax.max(self.h);
                    if self.is_kw("for") {
                        return Err(syntax_err(self.pos(), "comprehensions are not supported"));
                    }
                    if !self.eat_op(",") {
                        break;
                    }
                }
                self.expect_op("]")?;
                self.grow(hmax, pos)?;
                return Ok(Expr::new(pos, ExprKind::List(items)));
            }
            Tok::Op("{") => {
                self.advance();
                let mut items = Vec::new();
                let mut hmax = 0;
                while !self.is_op("}") {
                    let k = self.test()?;
                    hmax = hmax.max(self.h);
                    if !self.is_op(":") {
                        return Err(syntax_err(
                            self.pos(),
                            "expected ':' (set literals and comprehensions are not supported)",
                        ));
                    }
                    self.advance();
                    let v = self.test()?;
                    hmax = hmax.max(self.h);
                    items.push((k, v));
                    if !self.eat_op(",") {
                        break;
                    }
                }
                self.expect_op("}")?;
                self.grow(hmax, pos)?;
                return Ok(Expr::new(pos, ExprKind::Dict(items)));
            }
            _ => return self.fail("an expression"),
        };
        Ok(Expr::new(pos, kind))
    }
}

fn aug_op(op: &str) -> Option<BinOp> {
    Some(match op {
        "+=" => BinOp::Add,
        "-=" => BinOp::Sub,
        "*=" => BinOp::Mul,
        "/=" => BinOp::Div,
        "//=" => BinOp::FloorDiv,
        "%=" => BinOp::Mod,
        "**=" => BinOp::Pow,
        "@=" => BinOp::MatMul,
        "<<=" => BinOp::LShift,
        ">>=" => BinOp::RShift,
        "&=" => BinOp::BitAnd,
        "|=" => BinOp::BitOr,
        "^=" => BinOp::BitXor,
        _ => return None,
    })
}

/// Checks that `e` can be assigned to (or deleted, for `del`).
fn check_target(e: &Expr, del: bool) -> R<()> {
    match &e.kind {
        ExprKind::Name(_) | ExprKind::Subscript { .. } | ExprKind::Attribute { .. } => Ok(()),
        ExprKind::Tuple(items) | ExprKind::List(items) => {
            items.iter().try_for_each(|t| check_target(t, del))
        }
        _ => {
            let what = match &e.kind {
                ExprKind::Call { .. } => "function call",
                ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Str(_) => "literal",
                ExprKind::None | ExprKind::Bool(_) => "constant",
                _ => "expression",
            };
            let verb = if del { "delete" } else { "assign to" };
            Err(syntax_err(e.pos, format!("cannot {verb} {what}")))
        }
    }
}

/// The names a function binds (its locals): parameters and every name assigned, deleted, used
/// as a loop variable or defined by a nested `def`, less those declared `global`.
pub(crate) fn function_locals(params: &[Param], body: &[Stmt]) -> R<Vec<String>> {
    let mut bound = BTreeSet::new();
    let mut globals = BTreeSet::new();
    for p in params {
        bound.insert(p.name.clone());
    }
    let mut stack: Vec<&Stmt> = body.iter().rev().collect();
    while let Some(s) = stack.pop() {
        match &s.kind {
            StmtKind::Assign { targets, .. } => targets.iter().for_each(|t| bind(t, &mut bound)),
            StmtKind::AugAssign { target, .. } => bind(target, &mut bound),
            StmtKind::Del(ts) => ts.iter().for_each(|t| bind(t, &mut bound)),
            StmtKind::For { target, body, .. } => {
                bind(target, &mut bound);
                stack.extend(body.iter().rev());
            }
            StmtKind::If { body, orelse, .. } => {
                stack.extend(body.iter().rev());
                stack.extend(orelse.iter().rev());
            }
            StmtKind::While { body, .. } => stack.extend(body.iter().rev()),
            StmtKind::Def(f) => {
                bound.insert(f.name.clone());
            }
            StmtKind::Global(names) => {
                for n in names {
                    if params.iter().any(|p| p.name == *n) {
                        return Err(syntax_err(
                            s.pos,
                            format!("name '{n}' is parameter and global"),
                        ));
                    }
                    globals.insert(n.clone());
                }
            }
            _ => {}
        }
    }
    Ok(bound.difference(&globals).cloned().collect())
}

fn bind(t: &Expr, out: &mut BTreeSet<String>) {
    match &t.kind {
        ExprKind::Name(n) => {
            out.insert(n.clone());
        }
        ExprKind::Tuple(items) | ExprKind::List(items) => items.iter().for_each(|i| bind(i, out)),
        _ => {}
    }
}
