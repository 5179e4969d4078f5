//! The `chunkheap` command-line tool: inspect, reduce, generate and convert arrays far larger than
//! memory. All the work happens in the library; this file parses flags, shows progress and turns
//! errors into messages and exit codes.

mod demo;
mod interrupt;
mod plot;
mod progress;
mod script_cmd;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chunkheap::generate::{Dist, GenSpec};
use chunkheap::shape::{parse_shape, shape_str};
use chunkheap::storage::{Codec, WriteOptions};
use chunkheap::{DType, formats, pipeline, reduce};
use clap::{Parser, Subcommand, ValueEnum};

use crate::progress::{ProgressMode, Reporter};

#[derive(Parser)]
#[command(
    name = "chunkheap",
    version,
    about = "Crunch arrays far larger than memory: .npy, Zarr v3 and Arrow IPC, streamed through every core."
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// Progress bars on stderr: auto (only on a terminal), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Memory budget for everything that grows with the data (e.g. 512MiB, 2GiB, 1.5G; default:
    /// half of physical memory).
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Directory for spill files (default: the system temp dir).
    #[arg(long, global = true, value_name = "DIR")]
    temp_dir: Option<std::path::PathBuf>,
    /// fsync outputs before renaming them into place (durable across power loss, slower).
    #[arg(long, global = true)]
    fsync: bool,
    /// Print memory statistics at exit to stderr (`--stats` or `--stats=json`).
    #[arg(long, global = true, value_enum, num_args = 0..=1, default_missing_value = "text", require_equals = true)]
    stats: Option<StatsMode>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Format, dtype, shape, chunk grid, bytes and byte order of a source.
    Info {
        /// PATH or PATH#COLUMN (.npy file, .zarr directory, Arrow IPC file).
        src: String,
    },
    /// Count, NaN count, sum, mean, std, min, max, argmin, argmax in one parallel pass.
    Stats {
        /// PATH or PATH#COLUMN.
        src: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Delta degrees of freedom for std and var (NumPy's `ddof`).
        #[arg(long, default_value_t = 0)]
        ddof: u64,
    },
    /// Generate a seeded array (identical bytes for any thread count) into .npy, .zarr or .arrow.
    Gen {
        /// Output path; the format comes from the extension.
        out: String,
        /// Shape, e.g. 1000000 or 4096,4096.
        #[arg(long)]
        shape: String,
        /// Element type: bool, i8, i16, i32, i64, u8, u16, u32, u64, f32, f64.
        #[arg(long, default_value = "f64")]
        dtype: String,
        /// Value distribution.
        #[arg(long, value_enum, default_value_t = DistArg::Uniform)]
        dist: DistArg,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Uniform range LO,HI (default [0,1) for floats, [0,100) for integers); for normal, MEAN,STD.
        #[arg(long, value_name = "LO,HI", allow_hyphen_values = true)]
        range: Option<String>,
        /// Output chunk shape (Zarr) or batch length (Arrow).
        #[arg(long, value_name = "C[,..]")]
        chunks: Option<String>,
        /// Compression for Zarr outputs: none, zstd, zstd:LEVEL, gzip, gzip:LEVEL.
        #[arg(long, default_value = "none")]
        codec: String,
    },
    /// Convert any source to any format, streamed chunk by chunk.
    Convert {
        /// PATH or PATH#COLUMN.
        src: String,
        /// Output path (format from the extension; OUT.arrow#NAME names the Arrow column).
        out: String,
        /// Output chunk shape (Zarr) or batch length (Arrow).
        #[arg(long, value_name = "C[,..]")]
        chunks: Option<String>,
        /// Compression for Zarr outputs: none, zstd, zstd:LEVEL, gzip, gzip:LEVEL.
        #[arg(long, default_value = "none")]
        codec: String,
    },
    /// Evaluate an expression over named sources in one fused streaming pass, e.g.
    /// `chunkheap eval 'sum(a*2+b)' a=x.npy b=y.zarr`. Scalars print; arrays need -o (small ones
    /// print).
    Eval {
        /// The expression (the batch-script syntax: operators, functions, methods, slicing).
        expr: String,
        /// Sources bound to names: NAME=PATH[#COLUMN].
        #[arg(value_name = "NAME=SRC")]
        bindings: Vec<String>,
        /// Write an array result here (format from the extension).
        #[arg(short, long, value_name = "OUT")]
        out: Option<String>,
        /// Print `{"value": ...}`.
        #[arg(long)]
        json: bool,
        /// Output chunk shape (Zarr) or batch length (Arrow).
        #[arg(long, value_name = "C[,..]")]
        chunks: Option<String>,
        /// Compression for Zarr outputs: none, zstd, zstd:LEVEL, gzip, gzip:LEVEL.
        #[arg(long, default_value = "none")]
        codec: String,
    },
    /// Run a batch script (`-` reads standard input); ARGS land in `sys.argv`.
    Run {
        /// Script file, or `-`.
        script: String,
        /// Arguments for the script.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Histogram (NumPy's `np.histogram`): a counts table, optionally a PNG/SVG plot.
    Hist {
        /// PATH or PATH#COLUMN.
        src: String,
        /// Number of equal-width bins.
        #[arg(long, default_value_t = 10)]
        bins: usize,
        /// Bin range LO,HI (default: the data's min and max, found in a first pass).
        #[arg(long, value_name = "LO,HI", allow_hyphen_values = true)]
        range: Option<String>,
        /// Print JSON (`{"counts": [...], "edges": [...]}`) instead of a table.
        #[arg(long)]
        json: bool,
        /// Also draw the histogram to this PNG file.
        #[arg(long, value_name = "FILE")]
        png: Option<String>,
        /// Also draw the histogram to this SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<String>,
    },
    /// Exact quantiles (NumPy's `np.quantile`, linear method) in a few streaming passes.
    Quantile {
        /// PATH or PATH#COLUMN.
        src: String,
        /// Quantiles in [0, 1], e.g. 0.5 0.99.
        #[arg(required = true, value_name = "Q")]
        qs: Vec<f64>,
        /// Skip NaNs (`np.nanquantile`); otherwise any NaN makes every result NaN.
        #[arg(long)]
        skip_nan: bool,
        /// Print `{"quantiles": [...], "values": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Plot a 1-D series (any length) as a min/max envelope to PNG or SVG.
    Plot {
        /// PATH or PATH#COLUMN (flattened in C order if not 1-D).
        src: String,
        /// Output .png or .svg.
        #[arg(short, long)]
        out: String,
        /// Columns (buckets of consecutive elements).
        #[arg(long, default_value_t = 1000)]
        width: u32,
    },
    /// Sort an array of any size (external merge sort under the memory budget) into OUT.
    Sort {
        /// PATH or PATH#COLUMN.
        src: String,
        /// Output path (format from the extension).
        #[arg(short, long)]
        out: String,
        /// Write the stable sorting permutation (i64 indices) instead of the values.
        #[arg(long)]
        argsort: bool,
        /// Sort each row along the last axis instead of the flattened array.
        #[arg(long)]
        last_axis: bool,
    },
    /// Generate a dataset in a temp dir, run info/stats/convert on it, print results and
    /// throughput, clean up.
    Demo {
        /// Dataset size (e.g. 256MiB, 2GiB).
        #[arg(long, default_value = "512MiB")]
        size: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatsMode {
    Text,
    Json,
}

/// Options every command sees.
pub(crate) struct Globals {
    pub progress: ProgressMode,
    pub temp_dir: Option<std::path::PathBuf>,
}

/// Parses a size: `512MiB`, `2GiB`, `1.5G` (bare K/M/G/T are binary), `2GB` (decimal), `4096`.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?} (expected e.g. 512MiB, 2GiB, 1.5G)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB, K, M, G, KB, MB, GB)"
            ));
        }
    };
    let bytes = n * mult;
    if bytes.is_nan() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[derive(Clone, Copy, ValueEnum)]
enum DistArg {
    Uniform,
    Normal,
    Arange,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            // Not `eprintln!`, which panics (status 101, nothing said) when stderr cannot be
            // written, as on a full disk: the failure's own status is the message left.
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "chunkheap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    interrupt::install();
    // Freed large buffers leave RSS at once, so peak RSS tracks the memory budget.
    chunkheap::memory::return_large_frees_to_system();
    if let Some(n) = cli.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("starting the thread pool")?;
    }
    if let Some(limit) = cli.memory_limit {
        chunkheap::memory::global().set_limit(limit);
    }
    let globals = Globals {
        progress: cli.progress,
        temp_dir: cli.temp_dir.clone(),
    };
    let progress = cli.progress;
    let start = Instant::now();
    let result = match cli.command {
        Command::Info { src } => cmd_info(&src),
        Command::Stats { src, json, ddof } => cmd_stats(&src, json, ddof, progress),
        Command::Gen {
            out,
            shape,
            dtype,
            dist,
            seed,
            range,
            chunks,
            codec,
        } => {
            let spec = GenSpec {
                shape: parse_shape(&shape)?,
                dtype: dtype.parse::<DType>()?,
                dist: parse_dist(dist, range.as_deref())?,
                seed,
                options: WriteOptions {
                    fsync: cli.fsync,
                    ..write_options(chunks.as_deref(), &codec)?
                },
            };
            cmd_gen(&out, &spec, progress)
        }
        Command::Convert {
            src,
            out,
            chunks,
            codec,
        } => cmd_convert(
            &src,
            &out,
            &write_options(chunks.as_deref(), &codec)?,
            progress,
        ),
        Command::Eval {
            expr,
            bindings,
            out,
            json,
            chunks,
            codec,
        } => script_cmd::cmd_eval(
            &expr,
            &bindings,
            out.as_deref(),
            json,
            &WriteOptions {
                fsync: cli.fsync,
                ..write_options(chunks.as_deref(), &codec)?
            },
            &globals,
        ),
        Command::Run { script, args } => script_cmd::cmd_run(&script, &args, &globals),
        Command::Sort {
            src,
            out,
            argsort,
            last_axis,
        } => script_cmd::cmd_sort(&src, &out, argsort, last_axis, &globals),
        Command::Hist {
            src,
            bins,
            range,
            json,
            png,
            svg,
        } => cmd_hist(
            &src,
            bins,
            range.as_deref().map(parse_pair).transpose()?,
            json,
            [png, svg].into_iter().flatten().collect(),
            progress,
        ),
        Command::Quantile {
            src,
            qs,
            skip_nan,
            json,
        } => cmd_quantile(&src, &qs, skip_nan, json, progress),
        Command::Plot { src, out, width } => cmd_plot(&src, &out, width, progress),
        Command::Demo { size } => demo::run(&size, &globals),
    };
    if let Some(mode) = cli.stats {
        print_stats(mode, start.elapsed().as_secs_f64());
    }
    result
}

/// Memory figures at exit, on stderr.
fn print_stats(mode: StatsMode, secs: f64) {
    let b = chunkheap::memory::global();
    let m = chunkheap::memstat::read().unwrap_or_default();
    match mode {
        StatsMode::Json => eprintln!(
            "{{\"elapsed_s\": {secs:.6}, \"budget_limit\": {}, \"budget_used\": {}, \"budget_peak\": {}, \
             \"peak_rss\": {}, \"rss\": {}, \"rss_anon\": {}, \"rss_file\": {}}}",
            b.limit(),
            b.used(),
            b.peak(),
            m.peak_rss,
            m.rss,
            m.rss_anon,
            m.rss_file
        ),
        StatsMode::Text => eprintln!(
            "memory: budget {} (peak reserved {}, in use at exit {}), peak RSS {} (anon {}, file {}), {secs:.3} s",
            human_bytes(b.limit()),
            human_bytes(b.peak()),
            human_bytes(b.used()),
            human_bytes(m.peak_rss),
            human_bytes(m.rss_anon),
            human_bytes(m.rss_file)
        ),
    }
}

fn parse_pair(s: &str) -> Result<(f64, f64)> {
    let (a, b) = s
        .split_once(',')
        .with_context(|| format!("expected two numbers A,B, got {s:?}"))?;
    let num = |t: &str| {
        t.trim()
            .parse::<f64>()
            .with_context(|| format!("bad number {t:?} in {s:?}"))
    };
    Ok((num(a)?, num(b)?))
}

fn parse_dist(d: DistArg, range: Option<&str>) -> Result<Dist> {
    let pair = range.map(parse_pair).transpose()?;
    Ok(match d {
        DistArg::Uniform => Dist::Uniform {
            low: pair.map(|p| p.0),
            high: pair.map(|p| p.1),
        },
        DistArg::Normal => {
            let (mean, std) = pair.unwrap_or((0.0, 1.0));
            Dist::Normal { mean, std }
        }
        DistArg::Arange => {
            if range.is_some() {
                bail!("--range does not apply to --dist arange");
            }
            Dist::Arange
        }
    })
}

/// Parses `--chunks` and `--codec`.
pub(crate) fn write_options(chunks: Option<&str>, codec: &str) -> Result<WriteOptions> {
    let chunks = chunks.map(parse_shape).transpose().context("--chunks")?;
    if let Some(c) = &chunks
        && (c.is_empty() || c.contains(&0))
    {
        bail!("--chunks needs positive sizes, got {c:?}");
    }
    let codec: Codec = codec.parse()?;
    Ok(WriteOptions {
        chunks,
        codec,
        column: None,
        ..Default::default()
    })
}

pub(crate) fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// Adds the source's name to an error that does not already mention it (e.g. a budget error).
pub(crate) fn about(src: &str, e: chunkheap::Error) -> anyhow::Error {
    let (path, _) = formats::split_source_name(src);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if e.to_string().contains(&name) {
        e.into()
    } else {
        anyhow::Error::new(e).context(src.to_string())
    }
}

fn cmd_info(src: &str) -> Result<()> {
    let s = formats::open(src)?;
    let i = s.info();
    println!("source      {}", i.name);
    println!("format      {}", i.format.name());
    println!("dtype       {}", i.dtype);
    println!("shape       {}", shape_str(&i.shape));
    println!("elements    {}", i.numel());
    println!("chunks      {}", i.layout.describe());
    println!("bytes       {} ({})", i.nbytes(), human_bytes(i.nbytes()));
    println!(
        "stored      {} ({})",
        i.stored_bytes,
        human_bytes(i.stored_bytes)
    );
    println!(
        "byte order  {}",
        if i.dtype.size() == 1 {
            "n/a (1-byte elements)"
        } else {
            i.byte_order.name()
        }
    );
    for (k, v) in &i.details {
        println!("{k:<11} {v}");
    }
    Ok(())
}

fn cmd_stats(src: &str, json: bool, ddof: u64, mode: ProgressMode) -> Result<()> {
    let s = formats::open(src)?;
    let nbytes = s.info().nbytes();
    let bar = Reporter::new(mode, nbytes, "stats");
    let t = Instant::now();
    let st = reduce::stats_with_progress(s.as_ref(), &|n| bar.add(n)).map_err(|e| about(src, e))?;
    let secs = t.elapsed().as_secs_f64();
    bar.finish();
    if json {
        println!("{}", st.to_json(ddof));
        return Ok(());
    }
    let shape = &s.info().shape;
    let at = |i: Option<u64>| match i {
        Some(i) => format!("  at flat index {i}{}", multi_index(i, shape)),
        None => String::new(),
    };
    let show = |v: Option<String>| v.unwrap_or_else(|| "n/a".to_string());
    println!(
        "source     {} ({}, {}, shape {})",
        s.info().name,
        s.info().format.name(),
        st.dtype,
        shape_str(shape)
    );
    println!("count      {}", st.count);
    println!("nan_count  {}", st.nan_count);
    println!("sum        {}", st.sum);
    println!("mean       {}", show(st.mean().map(reduce::fmt_f64)));
    println!(
        "std        {}  (ddof={ddof})",
        show(st.std(ddof).map(reduce::fmt_f64))
    );
    println!(
        "var        {}  (ddof={ddof})",
        show(st.var(ddof).map(reduce::fmt_f64))
    );
    println!(
        "min        {}{}",
        show(st.min.map(|v| v.to_string())),
        at(st.argmin)
    );
    println!(
        "max        {}{}",
        show(st.max.map(|v| v.to_string())),
        at(st.argmax)
    );
    eprintln!("{}", throughput_line(nbytes, secs));
    Ok(())
}

fn multi_index(flat: u64, shape: &[u64]) -> String {
    if shape.len() < 2 {
        return String::new();
    }
    let mut rem = flat;
    let mut idx = vec![0u64; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = rem % shape[ax];
        rem /= shape[ax];
    }
    format!(" {}", shape_str(&idx))
}

pub(crate) fn throughput_line(bytes: u64, secs: f64) -> String {
    format!(
        "processed {} in {:.3} s ({:.2} GB/s)",
        human_bytes(bytes),
        secs,
        bytes as f64 / secs.max(1e-9) / 1e9
    )
}

pub(crate) fn check_not_input(src: &str, out: &str) -> Result<()> {
    let (sp, _) = formats::split_source_name(src);
    let op = Path::new(out.rsplit_once('#').map_or(out, |(p, _)| p));
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(&sp), std::fs::canonicalize(op))
        && a == b
    {
        bail!("{out}: output would replace the input {src}; choose another path");
    }
    Ok(())
}

fn cmd_gen(out: &str, spec: &GenSpec, mode: ProgressMode) -> Result<()> {
    let nbytes = chunkheap::shape::checked_numel(&spec.shape)? * spec.dtype.size() as u64;
    let bar = Reporter::new(mode, nbytes, "gen");
    let t = Instant::now();
    chunkheap::generate::generate_with_progress(out, spec, &|n| bar.add(n))?;
    bar.finish();
    eprintln!(
        "wrote {out}: {} {}, {}",
        spec.dtype,
        shape_str(&spec.shape),
        throughput_line(nbytes, t.elapsed().as_secs_f64())
    );
    Ok(())
}

fn cmd_convert(src: &str, out: &str, options: &WriteOptions, mode: ProgressMode) -> Result<()> {
    check_not_input(src, out)?;
    let s = formats::open(src)?;
    let i = s.info();
    let writer = formats::create(out, i.dtype, &i.shape, options)?;
    let bar = Reporter::new(mode, i.nbytes(), "convert");
    let t = Instant::now();
    pipeline::copy(s.as_ref(), writer, &|n| bar.add(n)).map_err(|e| about(src, e))?;
    bar.finish();
    eprintln!(
        "wrote {out}: {} {}, {}",
        i.dtype,
        shape_str(&i.shape),
        throughput_line(i.nbytes(), t.elapsed().as_secs_f64())
    );
    Ok(())
}

fn cmd_hist(
    src: &str,
    bins: usize,
    range: Option<(f64, f64)>,
    json: bool,
    plots: Vec<String>,
    mode: ProgressMode,
) -> Result<()> {
    if bins == 0 {
        bail!("--bins must be at least 1");
    }
    let s = formats::open(src)?;
    let nbytes = s.info().nbytes();
    let passes = if range.is_some() { 1 } else { 2 };
    let bar = Reporter::new(mode, nbytes * passes, "hist");
    let t = Instant::now();
    let h = chunkheap::kernels::histogram::histogram(s.as_ref(), bins, range, &|n| bar.add(n))
        .map_err(|e| about(src, e))?;
    bar.finish();
    let secs = t.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    if json {
        let edges: Vec<String> = h.edges.iter().map(|&e| reduce::fmt_f64(e)).collect();
        let counts: Vec<String> = h.counts.iter().map(|c| c.to_string()).collect();
        writeln!(
            out,
            "{{\"counts\": [{}], \"edges\": [{}]}}",
            counts.join(", "),
            edges.join(", ")
        )?;
    } else {
        let peak = h.counts.iter().copied().max().unwrap_or(0).max(1);
        writeln!(out, "{:>24} {:>24} {:>14}", "lo", "hi", "count")?;
        for (i, &c) in h.counts.iter().enumerate() {
            let bar = "#".repeat((c as f64 / peak as f64 * 30.0).round() as usize);
            writeln!(
                out,
                "{:>24} {:>24} {:>14}  {bar}",
                reduce::fmt_f64(h.edges[i]),
                reduce::fmt_f64(h.edges[i + 1]),
                c
            )?;
        }
    }
    for p in plots {
        plot_histogram(&p, &h, src)?;
        eprintln!("wrote {p}");
    }
    eprintln!("{}", throughput_line(nbytes * passes, secs));
    Ok(())
}

fn cmd_quantile(
    src: &str,
    qs: &[f64],
    skip_nan: bool,
    json: bool,
    mode: ProgressMode,
) -> Result<()> {
    use chunkheap::kernels::quantile::{QuantileOptions, quantile};
    let s = formats::open(src)?;
    let nbytes = s.info().nbytes();
    let bar = Reporter::new(mode, nbytes * 3, "quantile");
    let t = Instant::now();
    let opts = QuantileOptions {
        skip_nan,
        array_q: true,
        ..Default::default()
    };
    let r = quantile(s.as_ref(), qs, &opts, &|n| bar.add(n)).map_err(|e| about(src, e))?;
    bar.finish();
    let secs = t.elapsed().as_secs_f64();
    let show = |v: f64| {
        if r.dtype == DType::F32 {
            reduce::fmt_f32(v as f32)
        } else {
            reduce::fmt_f64(v)
        }
    };
    if json {
        let q: Vec<String> = qs.iter().map(|&q| reduce::fmt_f64(q)).collect();
        let v: Vec<String> = r
            .values
            .iter()
            .map(|&v| reduce::Scalar::F64(v).to_json())
            .collect();
        println!(
            "{{\"quantiles\": [{}], \"values\": [{}], \"passes\": {}}}",
            q.join(", "),
            v.join(", "),
            r.passes
        );
    } else {
        for (q, v) in qs.iter().zip(&r.values) {
            println!("{:<8} {}", reduce::fmt_f64(*q), show(*v));
        }
    }
    let sample = if r.sampled > 0 {
        format!(" after a sample of {} values", r.sampled)
    } else {
        String::new()
    };
    eprintln!(
        "exact, {} pass(es) over the data{sample}; {}",
        r.passes,
        throughput_line(nbytes * u64::from(r.passes), secs)
    );
    Ok(())
}

fn plot_histogram(
    path: &str,
    h: &chunkheap::kernels::histogram::Histogram,
    src: &str,
) -> Result<()> {
    let total: u64 = h.counts.iter().sum();
    plot::histogram(
        Path::new(path),
        &h.counts,
        &h.edges,
        &format!("{src}: {} bins, {total} values", h.counts.len()),
    )
}

/// `chunkheap plot SRC -o FILE`: min/max envelope of a 1-D series, one column per bucket of
/// consecutive elements, computed in one streaming pass.
fn cmd_plot(src: &str, out: &str, width: u32, mode: ProgressMode) -> Result<()> {
    use rayon::prelude::*;
    let s = formats::open(src)?;
    let info = s.info().clone();
    let n = info.numel();
    if n == 0 {
        bail!("{src}: nothing to plot (the array is empty)");
    }
    let cols = u64::from(width).clamp(1, n);
    let step = n.div_ceil(cols);
    let cols = n.div_ceil(step) as usize;
    let bar = Reporter::new(mode, info.nbytes(), "plot");
    let shape = info.shape.clone();
    let layout = info.layout.clone();
    // Per chunk: (column, min, max) of the columns its elements fall in (flat C order).
    let parts: Vec<Vec<(usize, f64, f64)>> = (0..layout.num_chunks())
        .into_par_iter()
        .map(|i| -> chunkheap::Result<Vec<(usize, f64, f64)>> {
            let c = s.read_chunk(i)?;
            let vals: Vec<f64> = chunkheap::with_dtype!(info.dtype, T => {
                c.as_slice::<T>().iter().map(|&v| chunkheap::Element::to_f64(v)).collect()
            });
            let mut acc: std::collections::BTreeMap<usize, (f64, f64)> = Default::default();
            for (k, v) in vals.iter().enumerate() {
                if v.is_nan() {
                    continue;
                }
                let flat = c.region.global_flat_index(k as u64, &shape);
                let e = acc
                    .entry((flat / step) as usize)
                    .or_insert((f64::INFINITY, f64::NEG_INFINITY));
                e.0 = e.0.min(*v);
                e.1 = e.1.max(*v);
            }
            bar.add(c.data.len() as u64);
            Ok(acc.into_iter().map(|(k, (a, b))| (k, a, b)).collect())
        })
        .collect::<chunkheap::Result<_>>()
        .map_err(|e| about(src, e))?;
    bar.finish();
    let mut mins = vec![f64::NAN; cols];
    let mut maxs = vec![f64::NAN; cols];
    for (k, a, b) in parts.into_iter().flatten() {
        mins[k] = if mins[k].is_nan() { a } else { mins[k].min(a) };
        maxs[k] = if maxs[k].is_nan() { b } else { maxs[k].max(b) };
    }
    plot::envelope(
        Path::new(out),
        &mins,
        &maxs,
        0,
        step as f64,
        &format!("{src}: {n} values, min/max per {step}"),
    )?;
    eprintln!("wrote {out}");
    Ok(())
}
