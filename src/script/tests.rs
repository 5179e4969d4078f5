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
