//! Plots for the command line: a histogram (bars over bin edges) and a min/max envelope of a long
//! 1-D series, written as PNG or SVG (chosen by the output's extension).
//!
//! Text is drawn with an embedded font (DejaVu Sans, `assets/DejaVuSans.ttf`, see
//! `assets/DejaVuSans-LICENSE.txt`) through plotters' pure-Rust `ab_glyph` renderer, so plotting
//! needs no fontconfig, freetype or any other system library. Outputs go through
//! [`AtomicFile`]: rendered in memory, written to a temporary sibling and renamed into place, so a
//! failure (or Ctrl-C) leaves nothing behind.
//!
//! The inputs are already-reduced summaries (a few thousand bins or columns at most), so the
//! drawing itself holds nothing that grows with the array: a PNG canvas is `width * height * 3`
//! bytes, an SVG a few hundred bytes per bar or point.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail, ensure};
use chunkheap::storage::atomic::AtomicFile;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Default canvas size in pixels (width, height).
pub const DEFAULT_SIZE: (u32, u32) = (1024, 640);

/// The embedded font; registered with plotters once, under the family `sans-serif`.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Bars (tab:blue), their outlines, the envelope's lines and band, the grid.
const BLUE: RGBColor = RGBColor(31, 119, 180);
const DARK_BLUE: RGBColor = RGBColor(18, 72, 110);
const GRID_BOLD: RGBColor = RGBColor(215, 215, 215);
const GRID_LIGHT: RGBColor = RGBColor(238, 238, 238);
const AXIS: RGBColor = RGBColor(60, 60, 60);

/// Output formats, from the path's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Png,
    Svg,
}

fn kind_of(path: &Path) -> Result<Kind> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(Kind::Png),
        Some("svg") => Ok(Kind::Svg),
        Some(e) => bail!(
            "{}: unknown plot format '.{e}' (use .png or .svg)",
            path.display()
        ),
        None => bail!(
            "{}: no file extension to choose the plot format (use .png or .svg)",
            path.display()
        ),
    }
}

fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    ensure!(ok, "the embedded plot font could not be loaded");
    Ok(())
}

/// What to draw, validated.
enum Chart<'a> {
    Histogram {
        counts: &'a [u64],
        edges: &'a [f64],
        title: &'a str,
    },
    Envelope {
        mins: &'a [f64],
        maxs: &'a [f64],
        x0: u64,
        step: f64,
        title: &'a str,
    },
}

/// Draws a histogram: one bar per bin, `counts[i]` tall over `edges[i]..edges[i + 1]`
/// (NumPy's `np.histogram` convention: `edges.len() == counts.len() + 1`, non-decreasing).
/// Writes PNG or SVG by `path`'s extension, at [`DEFAULT_SIZE`].
pub fn histogram(path: &Path, counts: &[u64], edges: &[f64], title: &str) -> Result<()> {
    histogram_sized(path, counts, edges, title, DEFAULT_SIZE)
}

/// [`histogram`] at a given canvas size in pixels.
pub fn histogram_sized(
    path: &Path,
    counts: &[u64],
    edges: &[f64],
    title: &str,
    size: (u32, u32),
) -> Result<()> {
    check_histogram(counts, edges).with_context(|| format!("plotting {}", path.display()))?;
    let chart = Chart::Histogram {
        counts,
        edges,
        title,
    };
    render(path, &chart, size)
}

/// Draws the min/max envelope of a long 1-D series already reduced to columns: column `i` covers
/// elements from `x0 + i * step` on, and `mins[i]`/`maxs[i]` are their extremes. A filled band
/// runs between the two, with both drawn as lines; the x axis is the element index. Non-finite
/// columns (all-NaN buckets) are left as gaps. Writes PNG or SVG by `path`'s extension, at
/// [`DEFAULT_SIZE`].
pub fn envelope(
    path: &Path,
    mins: &[f64],
    maxs: &[f64],
    x0: u64,
    step: f64,
    title: &str,
) -> Result<()> {
    envelope_sized(path, mins, maxs, x0, step, title, DEFAULT_SIZE)
}

/// [`envelope`] at a given canvas size in pixels.
pub fn envelope_sized(
    path: &Path,
    mins: &[f64],
    maxs: &[f64],
    x0: u64,
    step: f64,
    title: &str,
    size: (u32, u32),
) -> Result<()> {
    check_envelope(mins, maxs, step).with_context(|| format!("plotting {}", path.display()))?;
    let chart = Chart::Envelope {
        mins,
        maxs,
        x0,
        step,
        title,
    };
    render(path, &chart, size)
}

fn check_histogram(counts: &[u64], edges: &[f64]) -> Result<()> {
    ensure!(!counts.is_empty(), "a histogram needs at least one bin");
    ensure!(
        edges.len() == counts.len() + 1,
        "{} bins need {} edges, got {}",
        counts.len(),
        counts.len() + 1,
        edges.len()
    );
    if let Some(i) = edges.iter().position(|e| !e.is_finite()) {
        bail!("bin edge {i} is {}, not a finite number", edges[i]);
    }
    if let Some(i) = edges.windows(2).position(|w| w[1] < w[0]) {
        bail!(
            "bin edges must not decrease, but edge {} is {} and edge {} is {}",
            i,
            edges[i],
            i + 1,
            edges[i + 1]
        );
    }
    Ok(())
}

fn check_envelope(mins: &[f64], maxs: &[f64], step: f64) -> Result<()> {
    ensure!(!mins.is_empty(), "an envelope needs at least one column");
    ensure!(
        mins.len() == maxs.len(),
        "{} minimums but {} maximums",
        mins.len(),
        maxs.len()
    );
    ensure!(
        step.is_finite() && step > 0.0,
        "elements per column must be a positive number, got {step}"
    );
    for (i, (&lo, &hi)) in mins.iter().zip(maxs).enumerate() {
        if lo > hi {
            bail!("column {i}: minimum {lo} is greater than maximum {hi}");
        }
    }
    Ok(())
}

/// Renders `chart` in memory and writes it atomically to `path`.
fn render(path: &Path, chart: &Chart, (w, h): (u32, u32)) -> Result<()> {
    let kind = kind_of(path)?;
    ensure!(
        (64..=16384).contains(&w) && (64..=16384).contains(&h),
        "{}: plot size {w}x{h} is outside 64..=16384 pixels a side",
        path.display()
    );
    register_font()?;
    let what = || format!("drawing {}", path.display());
    let bytes = match kind {
        Kind::Png => {
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
                draw(&root, chart, (w, h))
                    .map_err(|e| anyhow!(e))
                    .with_context(what)?;
                root.present()
                    .map_err(|e| anyhow!("{e}"))
                    .with_context(what)?;
            }
            encode_png(&rgb, (w, h)).with_context(what)?
        }
        Kind::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                draw(&root, chart, (w, h))
                    .map_err(|e| anyhow!(e))
                    .with_context(what)?;
                root.present()
                    .map_err(|e| anyhow!("{e}"))
                    .with_context(what)?;
            }
            svg.into_bytes()
        }
    };
    let mut out = AtomicFile::create(path)?;
    out.write_all(&bytes)?;
    out.commit()?;
    Ok(())
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Tick labels that stay short over any range: plain decimals for moderate magnitudes, `1.5e9` /
/// `2e-4` beyond, with only as many digits as the axis resolution calls for.
struct Ticks {
    /// About a fifth of the finest tick spacing plotters picks for the axis.
    resolution: f64,
}

impl Ticks {
    fn for_range(lo: f64, hi: f64) -> Ticks {
        let width = (hi - lo).abs();
        let resolution = if width > 0.0 && width.is_finite() {
            width / 50.0
        } else {
            lo.abs().max(1.0) / 50.0
        };
        Ticks { resolution }
    }

    fn format(&self, v: f64) -> String {
        if !v.is_finite() {
            return v.to_string();
        }
        if v == 0.0 || v.abs() < self.resolution * 1e-6 {
            return "0".to_string();
        }
        let mag = v.abs().log10().floor() as i32;
        let res_mag = self.resolution.log10().floor() as i32;
        if !(-3..6).contains(&mag) {
            let digits = (mag - res_mag).clamp(0, 10) as usize;
            let s = format!("{v:.digits$e}");
            match s.split_once('e') {
                Some((mant, exp)) => format!("{}e{exp}", trim_zeros(mant)),
                None => s,
            }
        } else {
            let decimals = (-res_mag).clamp(0, 12) as usize;
            trim_zeros(&format!("{v:.decimals$}")).to_string()
        }
    }
}

/// `"1.500"` → `"1.5"`, `"2.000"` → `"2"`, `"10"` → `"10"`.
fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

type DrawResult<E> = std::result::Result<(), DrawingAreaErrorKind<E>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
    size: (u32, u32),
) -> std::result::Result<(), String> {
    let r = match *chart {
        Chart::Histogram {
            counts,
            edges,
            title,
        } => draw_histogram(root, counts, edges, title, size),
        Chart::Envelope {
            mins,
            maxs,
            x0,
            step,
            title,
        } => draw_envelope(root, mins, maxs, x0, step, title),
    };
    r.map_err(|e| e.to_string())
}

fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&AXIS)
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    counts: &[u64],
    edges: &[f64],
    title: &str,
    (w, _h): (u32, u32),
) -> DrawResult<DB::ErrorType> {
    root.fill(&WHITE)?;
    let (mut lo, mut hi) = (edges[0], edges[edges.len() - 1]);
    if hi <= lo {
        // One value (np.histogram widens such a range itself; be safe for hand-made edges).
        let pad = lo.abs().max(1.0) * 0.5;
        (lo, hi) = (lo - pad, hi + pad);
    }
    let max = counts.iter().copied().max().unwrap_or(0);
    let top = max.saturating_add(max / 20).max(max.saturating_add(1));
    let xt = Ticks::for_range(lo, hi);
    let yt = Ticks::for_range(0.0, top as f64);

    let mut chart = ChartBuilder::on(root)
        .caption(title, font(28.0))
        .margin(18)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(lo..hi, 0u64..top)?;
    chart
        .configure_mesh()
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .max_light_lines(4)
        .axis_style(AXIS)
        .x_labels(10)
        .y_labels(8)
        .x_label_formatter(&|v| xt.format(*v))
        .y_label_formatter(&|v| yt.format(*v as f64))
        .label_style(font(16.0))
        .axis_desc_style(font(17.0))
        .x_desc("value")
        .y_desc("count")
        .draw()?;

    // Outline each bar only while bars are several pixels wide; thinner ones would turn dark.
    let outlined = (counts.len() as u64) * 5 < u64::from(w);
    chart.draw_series(
        counts
            .iter()
            .zip(edges.windows(2))
            .filter(|(c, _)| **c > 0)
            .map(|(&c, e)| Rectangle::new([(e[0], 0), (e[1], c)], BLUE.mix(0.85).filled())),
    )?;
    if outlined {
        chart.draw_series(
            counts
                .iter()
                .zip(edges.windows(2))
                .filter(|(c, _)| **c > 0)
                .map(|(&c, e)| Rectangle::new([(e[0], 0), (e[1], c)], DARK_BLUE.stroke_width(1))),
        )?;
    }
    Ok(())
}

fn draw_envelope<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    mins: &[f64],
    maxs: &[f64],
    x0: u64,
    step: f64,
    title: &str,
) -> DrawResult<DB::ErrorType> {
    root.fill(&WHITE)?;
    let n = mins.len();
    // Column i starts at element x0 + i*step; the data spans columns 0..n-1 edge to edge.
    let x_of = |i: usize| x0.saturating_add((i as f64 * step).round() as u64);
    let x_end = x_of(n - 1).max(x0.saturating_add(step.round().max(1.0) as u64));

    let finite = |v: f64| v.is_finite().then_some(v);
    let lo = mins
        .iter()
        .copied()
        .filter_map(finite)
        .fold(f64::INFINITY, f64::min);
    let hi = maxs
        .iter()
        .copied()
        .filter_map(finite)
        .fold(f64::NEG_INFINITY, f64::max);
    let (y_lo, y_hi) = if lo > hi {
        (-1.0, 1.0) // nothing finite: empty axes
    } else if lo == hi {
        let pad = lo.abs().max(1.0) * 0.5;
        (lo - pad, hi + pad)
    } else {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    };
    let xt = Ticks::for_range(x0 as f64, x_end as f64);
    let yt = Ticks::for_range(y_lo, y_hi);
    let x_desc = if step > 1.0 {
        format!(
            "element index (each column: min and max of {} elements)",
            Ticks::for_range(0.0, step * 10.0).format(step)
        )
    } else {
        "element index".to_string()
    };

    let mut chart = ChartBuilder::on(root)
        .caption(title, font(28.0))
        .margin(18)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(x0..x_end, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .max_light_lines(4)
        .axis_style(AXIS)
        .x_labels(10)
        .y_labels(8)
        .x_label_formatter(&|v| xt.format(*v as f64))
        .y_label_formatter(&|v| yt.format(*v))
        .label_style(font(16.0))
        .axis_desc_style(font(17.0))
        .x_desc(x_desc)
        .y_desc("value")
        .draw()?;

    // Runs of columns with finite extremes; NaN/inf columns are gaps.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for i in 0..=n {
        let ok = i < n && mins[i].is_finite() && maxs[i].is_finite();
        match (ok, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    let band = BLUE.mix(0.3).filled();
    for &(s, e) in &runs {
        if e - s == 1 {
            // A lone column: a vertical bar from min to max.
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x_of(s), mins[s]), (x_of(s), maxs[s])],
                BLUE.stroke_width(2),
            )))?;
            continue;
        }
        let mut outline: Vec<(u64, f64)> = (s..e).map(|i| (x_of(i), maxs[i])).collect();
        outline.extend((s..e).rev().map(|i| (x_of(i), mins[i])));
        chart.draw_series(std::iter::once(Polygon::new(outline, band)))?;
        for line in [maxs, mins] {
            chart.draw_series(std::iter::once(PathElement::new(
                (s..e).map(|i| (x_of(i), line[i])).collect::<Vec<_>>(),
                BLUE.stroke_width(1),
            )))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn decode_png(path: &Path) -> ((u32, u32), Vec<u8>) {
        let file = std::fs::File::open(path).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        ((info.width, info.height), buf)
    }

    /// The contents of the SVG's `<text>` elements, trimmed.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    fn colours(rgb: &[u8]) -> HashSet<[u8; 3]> {
        rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
    }

    /// Share of pixels within `tol` of `c` in each channel.
    fn share_near(rgb: &[u8], c: [u8; 3], tol: u8) -> f64 {
        let n = rgb.len() / 3;
        let hits = rgb
            .chunks_exact(3)
            .filter(|p| (0..3).all(|k| p[k].abs_diff(c[k]) <= tol))
            .count();
        hits as f64 / n as f64
    }

    fn normal_hist() -> (Vec<u64>, Vec<f64>) {
        let bins = 40;
        let edges: Vec<f64> = (0..=bins)
            .map(|i| -4e-3 + 8e-3 * i as f64 / bins as f64)
            .collect();
        let counts = (0..bins)
            .map(|i| {
                let mid = (edges[i] + edges[i + 1]) / 2.0 / 1e-3;
                (2.5e9 * (-mid * mid / 2.0).exp()) as u64
            })
            .collect();
        (counts, edges)
    }

    fn wave() -> (Vec<f64>, Vec<f64>) {
        let n = 900;
        let mut mins = Vec::with_capacity(n);
        let mut maxs = Vec::with_capacity(n);
        for i in 0..n {
            let t = i as f64 / 60.0;
            let c = t.sin() * 3.0;
            let spread = 0.5 + 0.4 * (t * 0.37).cos();
            if (400..420).contains(&i) {
                mins.push(f64::NAN);
                maxs.push(f64::NAN);
            } else {
                mins.push(c - spread);
                maxs.push(c + spread);
            }
        }
        (mins, maxs)
    }

    #[test]
    fn histogram_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let (counts, edges) = normal_hist();
        let png_path = dir.path().join("h.png");
        histogram(&png_path, &counts, &edges, "Normal <& histogram>").unwrap();
        let (size, rgb) = decode_png(&png_path);
        assert_eq!(size, DEFAULT_SIZE);
        assert!(colours(&rgb).len() >= 8, "{} colours", colours(&rgb).len());
        // Mostly white background, but a real share of bar colour.
        let white = share_near(&rgb, [255, 255, 255], 0);
        let bars = share_near(&rgb, [31, 119, 180], 40);
        assert!(white > 0.4 && white < 0.97, "white {white}");
        assert!(bars > 0.05, "bars {bars}");

        let svg_path = dir.path().join("h.SVG");
        histogram(&svg_path, &counts, &edges, "Normal <& histogram>").unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts = svg_texts(&svg);
        assert_eq!(texts[0], "Normal &lt;&amp; histogram&gt;");
        assert!(svg.matches("<rect").count() >= counts.len());
        // Compact tick labels: the edges are ±4e-3 and the counts reach 2.5e9.
        for label in ["value", "count", "0", "-0.002", "0.002", "1e9", "2e9"] {
            assert!(texts.iter().any(|t| t == label), "{label} not in {texts:?}");
        }
        assert!(texts.iter().all(|t| t.len() <= 30), "{texts:?}");
        // Nothing left beside the outputs.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["h.SVG", "h.png"]);
    }

    #[test]
    fn envelope_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let (mins, maxs) = wave();
        let png_path = dir.path().join("e.png");
        envelope_sized(&png_path, &mins, &maxs, 0, 1.2e6, "Envelope", (800, 500)).unwrap();
        let (size, rgb) = decode_png(&png_path);
        assert_eq!(size, (800, 500));
        assert!(colours(&rgb).len() >= 8);
        let band = share_near(&rgb, [188, 214, 232], 12); // BLUE at 30% over white
        assert!(band > 0.03, "band {band}");

        let svg_path = dir.path().join("e.svg");
        envelope(
            &svg_path,
            &mins,
            &maxs,
            5_000_000_000,
            1.2e6,
            "Envelope of x",
        )
        .unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let texts = svg_texts(&svg);
        assert_eq!(texts[0], "Envelope of x");
        // Two runs (the NaN gap splits the series): two bands.
        assert_eq!(svg.matches("<polygon").count(), 2);
        let x_desc = "element index (each column: min and max of 1.2e6 elements)";
        // x ticks over 5e9..6.08e9 in short scientific form, y ticks over about -3.5..3.5.
        for label in [x_desc, "value", "5e9", "5.4e9", "6e9", "-3", "0", "3"] {
            assert!(texts.iter().any(|t| t == label), "{label} not in {texts:?}");
        }
    }

    #[test]
    fn small_and_degenerate_inputs_render() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("one.png");
        histogram(&p, &[0], &[3.0, 3.0], "empty bin").unwrap();
        histogram(&p, &[7, 0, 1], &[0.0, 1.0, 1.0, 2.0], "equal edges").unwrap();
        envelope(&p, &[1.0], &[2.0], 10, 1.0, "one column").unwrap();
        envelope(&p, &[f64::NAN; 3], &[f64::NAN; 3], 0, 1.0, "all NaN").unwrap();
        envelope(&p, &[5.0, 5.0], &[5.0, 5.0], 0, 1.0, "flat").unwrap();
        let ((w, h), _) = decode_png(&p);
        assert_eq!((w, h), DEFAULT_SIZE);
    }

    #[test]
    fn bad_inputs_are_clear_errors_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = |r: Result<()>| format!("{:#}", r.unwrap_err());
        let p = dir.path().join("x.jpg");
        let e = err(histogram(&p, &[1], &[0.0, 1.0], "t"));
        assert!(e.contains("x.jpg") && e.contains("use .png or .svg"), "{e}");
        let e = err(histogram(&dir.path().join("noext"), &[1], &[0.0, 1.0], "t"));
        assert!(e.contains("noext") && e.contains("use .png or .svg"), "{e}");
        let p = dir.path().join("x.png");
        let e = err(histogram(&p, &[1, 2], &[0.0, 1.0], "t"));
        assert!(
            e.contains("x.png") && e.contains("2 bins need 3 edges, got 2"),
            "{e}"
        );
        let e = err(histogram(&p, &[], &[0.0], "t"));
        assert!(e.contains("at least one bin"), "{e}");
        let e = err(histogram(&p, &[1, 1], &[0.0, 2.0, 1.0], "t"));
        assert!(
            e.contains("must not decrease") && e.contains("edge 1 is 2"),
            "{e}"
        );
        let e = err(histogram(&p, &[1], &[0.0, f64::INFINITY], "t"));
        assert!(e.contains("bin edge 1 is inf"), "{e}");
        let e = err(envelope(&p, &[1.0], &[1.0, 2.0], 0, 1.0, "t"));
        assert!(e.contains("1 minimums but 2 maximums"), "{e}");
        let e = err(envelope(&p, &[3.0], &[2.0], 0, 1.0, "t"));
        assert!(
            e.contains("column 0: minimum 3 is greater than maximum 2"),
            "{e}"
        );
        let e = err(envelope(&p, &[1.0], &[2.0], 0, 0.0, "t"));
        assert!(e.contains("positive"), "{e}");
        let e = err(envelope(&p, &[], &[], 0, 1.0, "t"));
        assert!(e.contains("at least one column"), "{e}");
        let e = err(histogram_sized(&p, &[1], &[0.0, 1.0], "t", (10, 10)));
        assert!(e.contains("10x10"), "{e}");
        // A directory that does not exist: the error names it, nothing is created.
        let missing = dir.path().join("nope").join("h.png");
        let e = err(histogram(&missing, &[1], &[0.0, 1.0], "t"));
        assert!(e.contains("nope"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn tick_labels_are_compact() {
        let t = Ticks::for_range(0.0, 1.0);
        assert_eq!(t.format(0.30000000000000004), "0.3");
        assert_eq!(t.format(1.0), "1");
        assert_eq!(t.format(0.0), "0");
        assert_eq!(t.format(-0.0), "0");
        let t = Ticks::for_range(0.0, 4e9);
        assert_eq!(t.format(1e9), "1e9");
        assert_eq!(t.format(2.5e9), "2.5e9");
        let t = Ticks::for_range(-4e-3, 4e-3);
        assert_eq!(t.format(-2e-3), "-0.002");
        assert_eq!(t.format(1e-3), "0.001");
        assert_eq!(t.format(1e-18), "0");
        let t = Ticks::for_range(0.0, 1e-6);
        assert_eq!(t.format(2e-7), "2e-7");
        assert_eq!(t.format(2.5e-7), "2.5e-7");
        let t = Ticks::for_range(0.0, 1000.0);
        assert_eq!(t.format(250.0), "250");
        assert_eq!(t.format(12.7), "13"); // finer than the axis needs
        // Narrow windows far from zero keep the digits that differ.
        let t = Ticks::for_range(1e9, 1e9 + 100.0);
        assert_eq!(t.format(1e9 + 20.0), "1.00000002e9");
        let t = Ticks::for_range(0.0, 200000.0);
        assert_eq!(t.format(123456.0), "123456");
    }
}
