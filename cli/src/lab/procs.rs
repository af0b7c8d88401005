//! Child processes of a lab: spawned with their output in log files, found
//! through their address files, and all killed when the lab ends, however
//! it ends (success, error or Ctrl-C): `kill_on_drop` does it on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use super::workers::Concurrency;

/// The lab's running children.
#[derive(Default)]
pub struct Children {
    procs: Vec<(String, Child, PathBuf)>,
}

/// Where the framework's binaries live: `dir` if given, else beside this executable.
pub fn bin_path(dir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the pate executable")?
            .parent()
            .map(Path::to_path_buf)
            .context("the pate executable has no parent directory")?,
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!("{} not found; build all binaries first (cargo build --release --bins) or pass --bin-dir", path.display());
    }
    Ok(path)
}

/// Spawns `program args` with stdout and stderr appended to `log`.
pub fn spawn_logged(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    spawn_logged_env(program, args, log, &[])
}

/// [`spawn_logged`] with `env` added to the child's environment (its
/// threads: [`super::workers::Concurrency::env`]).
pub fn spawn_logged_env(program: &Path, args: &[String], log: &Path, env: &[(String, String)]) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// The last `n` lines of a log, to show why a child failed.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Children {
    /// Keeps `child` (named `name`, logging to `log`) until the lab ends.
    pub fn push(&mut self, name: String, child: Child, log: PathBuf) {
        self.procs.push((name, child, log));
    }

    /// Errors if any child has exited, naming it and quoting its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child, log) in &mut self.procs {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited unexpectedly ({status}); last lines of {}:\n{}", log.display(), tail(log, 15));
            }
        }
        Ok(())
    }

    /// Waits for `path` to hold a socket address, while checking the
    /// children are still alive.
    pub async fn wait_addr_file(&mut self, path: &Path, timeout: Duration) -> anyhow::Result<SocketAddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(addr) = text.trim().parse() {
                    return Ok(addr);
                }
            }
            self.check_alive()?;
            if tokio::time::Instant::now() >= deadline {
                bail!("no address in {} after {timeout:?}", path.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills every child and waits for it, so no process outlives the lab.
    pub async fn shutdown(&mut self) {
        for (name, child, _) in &mut self.procs {
            let _ = child.start_kill();
            let _ = child.wait().await;
            tracing::debug!(child = %name, "stopped");
        }
        self.procs.clear();
    }
}

/// Runs `jobs` (program, args, log, label) at most `plan.processes` at a
/// time, each with `plan.threads` compute threads; `on_done` is called as
/// each finishes. The first failure stops the rest.
pub async fn run_bounded(
    jobs: Vec<(PathBuf, Vec<String>, PathBuf, String)>,
    plan: Concurrency,
    mut on_done: impl FnMut(&str, usize, usize),
) -> anyhow::Result<()> {
    let (parallel, env) = (plan.processes, plan.env());
    let total = jobs.len();
    let mut pending = jobs.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut done = 0;
    loop {
        while running.len() < parallel.max(1) {
            let Some((program, args, log, label)) = pending.next() else { break };
            let mut child = spawn_logged_env(&program, &args, &log, &env)?;
            running.spawn(async move { (child.wait().await, log, label) });
        }
        let Some(joined) = running.join_next().await else { return Ok(()) };
        let (status, log, label) = joined.context("training task failed")?;
        let status = status.with_context(|| format!("waiting for {label}"))?;
        if !status.success() {
            bail!("{label} failed ({status}); last lines of {}:\n{}", log.display(), tail(&log, 15));
        }
        done += 1;
        on_done(&label, done, total);
    }
}
