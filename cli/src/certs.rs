//! `pate certs`: provision a deployment's CA and one certificate per party
//! (the role in a SAN URI), or add one party later. The work is done by
//! `pate_proto::certs`, which the lab and the tests also use.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use pate_proto::auth::Role;

/// Which kind of party a certificate is for.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// The aggregator (no --index).
    Aggregator,
    /// A teacher; --index is its partition index.
    Teacher,
    /// A student; --index is its student number.
    Student,
}

/// Certificate provisioning.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a CA and the certificates of an aggregator, N teachers and M
    /// students: DIR/ca.pem, ca.key, aggregator.pem/.key,
    /// teacher-<i>.pem/.key, student-<j>.pem/.key (keys 0600).
    Init {
        /// Directory to write (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Number of teachers (indices 0..N, equal to their partitions).
        #[arg(long)]
        teachers: u32,
        /// Number of students (indices 0..M).
        #[arg(long)]
        students: u32,
        /// Extra DNS name or IP address for every server certificate
        /// (beside localhost, 127.0.0.1 and the party's own name); repeatable.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue one more party's certificate from the CA in --ca-dir.
    Issue {
        /// Directory holding ca.pem and ca.key (the new files go there too).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The party's role.
        #[arg(long, value_enum)]
        role: RoleKind,
        /// Teacher or student index (not for the aggregator).
        #[arg(long)]
        index: Option<u32>,
        /// Extra DNS name or IP address of a server certificate; repeatable.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace the party's existing files.
        #[arg(long)]
        force: bool,
    },
}

fn role(kind: RoleKind, index: Option<u32>) -> anyhow::Result<Role> {
    match (kind, index) {
        (RoleKind::Aggregator, None) => Ok(Role::Aggregator),
        (RoleKind::Aggregator, Some(_)) => anyhow::bail!("the aggregator has no --index"),
        (RoleKind::Teacher, Some(i)) => Ok(Role::Teacher(i)),
        (RoleKind::Student, Some(j)) => Ok(Role::Student(j)),
        (_, None) => anyhow::bail!("--role teacher and --role student need --index"),
    }
}

/// Runs a `pate certs` command.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init { out, teachers, students, sans, force } => {
            let roles = pate_proto::certs::init(&out, teachers, students, &sans, force)
                .with_context(|| format!("provisioning {}", out.display()))?;
            println!("wrote {} (CA) and {} party certificates to {}", out.join("ca.pem").display(), roles.len(), out.display());
            println!("keep ca.key offline: whoever holds it can mint any role");
        }
        CertsCommand::Issue { ca_dir, role: kind, index, sans, force } => {
            let role = role(kind, index)?;
            pate_proto::certs::issue(&ca_dir, role, &sans, force)
                .with_context(|| format!("issuing {role} from {}", ca_dir.display()))?;
            let (pem, key) = pate_proto::certs::party_files(&ca_dir, role);
            println!("wrote {} and {} ({role})", pem.display(), key.display());
        }
    }
    Ok(())
}
