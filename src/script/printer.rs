//! Pretty-printing a syntax tree back to source that parses to the same tree.
//!
//! Parentheses are added only where precedence needs them; tuples are always parenthesised
//! (except as a subscript index, where `x[:, 1]` must stay bare).

use std::fmt::Write;

use super::ast::*;
use super::ops::{float_repr, str_repr};

/// Source text for `m`.
pub fn unparse(m: &Module) -> String {
    let mut out = String::new();
    block(&m.body, 0, &mut out);
    out
}

/// Source text for one expression.
pub fn unparse_expr(e: &Expr) -> String {
    expr(e, 0)
}

fn block(body: &[Stmt], indent: usize, out: &mut String) {
    for s in body {
        stmt(s, indent, out);
    }
}

fn line(indent: usize, text: &str, out: &mut String) {
    for _ in 0..indent {
        out.push_str("    ");
    }
    out.push_str(text);
    out.push('\n');
}

fn stmt(s: &Stmt, indent: usize, out: &mut String) {
    match &s.kind {
        StmtKind::Expr(e) => line(indent, &expr(e, 0), out),
        StmtKind::Assign { targets, value } => {
            let mut t = String::new();
            for x in targets {
                t += &expr(x, 0);
                t += " = ";
            }
            t += &expr(value, 0);
            line(indent, &t, out);
        }
        StmtKind::AugAssign { target, op, value } => line(
            indent,
            &format!("{} {}= {}", expr(target, 0), op.symbol(), expr(value, 0)),
            out,
        ),
        StmtKind::Del(ts) => {
            let t: Vec<String> = ts.iter().map(|t| expr(t, 0)).collect();
            line(indent, &format!("del {}", t.join(", ")), out);
        }
        StmtKind::If { test, body, orelse } => {
            line(indent, &format!("if {}:", expr(test, 0)), out);
            block(body, indent + 1, out);
            let mut orelse = orelse;
            loop {
                match orelse.as_slice() {
                    [] => break,
                    [
                        Stmt {
                            kind:
                                StmtKind::If {
                                    test,
                                    body,
                                    orelse: next,
                                },
                            ..
                        },
                    ] => {
                        line(indent, &format!("elif {}:", expr(test, 0)), out);
                        block(body, indent + 1, out);
                        orelse = next;
                    }
                    _ => {
                        line(indent, "else:", out);
                        block(orelse, indent + 1, out);
                        break;
                    }
                }
            }
        }
        StmtKind::While { test, body } => {
            line(indent, &format!("while {}:", expr(test, 0)), out);
            block(body, indent + 1, out);
        }
        StmtKind::For { target, iter, body } => {
            line(
                indent,
                &format!("for {} in {}:", expr(target, 0), expr(iter, 0)),
                out,
            );
            block(body, indent + 1, out);
        }
        StmtKind::Break => line(indent, "break", out),
        StmtKind::Continue => line(indent, "continue", out),
        StmtKind::Pass => line(indent, "pass", out),
        StmtKind::Return(None) => line(indent, "return", out),
        StmtKind::Return(Some(e)) => line(indent, &format!("return {}", expr(e, 0)), out),
        StmtKind::Def(f) => {
            let params: Vec<String> = f
                .params
                .iter()
                .map(|p| match &p.default {
                    Some(d) => format!("{}={}", p.name, expr(d, 1)),
                    None => p.name.clone(),
                })
                .collect();
            line(
                indent,
                &format!("def {}({}):", f.name, params.join(", ")),
                out,
            );
            block(&f.body, indent + 1, out);
        }
        StmtKind::Global(names) => line(indent, &format!("global {}", names.join(", ")), out),
        StmtKind::Assert { test, msg } => {
            let mut t = format!("assert {}", expr(test, 1));
            if let Some(m) = msg {
                t += ", ";
                t += &expr(m, 1);
            }
            line(indent, &t, out);
        }
    }
}

const P_IFEXP: u8 = 1;
const P_OR: u8 = 2;
const P_AND: u8 = 3;
const P_NOT: u8 = 4;
const P_CMP: u8 = 5;
/// Binary operator precedences are `P_BIN + BinOp::precedence()`.
const P_BIN: u8 = 5;
const P_UNARY: u8 = 12;
const P_POW: u8 = 13;
const P_PRIMARY: u8 = 14;
const P_ATOM: u8 = 15;

fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::IfExp { .. } => P_IFEXP,
        ExprKind::BoolOp { op: BoolOp::Or, .. } => P_OR,
        ExprKind::BoolOp {
            op: BoolOp::And, ..
        } => P_AND,
        ExprKind::Unary {
            op: UnaryOp::Not, ..
        } => P_NOT,
        ExprKind::Compare { .. } => P_CMP,
        ExprKind::Binary { op: BinOp::Pow, .. } => P_POW,
        ExprKind::Binary { op, .. } => P_BIN + op.precedence(),
        ExprKind::Unary { .. } => P_UNARY,
        ExprKind::Call { .. } | ExprKind::Attribute { .. } | ExprKind::Subscript { .. } => {
            P_PRIMARY
        }
        _ => P_ATOM,
    }
}

/// `e` as source, parenthesised if it binds looser than `min`.
fn expr(e: &Expr, min: u8) -> String {
    let s = render(e);
    if precedence(e) < min {
        format!("({s})")
    } else {
        s
    }
}

fn items(v: &[Expr]) -> String {
    v.iter()
        .map(|x| expr(x, P_IFEXP))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(e: &Expr) -> String {
    match &e.kind {
        ExprKind::None => "None".into(),
        ExprKind::Bool(true) => "True".into(),
        ExprKind::Bool(false) => "False".into(),
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) if v.is_infinite() => "1e999".into(),
        ExprKind::Float(v) => float_repr(*v),
        ExprKind::Str(s) => str_repr(s),
        ExprKind::Name(n) => n.clone(),
        ExprKind::List(v) => format!("[{}]", items(v)),
        ExprKind::Tuple(v) if v.len() == 1 => format!("({},)", expr(&v[0], P_IFEXP)),
        ExprKind::Tuple(v) => format!("({})", items(v)),
        ExprKind::Dict(v) => {
            let parts: Vec<String> = v
                .iter()
                .map(|(k, x)| format!("{}: {}", expr(k, P_IFEXP), expr(x, P_IFEXP)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        ExprKind::Unary { op, operand } => match op {
            UnaryOp::Not => format!("not {}", expr(operand, P_NOT)),
            _ => format!("{}{}", op.symbol(), expr(operand, P_UNARY)),
        },
        ExprKind::Binary {
            op: BinOp::Pow,
            left,
            right,
        } => format!("{} ** {}", expr(left, P_PRIMARY), expr(right, P_UNARY)),
        ExprKind::Binary { op, left, right } => {
            let p = P_BIN + op.precedence();
            format!("{} {} {}", expr(left, p), op.symbol(), expr(right, p + 1))
        }
        ExprKind::BoolOp { op, left, right } => {
            let (p, word) = match op {
                BoolOp::Or => (P_OR, "or"),
                BoolOp::And => (P_AND, "and"),
            };
            format!("{} {word} {}", expr(left, p), expr(right, p + 1))
        }
        ExprKind::Compare { left, rest } => {
            let mut s = expr(left, P_CMP + 1);
            for (op, x) in rest {
                let _ = write!(s, " {} {}", op.symbol(), expr(x, P_CMP + 1));
            }
            s
        }
        ExprKind::IfExp { test, body, orelse } => format!(
            "{} if {} else {}",
            expr(body, P_OR),
            expr(test, P_OR),
            expr(orelse, P_IFEXP)
        ),
        ExprKind::Call { func, args, kwargs } => {
            let mut parts: Vec<String> = args.iter().map(|a| expr(a, P_IFEXP)).collect();
            parts.extend(
                kwargs
                    .iter()
                    .map(|(k, v)| format!("{k}={}", expr(v, P_IFEXP))),
            );
            format!("{}({})", primary(func), parts.join(", "))
        }
        ExprKind::Attribute { value, name } => format!("{}.{name}", primary(value)),
        ExprKind::Subscript { value, index } => {
            let idx = match &index.kind {
                ExprKind::Tuple(v) if v.len() == 1 => format!("{},", slice_item(&v[0])),
                ExprKind::Tuple(v) if !v.is_empty() => {
                    v.iter().map(slice_item).collect::<Vec<_>>().join(", ")
                }
                _ => slice_item(index),
            };
            format!("{}[{idx}]", primary(value))
        }
        ExprKind::Slice { .. } => slice_item(e),
    }
}

/// The object of a call, attribute or subscript: an integer literal needs parentheses
/// (`1.x` would lex as a float).
fn primary(e: &Expr) -> String {
    if matches!(e.kind, ExprKind::Int(_)) {
        format!("({})", render(e))
    } else {
        expr(e, P_PRIMARY)
    }
}

fn slice_item(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Slice { lower, upper, step } => {
            let part =
                |x: &Option<Box<Expr>>| x.as_ref().map(|x| expr(x, P_IFEXP)).unwrap_or_default();
            let mut s = format!("{}:{}", part(lower), part(upper));
            if step.is_some() {
                s.push(':');
                s += &part(step);
            }
            s
        }
        _ => expr(e, P_IFEXP),
    }
}
