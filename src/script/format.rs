//! `str.format` and `format(value, spec)` with Python's format-spec mini-language:
//! `[[fill]align][sign][#][0][width][,|_][.precision][type]`.

use crate::heap::{Handle, Kind};

use super::error::*;
use super::interp::{Interpreter, V};
use super::ops;

#[derive(Default)]
struct Spec {
    fill: Option<char>,
    align: Option<char>,
    sign: Option<char>,
    alt: bool,
    zero: bool,
    width: usize,
    grouping: Option<char>,
    precision: Option<usize>,
    ty: Option<char>,
}

fn bad_spec(spec: &str) -> Box<Exc> {
    value_err(format!("Invalid format specifier '{spec}'"))
}

fn parse_spec(spec: &str) -> R<Spec> {
    let c: Vec<char> = spec.chars().collect();
    let mut s = Spec::default();
    let mut i = 0;
    let is_align = |ch: char| matches!(ch, '<' | '>' | '=' | '^');
    if c.len() >= 2 && is_align(c[1]) {
        s.fill = Some(c[0]);
        s.align = Some(c[1]);
        i = 2;
    } else if !c.is_empty() && is_align(c[0]) {
        s.align = Some(c[0]);
        i = 1;
    }
    if i < c.len() && matches!(c[i], '+' | '-' | ' ') {
        s.sign = Some(c[i]);
        i += 1;
    }
    if i < c.len() && c[i] == '#' {
        s.alt = true;
        i += 1;
    }
    if i < c.len() && c[i] == '0' {
        s.zero = true;
        i += 1;
    }
    let start = i;
    while i < c.len() && c[i].is_ascii_digit() {
        i += 1;
    }
    if i > start {
        let w: String = c[start..i].iter().collect();
        s.width = w.parse().map_err(|_| bad_spec(spec))?;
        if s.width > 1 << 20 {
            return Err(value_err("Too many decimal digits in format string"));
        }
    }
    if i < c.len() && matches!(c[i], ',' | '_') {
        s.grouping = Some(c[i]);
        i += 1;
    }
    if i < c.len() && c[i] == '.' {
        i += 1;
        let start = i;
        while i < c.len() && c[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(value_err("Format specifier missing precision"));
        }
        let p: String = c[start..i].iter().collect();
        let p: usize = p.parse().map_err(|_| bad_spec(spec))?;
        if p > 1 << 16 {
            return Err(value_err("Too many decimal digits in format string"));
        }
        s.precision = Some(p);
    }
    if i < c.len() {
        s.ty = Some(c[i]);
        i += 1;
    }
    if i != c.len() {
        return Err(bad_spec(spec));
    }
    Ok(s)
}

/// Inserts `sep` every `every` digits from the right.
fn group(digits: &str, sep: char, every: usize) -> String {
    let n = digits.len();
    let mut out = String::with_capacity(n + n / every);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(every) {
            out.push(sep);
        }
        out.push(ch);
    }
    out
}

/// Pads `sign + prefix + body` to the spec's width.
fn pad(s: &Spec, sign: &str, prefix: &str, body: &str, default_align: char) -> String {
    let (fill, align) = match (s.align, s.zero) {
        (Some(a), _) => (s.fill.unwrap_or(' '), a),
        (None, true) => ('0', '='),
        (None, false) => (' ', default_align),
    };
    let len = sign.chars().count() + prefix.chars().count() + body.chars().count();
    let n = s.width.saturating_sub(len);
    let fills = |k: usize| std::iter::repeat_n(fill, k).collect::<String>();
    match align {
        '<' => format!("{sign}{prefix}{body}{}", fills(n)),
        '^' => format!("{}{sign}{prefix}{body}{}", fills(n / 2), fills(n - n / 2)),
        '=' => format!("{sign}{prefix}{}{body}", fills(n)),
        _ => format!("{}{sign}{prefix}{body}", fills(n)),
    }
}

fn sign_str(s: &Spec, negative: bool) -> &'static str {
    match (negative, s.sign) {
        (true, _) => "-",
        (false, Some('+')) => "+",
        (false, Some(' ')) => " ",
        _ => "",
    }
}

/// Python's `'e'` body: `1.500000e+00`.
fn sci(x: f64, p: usize) -> String {
    let s = format!("{x:.p$e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// Python's `'g'` body (and the no-type body when `repr_like`).
fn general(x: f64, p: usize, alt: bool, repr_like: bool) -> String {
    let p = p.max(1);
    let exp = if x == 0.0 {
        0
    } else {
        let s = format!("{x:.prec$e}", prec = p - 1);
        s.split_once('e')
            .and_then(|(_, e)| e.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let limit = if repr_like { p as i64 - 1 } else { p as i64 };
    let fixed = -4 <= exp && exp < limit;
    let mut body = if fixed {
        format!("{x:.prec$}", prec = (p as i64 - 1 - exp).max(0) as usize)
    } else {
        sci(x, p - 1)
    };
    if !alt {
        let (mant, tail) = match body.find('e') {
            Some(i) => (body[..i].to_string(), body[i..].to_string()),
            None => (body.clone(), String::new()),
        };
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            mant
        };
        body = mant + &tail;
    }
    if repr_like && fixed && !body.contains('.') {
        body.push_str(".0");
    }
    body
}

fn format_float(s: &Spec, x: f64, ty: Option<char>) -> R<String> {
    let neg = x.is_sign_negative() && !x.is_nan();
    let a = x.abs();
    let upper = matches!(ty, Some('F' | 'E' | 'G'));
    let body = if !a.is_finite() {
        let t = if a.is_nan() { "nan" } else { "inf" };
        let t = if upper { t.to_uppercase() } else { t.into() };
        if ty == Some('%') { t + "%" } else { t }
    } else {
        let p = s.precision;
        let b = match ty {
            Some('f' | 'F') => {
                let mut b = format!("{a:.prec$}", prec = p.unwrap_or(6));
                if s.alt && !b.contains('.') {
                    b.push('.');
                }
                b
            }
            Some('e' | 'E') => sci(a, p.unwrap_or(6)),
            Some('g' | 'G' | 'n') => general(a, p.unwrap_or(6), s.alt, false),
            Some('%') => format!("{:.prec$}%", a * 100.0, prec = p.unwrap_or(6)),
            None => match p {
                Some(p) => general(a, p, s.alt, true),
                None => ops::float_repr(a),
            },
            Some(t) => {
                return Err(value_err(format!(
                    "Unknown format code '{t}' for object of type 'float'"
                )));
            }
        };
        let b = if upper { b.to_uppercase() } else { b };
        match s.grouping {
            Some(g) if !b.contains('e') && !b.contains('E') => {
                let end = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                format!("{}{}", group(&b[..end], g, 3), &b[end..])
            }
            _ => b,
        }
    };
    Ok(pad(s, sign_str(s, neg), "", &body, '>'))
}

fn format_int(s: &Spec, i: i64) -> R<String> {
    if matches!(s.ty, Some('e' | 'E' | 'f' | 'F' | 'g' | 'G' | '%')) {
        return format_float(s, i as f64, s.ty);
    }
    if s.precision.is_some() {
        return Err(value_err(
            "Precision not allowed in integer format specifier",
        ));
    }
    let neg = i < 0;
    let a = i.unsigned_abs();
    let (prefix, digits, every) = match s.ty {
        None | Some('d' | 'n') => ("", a.to_string(), 3),
        Some('b') => ("0b", format!("{a:b}"), 4),
        Some('o') => ("0o", format!("{a:o}"), 4),
        Some('x') => ("0x", format!("{a:x}"), 4),
        Some('X') => ("0X", format!("{a:X}"), 4),
        Some('c') => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| exc(ErrorKind::OverflowError, "%c arg not in range(0x110000)"))?;
            return Ok(pad(s, "", "", &c.to_string(), '<'));
        }
        Some(t) => {
            return Err(value_err(format!(
                "Unknown format code '{t}' for object of type 'int'"
            )));
        }
    };
    let digits = match s.grouping {
        Some(',') if every == 4 => {
            return Err(value_err(format!(
                "Cannot specify ',' with '{}'.",
                s.ty.unwrap_or('d')
            )));
        }
        Some(g) => group(&digits, g, every),
        None => digits,
    };
    let prefix = if s.alt { prefix } else { "" };
    Ok(pad(s, sign_str(s, neg), prefix, &digits, '>'))
}

/// `format(v, spec)`.
pub(crate) fn format_spec(it: &mut Interpreter, v: &Handle, spec: &str) -> R<String> {
    if spec.is_empty() {
        return it.str_of(v);
    }
    let s = parse_spec(spec)?;
    match it.view(v) {
        V::Str(text) => {
            if s.sign.is_some() {
                return Err(value_err("Sign not allowed in string format specifier"));
            }
            if !matches!(s.ty, None | Some('s')) {
                return Err(value_err(format!(
                    "Unknown format code '{}' for object of type 'str'",
                    s.ty.unwrap_or('s')
                )));
            }
            let body: String = match s.precision {
                Some(p) => text.chars().take(p).collect(),
                None => text,
            };
            Ok(pad(&s, "", "", &body, '<'))
        }
        V::Int(i) => format_int(&s, i),
        V::Bool(b) => format_int(&s, i64::from(b)),
        V::Float(f) => format_float(&s, f, s.ty),
        _ => Err(type_err(format!(
            "unsupported format string passed to {}.__format__",
            it.type_name(v)
        ))),
    }
}

/// `template.format(*args, **kwargs)`.
pub(crate) fn format_template(
    it: &mut Interpreter,
    template: &str,
    args: &[Handle],
    kwargs: &[(String, Handle)],
) -> R<String> {
    let c: Vec<char> = template.chars().collect();
    let mut out = String::new();
    let mut auto = 0usize;
    let mut manual = false;
    let mut used_auto = false;
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '{' if c.get(i + 1) == Some(&'{') => {
                out.push('{');
                i += 2;
            }
            '}' if c.get(i + 1) == Some(&'}') => {
                out.push('}');
                i += 2;
            }
            '}' => return Err(value_err("Single '}' encountered in format string")),
            '{' => {
                let start = i + 1;
                let mut j = start;
                while j < c.len() && c[j] != '}' {
                    if c[j] == '{' {
                        return Err(value_err("nested replacement fields are not supported"));
                    }
                    j += 1;
                }
                if j == c.len() {
                    return Err(value_err("expected '}' before end of string"));
                }
                let field: String = c[start..j].iter().collect();
                i = j + 1;
                let (head, spec) = match field.split_once(':') {
                    Some((h, s)) => (h.to_string(), s.to_string()),
                    None => (field.clone(), String::new()),
                };
                let (name, conv) = match head.split_once('!') {
                    Some((n, cv)) => (n.to_string(), Some(cv.to_string())),
                    None => (head, None),
                };
                let v = if name.is_empty() {
                    if manual {
                        return Err(value_err(
                            "cannot switch from manual field specification to automatic field numbering",
                        ));
                    }
                    used_auto = true;
                    auto += 1;
                    positional(args, auto - 1)?
                } else if name.chars().all(|ch| ch.is_ascii_digit()) {
                    if used_auto {
                        return Err(value_err(
                            "cannot switch from automatic field numbering to manual field specification",
                        ));
                    }
                    manual = true;
                    let k: usize = name
                        .parse()
                        .map_err(|_| value_err("field index too large"))?;
                    positional(args, k)?
                } else if name.contains(['.', '[']) {
                    return Err(value_err(format!(
                        "field access in '{{{name}}}' is not supported"
                    )));
                } else {
                    match kwargs.iter().find(|(k, _)| *k == name) {
                        Some((_, v)) => v.clone(),
                        None => return Err(exc(ErrorKind::KeyError, ops::str_repr(&name))),
                    }
                };
                let v = match conv.as_deref() {
                    None => v,
                    Some("r") => {
                        let r = it.repr(&v)?;
                        it.heap().str(&r)
                    }
                    Some("s") => {
                        let r = it.str_of(&v)?;
                        it.heap().str(&r)
                    }
                    Some(other) => {
                        return Err(value_err(format!("Unknown conversion specifier {other}")));
                    }
                };
                if v.kind() == Kind::Str || !spec.is_empty() || conv.is_some() {
                    out.push_str(&format_spec(it, &v, &spec)?);
                } else {
                    out.push_str(&it.str_of(&v)?);
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn positional(args: &[Handle], k: usize) -> R<Handle> {
    args.get(k).cloned().ok_or_else(|| {
        exc(
            ErrorKind::IndexError,
            format!("Replacement index {k} out of range for positional args tuple"),
        )
    })
}
