//! `pate-student`: learn from the aggregator's noisy labels on public data.

use clap::Parser;
use pate_proto::runtime::init_tracing;

// Training frees and allocates megabyte buffers every step on rayon's and
// tokio's threads; glibc's per-thread arenas return them to the kernel and
// fault them in again (a quarter of the lab student's epoch); mimalloc
// keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A PATE student: queries the aggregator, trains, and evaluates itself.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config_file: pate_proto::config::ConfigArg,
    #[command(flatten)]
    config: pate_student::Config,
    /// Log as JSON lines.
    #[arg(long, env = "PATE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pate_ml::init_cpu_threads();
    pate_proto::config::apply_config_file::<Cli>()?;
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let report = pate_student::run(cli.config).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
