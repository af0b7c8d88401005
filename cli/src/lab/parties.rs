//! The parties of a lab as reusable steps: serve teachers from checkpoints,
//! start an aggregator over them, run a student to completion. `pate lab`
//! and `pate experiment` both drive the real binaries through these.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pate_proto::auth::Role;
use pate_proto::tls::{TlsArgs, Transport};

use super::procs::{bin_path, spawn_logged, spawn_logged_env, tail, Children};
use super::workers::Concurrency;
use super::{argv, path_arg, watch};
use crate::progress::{say, Bar};

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

/// How a run's parties secure their links: certificates provisioned for
/// this run under `<out>/certs` (the default), or plaintext when asked.
#[derive(Debug, Clone)]
pub enum PartyTls {
    /// Mutual TLS with the certificates in this directory.
    Certs(PathBuf),
    /// `--insecure`: plaintext, no roles.
    Insecure,
}

impl PartyTls {
    /// Provisions a fresh CA with an aggregator, `teachers` teachers and
    /// `students` students into `<out>/certs` (replacing an earlier run's:
    /// every child of this run is started anew), or plaintext if `insecure`.
    pub fn provision(out: &Path, teachers: usize, students: usize, insecure: bool) -> anyhow::Result<PartyTls> {
        if insecure {
            println!("  WARNING: --insecure: every link in plaintext, without authentication or roles");
            return Ok(PartyTls::Insecure);
        }
        let dir = out.join("certs");
        let count = |n: usize, what: &str| u32::try_from(n).with_context(|| format!("{n} {what} is too many"));
        pate_proto::certs::init(&dir, count(teachers, "teachers")?, count(students, "students")?, &[], true)
            .with_context(|| format!("provisioning certificates in {}", dir.display()))?;
        Ok(PartyTls::Certs(dir))
    }

    /// The flags of party `role`.
    pub fn args(&self, role: Role) -> TlsArgs {
        match self {
            PartyTls::Certs(dir) => TlsArgs::for_party(dir, role),
            PartyTls::Insecure => TlsArgs::insecure(),
        }
    }

    /// The operator's transport in this process: it holds the aggregator's
    /// key (it runs the aggregator), the one identity teachers answer.
    pub fn operator(&self) -> anyhow::Result<Transport> {
        match self {
            PartyTls::Certs(_) => Ok(self.args(Role::Aggregator).load()?),
            PartyTls::Insecure => Ok(Transport::plaintext()),
        }
    }
}

/// Serves each `(name, checkpoint)` as a teacher process and returns their
/// addresses, in order. Logs go to `<name>-serve.log`. The k-th teacher
/// presents the certificate of `pate://teacher/<k>`. Every teacher computes
/// at the same moments (each vote goes to all), so they share the cores:
/// one compute thread each once there are as many teachers as cores.
/// Scatter teachers read the public images' features from `feature_cache`
/// when given.
pub async fn serve_teachers(
    children: &mut Children,
    bin: &Path,
    teachers: &[(String, PathBuf)],
    dirs: &RunDirs,
    tls: &PartyTls,
    feature_cache: Option<&Path>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let env = Concurrency::serving(teachers.len()).env();
    // All started first, then waited for: they load their checkpoints side
    // by side instead of one after another.
    let mut files = Vec::with_capacity(teachers.len());
    for (k, (name, checkpoint)) in teachers.iter().enumerate() {
        let addr_file = dirs.run.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let log = dirs.logs.join(format!("{name}-serve.log"));
        let mut a = argv!["serve", "--checkpoint", path_arg(checkpoint), "--listen", "127.0.0.1:0", "--addr-file", path_arg(&addr_file)];
        a.extend(tls.args(Role::Teacher(u32::try_from(k)?)).to_args());
        if let Some(cache) = feature_cache {
            a.extend(argv!["--feature-cache", path_arg(cache)]);
        }
        children.push(name.replace('-', " "), spawn_logged_env(bin, &a, &log, &env)?, log);
        files.push(addr_file);
    }
    let mut addrs = Vec::with_capacity(teachers.len());
    for addr_file in files {
        addrs.push(children.wait_addr_file(&addr_file, Duration::from_secs(120)).await?);
    }
    Ok(addrs)
}

/// An aggregator's settings.
#[derive(Debug, Clone, Copy)]
pub struct AggregatorSettings {
    /// Noise mechanism and its parameters.
    pub mechanism: pate_privacy::Mechanism,
    /// Privacy budget (data-independent).
    pub epsilon_limit: f64,
    /// Delta of the reported epsilon.
    pub delta: f64,
    /// Stop once the data-dependent epsilon would pass this.
    pub target_epsilon: Option<f64>,
}

impl AggregatorSettings {
    /// LNMax with Laplace scale `noise_scale`, no target.
    pub fn lnmax(noise_scale: f64, epsilon_limit: f64, delta: f64) -> Self {
        AggregatorSettings { mechanism: pate_privacy::Mechanism::LnMax { scale: noise_scale }, epsilon_limit, delta, target_epsilon: None }
    }

    /// The aggregator's flags for these settings.
    pub fn args(&self) -> Vec<String> {
        use pate_privacy::Mechanism::*;
        let mut a = match self.mechanism {
            LnMax { scale } => argv!["--mechanism", "lnmax", "--noise-scale", scale],
            GnMax { sigma } => argv!["--mechanism", "gnmax", "--sigma", sigma],
            ConfidentGnMax { threshold, sigma1, sigma2 } => argv!["--mechanism", "confident-gnmax", "--threshold", threshold,
                "--sigma1", sigma1, "--sigma2", sigma2],
        };
        a.extend(argv!["--epsilon-limit", self.epsilon_limit, "--delta", self.delta]);
        if let Some(t) = self.target_epsilon {
            a.extend(argv!["--target-epsilon", t]);
        }
        a
    }
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
    tls: &PartyTls,
) -> anyhow::Result<SocketAddr> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ledger.display()));
    }
    let addr_file = dirs.run.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr_file);
    let mut a = argv!["--listen", "127.0.0.1:0", "--addr-file", path_arg(&addr_file), "--ledger", path_arg(ledger),
        "--quorum", teachers.len()];
    a.extend(settings.args());
    teachers.iter().for_each(|t| a.extend(argv!["--teacher", t.to_string()]));
    a.extend(tls.args(Role::Aggregator).to_args());
    let log = dirs.logs.join(format!("{name}.log"));
    children.push(name.to_string(), spawn_logged(bin, &a, &log)?, log);
    children.wait_addr_file(&addr_file, Duration::from_secs(60)).await
}

/// Draws the student's epochs from its progress file (see
/// [`pate_student::Progress`]) until cancelled; without a terminal, a plain
/// line as each quarter of the epochs is passed (the file is polled, so
/// epochs in between may go unseen).
async fn show_epochs(out: &Path) -> std::convert::Infallible {
    let mut bar: Option<Bar> = None;
    let mut quarter = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(p) = pate_student::Progress::read(out) else { continue };
        let bar = bar.get_or_insert_with(|| Bar::epochs(p.epochs));
        bar.set_position(p.epoch as u64);
        let now = p.epoch * 4 / p.epochs.max(1);
        if now > quarter {
            quarter = now;
            if bar.wants_lines() {
                say!("  student epoch {}/{}", p.epoch, p.epochs);
            }
        }
    }
}

/// Runs the student process with `args` (its `--out` must be `out`) until it
/// exits, failing early if a server child dies; returns its report. It
/// presents the certificate of `pate://student/0`.
pub async fn run_student(
    children: &mut Children,
    bin: &Path,
    args: &[String],
    out: &Path,
    log: &Path,
    tls: &PartyTls,
) -> anyhow::Result<pate_student::StudentReport> {
    let mut args = args.to_vec();
    args.extend(tls.args(Role::Student(0)).to_args());
    // A progress file left by an earlier run would show its last epoch.
    let _ = std::fs::remove_file(out.join(pate_student::PROGRESS_FILE));
    let mut student = spawn_logged(bin, &args, log)?;
    let status = tokio::select! {
        st = student.wait() => st?,
        e = watch(children) => return Err(e),
        never = show_epochs(out) => match never {},
    };
    anyhow::ensure!(status.success(), "student failed ({status}); last lines of {}:\n{}", log.display(), tail(log, 15));
    serde_json::from_slice(&std::fs::read(out.join("report.json"))?).context("reading the student's report.json")
}
