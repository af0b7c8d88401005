//! `pate deploy`: the federated lab as its users deploy it. `compose`
//! writes a docker-compose project (one container per data owner),
//! `k8s` writes plain Kubernetes manifests, and `report` turns what a
//! compose run left behind into the same `report.json` as `pate lab`.
//! Both generators describe the same parties with the same flags
//! ([`Settings`], [`party`]); only the packaging differs.

pub mod compose;
pub mod k8s;
pub mod out_dir;
pub mod party;
pub mod report;

use pate_ml::model::ModelKind;

/// `pate deploy` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DeployCommand {
    /// Write a docker-compose project: per teacher a one-shot training
    /// container and a serving container, each seeing only its own
    /// partition; the aggregator with its ledger on a named volume; the
    /// student. Teachers and aggregator share one internal network, the
    /// student and aggregator another: the student has no route to a teacher.
    Compose(compose::ComposeArgs),
    /// Write Kubernetes manifests: an Indexed Job trains the teachers
    /// (completion index = partition), a StatefulSet serves them (ordinal =
    /// partition), a single-replica aggregator StatefulSet keeps its ledger
    /// on a PersistentVolumeClaim, a Job runs the student; NetworkPolicies
    /// let teachers accept only the aggregator and the aggregator only students.
    K8s(k8s::K8sArgs),
    /// Write DIR/report.json (the keys of `pate lab`'s report) from what a
    /// compose run collected into DIR (used by scripts/compose-lab.sh).
    Report(report::ReportArgs),
}

/// Runs a `pate deploy` subcommand.
pub fn run(cmd: DeployCommand) -> anyhow::Result<()> {
    match cmd {
        DeployCommand::Compose(args) => compose::run(&args),
        DeployCommand::K8s(args) => k8s::run(&args),
        DeployCommand::Report(args) => report::run(&args),
    }
}

/// The run every deployment describes: `pate lab`'s flags that matter.
#[derive(clap::Args, Debug, Clone)]
pub struct Settings {
    /// Number of teachers (= data owners = disjoint partitions).
    #[arg(long)]
    pub teachers: usize,
    /// Pool items the student asks labels for.
    #[arg(long, default_value_t = 3000)]
    pub queries: usize,
    /// The last K test items are the student's labelled evaluation set.
    #[arg(long, default_value_t = 1000)]
    pub eval_size: usize,
    /// LNMax Laplace scale b (each answer costs 2/b pure epsilon).
    #[arg(long, default_value_t = 2.0)]
    pub noise_scale: f64,
    /// Model architecture of teachers and student.
    #[arg(long, default_value = "mlp")]
    pub model: ModelKind,
    /// Teacher training epochs.
    #[arg(long, default_value_t = 10)]
    pub teacher_epochs: usize,
    /// Student training epochs.
    #[arg(long, default_value_t = 40)]
    pub student_epochs: usize,
    /// Privacy budget; queries past it are refused.
    #[arg(long, default_value_t = 1e6)]
    pub epsilon_limit: f64,
    /// Delta of the reported (epsilon, delta); 0 reports pure epsilon.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Seed for partitions, training and query choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Teachers that must vote for a query to be answered [default: a majority].
    #[arg(long)]
    pub quorum: Option<usize>,
    /// Samples per Label call of the student.
    #[arg(long, default_value_t = 250)]
    pub query_batch: usize,
    /// Seconds the student pauses between Label calls (0 = none); a paced
    /// student keeps one call in flight at a time.
    #[arg(long, default_value_t = 0.0)]
    pub query_interval: f64,
}

impl Settings {
    /// Checks what a generator cannot turn into a working deployment.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.teachers > 0, "--teachers must be at least 1 (got 0): every deployment needs a teacher");
        if let Some(q) = self.quorum {
            anyhow::ensure!((1..=self.teachers).contains(&q), "--quorum {q} must be between 1 and --teachers ({})", self.teachers);
        }
        anyhow::ensure!(self.query_batch > 0, "--query-batch must be at least 1");
        anyhow::ensure!(self.noise_scale > 0.0 && self.noise_scale.is_finite(), "--noise-scale must be positive");
        anyhow::ensure!(self.query_interval >= 0.0 && self.query_interval.is_finite(), "--query-interval must be 0 or more seconds");
        Ok(())
    }
}

/// Checks a container image reference (`[registry[:port]/]name[:tag][@digest]`,
/// as Docker and Kubernetes accept it), so that a typo fails here and not
/// in the middle of a deployment.
pub fn validate_image(image: &str) -> anyhow::Result<()> {
    let bad = |why: &str| anyhow::anyhow!("--image {image:?} is not a valid image reference: {why}");
    if image.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(&format!("it contains {c:?}")));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| !alg.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(bad("the digest after '@' must look like sha256:<hex>"));
        }
    }
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(bad("the tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // A first part with '.', ':' or "localhost" is a registry host[:port].
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')) {
            return Err(bad("the registry host holds characters a host name cannot"));
        }
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(bad("each name component must be lowercase letters and digits, separated by '.', '_' or '-'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_checked() {
        for ok in ["pate", "pate:local", "registry.example.com:5000/team/pate:1.2.3", "localhost/pate", "ghcr.io/o/pate@sha256:0123456789abcdef0123456789abcdef"] {
            validate_image(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "pate image", "pate:lo cal", " pate", "Pate", "pate:", "pate::x", "pate@md5", "-pate", "team//pate"] {
            let err = validate_image(bad).expect_err(bad);
            assert!(err.to_string().contains("not a valid image reference"), "{err}");
        }
    }
}
