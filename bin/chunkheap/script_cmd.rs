//! `eval`, `run` and `sort`: the commands that go through the batch-script language and the lazy
//! engine.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chunkheap::expr::script::{EngineBackend, ProgressFactory, format_array};
use chunkheap::heap::{Heap, HeapConfig, Kind};
use chunkheap::script::{Interpreter, ScriptError, float_repr, is_array};
use chunkheap::storage::WriteOptions;

use crate::Globals;
use crate::progress::Reporter;

/// The name `eval` binds the expression's value to.
const RESULT: &str = "__result__";

/// A progress factory drawing one bar per long step.
fn progress_factory(g: &Globals) -> ProgressFactory {
    let mode = g.progress;
    Arc::new(move |label: &str, total: u64| {
        let bar = Arc::new(Reporter::new(mode, total, label));
        let b2 = bar.clone();
        Box::new(move |n: u64| {
            b2.add(n);
            if b2.done() {
                b2.finish();
            }
        }) as Box<dyn Fn(u64) + Send + Sync>
    })
}

struct Engine {
    interp: Interpreter,
    backend: Arc<EngineBackend>,
}

/// Stdout for scripts: line-buffered to the real stdout.
struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

fn engine(g: &Globals) -> Result<Engine> {
    let heap = Heap::with_config(&HeapConfig {
        budget: None,
        temp_dir: g.temp_dir.clone(),
    })?;
    let backend = Arc::new(
        EngineBackend::new(heap.clone(), g.temp_dir.clone()).with_progress(progress_factory(g)),
    );
    let interp = Interpreter::new(heap, backend.clone(), Box::new(Stdout));
    Ok(Engine { interp, backend })
}

/// Turns a script error into the CLI's error (already formatted with line, caret and traceback).
fn script_failed(e: ScriptError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// `chunkheap eval EXPR [NAME=SRC ...] [-o OUT] [--json]`.
pub fn cmd_eval(
    expr: &str,
    bindings: &[String],
    out: Option<&str>,
    json: bool,
    options: &WriteOptions,
    g: &Globals,
) -> Result<()> {
    let mut e = engine(g)?;
    let heap = e.interp.heap().clone();
    for b in bindings {
        let (name, src) = b
            .split_once('=')
            .with_context(|| format!("expected NAME=SOURCE, got {b:?}"))?;
        let ok_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !ok_name {
            bail!("{name:?} is not a valid name (in {b:?})");
        }
        let a = e.backend.session().open(src)?;
        e.interp.set_global(name, a.handle())?;
    }
    let prefix = format!("{RESULT} = (");
    let source = format!("{prefix}{expr}\n)\n");
    if let Err(mut err) = e.interp.run(&source, "<expr>", &[]) {
        if err.line == 1 {
            err.column = err.column.saturating_sub(prefix.len() as u32).max(1);
            err.source_line = Some(expr.to_string());
        } else if err.line > 1 {
            err.line -= 1;
        }
        return Err(script_failed(err));
    }
    let value = e
        .interp
        .global(RESULT)
        .context("the expression produced no value")?;
    let backend = e.backend.clone();
    if let Some(path) = out {
        if !is_array(value.kind()) {
            bail!(
                "-o {path}: the expression is a {}, not an array; drop -o to print it",
                value.kind()
            );
        }
        // Not computed yet if it is a matrix product: saving computes it straight into `path`.
        let a = backend.session().deferred_handle(&value)?;
        let bytes = a.size() * a.dtype().size() as u64;
        let bar = Reporter::new(g.progress, bytes, "eval");
        a.save(path, options, &|n| bar.add(n))?;
        bar.finish();
        eprintln!(
            "wrote {path}: {} {}",
            a.dtype(),
            chunkheap::shape::shape_str(a.shape())
        );
        return Ok(());
    }
    fn text(
        h: &chunkheap::heap::Handle,
        heap: &Heap,
        backend: &EngineBackend,
    ) -> Result<(String, String)> {
        let arr_of = |h: &chunkheap::heap::Handle| backend.session().from_handle(h);
        // (plain text, JSON)
        Ok(match h.kind() {
            Kind::Tuple | Kind::List => {
                let parts: Vec<(String, String)> = heap
                    .items(h)
                    .iter()
                    .map(|x| text(x, heap, backend))
                    .collect::<Result<_>>()?;
                let t: Vec<String> = parts.iter().map(|p| p.0.clone()).collect();
                let j: Vec<String> = parts.iter().map(|p| p.1.clone()).collect();
                let (open, close) = if h.kind() == Kind::Tuple {
                    ("(", ")")
                } else {
                    ("[", "]")
                };
                (
                    format!("{open}{}{close}", t.join(", ")),
                    format!("[{}]", j.join(", ")),
                )
            }
            Kind::Float => {
                let v = heap.as_float(h).unwrap_or(f64::NAN);
                (float_repr(v), json_float(v))
            }
            Kind::Int => {
                let v = heap.as_int(h).unwrap_or(0);
                (v.to_string(), v.to_string())
            }
            Kind::Bool => {
                let v = heap.as_bool(h).unwrap_or(false);
                (if v { "True" } else { "False" }.to_string(), v.to_string())
            }
            Kind::Str => {
                let s = heap.as_str(h).unwrap_or_default();
                (s.clone(), serde_json::to_string(&s)?)
            }
            Kind::None => ("None".into(), "null".into()),
            k if is_array(k) => {
                let a = arr_of(h)?;
                if a.size() > 1000 {
                    bail!(
                        "the result is an array of {} elements ({} {}); write it with -o FILE",
                        a.size(),
                        a.dtype(),
                        chunkheap::shape::shape_str(a.shape())
                    );
                }
                let t = format_array(&a)?;
                let vals = a.astype(chunkheap::DType::F64).to_vec::<f64>()?;
                let j: Vec<String> = vals.iter().map(|&v| json_float(v)).collect();
                (t, format!("[{}]", j.join(", ")))
            }
            k => bail!("cannot print a {k} result"),
        })
    }
    let items = if value.kind() == Kind::Tuple {
        heap.items(&value)
    } else {
        vec![value.clone()]
    };
    let parts: Vec<(String, String)> = items
        .iter()
        .map(|h| text(h, &heap, &backend))
        .collect::<Result<_>>()?;
    let mut stdout = std::io::stdout().lock();
    if json {
        let v = if value.kind() == Kind::Tuple {
            format!(
                "[{}]",
                parts
                    .iter()
                    .map(|p| p.1.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            parts[0].1.clone()
        };
        writeln!(stdout, "{{\"value\": {v}}}")?;
    } else {
        for p in parts {
            writeln!(stdout, "{}", p.0)?;
        }
    }
    Ok(())
}

/// JSON for a float: round-trip precision, Python's `NaN`/`Infinity` tokens.
fn json_float(v: f64) -> String {
    chunkheap::reduce::Scalar::F64(v).to_json()
}

/// Runs script text (for the demo).
pub fn run_source(source: &str, name: &str, args: &[String], g: &Globals) -> Result<()> {
    let mut e = engine(g)?;
    let r = e.interp.run(source, name, args);
    std::io::stdout().flush().ok();
    r.map_err(script_failed)
}

/// `chunkheap run SCRIPT [ARGS]` (`-` reads standard input).
pub fn cmd_run(script: &str, args: &[String], g: &Globals) -> Result<()> {
    let source = if script == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading the script from standard input")?;
        s
    } else {
        std::fs::read_to_string(script).with_context(|| format!("{script}: cannot read"))?
    };
    let name = if script == "-" { "<stdin>" } else { script };
    let mut e = engine(g)?;
    let r = e.interp.run(&source, name, args);
    std::io::stdout().flush().ok();
    r.map_err(script_failed)
}

/// `chunkheap sort SRC -o OUT [--argsort] [--axis last]`.
pub fn cmd_sort(src: &str, out: &str, arg: bool, last_axis: bool, g: &Globals) -> Result<()> {
    use chunkheap::kernels::sort::{Axis, SortOptions};
    crate::check_not_input(src, out)?;
    let s = chunkheap::formats::open(src)?;
    let info = s.info().clone();
    let shape = if last_axis {
        info.shape.clone()
    } else {
        vec![info.numel()]
    };
    let dtype = if arg {
        chunkheap::DType::I64
    } else {
        info.dtype
    };
    let writer = chunkheap::formats::create(out, dtype, &shape, &WriteOptions::default())?;
    let opts = SortOptions {
        axis: if last_axis { Axis::Last } else { Axis::Flat },
        temp_dir: g.temp_dir.clone(),
        ..Default::default()
    };
    let bar = Reporter::new(
        g.progress,
        info.nbytes(),
        if arg { "argsort" } else { "sort" },
    );
    let t = std::time::Instant::now();
    let report = if arg {
        chunkheap::kernels::sort::argsort(s.as_ref(), writer, &opts, &|n| bar.add(n))
    } else {
        chunkheap::kernels::sort::sort(s.as_ref(), writer, &opts, &|n| bar.add(n))
    }
    .map_err(|e| crate::about(src, e))?;
    bar.finish();
    eprintln!("wrote {out}: {report}");
    eprintln!(
        "{}",
        crate::throughput_line(info.nbytes(), t.elapsed().as_secs_f64())
    );
    Ok(())
}
