//! The binary on a terminal: the progress bar on stderr when it is a terminal (a pty made by
//! util-linux's `script`), never on pipes unless asked, never mixed into stdout; Ctrl-C (SIGINT)
//! stops a job at once with exit code 130 and leaves no temporary or partial file behind.
//!
//! The 4 GiB variant is ignored by default; run it with
//!
//! ```sh
//! cargo test --release --test it terminal -- --ignored --nocapture
//! ```
//!
//! Its data goes to `CHUNKHEAP_SCALE_DIR` (default: the system temp dir) and is removed afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use chunkheap::expr::{Session, SessionConfig};
use chunkheap::memory::human_bytes;

use crate::util::run_ok;

const BIN: &str = env!("CARGO_BIN_EXE_chunkheap");

/// Quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

/// Runs the binary with `args` under `script` (util-linux), so its stdin, stdout and stderr are a
/// pseudo-terminal, except that stdout is redirected to `stdout_file`. Returns the exit status and
/// the terminal transcript (everything written to the pty, i.e. stderr).
fn run_in_pty(args: &[String], stdout_file: &Path) -> (ExitStatus, String) {
    let mut cmd = format!("stty cols 160 rows 40 2>/dev/null; exec {}", sh_quote(BIN));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&sh_quote(a));
    }
    cmd.push_str(" 1>");
    cmd.push_str(&sh_quote(&path_str(stdout_file)));
    let out = match Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the terminal tests need `script` to run the binary on a pseudo-terminal: install \
             util-linux (Debian/Ubuntu: the bsdutils package)"
        ),
        Err(e) => panic!("running script: {e}"),
    };
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "script complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, transcript)
}

/// The frames the bar drew: the transcript split at carriage returns, escape sequences removed.
fn frames(transcript: &str) -> Vec<String> {
    transcript
        .split(['\r', '\n'])
        .map(|f| {
            let mut s = String::new();
            let mut chars = f.chars();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    // CSI: ESC [ params final-byte
                    if chars.next() == Some('[') {
                        for d in chars.by_ref() {
                            if ('@'..='~').contains(&d) {
                                break;
                            }
                        }
                    }
                } else {
                    s.push(c);
                }
            }
            s.trim().to_string()
        })
        .filter(|f| !f.is_empty())
        .collect()
}

/// Checks that the transcript holds a frame of the `label` bar showing the pieces the CLI issue
/// asks for: bytes processed of the total, throughput, ETA and the memory in use against
/// `budget`. Returns that frame.
fn complete_frame(transcript: &str, label: &str, total: &str, budget: &str) -> String {
    let fr = frames(transcript);
    let want_mem = format!("/{budget}");
    let good = fr.iter().find(|f| {
        let Some(rest) = f.strip_prefix(&format!("{label} [")) else {
            return false;
        };
        let Some((_, after)) = rest.split_once("] ") else {
            return false;
        };
        // "<done>/<total> <rate>/s ETA <eta> mem <used>/<budget>"
        let done = after.split('/').next().unwrap_or("");
        done != "0 B"
            && after.contains(&format!("/{total} "))
            && after.contains("iB/s ")
            && after.contains(" ETA ")
            && after.contains(" mem ")
            && after.trim_end().ends_with(&want_mem)
    });
    match good {
        Some(f) => f.clone(),
        None => panic!(
            "no frame of the {label:?} bar with bytes/{total}, throughput, ETA and mem .../{budget} \
             in the terminal transcript; frames:\n{}",
            fr.join("\n")
        ),
    }
}

fn assert_no_bar(stderr: &str) {
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b') && !stderr.contains("ETA"),
        "a progress bar was drawn on a non-terminal stderr: {stderr:?}"
    );
}

/// `sum(a*2+b)` of `a` bound to `file` twice, computed by the library, as the CLI prints it.
fn expected_sum(file: &str) -> f64 {
    let s = Session::new(SessionConfig::default()).unwrap();
    let a = s.open(file).unwrap();
    let e = ((&a * 2.0).unwrap() + &a).unwrap();
    e.sum().unwrap().to_f64()
}

/// The pty checks shared by the small and the 4 GiB test: `eval 'sum(a*2+b)'` with a progress
/// bar on the terminal, the result alone on stdout; then the same on pipes without a bar. The
/// bar's total is the bytes of the evaluated expression (`result_bytes`: the elements of `a*2+b`
/// times 8), not of both inputs.
fn eval_on_a_terminal(file: &str, result_bytes: u64, budget: u64, threads: &str) {
    let dir = tempfile::tempdir().unwrap();
    let stdout_file = dir.path().join("stdout.txt");
    let budget_arg = format!("{budget}");
    let args: Vec<String> = [
        "--threads",
        threads,
        "--memory-limit",
        &budget_arg,
        "--progress",
        "auto",
        "eval",
        "sum(a*2+b)",
        &format!("a={file}"),
        &format!("b={file}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let t = Instant::now();
    let (status, transcript) = run_in_pty(&args, &stdout_file);
    let secs = t.elapsed().as_secs_f64();
    assert!(status.success(), "eval failed on the pty:\n{transcript}");
    let stdout = std::fs::read_to_string(&stdout_file).unwrap();

    // stdout: exactly the scalar, one line.
    let want = expected_sum(file);
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "stdout should hold only the result line: {stdout:?}"
    );
    let got: f64 = stdout.trim().parse().unwrap_or_else(|_| {
        panic!("stdout is not just the result: {stdout:?}");
    });
    assert_eq!(got, want, "stdout {stdout:?}");

    // The terminal: the bar with all its pieces, and not the result.
    let frame = complete_frame(
        &transcript,
        "sum",
        &indicatif_bytes(result_bytes),
        &human_bytes(budget),
    );
    assert!(
        !transcript.contains(stdout.trim()),
        "the result leaked into the terminal (stderr): {transcript:?}"
    );
    let shown = frames(&transcript);
    let step = (shown.len() / 5).max(1);
    let sample: Vec<&str> = shown
        .iter()
        .step_by(step)
        .chain(shown.last())
        .map(|s| s.as_str())
        .collect();
    eprintln!(
        "pty: {} frames in {secs:.2} s, a complete one:\n  {frame}\nevery {step}th:\n  {}\nstdout: {stdout:?}",
        shown.len(),
        sample.join("\n  "),
    );

    // Pipes: stderr is not a terminal, `--progress auto` draws nothing; stdout is the same line.
    let plain: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = crate::util::run(&plain);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout);
    assert_no_bar(&String::from_utf8_lossy(&out.stderr));
}

/// indicatif's `binary_bytes` rendering of a byte count (two decimals, binary units).
fn indicatif_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

#[test]
fn progress_bar_on_a_terminal_only_and_stdout_holds_only_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let f = path_str(&dir.path().join("a.npy"));
    let n: u64 = 32 << 20; // 256 MiB of f64
    run_ok(&[
        "--progress",
        "never",
        "gen",
        &f,
        "--shape",
        &n.to_string(),
        "--seed",
        "7",
    ]);
    // One thread, so the pass lasts long enough for several frames.
    eval_on_a_terminal(&f, n * 8, 192 << 20, "1");

    // Asked for on a pipe: the bar goes to stderr, stdout still holds only the result.
    let out = crate::util::run(&[
        "--progress",
        "always",
        "eval",
        "sum(a*2+b)",
        &format!("a={f}"),
        &format!("b={f}"),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim().parse::<f64>().ok(), Some(expected_sum(&f)));
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
}

#[test]
#[ignore = "writes 4 GiB; run with --ignored"]
fn progress_bar_on_a_4gib_job() {
    let dir = crate::util::scale_dir();
    let f = path_str(&dir.path().join("big.npy"));
    let n: u64 = 1 << 29; // 4 GiB of f64
    run_ok(&[
        "--progress",
        "never",
        "gen",
        &f,
        "--shape",
        &n.to_string(),
        "--seed",
        "11",
    ]);
    eval_on_a_terminal(&f, n * 8, 256 << 20, "2");
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C

/// Polls `cond` every few milliseconds until it holds (true) or `timeout` passes (false).
fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Collects a finished child's output (its pipes hold little: no bar, a line or two).
fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// Starts the binary with `args`, waits (up to a minute) until `ready()` says the job is in the
/// middle of its work, sends SIGINT and checks it exits with 130 within 20 s, leaving `out_dir`
/// and `temp_dir` empty.
fn interrupt_when(args: &[&str], out_dir: &Path, temp_dir: &Path, ready: impl Fn(u32) -> bool) {
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut exited = None;
    let started = poll(Duration::from_secs(60), || {
        if let Some(s) = child.try_wait().unwrap() {
            exited = Some(s);
            return true;
        }
        ready(pid)
    });
    if let Some(s) = exited {
        let out = finish(child);
        panic!(
            "chunkheap {args:?} ended ({s}) before it could be interrupted; make the job larger\n\
             stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !started {
        let _ = child.kill();
        let out = finish(child);
        panic!(
            "chunkheap {args:?} never reached the point to interrupt within a minute\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let waited = t.elapsed();
    let during: Vec<PathBuf> = entries(out_dir);
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success(), "kill -INT {pid} failed");
    let sent = Instant::now();
    let mut status = None;
    let stopped = poll(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !stopped {
        let _ = child.kill();
        let out = finish(child);
        panic!(
            "chunkheap {args:?} still running 20 s after SIGINT\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stop = sent.elapsed();
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "exit status after SIGINT: {:?}; stderr: {stderr}",
        out.status
    );
    assert!(stderr.contains("interrupted"), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        entries(out_dir),
        Vec::<PathBuf>::new(),
        "files left in the output folder (it held {during:?} when interrupted)"
    );
    assert_eq!(
        entries(temp_dir),
        Vec::<PathBuf>::new(),
        "spill files/dirs left in --temp-dir"
    );
    eprintln!(
        "interrupted {:?} after {:.2} s (folder held {:?}); exited 130 in {:.0} ms",
        args.iter().find(|a| ["eval", "run", "sort"].contains(a)),
        waited.as_secs_f64(),
        during
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        stop.as_secs_f64() * 1e3
    );
}

/// True once `dir` holds a temporary (partial) output with data in it.
fn partial_output_growing(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        e.file_name().to_string_lossy().contains(".partial")
            && e.metadata().is_ok_and(|m| m.len() > 0)
    })
}

/// True once process `pid` holds a file open under `dir` (a spill file, even unlinked).
fn holds_file_under(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| target.starts_with(dir))
}

#[test]
fn ctrl_c_stops_eval_and_run_with_130_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let out_dir = root.path().join("out");
    let temp_dir = root.path().join("tmp");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::create_dir(&temp_dir).unwrap();
    let out = path_str(&out_dir.join("x.npy"));
    let tmp = path_str(&temp_dir);

    // eval -o: a 1 GiB generated expression streamed to .npy, on one thread (several seconds).
    interrupt_when(
        &[
            "--threads",
            "1",
            "--temp-dir",
            &tmp,
            "eval",
            "random((1 << 27,), seed=1) * 2",
            "-o",
            &out,
        ],
        &out_dir,
        &temp_dir,
        |_| partial_output_growing(&out_dir),
    );

    // run SCRIPT that saves.
    let script = root.path().join("save.chs");
    std::fs::write(
        &script,
        "x = random((1 << 27,), seed=1) * 2\nsave(x, sys.argv[1])\nprint(\"saved\")\n",
    )
    .unwrap();
    interrupt_when(
        &[
            "--threads",
            "1",
            "--temp-dir",
            &tmp,
            "run",
            &path_str(&script),
            &out,
        ],
        &out_dir,
        &temp_dir,
        |_| partial_output_growing(&out_dir),
    );
}

#[test]
fn ctrl_c_stops_a_spilling_sort_with_130_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let out_dir = root.path().join("out");
    let temp_dir = root.path().join("tmp");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::create_dir(&temp_dir).unwrap();
    let input = path_str(&root.path().join("in.npy"));
    run_ok(&[
        "--progress",
        "never",
        "gen",
        &input,
        "--shape",
        &(16u64 << 20).to_string(), // 128 MiB of f64
        "--seed",
        "3",
    ]);
    let out = path_str(&out_dir.join("sorted.npy"));
    // A budget far below the input: the sort spills runs into --temp-dir; interrupt it while a
    // spill file is open there.
    interrupt_when(
        &[
            "--threads",
            "1",
            "--memory-limit",
            "48MiB",
            "--temp-dir",
            &path_str(&temp_dir),
            "sort",
            &input,
            "-o",
            &out,
        ],
        &out_dir,
        &temp_dir,
        |pid| holds_file_under(pid, &temp_dir),
    );
}
