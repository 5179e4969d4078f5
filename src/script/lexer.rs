//! Tokens from source text: names, numbers, strings, operators, and Python's layout tokens
//! (`NEWLINE` at the end of each logical line, `INDENT`/`DEDENT` when the indentation changes).
//!
//! Newlines inside brackets and after a `\` continue the line; blank and comment-only lines do
//! not count; a tab advances to the next multiple of 8 columns, as in Python.

use super::ast::Pos;
use super::error::{R, syntax_err};

/// A token.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(&'static str),
    Newline,
    Indent,
    Dedent,
    Eof,
}

/// Operators and delimiters, longest first.
const OPS: [&str; 47] = [
    "**=", "//=", ">>=", "<<=", "**", "//", "<<", ">>", "<=", ">=", "==", "!=", "+=", "-=", "*=",
    "/=", "%=", "@=", "&=", "|=", "^=", "->", ":=", "+", "-", "*", "/", "%", "@", "<", ">", "=",
    "(", ")", "[", "]", "{", "}", ",", ":", ".", ";", "&", "|", "^", "~", "!",
];

/// Python's reserved words (none can be used as a name).
pub(crate) const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

struct Lexer<'a> {
    chars: &'a [char],
    i: usize,
    line: u32,
    line_start: usize,
    toks: Vec<(Tok, Pos)>,
    indents: Vec<usize>,
    brackets: Vec<(char, Pos)>,
}

/// Splits `source` into tokens with their positions; the last is `Eof`.
pub(crate) fn tokenize(source: &str) -> R<Vec<(Tok, Pos)>> {
    let chars: Vec<char> = source.chars().collect();
    let mut lx = Lexer {
        chars: &chars,
        i: 0,
        line: 1,
        line_start: 0,
        toks: Vec::new(),
        indents: vec![0],
        brackets: Vec::new(),
    };
    lx.run()?;
    Ok(lx.toks)
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: (self.i - self.line_start + 1) as u32,
        }
    }

    fn newline(&mut self) {
        // Accepts \n, \r\n and \r.
        if self.peek(0) == Some('\r') && self.peek(1) == Some('\n') {
            self.i += 1;
        }
        self.i += 1;
        self.line += 1;
        self.line_start = self.i;
    }

    fn push(&mut self, t: Tok, pos: Pos) {
        self.toks.push((t, pos));
    }

    fn run(&mut self) -> R<()> {
        let mut at_line_start = true;
        loop {
            if at_line_start && self.brackets.is_empty() {
                if !self.indentation()? {
                    break;
                }
                at_line_start = false;
            }
            let Some(c) = self.peek(0) else { break };
            let pos = self.pos();
            match c {
                ' ' | '\t' | '\x0c' => self.i += 1,
                '#' => self.skip_comment(),
                '\\' => match self.peek(1) {
                    Some('\n' | '\r') => {
                        self.i += 1;
                        self.newline();
                    }
                    None => return Err(syntax_err(pos, "unexpected EOF while parsing")),
                    Some(_) => {
                        return Err(syntax_err(
                            pos,
                            "unexpected character after line continuation character",
                        ));
                    }
                },
                '\n' | '\r' => {
                    if self.brackets.is_empty() {
                        self.push(Tok::Newline, pos);
                        at_line_start = true;
                    }
                    self.newline();
                }
                '0'..='9' => self.number()?,
                '.' if self.peek(1).is_some_and(|d| d.is_ascii_digit()) => self.number()?,
                '"' | '\'' => {
                    let s = self.string(false)?;
                    self.push(Tok::Str(s), pos);
                }
                c if is_name_start(c) => {
                    let start = self.i;
                    while self.peek(0).is_some_and(is_name_char) {
                        self.i += 1;
                    }
                    let name: String = self.chars[start..self.i].iter().collect();
                    let quote = self.peek(0).is_some_and(|q| q == '"' || q == '\'');
                    if quote && (name == "r" || name == "R") {
                        let s = self.string(true)?;
                        self.push(Tok::Str(s), pos);
                    } else if quote && name.len() <= 2 && name.chars().all(|c| "bBfFuU".contains(c))
                    {
                        return Err(syntax_err(
                            pos,
                            format!("string prefix {name:?} is not supported (only r\"...\")"),
                        ));
                    } else {
                        self.push(Tok::Name(name), pos);
                    }
                }
                _ => self.operator(pos)?,
            }
        }
        if let Some(&(open, p)) = self.brackets.last() {
            return Err(syntax_err(p, format!("'{open}' was never closed")));
        }
        let end = self.pos();
        if self
            .toks
            .last()
            .is_some_and(|(t, _)| !matches!(t, Tok::Newline | Tok::Dedent))
        {
            self.push(Tok::Newline, end);
        }
        while self.indents.len() > 1 {
            self.indents.pop();
            self.push(Tok::Dedent, end);
        }
        self.push(Tok::Eof, end);
        Ok(())
    }

    fn skip_comment(&mut self) {
        while self.peek(0).is_some_and(|c| c != '\n' && c != '\r') {
            self.i += 1;
        }
    }

    /// Measures the indentation of a new line and emits INDENT/DEDENT; skips blank and
    /// comment-only lines. Returns false at the end of the input.
    fn indentation(&mut self) -> R<bool> {
        loop {
            let mut col = 0usize;
            while let Some(c) = self.peek(0) {
                match c {
                    ' ' => col += 1,
                    '\t' => col = (col / 8 + 1) * 8,
                    '\x0c' => col = 0,
                    _ => break,
                }
                self.i += 1;
            }
            match self.peek(0) {
                None => return Ok(false),
                Some('#') => {
                    self.skip_comment();
                    if self.peek(0).is_none() {
                        return Ok(false);
                    }
                    self.newline();
                }
                Some('\n' | '\r') => self.newline(),
                Some('\\') if matches!(self.peek(1), Some('\n' | '\r')) => {
                    // A continued blank line: Python treats the next line as this one's rest.
                    self.i += 1;
                    self.newline();
                }
                Some(_) => {
                    let pos = self.pos();
                    let top = *self.indents.last().unwrap_or(&0);
                    if col > top {
                        if self.toks.is_empty() {
                            return Err(syntax_err(pos, "unexpected indent"));
                        }
                        self.indents.push(col);
                        self.push(Tok::Indent, pos);
                    } else if col < top {
                        while self.indents.last().is_some_and(|&t| t > col) {
                            self.indents.pop();
                            self.push(Tok::Dedent, pos);
                        }
                        if self.indents.last() != Some(&col) {
                            return Err(syntax_err(
                                pos,
                                "unindent does not match any outer indentation level",
                            ));
                        }
                    }
                    return Ok(true);
                }
            }
        }
    }

    fn operator(&mut self, pos: Pos) -> R<()> {
        let rest = &self.chars[self.i..];
        let op = OPS.iter().find(|op| {
            let n = op.chars().count();
            rest.len() >= n && op.chars().zip(rest).all(|(a, &b)| a == b)
        });
        let Some(&op) = op else {
            let c = rest[0];
            return Err(syntax_err(
                pos,
                format!("invalid character '{c}' (U+{:04X})", c as u32),
            ));
        };
        if op == "!" {
            return Err(syntax_err(pos, "invalid syntax"));
        }
        self.i += op.chars().count();
        match op {
            "(" | "[" | "{" => self.brackets.push((op.chars().next().unwrap_or('('), pos)),
            ")" | "]" | "}" => {
                let close = op.chars().next().unwrap_or(')');
                let Some((open, _)) = self.brackets.pop() else {
                    return Err(syntax_err(pos, format!("unmatched '{close}'")));
                };
                let want = match open {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                if want != close {
                    return Err(syntax_err(
                        pos,
                        format!(
                            "closing parenthesis '{close}' does not match opening parenthesis '{open}'"
                        ),
                    ));
                }
            }
            _ => {}
        }
        self.push(Tok::Op(op), pos);
        Ok(())
    }

    /// Digits of one base with single underscores between them.
    fn digits(&mut self, radix: u32, pos: Pos) -> R<String> {
        let mut s = String::new();
        let mut last_underscore = false;
        while let Some(c) = self.peek(0) {
            if c == '_' {
                if last_underscore || s.is_empty() {
                    return Err(syntax_err(pos, "invalid decimal literal"));
                }
                last_underscore = true;
            } else if c.is_digit(radix) {
                s.push(c);
                last_underscore = false;
            } else {
                break;
            }
            self.i += 1;
        }
        if last_underscore {
            return Err(syntax_err(pos, "invalid decimal literal"));
        }
        Ok(s)
    }

    fn number(&mut self) -> R<()> {
        let pos = self.pos();
        let radix = match (self.peek(0), self.peek(1).map(|c| c.to_ascii_lowercase())) {
            (Some('0'), Some('x')) => 16,
            (Some('0'), Some('o')) => 8,
            (Some('0'), Some('b')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.i += 2;
            if self.peek(0) == Some('_') {
                self.i += 1;
            }
            let d = self.digits(radix, pos)?;
            if d.is_empty() {
                return Err(syntax_err(pos, "invalid number literal"));
            }
            self.check_number_end(pos)?;
            let v = i64::from_str_radix(&d, radix)
                .map_err(|_| syntax_err(pos, "integer literal too large for a 64-bit int"))?;
            self.push(Tok::Int(v), pos);
            return Ok(());
        }
        let int_part = self.digits(10, pos)?;
        let mut text = int_part.clone();
        let mut is_float = false;
        if self.peek(0) == Some('.') {
            is_float = true;
            self.i += 1;
            text.push('.');
            if self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                text += &self.digits(10, pos)?;
            }
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let save = self.i;
            self.i += 1;
            let mut exp = String::from("e");
            if let Some(s @ ('+' | '-')) = self.peek(0) {
                exp.push(s);
                self.i += 1;
            }
            if self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                exp += &self.digits(10, pos)?;
                text += &exp;
                is_float = true;
            } else {
                self.i = save;
                return Err(syntax_err(pos, "invalid decimal literal"));
            }
        }
        if matches!(self.peek(0), Some('j' | 'J')) {
            return Err(syntax_err(pos, "complex numbers are not supported"));
        }
        self.check_number_end(pos)?;
        if is_float {
            let v: f64 = text
                .parse()
                .map_err(|_| syntax_err(pos, "invalid float literal"))?;
            self.push(Tok::Float(v), pos);
        } else {
            if int_part.len() > 1 && int_part.starts_with('0') && int_part.chars().any(|c| c != '0')
            {
                return Err(syntax_err(
                    pos,
                    "leading zeros in decimal integer literals are not permitted; use an 0o prefix for octal integers",
                ));
            }
            let v: i64 = int_part
                .parse()
                .map_err(|_| syntax_err(pos, "integer literal too large for a 64-bit int"))?;
            self.push(Tok::Int(v), pos);
        }
        Ok(())
    }

    fn check_number_end(&self, pos: Pos) -> R<()> {
        if self.peek(0).is_some_and(is_name_char) {
            return Err(syntax_err(pos, "invalid decimal literal"));
        }
        Ok(())
    }

    /// A string literal starting at the quote (the prefix already consumed).
    fn string(&mut self, raw: bool) -> R<String> {
        let start = self.pos();
        let q = self.peek(0).unwrap_or('"');
        let triple = self.peek(1) == Some(q) && self.peek(2) == Some(q);
        self.i += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(if triple {
                    syntax_err(
                        start,
                        format!(
                            "unterminated triple-quoted string literal (detected at line {})",
                            self.line
                        ),
                    )
                } else {
                    syntax_err(
                        start,
                        format!(
                            "unterminated string literal (detected at line {})",
                            self.line
                        ),
                    )
                });
            };
            if c == q {
                if !triple {
                    self.i += 1;
                    return Ok(out);
                }
                if self.peek(1) == Some(q) && self.peek(2) == Some(q) {
                    self.i += 3;
                    return Ok(out);
                }
                out.push(c);
                self.i += 1;
                continue;
            }
            match c {
                '\n' | '\r' => {
                    if !triple {
                        return Err(syntax_err(
                            start,
                            format!(
                                "unterminated string literal (detected at line {})",
                                self.line
                            ),
                        ));
                    }
                    out.push('\n');
                    self.newline();
                }
                '\\' => {
                    let esc_pos = self.pos();
                    self.i += 1;
                    let Some(e) = self.peek(0) else { continue };
                    if raw {
                        out.push('\\');
                        if matches!(e, '\n' | '\r') {
                            out.push('\n');
                            self.newline();
                        } else {
                            out.push(e);
                            self.i += 1;
                        }
                        continue;
                    }
                    self.escape(e, esc_pos, &mut out)?;
                }
                _ => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// One escape sequence after its backslash (`e` is the character after it).
    fn escape(&mut self, e: char, pos: Pos, out: &mut String) -> R<()> {
        let simple = match e {
            '\\' => Some('\\'),
            '\'' => Some('\''),
            '"' => Some('"'),
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'v' => Some('\x0b'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            self.i += 1;
            return Ok(());
        }
        match e {
            '\n' | '\r' => self.newline(),
            '0'..='7' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 3 && self.peek(0).is_some_and(|c| ('0'..='7').contains(&c)) {
                    v = v * 8 + self.peek(0).and_then(|c| c.to_digit(8)).unwrap_or(0);
                    self.i += 1;
                    n += 1;
                }
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                self.i += 1;
                let mut v = 0u32;
                for _ in 0..n {
                    let Some(d) = self.peek(0).and_then(|c| c.to_digit(16)) else {
                        return Err(syntax_err(
                            pos,
                            format!("truncated \\{e} escape: expected {n} hex digits"),
                        ));
                    };
                    v = v.wrapping_mul(16).wrapping_add(d);
                    self.i += 1;
                }
                let c = char::from_u32(v).ok_or_else(|| {
                    syntax_err(
                        pos,
                        format!("invalid character U+{v:X} in \\{e} escape (not a Unicode scalar)"),
                    )
                })?;
                out.push(c);
            }
            'N' => return Err(syntax_err(pos, "\\N{...} escapes are not supported")),
            other => {
                // Unknown escapes keep their backslash, as in Python.
                out.push('\\');
                out.push(other);
                self.i += 1;
            }
        }
        Ok(())
    }
}
