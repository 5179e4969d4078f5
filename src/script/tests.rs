//! Tests of the script language: lexer and parser (round trips, fuzzing, limits), Python
//! semantics tables, errors (kind, position, message, display), control flow, recursion, the
//! heap integration (cycles, reference counts, `gc`), and the array hook with a test backend.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::ast::*;
use super::*;
use crate::dtype::{ByteOrder, DType};
use crate::error::{Error, Result};
use crate::heap::{Handle, Heap, Kind};
use crate::shape::{ChunkLayout, Region};
use crate::storage::{Buffer, Chunk, ChunkSource, Format, SourceInfo};

fn new_interp() -> (Interpreter, SharedBuffer) {
    let out = SharedBuffer::default();
    let it = Interpreter::new(
        Heap::new().unwrap(),
        Arc::new(NoArrays),
        Box::new(out.clone()),
    );
    (it, out)
}

/// Runs `src` and returns what it printed (panics with the rendered error on failure).
#[track_caller]
fn run(src: &str) -> String {
    let (mut it, out) = new_interp();
    if let Err(e) = it.run(src, "t.chs", &[]) {
        panic!("script failed:\n{e}\n--- output ---\n{}", out.contents());
    }
    out.contents()
}

/// Runs `src`, which must fail.
#[track_caller]
fn run_err(src: &str) -> ScriptError {
    let (mut it, out) = new_interp();
    match it.run(src, "t.chs", &[]) {
        Ok(()) => panic!("expected an error; output:\n{}", out.contents()),
        Err(e) => e,
    }
}

/// Asserts the kind, line, column and message of the error `src` raises.
#[track_caller]
fn check_err(src: &str, kind: ErrorKind, line: u32, col: u32, msg: &str) {
    let e = run_err(src);
    assert_eq!(
        (e.kind, e.line, e.column, e.message.as_str()),
        (kind, line, col, msg),
        "rendered:\n{e}"
    );
}

// ----- Python semantics -----

/// `repr(expr)` in CPython 3.11 (generated with /opt/pyref/bin/python from the expressions).
const PYTHON_TABLE: &[(&str, &str)] = &[
    ("-7 // 2", "-4"),
    ("-7 % 2", "1"),
    ("7 % -2", "-1"),
    ("7 // -2", "-4"),
    ("-7 // -2", "3"),
    ("2 ** -1", "0.5"),
    ("2 ** 10", "1024"),
    ("-2 ** 2", "-4"),
    ("(-2) ** 2", "4"),
    ("2 ** 3 ** 2", "512"),
    ("7 / 2", "3.5"),
    ("-7 / 2", "-3.5"),
    ("1 / 3", "0.3333333333333333"),
    ("(2**62 + 1) / 3", "1.5372286728091292e+18"),
    ("9007199254740993 / 1", "9007199254740992.0"),
    ("-9223372036854775807 / 10", "-9.223372036854776e+17"),
    ("7.5 // 2", "3.0"),
    ("-7.5 // 2", "-4.0"),
    ("-7.5 % 2", "0.5"),
    ("7.5 % -2", "-0.5"),
    ("-0.0 % 5", "0.0"),
    ("5 % -0.5", "-0.0"),
    ("1e300 * 1e300", "inf"),
    ("0.1 + 0.2", "0.30000000000000004"),
    ("1e16", "1e+16"),
    ("1e15", "1000000000000000.0"),
    ("123456789.0 * 1000", "123456789000.0"),
    ("1e-5", "1e-05"),
    ("0.0001", "0.0001"),
    ("-0.0", "-0.0"),
    ("2.5e-310", "2.5e-310"),
    ("1 == 1.0", "True"),
    ("2**53 + 1 == 2.0**53", "False"),
    ("2**53 + 1 > 2.0**53", "True"),
    ("True + True", "2"),
    ("True & False", "False"),
    ("True | 2", "3"),
    ("~5", "-6"),
    ("-(-3)", "3"),
    ("5 >> 1", "2"),
    ("-5 >> 1", "-3"),
    ("1 << 62", "4611686018427387904"),
    ("3 < 4 < 5", "True"),
    ("3 < 4 > 5", "False"),
    ("1 < 2 == 2", "True"),
    ("'a' * 3", "'aaa'"),
    ("[1, 2] * 2", "[1, 2, 1, 2]"),
    ("(1,) + (2, 3)", "(1, 2, 3)"),
    ("'abc'[::-1]", "'cba'"),
    ("'abcdef'[1:5:2]", "'bd'"),
    ("[0, 1, 2, 3, 4, 5][-2:]", "[4, 5]"),
    ("[0, 1, 2, 3, 4, 5][::-2]", "[5, 3, 1]"),
    ("[0, 1, 2, 3, 4, 5][10:]", "[]"),
    ("[0, 1, 2, 3, 4, 5][-100:2]", "[0, 1]"),
    ("'x' in 'xyz'", "True"),
    ("3 in [1, 2, 3]", "True"),
    ("'k' in {'k': 1}", "True"),
    ("not 0", "True"),
    ("0 or 'b'", "'b'"),
    ("'' and 1", "''"),
    ("None is None", "True"),
    ("[1, 2] < [1, 3]", "True"),
    ("(1, 2) < (1, 2, 0)", "True"),
    ("'abc' < 'abd'", "True"),
    ("1 if 0 else 2", "2"),
    ("divmod(-7, 2)", "(-4, 1)"),
    ("divmod(7.5, -2)", "(-4.0, -0.5)"),
    ("round(2.675, 2)", "2.67"),
    ("round(0.125, 2)", "0.12"),
    ("round(2.5)", "2"),
    ("round(3.5)", "4"),
    ("round(-2.5)", "-2"),
    ("round(1250, -2)", "1200"),
    ("round(1350, -2)", "1400"),
    ("round(1250.0, -2)", "1200.0"),
    ("round(1351.0, -2)", "1400.0"),
    ("round(15.0, -1)", "20.0"),
    ("round(25.0, -1)", "20.0"),
    ("int('  -1_000 ')", "-1000"),
    ("int('0x1f', 16)", "31"),
    ("int('0b101', 0)", "5"),
    ("int(-3.9)", "-3"),
    ("float(' 1e3 ')", "1000.0"),
    ("float('-inf')", "-inf"),
    ("float('1_0.5')", "10.5"),
    ("abs(-3)", "3"),
    ("abs(-2.5)", "2.5"),
    ("min(3, 1, 2)", "1"),
    ("max([1, 5, 2])", "5"),
    ("max('b', 'a', 'c')", "'c'"),
    ("min([3, 1], key=None)", "1"),
    ("sum([1, 2, 3])", "6"),
    ("sum([0.1] * 10)", "0.9999999999999999"),
    ("sum([[1], [2]], [])", "[1, 2]"),
    ("sorted([3, 1, 2])", "[1, 2, 3]"),
    ("sorted(['b', 'a'], reverse=True)", "['b', 'a']"),
    (
        "sorted([(1, 'b'), (0, 'c'), (1, 'a')])",
        "[(0, 'c'), (1, 'a'), (1, 'b')]",
    ),
    ("list(enumerate('ab'))", "[(0, 'a'), (1, 'b')]"),
    ("list(zip([1, 2, 3], 'ab'))", "[(1, 'a'), (2, 'b')]"),
    ("list(range(10, 0, -3))", "[10, 7, 4, 1]"),
    ("list(reversed([1, 2, 3]))", "[3, 2, 1]"),
    ("len('héllo')", "5"),
    ("str(1.5)", "'1.5'"),
    ("repr('it\\'s')", "'\"it\\'s\"'"),
    ("repr(\"a\\nb\")", "\"'a\\\\nb'\""),
    (
        "str([1, 'a', 2.0, None, True])",
        "\"[1, 'a', 2.0, None, True]\"",
    ),
    ("repr((1,))", "'(1,)'"),
    ("repr({'a': [1, (2,)]})", "\"{'a': [1, (2,)]}\""),
    ("'a,b,,c'.split(',')", "['a', 'b', '', 'c']"),
    ("'  a  b '.split()", "['a', 'b']"),
    ("'a b c'.split(None, 1)", "['a', 'b c']"),
    ("'-'.join(['x', 'y'])", "'x-y'"),
    ("'  hi '.strip()", "'hi'"),
    ("'xxhixx'.strip('x')", "'hi'"),
    ("'aaa'.replace('a', 'b', 2)", "'bba'"),
    ("'hello'.find('l')", "2"),
    ("'hello'.count('l')", "2"),
    ("'Hello'.upper()", "'HELLO'"),
    ("'abc'.startswith(('x', 'a'))", "True"),
    ("'{} + {} = {}'.format(1, 2, 3)", "'1 + 2 = 3'"),
    ("'{0}{1}{0}'.format('a', 'b')", "'aba'"),
    ("'{x:>5}|{y:<4}|'.format(x=1, y='z')", "'    1|z   |'"),
    ("'{:.3f}'.format(3.14159)", "'3.142'"),
    ("'{:,}'.format(1234567)", "'1,234,567'"),
    ("'{:08.2f}'.format(-3.14159)", "'-0003.14'"),
    ("'{:e}'.format(12345.678)", "'1.234568e+04'"),
    ("'{:.3}'.format(12345.678)", "'1.23e+04'"),
    ("'{:g}'.format(0.00001234)", "'1.234e-05'"),
    ("'{:x} {:#o} {:b}'.format(255, 8, 5)", "'ff 0o10 101'"),
    ("'{:^9}'.format('mid')", "'   mid   '"),
    ("'{!r}'.format('q')", "\"'q'\""),
    ("'{:%}'.format(0.25)", "'25.000000%'"),
    ("'{:+d}'.format(5)", "'+5'"),
    ("format(3.0)", "'3.0'"),
    ("format(1e22, '.2f')", "'10000000000000000000000.00'"),
    ("format(100.0, '.3')", "'1e+02'"),
    ("format(10.0, '.3')", "'10.0'"),
    ("format(1.5, '.1')", "'2e+00'"),
    ("format(0.0, 'g')", "'0'"),
    ("format(123456789.0, 'g')", "'1.23457e+08'"),
    ("format(1.0, '#.0f')", "'1.'"),
    ("format(-0.0, '+.1f')", "'-0.0'"),
    ("format(float('nan'), '+08.2f')", "'+0000nan'"),
    ("format(float('inf'), 'F')", "'INF'"),
    ("format(255, '08b')", "'11111111'"),
    ("format(1234567, '_x')", "'12_d687'"),
    ("format(-42, '=+8')", "'-     42'"),
    ("format(True, '')", "'True'"),
    ("format(True, '>5')", "'    1'"),
    ("format('abcdef', '.2')", "'ab'"),
    ("format(3, '.2f')", "'3.00'"),
    ("format(12345.0, '.2g')", "'1.2e+04'"),
    ("format(-5, '05')", "'-0005'"),
    ("format(123456.789, ',.2f')", "'123,456.79'"),
    ("chr(65)", "'A'"),
    ("ord('é')", "233"),
    ("isinstance(True, int)", "True"),
    ("isinstance(1.0, (int, str))", "False"),
    ("any([0, '', 1])", "True"),
    ("all([])", "True"),
    ("dict([('a', 1)], b=2)", "{'a': 1, 'b': 2}"),
    ("[1, 2, 3].index(2)", "1"),
    ("(1, 2, 1).count(1)", "2"),
    ("{'a': 1}.get('b', 0)", "0"),
    ("list({'x': 1, 'y': 2}.items())", "[('x', 1), ('y', 2)]"),
    ("bool([])", "False"),
    ("int(True)", "1"),
    ("float(2**53 + 1)", "9007199254740992.0"),
    ("-9223372036854775807 - 1", "-9223372036854775808"),
    ("9223372036854775807 // -1", "-9223372036854775807"),
    ("3 * 1.5", "4.5"),
    ("10 / 4", "2.5"),
    ("2 ** 0.5", "1.4142135623730951"),
    ("4 ** 0.5", "2.0"),
    ("(-8) ** 3", "-512"),
    ("0 ** 0", "1"),
    ("0.0 ** 0", "1.0"),
    ("1 // 3.0", "0.0"),
    ("[] == []", "True"),
    ("[1, [2]] == [1, [2]]", "True"),
    ("(1, 2) == [1, 2]", "False"),
    ("{'a': 1, 'b': 2} == {'b': 2, 'a': 1}", "True"),
    ("1.0 == True", "True"),
    ("float('nan') == float('nan')", "False"),
    ("[float('nan')] == [float('nan')]", "False"),
    (
        "repr('tab\\there\\x01\\\\')",
        "\"'tab\\\\there\\\\x01\\\\\\\\'\"",
    ),
    ("repr('\\u00a0\\u2028')", "\"'\\\\xa0\\\\u2028'\""),
    ("1e22", "1e+22"),
    ("1e-7", "1e-07"),
    ("12345678901234567.0", "1.2345678901234568e+16"),
    ("0.1 * 3", "0.30000000000000004"),
    ("5e-324", "5e-324"),
    ("1.7976931348623157e308", "1.7976931348623157e+308"),
    ("-1.5e-10", "-1.5e-10"),
    ("2 ** 62 * 1.0", "4.611686018427388e+18"),
];

#[test]
fn python_semantics_table() {
    let (mut it, out) = new_interp();
    let mut failures = Vec::new();
    for (expr, want) in PYTHON_TABLE {
        out.clear();
        match it.run(&format!("print(repr({expr}))\n"), "t.chs", &[]) {
            Ok(()) => {
                let got = out.contents();
                if got.trim_end_matches('\n') != *want {
                    failures.push(format!("{expr}: got {}, want {want}", got.trim_end()));
                }
            }
            Err(e) => failures.push(format!("{expr}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn float_repr_matches_python() {
    let cases: &[(f64, &str)] = &[
        (0.1, "0.1"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (-0.0, "-0.0"),
        (1e22, "1e+22"),
        (123456789012345678.0, "1.2345678901234568e+17"),
        (1.5e300, "1.5e+300"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
        (2.5, "2.5"),
        (1.0 / 3.0, "0.3333333333333333"),
        (5e-324, "5e-324"),
        (100.0, "100.0"),
        (-1234.5, "-1234.5"),
    ];
    for (v, want) in cases {
        assert_eq!(float_repr(*v), *want, "repr of {v:e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// `float_repr` reads back as the same double (shortest round trip) for any finite value.
    #[test]
    fn float_repr_round_trips(bits in any::<u64>()) {
        let v = f64::from_bits(bits);
        prop_assume!(v.is_finite());
        let s = float_repr(v);
        let back: f64 = s.parse().unwrap();
        prop_assert_eq!(back.to_bits(), v.to_bits(), "{}", s);
    }

    /// Exact int/int true division against a 128-bit rational reference.
    #[test]
    fn int_true_division_is_correctly_rounded(a in any::<i64>(), b in any::<i64>()) {
        prop_assume!(b != 0);
        let q = ops::int_truediv(a, b).unwrap();
        // The neighbours of q bracket a/b: |a/b - q| <= |a/b - q'| for q' = next up/down.
        let err = |x: f64| -> f64 {
            // |a - x*b| / |b| computed exactly enough in f64 pieces is hard; compare with
            // i128 arithmetic on the scaled candidates instead.
            let (m, e) = decompose(x);
            // a/b - m*2^e  ~  (a*2^-e - m*b) / b
            let lhs = if e <= 0 { (a as i128) << (-e).min(120) } else { a as i128 };
            let rhs = if e <= 0 { m * b as i128 } else { (m * b as i128) << e.min(60) };
            ((lhs - rhs) as f64 / b as f64).abs()
        };
        let up = f64::from_bits(q.to_bits() + 1);
        let down = f64::from_bits(q.to_bits().wrapping_sub(1));
        if q != 0.0 && q.abs() < 1e17 && q.abs() > 1e-17 {
            prop_assert!(err(q) <= err(up) && err(q) <= err(down), "{a}/{b} = {q}");
        }
    }
}

/// `x == m * 2^e` with an integer mantissa.
fn decompose(x: f64) -> (i128, i32) {
    let bits = x.to_bits();
    let sign = if bits >> 63 == 1 { -1 } else { 1 };
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = (bits & ((1 << 52) - 1)) as i128;
    (sign * (frac | (1 << 52)), exp - 1075)
}

#[test]
fn int_division_matches_python_near_2_63() {
    // Values from CPython 3.11.
    let cases: &[(i64, i64, &str)] = &[
        (9223372036854775807, 3, "3.0744573456182584e+18"),
        (-9223372036854775808, 7, "-1.3176245766935393e+18"),
        (9007199254740993, 1, "9007199254740992.0"),
        (9007199254740995, 1, "9007199254740996.0"),
        (1, 9223372036854775807, "1.0842021724855044e-19"),
        (4611686018427387905, 3, "1.5372286728091292e+18"),
    ];
    for (a, b, want) in cases {
        assert_eq!(
            float_repr(ops::int_truediv(*a, *b).unwrap()),
            *want,
            "{a} / {b}"
        );
    }
}

#[test]
fn integer_overflow_raises_instead_of_promoting() {
    check_err(
        "x = 2 ** 63\n",
        ErrorKind::OverflowError,
        1,
        7,
        "integer overflow: 2 ** 63 does not fit in a 64-bit int",
    );
    let e = run_err("x = 9223372036854775807\nx += 1\n");
    assert_eq!((e.kind, e.line), (ErrorKind::OverflowError, 2));
    let e = run_err("print(-(-9223372036854775807 - 1))\n");
    assert_eq!(e.kind, ErrorKind::OverflowError);
    let e = run_err("x = 9223372036854775808\n");
    assert_eq!(e.kind, ErrorKind::SyntaxError);
}

// ----- statements and control flow -----

#[test]
fn control_flow() {
    let out = run(r#"
total = 0
for i in range(10):
    if i % 2 == 0:
        continue
    if i > 7:
        break
    total += i
print(total)
n = 0
while True:
    n += 1
    if n >= 5:
        break
print(n)
x = 3
if x < 0:
    print("neg")
elif x == 0:
    print("zero")
elif x < 10:
    print("small")
else:
    print("big")
for a, b in [(1, 2), (3, 4)]:
    print(a * b, end=" ")
print()
for k in {"p": 1, "q": 2}:
    print(k, end="")
print()
for ch in "hé":
    print(ch, end="|")
print()
for i in range(3, -3, -2):
    print(i, end=",")
print()
a, (b, c) = 1, [2, 3]
print(a, b, c)
p = q = [0]
p.append(1)
print(q, p is q)
d = {}
d["k"] = [1, 2]
d["k"][0] += 10
print(d)
del d["k"]
print(d, len(d))
l = [1, 2, 3, 4, 5]
del l[0]
del l[-1]
del l[::2]
print(l)
s = 0
for i in range(4):
    for j in range(4):
        if j > i:
            break
        s += j
print(s)
print(1 if [] else 2, "yes" if "x" else "no")
"#);
    assert_eq!(
        out,
        "16\n5\nsmall\n2 12 \npq\nh|é|\n3,1,-1,\n1 2 3\n[0, 1] True\n{'k': [11, 2]}\n{} 0\n[3]\n10\n2 yes\n"
    );
}

#[test]
fn functions_defaults_keywords_and_recursion() {
    let out = run(r#"
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)
print(fib(20))

def f(a, b=2, c=3):
    return a * 100 + b * 10 + c
print(f(1), f(1, 5), f(1, c=9), f(c=1, b=1, a=1))

def noret():
    pass
print(noret())

counter = 0
def bump(by=1):
    global counter
    counter += by
bump()
bump(by=5)
print(counter)

def shadow():
    len = 3
    return len
print(shadow(), len([1]))

def outer(x):
    def inner(y):
        return y * 2
    return inner(x) + 1
print(outer(20))

def make_list(x, acc=[]):
    acc.append(x)
    return acc
make_list(1)
print(make_list(2))

def ack(m, n):
    if m == 0:
        return n + 1
    if n == 0:
        return ack(m - 1, 1)
    return ack(m - 1, ack(m, n - 1))
print(ack(2, 3))
g = fib
print(g(10), g)
"#);
    assert_eq!(
        out,
        "6765\n123 153 129 111\nNone\n6\n3 1\n41\n[1, 2]\n9\n55 <function fib>\n"
    );
}

#[test]
fn call_argument_errors_match_python() {
    let pre = "def f(a, b=1):\n    pass\n";
    let cases = [
        ("f()", "f() missing 1 required positional argument: 'a'"),
        (
            "f(1, 2, 3)",
            "f() takes from 1 to 2 positional arguments but 3 were given",
        ),
        ("f(1, c=2)", "f() got an unexpected keyword argument 'c'"),
        ("f(1, a=2)", "f() got multiple values for argument 'a'"),
    ];
    for (call, msg) in cases {
        let e = run_err(&format!("{pre}{call}\n"));
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::TypeError, msg));
    }
    let e = run_err("def g(x, y, z):\n    pass\ng()\n");
    assert_eq!(
        e.message,
        "g() missing 3 required positional arguments: 'x', 'y', and 'z'"
    );
    let e = run_err("def h():\n    pass\nh(1)\n");
    assert_eq!(
        e.message,
        "h() takes 0 positional arguments but 1 was given"
    );
}

#[test]
fn recursion_limit_raises_recursion_error() {
    let src = "def d(n):\n    return 0 if n == 0 else 1 + d(n - 1)\n";
    assert_eq!(run(&format!("{src}print(d(900))\n")), "900\n");
    let e = run_err(&format!("{src}d(5000)\n"));
    assert_eq!(
        (e.kind, e.message.as_str()),
        (
            ErrorKind::RecursionError,
            "maximum recursion depth exceeded"
        )
    );
    assert_eq!(e.traceback.len(), DEFAULT_RECURSION_LIMIT + 1);
    // Raising the limit works, up to the maximum, on the interpreter's own stack.
    let out = run(&format!(
        "{src}sys.setrecursionlimit(9000)\nprint(d(8500), sys.getrecursionlimit())\n"
    ));
    assert_eq!(out, "8500 9000\n");
    let e = run_err("sys.setrecursionlimit(10**6)\n");
    assert_eq!(e.kind, ErrorKind::ValueError);
}

#[test]
fn deep_recursion_through_builtins_stays_on_the_stack() {
    // Each level goes through sorted()'s key call and a method call: the native nesting
    // guard or the recursion limit stops it, never a stack overflow.
    let src = r#"
sys.setrecursionlimit(10000)
def f(n):
    if n == 0:
        return 0
    return min([n - 1], key=f) + 1
print(f(9000))
"#;
    assert_eq!(run(src), "9000\n");
    let e = run_err("sys.setrecursionlimit(10000)\ndef g(n):\n    return max([n], key=g)\ng(1)\n");
    assert_eq!(e.kind, ErrorKind::RecursionError);
}

#[test]
fn deeply_nested_values_raise_recursion_errors() {
    let e = run_err("l = []\nfor i in range(100000):\n    l = [l]\nrepr(l)\n");
    assert_eq!(e.kind, ErrorKind::RecursionError);
    let e = run_err(
        "a = []\nb = []\nfor i in range(100000):\n    a = [a]\n    b = [b]\nprint(a == b)\n",
    );
    assert_eq!(e.kind, ErrorKind::RecursionError);
    // Freeing such a chain is iterative (no overflow either).
    assert_eq!(
        run("l = []\nfor i in range(100000):\n    l = [l]\nl = 0\nprint('ok')\n"),
        "ok\n"
    );
}

#[test]
fn self_referencing_containers_print_with_ellipsis() {
    assert_eq!(
        run("l = [1]\nl.append(l)\nd = {'d': None}\nd['d'] = d\nprint(l, d, l == l)\n"),
        "[1, [...]] {'d': {...}} True\n"
    );
}

#[test]
fn assert_global_and_misc_statements() {
    check_err(
        "x = 1\nassert x == 2, 'x is ' + str(x)\n",
        ErrorKind::AssertionError,
        2,
        1,
        "x is 1",
    );
    assert_eq!(run("assert True\nx = 1; y = 2; print(x + y)\n"), "3\n");
}

// ----- errors: one per kind, with position and message -----

#[test]
fn error_kinds_positions_and_messages() {
    check_err(
        "if x\n    pass\n",
        ErrorKind::SyntaxError,
        1,
        5,
        "expected ':', found end of line",
    );
    check_err(
        "if 1:\n    a = 1\n  b = 2\n",
        ErrorKind::SyntaxError,
        3,
        3,
        "unindent does not match any outer indentation level",
    );
    check_err(
        "x = 1\ny = x + z\n",
        ErrorKind::NameError,
        2,
        9,
        "name 'z' is not defined",
    );
    check_err(
        "def f():\n    print(v)\n    v = 1\nf()\n",
        ErrorKind::UnboundLocalError,
        2,
        11,
        "cannot access local variable 'v' where it is not associated with a value",
    );
    check_err(
        "x = 1 + \"a\"\n",
        ErrorKind::TypeError,
        1,
        7,
        "unsupported operand type(s) for +: 'int' and 'str'",
    );
    check_err(
        "n = int('abc')\n",
        ErrorKind::ValueError,
        1,
        5,
        "invalid literal for int() with base 10: 'abc'",
    );
    check_err(
        "l = [1]\nl[3]\n",
        ErrorKind::IndexError,
        2,
        2,
        "list index out of range",
    );
    check_err("d = {}\nd['k']\n", ErrorKind::KeyError, 2, 2, "'k'");
    check_err(
        "y = 1 // 0\n",
        ErrorKind::ZeroDivisionError,
        1,
        7,
        "integer division or modulo by zero",
    );
    check_err(
        "y = 1.0 / 0\n",
        ErrorKind::ZeroDivisionError,
        1,
        9,
        "float division by zero",
    );
    check_err(
        "[].foo\n",
        ErrorKind::AttributeError,
        1,
        4,
        "'list' object has no attribute 'foo'",
    );
    check_err(
        "s = 'a' * (2 ** 40)\n",
        ErrorKind::MemoryError,
        1,
        9,
        "a sequence of 1099511627776 items is too large (limit 268435456); use arrays for big data",
    );
    check_err(
        "x = 5\nx()\n",
        ErrorKind::TypeError,
        2,
        1,
        "'int' object is not callable",
    );
    check_err(
        "a, b = [1, 2, 3]\n",
        ErrorKind::ValueError,
        1,
        1,
        "too many values to unpack (expected 2)",
    );
    check_err(
        "'a' < 1\n",
        ErrorKind::TypeError,
        1,
        5,
        "'<' not supported between instances of 'str' and 'int'",
    );
    check_err(
        "d = {1: 2}\n",
        ErrorKind::TypeError,
        1,
        6,
        "dict keys must be str in this language, not 'int'",
    );
    check_err(
        "gc.collect(7)\n",
        ErrorKind::ValueError,
        1,
        4,
        "invalid generation",
    );
}

#[test]
fn syntax_errors_name_the_problem() {
    let cases: &[(&str, u32, u32, &str)] = &[
        ("x = (1,\n", 1, 5, "'(' was never closed"),
        (
            "x = [1)\n",
            1,
            7,
            "closing parenthesis ')' does not match opening parenthesis '['",
        ),
        (
            "s = 'abc\n",
            1,
            5,
            "unterminated string literal (detected at line 1)",
        ),
        (
            "x = 1 +\n",
            1,
            8,
            "expected an expression, found end of line",
        ),
        ("  x = 1\n", 1, 3, "unexpected indent"),
        ("break\n", 1, 1, "'break' outside loop"),
        ("return 1\n", 1, 1, "'return' outside function"),
        (
            "def f(a=1, b):\n    pass\n",
            1,
            12,
            "non-default argument follows default argument",
        ),
        (
            "f(a=1, 2)\n",
            1,
            8,
            "positional argument follows keyword argument",
        ),
        ("1 = x\n", 1, 1, "cannot assign to literal"),
        (
            "x = 0777\n",
            1,
            5,
            "leading zeros in decimal integer literals are not permitted; use an 0o prefix for octal integers",
        ),
        ("x = $\n", 1, 5, "invalid character '$' (U+0024)"),
        ("import os\n", 1, 1, "'import' is not supported"),
        (
            "x = [i for i in y]\n",
            1,
            8,
            "comprehensions are not supported",
        ),
        (
            "for x in y:\npass\n",
            2,
            1,
            "expected an indented block, found 'pass'",
        ),
    ];
    for (src, line, col, msg) in cases {
        let e = parse(src, "t.chs").unwrap_err();
        assert_eq!(
            (e.kind, e.line, e.column, e.message.as_str()),
            (ErrorKind::SyntaxError, *line, *col, *msg),
            "{src:?}"
        );
    }
}

#[test]
fn error_display_has_caret_and_traceback() {
    let e = run_err("def f(x):\n    return x + \"a\"\n\ny = f(1)\n");
    assert_eq!(
        e.to_string(),
        "t.chs:2:14: TypeError: unsupported operand type(s) for +: 'int' and 'str'\n    return x + \"a\"\n             ^\ntraceback (most recent call last):\n  t.chs:4 in <module>\n  t.chs:2 in f"
    );
    let e = parse("x = (1 +\n", "s.chs").unwrap_err();
    assert_eq!(
        e.to_string(),
        "s.chs:1:5: SyntaxError: '(' was never closed\n    x = (1 +\n        ^"
    );
}

#[test]
fn keyboard_interrupt_stops_loops() {
    let (mut it, _out) = new_interp();
    let flag = it.interrupt_flag();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        flag.store(true, Ordering::Relaxed);
    });
    let e = it
        .run("n = 0\nwhile True:\n    n += 1\n", "t.chs", &[])
        .unwrap_err();
    t.join().unwrap();
    assert_eq!(e.kind, ErrorKind::KeyboardInterrupt);
    assert!(matches!(e.line, 2 | 3), "{e}");
    // The flag is cleared once raised: the next run goes through.
    it.run("x = 1\n", "t.chs", &[]).unwrap();
    let n = it.global("n").unwrap();
    assert!(it.heap().as_int(&n).unwrap() > 0);
}

#[test]
fn output_errors_are_os_errors() {
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "pipe closed",
            ))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut it = Interpreter::new(Heap::new().unwrap(), Arc::new(NoArrays), Box::new(Broken));
    let e = it.run("print('x')\n", "t.chs", &[]).unwrap_err();
    assert_eq!((e.kind, e.line), (ErrorKind::OSError, 1));
    assert_eq!(e.message, "writing the output: pipe closed");
}

#[test]
fn sys_argv_and_globals_persist_between_runs() {
    let (mut it, out) = new_interp();
    it.run("x = 41\n", "a.chs", &["one".into()]).unwrap();
    it.run(
        "print(sys.argv, x + 1)\n",
        "b.chs",
        &["p".into(), "q".into()],
    )
    .unwrap();
    assert_eq!(out.contents(), "['b.chs', 'p', 'q'] 42\n");
    // A function defined by one script reports its own script's lines.
    it.run("def bad():\n    return 1 + None\n", "lib.chs", &[])
        .unwrap();
    let e = it.run("bad()\n", "main.chs", &[]).unwrap_err();
    assert_eq!((e.script.as_str(), e.line), ("lib.chs", 2));
    assert_eq!(e.source_line.as_deref(), Some("    return 1 + None"));
    assert_eq!(
        e.traceback,
        vec![
            TraceFrame {
                script: "main.chs".into(),
                line: 1,
                function: "<module>".into()
            },
            TraceFrame {
                script: "lib.chs".into(),
                line: 2,
                function: "bad".into()
            }
        ]
    );
}

// ----- heap integration -----

/// Runs `setup` once (so `sys.argv` and the like exist), then `src`, and returns the live
/// object count before and after `src` with the global `n`.
fn live_around(src: &str) -> (usize, usize, i64) {
    let (mut it, _out) = new_interp();
    it.run("n = 0\n", "t.chs", &[]).unwrap();
    let before = it.heap().live_objects();
    it.run(src, "t.chs", &[]).unwrap();
    let after = it.heap().live_objects();
    let n = it.global("n").unwrap();
    let n = it.heap().as_int(&n).unwrap();
    (before, after, n)
}

#[test]
fn list_self_cycle_is_collected() {
    let (before, after, n) = live_around("l = []\nl.append(l)\ndel l\nn = gc.collect()\n");
    assert_eq!(n, 1);
    assert_eq!(after, before);
    // Without the collection the list stays.
    let (before, after, _) = live_around("l = []\nl.append(l)\ndel l\n");
    assert_eq!(after, before + 1);
}

#[test]
fn dict_list_ring_with_payload_is_collected() {
    let src = r#"
gc.disable()
d = {"name": "ring"}
l = [d, 1.5, "payload", [1, 2, 3]]
d["list"] = l
d["self"] = d
del d, l
n = gc.collect()
gc.enable()
"#;
    let (before, after, n) = live_around(src);
    // Unreachable containers: the dict, the list and the inner list (as CPython reports).
    assert_eq!(n, 3);
    assert_eq!(after, before);
}

#[test]
fn function_and_bound_method_cycles_are_collected() {
    // function -> default list -> function (CPython also counts the defaults tuple: 3).
    let src = "def f(x=[]):\n    return x\nl = f()\nl.append(f)\ndel f, l\nn = gc.collect()\n";
    let (before, after, n) = live_around(src);
    assert_eq!((n, after), (2, before));
    let src = "l = []\nm = l.append\nl.append(m)\ndel l, m\nn = gc.collect()\n";
    let (before, after, n) = live_around(src);
    assert_eq!((n, after), (2, before));
}

#[test]
fn heap_stats_objects_return_to_baseline_in_script() {
    let out = run(r#"
base = heap.stats()["objects"]
l = []
l.append(l)
d = {"a": l}
l.append(d)
del l, d
n = gc.collect()
after = heap.stats()["objects"]
print(n, after - base)
s = heap.stats()
print(sorted(s.keys()))
print(s["by_kind"]["dict"] >= 1, s["budget_limit"] > 0, len(s["gc"]))
"#);
    // `after - base` is 1: the int `base` itself is the only new object.
    assert_eq!(
        out,
        "2 1\n['budget_holders', 'budget_limit', 'budget_peak', 'budget_used', 'by_kind', 'bytes', 'chunks', 'chunks_evicted', 'chunks_pinned', 'frozen', 'gc', 'objects', 'spill_files', 'spilled', 'tracked']\nTrue True 3\n"
    );
}

#[test]
fn frames_are_dropped_on_return_and_refcounts_are_truthful() {
    let out = run(r#"
x = []
def keep(a):
    return sys.getrefcount(a)
def hold(a):
    local = [a, a]
    return 0
print(sys.getrefcount(x), keep(x), sys.getrefcount(x))
hold(x)
print(sys.getrefcount(x))
y = [x, x]
print(sys.getrefcount(x))
del y
print(sys.getrefcount(x))
"#);
    // As CPython 3.11: 2 3 2 / 2 / 4 / 2.
    assert_eq!(out, "2 3 2\n2\n4\n2\n");
}

#[test]
fn gc_module_api() {
    let out = run(r#"
gc.disable()
print(gc.isenabled())
gc.enable()
print(gc.isenabled())
gc.set_threshold(500, 5)
print(gc.get_threshold())
gc.set_threshold(700, 10, 10)
print(len(gc.get_count()), gc.get_count()[0] >= 0)
s = gc.get_stats()
print(len(s), sorted(s[0].keys()))
gc.collect()
print(gc.get_stats()[2]["collections"] >= 1)
x = []
y = [x]
r = gc.get_referrers(x)
print(len(r), y in r)
print(gc.is_tracked(x), gc.is_tracked(1))
print(gc.get_referents(y) == [x])
c = gc.collect(generation=0)
print(c >= 0)
"#);
    assert_eq!(
        out,
        "False\nTrue\n(500, 5, 10)\n3 True\n3 ['collected', 'collections', 'uncollectable']\nTrue\n2 True\nTrue False\nTrue\nTrue\n"
    );
}

#[test]
fn why_alive_names_the_holder() {
    let out =
        run("holder = {'k': [1]}\nfor line in heap.why_alive(holder['k']):\n    print(line)\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("dict#") && lines[0].ends_with("at [\"k\"]"),
        "{out}"
    );
    assert!(lines[1].ends_with("at [\"holder\"]"), "{out}");
    assert!(
        lines[2].ends_with("is held by 1 handle(s) outside the heap"),
        "{out}"
    );
}

#[test]
fn heap_additions_for_scripts() {
    let heap = Heap::new().unwrap();
    let l = heap.list(&[&heap.int(1), &heap.int(2)]);
    heap.list_insert(&l, 1, &heap.str("x")).unwrap();
    heap.list_insert(&l, 99, &heap.str("end")).unwrap();
    let texts: Vec<String> = heap
        .items(&l)
        .iter()
        .map(|h| {
            heap.as_int(h)
                .map(|v| v.to_string())
                .or_else(|| heap.as_str(h))
                .unwrap()
        })
        .collect();
    assert_eq!(texts, ["1", "x", "2", "end"]);
    let removed = heap.list_remove(&l, 0).unwrap().unwrap();
    assert_eq!(heap.as_int(&removed), Some(1));
    assert!(heap.list_remove(&l, 10).unwrap().is_none());
    assert_eq!(
        heap.item(&l, 0).and_then(|h| heap.as_str(&h)),
        Some("x".into())
    );
    assert!(heap.item(&l, 3).is_none());
    let s = heap.slice([Some(1), None, Some(-2)]);
    assert_eq!(heap.as_slice(&s), Some([Some(1), None, Some(-2)]));
    assert_eq!(s.kind(), Kind::Slice);
    let m = heap.module("gc");
    assert_eq!(heap.as_module(&m).as_deref(), Some("gc"));
    let f = heap.function("f", Arc::new(5u8), &[&l]);
    assert!(f.is_tracked());
    assert_eq!(heap.items(&f).len(), 1);
    let (name, code) = (
        heap.function_name(&f).unwrap(),
        heap.function_code(&f).unwrap(),
    );
    assert_eq!((name.as_str(), code.downcast_ref::<u8>()), ("f", Some(&5)));
    let d = heap.dict(&[("a", &l), ("b", &f)]);
    let keys: Vec<String> = heap
        .dict_entries(&d)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(keys, ["a", "b"]);
    let other = Heap::new().unwrap();
    assert!(heap.owns(&l) && !other.owns(&l));
    // A function in a cycle is collected.
    heap.list_append(&l, &f).unwrap();
    let before = heap.live_objects();
    drop((l, f, d));
    assert!(heap.live_objects() < before);
    assert!(heap.collect(2).unwrap() >= 2);
}

// ----- lexer and parser -----

#[test]
fn lexer_layout_tokens() {
    use super::lexer::{Tok, tokenize};
    let toks: Vec<Tok> = tokenize("if x:\n    y = (1,\n  2)  # c\n\n    z\nw\n")
        .unwrap()
        .into_iter()
        .map(|t| t.0)
        .collect();
    let name = |s: &str| Tok::Name(s.into());
    assert_eq!(
        toks,
        vec![
            name("if"),
            name("x"),
            Tok::Op(":"),
            Tok::Newline,
            Tok::Indent,
            name("y"),
            Tok::Op("="),
            Tok::Op("("),
            Tok::Int(1),
            Tok::Op(","),
            Tok::Int(2),
            Tok::Op(")"),
            Tok::Newline,
            name("z"),
            Tok::Newline,
            Tok::Dedent,
            name("w"),
            Tok::Newline,
            Tok::Eof
        ]
    );
    let lits: Vec<Tok> = tokenize(
        r#"0x1F 0o17 0b101 1_000 2.5 .5 5. 1e3 1E-2 'a\tb' "\x41\u00e9\q" r'\n' '''x
y'''"#,
    )
    .unwrap()
    .into_iter()
    .map(|t| t.0)
    .collect();
    assert_eq!(
        lits[..14],
        [
            Tok::Int(31),
            Tok::Int(15),
            Tok::Int(5),
            Tok::Int(1000),
            Tok::Float(2.5),
            Tok::Float(0.5),
            Tok::Float(5.0),
            Tok::Float(1000.0),
            Tok::Float(0.01),
            Tok::Str("a\tb".into()),
            Tok::Str("Aé\\q".into()),
            Tok::Str("\\n".into()),
            Tok::Str("x\ny".into()),
            Tok::Newline,
        ]
    );
    assert!(tokenize("a = 1 \\\n  + 2\n").is_ok());
}

#[test]
fn precedence_matches_python() {
    let out = run(
        "print(-2 ** 2, 2 ** -1, 2 ** 3 ** 2, -3 // 2, not 1 == 2, 1 + 2 * 3 ** 2, (1 + 2) * 3, 1 < 2 < 3, 6 & 3 | 8 ^ 1, 1 << 2 + 1, 7 - 3 - 2, 2 * 3 % 4, not 0 and 1 or 2)\n",
    );
    assert_eq!(out, "-4 0.5 512 -2 True 19 9 True 11 8 2 2 1\n");
}

const ROUND_TRIP_PROGRAMS: &[&str] = &[
    "x = 1\n",
    "a, b = b, a\nx = y = [1, (2,), {'k': 3}]\n",
    "def f(a, b=2, c=-1.5):\n    global g\n    g = a if b else c\n    return a ** -b ** c\n",
    "for i, (j, k) in enumerate(zip(x, y)):\n    if i < j <= k != 3 and not (i in x):\n        continue\n    elif i is not None:\n        break\n    else:\n        pass\n",
    "while x:\n    x -= 1\n    del d['k'], l[0]\n",
    "print(x[1:10:2], x[:, 3], x[::], x[a:], x[(1, 2)], x[1,], f(a, b=1)(c).d[e].g)\n",
    "y = -(-x) + ~x - +x\nz = (not a) + 1\nw = (a or b) and (c or d)\nv = a or b and c\n",
    "s = 'it\\'s' + \"q\\\"\" + '\\n\\t\\x00\\u00e9\\U0001f600'\n",
    "assert x, 'msg'\nassert (x, y)\n",
    "x = (1 if a else 2) if b else 3 if c else 4\n",
    "x = (-1) ** 2 + (2 ** 3) ** 4 + 1e+16 + 1e999 + 0.1 + (1).real\n",
    "x = a @ b @ c\nx @= d\nx //= 2\nx **= 3\nx <<= 1\nx >>= 1\nx |= 1\nx &= 1\nx ^= 1\nx %= 2\n",
];

#[test]
fn handwritten_programs_round_trip() {
    for src in ROUND_TRIP_PROGRAMS {
        let m = parse(src, "t.chs").unwrap_or_else(|e| panic!("{src}\n{e}"));
        let printed = unparse(&m);
        let back = parse(&printed, "t.chs").unwrap_or_else(|e| panic!("{printed}\n{e}"));
        assert_eq!(m, back, "{src}\n--- printed ---\n{printed}");
        assert_eq!(unparse(&back), printed);
    }
}

#[test]
fn nesting_and_height_limits_are_syntax_errors_not_overflows() {
    // Run on a small stack to show parsing needs little.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let deep = |open: &str, mid: &str, close: &str, n: usize| {
                format!("x = {}{mid}{}\n", open.repeat(n), close.repeat(n))
            };
            let cases = [
                deep("(", "1", ")", 100_000),
                deep("[", "1", "]", 100_000),
                deep("-", "1", "", 100_000),
                deep("not ", "1", "", 100_000),
                format!("x = 1{}\n", " + 1".repeat(100_000)),
                format!("x = 2{}\n", " ** 2".repeat(100_000)),
                format!("x = y{}\n", ".a".repeat(100_000)),
                format!("x = y{}\n", "[0]".repeat(100_000)),
                format!("x = f{}\n", "()".repeat(100_000)),
                format!("x = 1{}\n", " if 1 else 1".repeat(100_000)),
                format!("x = {}1\n", "1 if 1 else ".repeat(100_000)),
                (0..200)
                    .map(|i| format!("{}if x:\n", " ".repeat(i)))
                    .collect::<String>()
                    + &" ".repeat(200)
                    + "pass\n",
            ];
            for src in &cases {
                let e = parse(src, "t.chs").unwrap_err();
                assert_eq!(e.kind, ErrorKind::SyntaxError, "{}", &src[..40]);
                assert!(
                    e.message.contains("nested") || e.message.contains("limit"),
                    "{}",
                    e.message
                );
            }
            // Just inside the limits parses, prints and re-parses.
            let ok = format!("x = {}1{}\n", "(".repeat(100), ")".repeat(100));
            assert!(parse(&ok, "t.chs").is_ok());
            let chain = format!("x = 1{}\n", " + 1".repeat(900));
            let m = parse(&chain, "t.chs").unwrap();
            assert_eq!(parse(&unparse(&m), "t.chs").unwrap(), m);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn tall_expressions_evaluate() {
    let src = format!("x = 0{}\nprint(x)\n", " + 1".repeat(900));
    assert_eq!(run(&src), "900\n");
}

// Random syntax trees: print, re-parse, compare.

fn name_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "x", "y_1", "é", "_z", "foo"]).prop_map(String::from)
}

fn pos() -> Pos {
    Pos::default()
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(ExprKind::None),
        any::<bool>().prop_map(ExprKind::Bool),
        (0i64..=i64::MAX).prop_map(ExprKind::Int),
        prop::sample::select(vec![0.0, 0.5, 1e16, 1e-7, 123.25, 2.5e-310, f64::INFINITY])
            .prop_map(ExprKind::Float),
        "[a-z'\"\\\\\n\t\u{1}é😀 ]{0,6}".prop_map(ExprKind::Str),
        name_strategy().prop_map(ExprKind::Name),
    ]
    .prop_map(|k| Expr::new(pos(), k))
}

fn boxed(e: Expr) -> Box<Expr> {
    Box::new(e)
}

fn expr_strategy() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        let bin = prop::sample::select(BinOp::ALL.to_vec());
        let cmp = prop::sample::select(vec![
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
            CmpOp::In,
            CmpOp::NotIn,
            CmpOp::Is,
            CmpOp::IsNot,
        ]);
        let un = prop::sample::select(vec![
            UnaryOp::Neg,
            UnaryOp::Pos,
            UnaryOp::Invert,
            UnaryOp::Not,
        ]);
        let opt = |s: BoxedStrategy<Expr>| prop::option::of(s.prop_map(boxed));
        let inner_b = inner.clone().boxed();
        let slice = (
            opt(inner_b.clone()),
            opt(inner_b.clone()),
            opt(inner_b.clone()),
        )
            .prop_map(|(lower, upper, step)| {
                Expr::new(pos(), ExprKind::Slice { lower, upper, step })
            });
        let index_item = prop_oneof![inner.clone(), slice];
        let index = prop_oneof![
            index_item.clone(),
            prop::collection::vec(index_item, 0..3)
                .prop_map(|v| Expr::new(pos(), ExprKind::Tuple(v))),
        ];
        prop_oneof![
            (un, inner.clone()).prop_map(|(op, e)| ExprKind::Unary {
                op,
                operand: boxed(e)
            }),
            (bin, inner.clone(), inner.clone()).prop_map(|(op, l, r)| ExprKind::Binary {
                op,
                left: boxed(l),
                right: boxed(r)
            }),
            (any::<bool>(), inner.clone(), inner.clone()).prop_map(|(and, l, r)| {
                ExprKind::BoolOp {
                    op: if and { BoolOp::And } else { BoolOp::Or },
                    left: boxed(l),
                    right: boxed(r),
                }
            }),
            (
                inner.clone(),
                prop::collection::vec((cmp, inner.clone()), 1..3)
            )
                .prop_map(|(l, rest)| ExprKind::Compare {
                    left: boxed(l),
                    rest
                }),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(t, b, o)| ExprKind::IfExp {
                test: boxed(t),
                body: boxed(b),
                orelse: boxed(o)
            }),
            (
                inner.clone(),
                prop::collection::vec(inner.clone(), 0..3),
                prop::collection::btree_map(name_strategy(), inner.clone(), 0..2)
            )
                .prop_map(|(f, args, kw)| ExprKind::Call {
                    func: boxed(f),
                    args,
                    kwargs: kw.into_iter().collect()
                }),
            (inner.clone(), name_strategy()).prop_map(|(v, name)| ExprKind::Attribute {
                value: boxed(v),
                name
            }),
            (inner.clone(), index).prop_map(|(v, i)| ExprKind::Subscript {
                value: boxed(v),
                index: boxed(i)
            }),
            prop::collection::vec(inner.clone(), 0..3).prop_map(ExprKind::List),
            prop::collection::vec(inner.clone(), 0..3).prop_map(ExprKind::Tuple),
            prop::collection::vec((inner.clone(), inner), 0..3).prop_map(ExprKind::Dict),
        ]
        .prop_map(|k| Expr::new(pos(), k))
    })
}

fn target_strategy() -> impl Strategy<Value = Expr> {
    let simple = prop_oneof![
        name_strategy().prop_map(|n| Expr::new(pos(), ExprKind::Name(n))),
        (name_strategy(), expr_strategy()).prop_map(|(n, i)| Expr::new(
            pos(),
            ExprKind::Subscript {
                value: boxed(Expr::new(pos(), ExprKind::Name(n))),
                index: boxed(i)
            }
        )),
    ];
    prop_oneof![
        3 => simple.clone(),
        1 => prop::collection::vec(simple, 1..3).prop_map(|v| Expr::new(pos(), ExprKind::Tuple(v))),
    ]
}

fn name_target() -> impl Strategy<Value = Expr> {
    prop_oneof![
        name_strategy().prop_map(|n| Expr::new(pos(), ExprKind::Name(n))),
        prop::collection::vec(name_strategy(), 1..3).prop_map(|v| Expr::new(
            pos(),
            ExprKind::Tuple(
                v.into_iter()
                    .map(|n| Expr::new(pos(), ExprKind::Name(n)))
                    .collect()
            )
        )),
    ]
}

fn stmt_strategy(depth: u32, in_def: bool, in_loop: bool) -> BoxedStrategy<Stmt> {
    let st = |k: StmtKind| Stmt {
        pos: pos(),
        kind: k,
    };
    let mut simple: Vec<BoxedStrategy<StmtKind>> = vec![
        expr_strategy().prop_map(StmtKind::Expr).boxed(),
        (
            prop::collection::vec(target_strategy(), 1..3),
            expr_strategy(),
        )
            .prop_map(|(targets, value)| StmtKind::Assign { targets, value })
            .boxed(),
        (
            name_strategy(),
            prop::sample::select(BinOp::ALL.to_vec()),
            expr_strategy(),
        )
            .prop_map(|(n, op, value)| StmtKind::AugAssign {
                target: Expr::new(pos(), ExprKind::Name(n)),
                op,
                value,
            })
            .boxed(),
        prop::collection::vec(target_strategy(), 1..3)
            .prop_map(StmtKind::Del)
            .boxed(),
        Just(StmtKind::Pass).boxed(),
        (expr_strategy(), prop::option::of(expr_strategy()))
            .prop_map(|(test, msg)| StmtKind::Assert { test, msg })
            .boxed(),
    ];
    if in_def {
        simple.push(
            prop::option::of(expr_strategy())
                .prop_map(StmtKind::Return)
                .boxed(),
        );
    }
    if in_loop {
        simple.push(Just(StmtKind::Break).boxed());
        simple.push(Just(StmtKind::Continue).boxed());
    }
    let simple = prop::strategy::Union::new(simple).prop_map(st);
    if depth == 0 {
        return simple.boxed();
    }
    let body = |d, f, l| prop::collection::vec(stmt_strategy(d, f, l), 1..3);
    let d = depth - 1;
    prop_oneof![
        3 => simple,
        1 => (expr_strategy(), body(d, in_def, in_loop), prop::collection::vec(stmt_strategy(d, in_def, in_loop), 0..2))
            .prop_map(move |(test, body, orelse)| st(StmtKind::If { test, body, orelse })),
        1 => (expr_strategy(), body(d, in_def, true))
            .prop_map(move |(test, body)| st(StmtKind::While { test, body })),
        1 => (name_target(), expr_strategy(), body(d, in_def, true))
            .prop_map(move |(target, iter, body)| st(StmtKind::For { target, iter, body })),
        1 => (
            name_strategy(),
            prop::collection::btree_set(name_strategy(), 0..3),
            prop::collection::vec(expr_strategy(), 0..2),
            body(d, true, false)
        )
            .prop_map(move |(name, names, defaults, body)| {
                let names: Vec<String> = names.into_iter().collect();
                let k = defaults.len().min(names.len());
                let params: Vec<Param> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Param {
                        name: n.clone(),
                        default: (i >= names.len() - k).then(|| defaults[i + k - names.len()].clone()),
                    })
                    .collect();
                let locals = super::parser::function_locals(&params, &body).unwrap();
                st(StmtKind::Def(Arc::new(FuncDef { name, params, body, locals })))
            }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Printing any tree and parsing the text gives the same tree back.
    #[test]
    fn random_trees_round_trip(body in prop::collection::vec(stmt_strategy(2, false, false), 1..5)) {
        let m = Module { body };
        let text = unparse(&m);
        let back = parse(&text, "t.chs").map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(&back, &m, "{}", text);
    }

    /// Arbitrary text never panics the parser: it parses or is a SyntaxError.
    #[test]
    fn arbitrary_text_parses_or_is_a_syntax_error(src in "\\PC{0,80}|[\\s\\S]{0,40}") {
        match parse(&src, "t.chs") {
            Ok(_) => {}
            Err(e) => prop_assert_eq!(e.kind, ErrorKind::SyntaxError, "{}", e),
        }
    }
}

/// Token soup: fragments of the language glued at random, parsed, and when they parse,
/// printed back and run (with a watchdog) — nothing may panic.
#[test]
fn token_soup_fuzz() {
    const FRAGS: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ":",
        ",",
        "=",
        "+",
        "-",
        "*",
        "**",
        "/",
        "//",
        "%",
        "@",
        "<",
        "==",
        "!=",
        "x",
        "y",
        "l",
        "1",
        "0",
        "2.5",
        "'s'",
        "\"t\"",
        "if ",
        "else ",
        "elif ",
        "def ",
        "for ",
        " in ",
        "while ",
        "return ",
        "not ",
        " and ",
        " or ",
        " is ",
        "None",
        "True",
        "\n",
        "\n    ",
        "\n        ",
        "\t",
        "#c",
        "\\\n",
        ".",
        ";",
        "pass",
        "break",
        "continue",
        "del ",
        "global ",
        "assert ",
        "f(",
        "a=",
        "+=",
        "[:]",
        "[::-1]",
        "len(",
        "range(",
        "gc.collect()",
        "print(",
        "'\\x4",
        "1e",
        "0x",
        "lambda",
        "é",
        "\r\n",
    ];
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut it, _out) = new_interp();
    let flag = it.interrupt_flag();
    let mut parsed = 0;
    for _ in 0..6000 {
        let n = (next() % 24) as usize + 1;
        let src: String = (0..n)
            .map(|_| FRAGS[(next() % FRAGS.len() as u64) as usize])
            .collect();
        match parse(&src, "t.chs") {
            Ok(m) => {
                parsed += 1;
                let text = unparse(&m);
                assert_eq!(parse(&text, "t.chs").unwrap(), m, "{src:?} -> {text:?}");
                // Run it; a watchdog interrupts endless loops.
                let f = flag.clone();
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let d2 = done.clone();
                let dog = std::thread::spawn(move || {
                    for _ in 0..50 {
                        if d2.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    f.store(true, Ordering::Relaxed);
                });
                let r = it.run(&src, "t.chs", &[]);
                done.store(true, Ordering::Relaxed);
                dog.join().unwrap();
                flag.store(false, Ordering::Relaxed);
                if let Err(e) = r {
                    assert_ne!(e.kind, ErrorKind::SyntaxError, "{src:?}: {e}");
                    assert!(!e.message.contains("internal error"), "{src:?}: {e}");
                }
            }
            Err(e) => assert_eq!(e.kind, ErrorKind::SyntaxError, "{src:?}: {e}"),
        }
    }
    assert!(parsed > 100, "only {parsed} fragments parsed");
}

// ----- the array hook -----

/// A 1-D f64 array in memory, in chunks of up to 4 elements.
struct MemSource {
    info: SourceInfo,
    data: Vec<f64>,
}

impl MemSource {
    fn new(data: Vec<f64>) -> Arc<MemSource> {
        let n = data.len() as u64;
        let info = SourceInfo {
            name: "mem".into(),
            path: "mem".into(),
            format: Format::Npy,
            dtype: DType::F64,
            shape: vec![n],
            layout: ChunkLayout::regular(&[n], &[n.clamp(1, 4)]).unwrap(),
            byte_order: ByteOrder::NATIVE,
            stored_bytes: n * 8,
            details: Vec::new(),
        };
        Arc::new(MemSource { info, data })
    }
}

impl ChunkSource for MemSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        let region = self.info.layout.chunk_region(index);
        let s = region.origin[0] as usize;
        let e = s + region.shape[0] as usize;
        let data = Buffer::copy_from(bytemuck::cast_slice(&self.data[s..e]))?;
        Ok(Chunk {
            region,
            dtype: DType::F64,
            data,
        })
    }
}

/// Arrays for testing the plumbing: eager elementwise math over `MemSource` arrays, and a
/// lazy `expr` node (from `a.lazy()`) that stands for its argument. Logs what it was asked.
#[derive(Default)]
struct TestArrays {
    log: Mutex<Vec<String>>,
}

impl TestArrays {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

fn values(heap: &Heap, h: &Handle) -> Result<Vec<f64>> {
    match h.kind() {
        Kind::Array => {
            let src = heap.array_source(h)?;
            let b = src.read_region(&Region::full(&src.info().shape))?;
            Ok(b.as_slice::<f64>().to_vec())
        }
        Kind::Expr => values(heap, &heap.items(h)[0]),
        Kind::Int => Ok(vec![heap.as_int(h).unwrap() as f64]),
        Kind::Float => Ok(vec![heap.as_float(h).unwrap()]),
        Kind::Bool => Ok(vec![f64::from(u8::from(heap.as_bool(h).unwrap()))]),
        k => Err(Error::Invalid(format!("cannot use a {k} as an array"))),
    }
}

fn make(heap: &Heap, v: Vec<f64>) -> Handle {
    heap.array(MemSource::new(v))
}

fn describe(heap: &Heap, h: &Handle) -> String {
    match h.kind() {
        Kind::Int => heap.as_int(h).unwrap().to_string(),
        Kind::None => "None".into(),
        Kind::Slice => {
            let p = heap.as_slice(h).unwrap();
            let s = |x: Option<i64>| x.map_or("None".into(), |v| v.to_string());
            format!("slice({}, {}, {})", s(p[0]), s(p[1]), s(p[2]))
        }
        Kind::Tuple => format!(
            "({})",
            heap.items(h)
                .iter()
                .map(|x| describe(heap, x))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        k => k.name().into(),
    }
}

impl ArrayBackend for TestArrays {
    fn expect_calls(&self, heap: &Heap, calls: &[(Handle, &str)]) {
        let calls: Vec<String> = calls
            .iter()
            .map(|(h, f)| format!("{f}({:?})", values(heap, h).unwrap()))
            .collect();
        self.note(format!("expect {}", calls.join(" ")));
    }

    fn statement_done(&self) {
        self.note("done".into());
    }

    fn binary(&self, heap: &Heap, op: BinaryOp, lhs: &Handle, rhs: &Handle) -> Result<Handle> {
        let (a, b) = (values(heap, lhs)?, values(heap, rhs)?);
        if op == BinaryOp::Compare(CmpOp::In) {
            return Ok(heap.bool(b.contains(&a[0])));
        }
        if op == BinaryOp::Arith(BinOp::MatMul) {
            return Ok(heap.float(a.iter().zip(&b).map(|(x, y)| x * y).sum()));
        }
        let n = a.len().max(b.len());
        let at = |v: &Vec<f64>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
        let f = |x: f64, y: f64| -> Result<f64> {
            Ok(match op {
                BinaryOp::Arith(BinOp::Add) => x + y,
                BinaryOp::Arith(BinOp::Sub) => x - y,
                BinaryOp::Arith(BinOp::Mul) => x * y,
                BinaryOp::Arith(BinOp::Div) => x / y,
                BinaryOp::Compare(CmpOp::Lt) => f64::from(u8::from(x < y)),
                BinaryOp::Compare(CmpOp::Eq) => f64::from(u8::from(x == y)),
                other => return Err(Error::Invalid(format!("unsupported: {other:?}"))),
            })
        };
        let out = (0..n)
            .map(|i| f(at(&a, i), at(&b, i)))
            .collect::<Result<_>>()?;
        Ok(make(heap, out))
    }

    fn unary(&self, heap: &Heap, op: UnaryOp, operand: &Handle) -> Result<Handle> {
        match op {
            UnaryOp::Neg => Ok(make(
                heap,
                values(heap, operand)?.iter().map(|x| -x).collect(),
            )),
            _ => Err(Error::Invalid(format!("unsupported unary {}", op.symbol()))),
        }
    }

    fn subscript(&self, heap: &Heap, array: &Handle, index: &Handle) -> Result<Handle> {
        self.note(format!("subscript {}", describe(heap, index)));
        let v = values(heap, array)?;
        match index.kind() {
            Kind::Int => {
                let i = heap.as_int(index).unwrap();
                let j = if i < 0 { i + v.len() as i64 } else { i };
                v.get(j as usize).map(|x| heap.float(*x)).ok_or_else(|| {
                    Error::Invalid(format!(
                        "index {i} is out of bounds for axis 0 with size {}",
                        v.len()
                    ))
                })
            }
            Kind::Slice => {
                let idx = ops::slice_indices(heap.as_slice(index).unwrap(), v.len())
                    .map_err(|e| Error::Invalid(e.msg))?;
                Ok(make(heap, idx.into_iter().map(|i| v[i]).collect()))
            }
            _ => Err(Error::Invalid(format!(
                "too many indices for array: array is 1-dimensional, but {} were indexed",
                heap.len(index)
            ))),
        }
    }

    fn attribute(&self, heap: &Heap, array: &Handle, name: &str) -> Result<Handle> {
        let n = values(heap, array)?.len() as i64;
        match name {
            "shape" => Ok(heap.tuple(&[&heap.int(n)])),
            "size" => Ok(heap.int(n)),
            "ndim" => Ok(heap.int(1)),
            "dtype" => Ok(heap.str("float64")),
            _ => Err(Error::Invalid(format!(
                "'array' object has no attribute '{name}'"
            ))),
        }
    }

    fn call_method(
        &self,
        heap: &Heap,
        array: &Handle,
        name: &str,
        args: &[Handle],
        kwargs: &[(String, Handle)],
    ) -> Result<Handle> {
        self.note(format!("method {name} {} {}", args.len(), kwargs.len()));
        match name {
            "sum" => Ok(heap.float(values(heap, array)?.iter().sum())),
            "lazy" => Ok(heap.expr("lazy", &[array])),
            "scale" => {
                let f = kwargs
                    .iter()
                    .find(|(k, _)| k == "factor")
                    .map(|(_, v)| values(heap, v))
                    .transpose()?
                    .map_or(1.0, |v| v[0]);
                Ok(make(
                    heap,
                    values(heap, array)?.iter().map(|x| x * f).collect(),
                ))
            }
            _ => Err(Error::Invalid(format!("no method {name}"))),
        }
    }

    fn call_function(
        &self,
        heap: &Heap,
        name: &str,
        args: &[Handle],
        _kwargs: &[(String, Handle)],
    ) -> Result<Option<Handle>> {
        self.note(format!("function {name}"));
        let n = || args.first().and_then(|a| heap.as_int(a)).unwrap_or(0);
        Ok(match name {
            "arange" => Some(make(heap, (0..n()).map(|i| i as f64).collect())),
            "zeros" => Some(make(heap, vec![0.0; n() as usize])),
            "mean" => {
                let v = values(heap, &args[0])?;
                Some(heap.float(v.iter().sum::<f64>() / v.len() as f64))
            }
            "foreign" => Some(Heap::new()?.int(1)),
            _ => None,
        })
    }

    fn truth(&self, heap: &Heap, array: &Handle) -> Result<bool> {
        let v = values(heap, array)?;
        if v.len() != 1 {
            return Err(Error::Invalid(
                "The truth value of an array with more than one element is ambiguous. Use a.any() or a.all()".into(),
            ));
        }
        Ok(v[0] != 0.0)
    }

    fn repr(&self, heap: &Heap, array: &Handle) -> Result<String> {
        let v = values(heap, array)?;
        let parts: Vec<String> = v.iter().map(|x| float_repr(*x)).collect();
        Ok(format!("array([{}])", parts.join(", ")))
    }

    fn str(&self, heap: &Heap, array: &Handle) -> Result<String> {
        let v = values(heap, array)?;
        let parts: Vec<String> = v.iter().map(|x| float_repr(*x)).collect();
        Ok(format!("[{}]", parts.join(" ")))
    }
}

fn array_interp() -> (Interpreter, SharedBuffer, Arc<TestArrays>) {
    let out = SharedBuffer::default();
    let backend = Arc::new(TestArrays::default());
    let it = Interpreter::new(Heap::new().unwrap(), backend.clone(), Box::new(out.clone()));
    (it, out, backend)
}

#[test]
fn arrays_go_through_the_backend() {
    let (mut it, out, backend) = array_interp();
    it.run(
        r#"
a = arange(6)
print(a)
print(a.shape, a.size, a.ndim, a.dtype)
b = a * 2 + 1
print(b[1:4], b[-1], a @ a, 10 - a[2])
print([a[0:2]], repr(a[:2]))
print(len(a), a.sum(), mean(a), a.scale(factor=3)[5])
for v in arange(3):
    print(v, end=" ")
print()
c = a.lazy()
print(c + 1, -c, 3.0 in a, 9 in a)
s = 0
for x in zeros(2):
    s += x
print(s, sum(arange(4)), max(arange(3)))
if arange(1) + 1:
    print("one element is fine")
print(a[::2])
"#,
        "arr.chs",
        &[],
    )
    .unwrap();
    assert_eq!(
        out.contents(),
        "[0.0 1.0 2.0 3.0 4.0 5.0]\n(6,) 6 1 float64\n[3.0 5.0 7.0] 11.0 55.0 8.0\n[array([0.0, 1.0])] array([0.0, 1.0])\n6 15.0 2.5 15.0\n0.0 1.0 2.0 \n[1.0 2.0 3.0 4.0 5.0 6.0] [-0.0 -1.0 -2.0 -3.0 -4.0 -5.0] True False\n0.0 6.0 2.0\none element is fine\n[0.0 2.0 4.0]\n"
    );
    let log = backend.log.lock().unwrap().clone();
    assert!(
        log.contains(&"subscript slice(1, 4, None)".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"subscript -1".to_string()), "{log:?}");
    assert!(
        log.contains(&"subscript slice(None, None, 2)".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"method scale 0 1".to_string()), "{log:?}");
    // `len` and `sum` with an array argument were offered to the backend first.
    assert!(log.contains(&"function len".to_string()), "{log:?}");
    assert!(log.contains(&"function sum".to_string()), "{log:?}");
}

/// Before a statement with two or more `f(x)` / `x.f()` calls on array names runs, the backend
/// is told which (so it can serve them from one pass); calls with other arguments, on
/// expressions or on non-arrays are left out, and one call alone is not announced.
#[test]
fn statements_announce_their_calls_on_array_names() {
    let (mut it, _out, backend) = array_interp();
    it.run(
        r#"
a = arange(2)
b = a * 3
n = 4
m = mean(a)
print(min(a), a.sum(), mean(b, ddof=1), mean(a, axis=0), mean(a + 1), len([n]), max(n, 2))
def f(x):
    return x.sum(), max(x)
t = f(b)
s = [1, 2]
x = max(s) + min(s)
if mean(a) > a.sum():
    pass
u = 0
u += mean(b) + b.sum()
"#,
        "calls.chs",
        &[],
    )
    .unwrap();
    let log = backend.log.lock().unwrap().clone();
    // Each outermost statement that announced (itself or in the function it called) is
    // followed by its end.
    let expects: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("expect") || *l == "done")
        .collect();
    assert_eq!(
        expects,
        [
            "expect min([0.0, 1.0]) sum([0.0, 1.0]) mean([0.0, 3.0])",
            "done",
            "expect sum([0.0, 3.0]) max([0.0, 3.0])",
            "done",
            "expect mean([0.0, 1.0]) sum([0.0, 1.0])",
            "done",
            "expect mean([0.0, 3.0]) sum([0.0, 3.0])",
            "done",
        ],
        "{log:?}"
    );
}

#[test]
fn array_errors_carry_positions() {
    let (mut it, _out, backend) = array_interp();
    let e = it
        .run("a = arange(4)\nif a:\n    pass\n", "arr.chs", &[])
        .unwrap_err();
    assert_eq!((e.kind, e.line, e.column), (ErrorKind::ValueError, 2, 4));
    assert!(e.message.starts_with("The truth value of an array"), "{e}");
    assert!(matches!(e.cause.as_deref(), Some(Error::Invalid(_))));
    let e = it
        .run("a = arange(4)\nx = a[:, 3]\n", "arr.chs", &[])
        .unwrap_err();
    assert_eq!((e.kind, e.line, e.column), (ErrorKind::ValueError, 2, 6));
    assert!(
        backend
            .log
            .lock()
            .unwrap()
            .contains(&"subscript (slice(None, None, None), 3)".to_string())
    );
    let e = it
        .run("a = arange(4)\na[0] = 1\n", "arr.chs", &[])
        .unwrap_err();
    assert_eq!(e.message, "array objects do not support item assignment");
    let e = it.run("x = foreign()\n", "arr.chs", &[]).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (
            ErrorKind::RuntimeError,
            "the array backend returned an object of another heap"
        )
    );
    let e = it.run("x = nothing(1)\n", "arr.chs", &[]).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::NameError, "name 'nothing' is not defined")
    );
    // Script definitions shadow backend functions.
    it.run(
        "def arange(n):\n    return n\nprint(arange(3))\n",
        "arr.chs",
        &[],
    )
    .unwrap();
}

#[test]
fn no_arrays_backend_reports_missing_engine() {
    let (mut it, _out) = new_interp();
    let heap = it.heap().clone();
    let a = heap.array(MemSource::new(vec![1.0, 2.0]));
    it.set_global("a", &a).unwrap();
    let e = it.run("b = a + 1\n", "t.chs", &[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ValueError);
    assert!(e.message.contains("no array engine"), "{e}");
}

// ----- example scripts -----

/// What CPython 3.11 prints for `basics.chs 5` and `word_report.chs 5`.
const BASICS_OUT: &str = "fib(5) = 5\n  7 //  2 =  3     7 %  2 =  1\n -7 //  2 = -4    -7 %  2 =  1\n  7 // -2 = -4     7 % -2 = -1\n7 / 2 = 3.5  2 ** -1 = 0.5  0.1 + 0.2 = 0.30000000000000004  1e16 = 1e+16\nn             7 \nmin         9.5 ms\nmedian    11.25 ms\nmean     13.929 ms\nstd       6.722 ms\nmax        30.0 ms\naceg fgh hgfedcba\n0 SMALL 1024\n1 MEDIUM 10240\n2 LARGE 102400\nmost common: [('the', 3), ('quick', 1), ('brown', 1)]\nTrue odd True empty\n";
const WORD_REPORT_OUT: &str = "48 words, 16 distinct\n 1. it    8 ########\n 2. of    8 ########\n 3. the   8 ########\n 4. was   8 ########\n 5. age   2 ##\ndistinct words by length: [('5', 4), ('3', 3), ('6', 3), ('11', 2)]\n";

fn run_example(name: &str, args: &[&str]) -> String {
    let path = format!("{}/examples/scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap();
    let (mut it, out) = new_interp();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if let Err(e) = it.run(&src, name, &args) {
        panic!("{e}");
    }
    out.contents()
}

#[test]
fn example_scripts_print_what_python_prints() {
    assert_eq!(run_example("basics.chs", &["5"]), BASICS_OUT);
    assert_eq!(run_example("word_report.chs", &["5"]), WORD_REPORT_OUT);
    let gc = run_example("gc_tour.chs", &[]);
    assert!(
        gc.starts_with("refcount of a fresh list: 2\nafter two more references: 4\nafter del: 2\n"),
        "{gc}"
    );
    // l, the ring (dict, payload list, tuple, items list), the function and its default list.
    assert!(
        gc.contains("objects waiting for the collector: 10\n"),
        "{gc}"
    );
    assert!(
        gc.contains("gc.collect() found 7 unreachable containers\n"),
        "{gc}"
    );
    assert!(gc.contains("objects left over: 0\n"), "{gc}");
}

#[test]
fn expression_nesting_across_calls_hits_the_nesting_guard_not_the_stack() {
    // Each call nests 140 parenthesised additions: the native nesting cap (not the recursion
    // limit, not a stack overflow) stops it.
    let body = format!("{}f(n - 1){}", "1 + (".repeat(140), ")".repeat(140));
    let src = format!("def f(n):\n    if n == 0:\n        return 0\n    return {body}\nf(900)\n");
    let e = run_err(&src);
    assert_eq!(
        (e.kind, e.message.as_str()),
        (
            ErrorKind::RecursionError,
            "maximum recursion depth exceeded (nesting too deep)"
        )
    );
    assert!(e.traceback.len() < 900, "{}", e.traceback.len());
    let ok =
        format!("def f(n):\n    if n == 0:\n        return 0\n    return {body}\nprint(f(50))\n");
    assert_eq!(run(&ok), "7000\n");
}
