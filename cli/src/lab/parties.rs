//! The parties of a lab as reusable steps: serve teachers from checkpoints,
//! start an aggregator over them, run a student to completion. `pate lab`
//! and `pate experiment` both drive the real binaries through these.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::procs::{bin_path, spawn_logged, tail, Children};
use super::{path_arg, s, watch};

/// The three framework binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `pate-teacher`.
    pub teacher: PathBuf,
    /// `pate-aggregator`.
    pub aggregator: PathBuf,
    /// `pate-student`.
    pub student: PathBuf,
}

impl Bins {
    /// Finds the binaries in `dir`, else beside this executable.
    pub fn locate(dir: Option<&Path>) -> anyhow::Result<Bins> {
        Ok(Bins {
            teacher: bin_path(dir, "pate-teacher")?,
            aggregator: bin_path(dir, "pate-aggregator")?,
            student: bin_path(dir, "pate-student")?,
        })
    }
}

/// Where a run keeps its logs and address files.
#[derive(Debug, Clone)]
pub struct RunDirs {
    /// Log files of every child.
    pub logs: PathBuf,
    /// Address files.
    pub run: PathBuf,
}

impl RunDirs {
    /// `out/logs` and `out/run`, created.
    pub fn create(out: &Path) -> anyhow::Result<RunDirs> {
        let dirs = RunDirs { logs: out.join("logs"), run: out.join("run") };
        for d in [out, &dirs.logs, &dirs.run] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(dirs)
    }
}

/// Serves each `(name, checkpoint)` as a teacher process and returns their
/// addresses, in order. Logs go to `<name>-serve.log`.
pub async fn serve_teachers(
    children: &mut Children,
    bin: &Path,
    teachers: &[(String, PathBuf)],
    dirs: &RunDirs,
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(teachers.len());
    for (name, checkpoint) in teachers {
        let addr_file = dirs.run.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let log = dirs.logs.join(format!("{name}-serve.log"));
        let a = vec![s("serve"), s("--checkpoint"), path_arg(checkpoint), s("--listen"), s("127.0.0.1:0"), s("--addr-file"), path_arg(&addr_file)];
        children.push(name.replace('-', " "), spawn_logged(bin, &a, &log)?, log);
        addrs.push(children.wait_addr_file(&addr_file, Duration::from_secs(120)).await?);
    }
    Ok(addrs)
}

/// An aggregator's LNMax settings.
#[derive(Debug, Clone, Copy)]
pub struct AggregatorSettings {
    /// Laplace scale b.
    pub noise_scale: f64,
    /// Privacy budget.
    pub epsilon_limit: f64,
    /// Delta of the reported epsilon.
    pub delta: f64,
}

/// Starts an aggregator process named `name` over `teachers` (quorum: all of
/// them) with a fresh ledger at `ledger`, and returns its address.
pub async fn start_aggregator(
    children: &mut Children,
    bin: &Path,
    name: &str,
    teachers: &[SocketAddr],
    ledger: &Path,
    settings: AggregatorSettings,
    dirs: &RunDirs,
) -> anyhow::Result<SocketAddr> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ledger.display()));
    }
    let addr_file = dirs.run.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr_file);
    let mut a = vec![s("--listen"), s("127.0.0.1:0"), s("--addr-file"), path_arg(&addr_file), s("--ledger"), path_arg(ledger),
        s("--mechanism"), s("lnmax"), s("--noise-scale"), s(settings.noise_scale), s("--epsilon-limit"), s(settings.epsilon_limit),
        s("--delta"), s(settings.delta), s("--quorum"), s(teachers.len())];
    teachers.iter().for_each(|t| a.extend([s("--teacher"), t.to_string()]));
    let log = dirs.logs.join(format!("{name}.log"));
    children.push(s(name), spawn_logged(bin, &a, &log)?, log);
    children.wait_addr_file(&addr_file, Duration::from_secs(60)).await
}

/// Runs the student process with `args` (its `--out` must be `out`) until it
/// exits, failing early if a server child dies; returns its report.
pub async fn run_student(
    children: &mut Children,
    bin: &Path,
    args: &[String],
    out: &Path,
    log: &Path,
) -> anyhow::Result<pate_student::StudentReport> {
    let mut student = spawn_logged(bin, args, log)?;
    let status = tokio::select! {
        st = student.wait() => st?,
        e = watch(children) => return Err(e),
    };
    anyhow::ensure!(status.success(), "student failed ({status}); last lines of {}:\n{}", log.display(), tail(log, 15));
    serde_json::from_slice(&std::fs::read(out.join("report.json"))?).context("reading the student's report.json")
}
