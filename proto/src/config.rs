//! `--config FILE`: a TOML file of flag values for the three servers, the
//! way operators of a deployment expect to configure a party (a ConfigMap,
//! a mounted file) rather than through a long command line.
//!
//! Keys are the flags' long names (`epsilon-limit` or `epsilon_limit`);
//! values are strings, numbers, booleans, or arrays (joined with commas, for
//! repeatable flags such as `teacher`). Precedence is flags, then `PATE_*`
//! environment variables, then the file, then the defaults: the file only
//! fills in the environment variables that are not already set, so clap's
//! own flag-over-env rule does the rest and `--help` stays the single
//! description of every setting. A key that names no flag, or a flag that
//! has no environment variable, is an error naming the key: a typo in a
//! deployment's file must not be silently ignored.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// Environment variable that names the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "PATE_CONFIG";

/// Why a config file could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: toml::de::Error,
    },
    /// A key names no flag of this program.
    #[error("config file {path}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// Every key the program accepts.
        known: String,
    },
    /// A value of a type a flag cannot take (a table, a date, a nested array).
    #[error("config file {path}: key `{key}` must be a string, number, boolean or array of those")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
    },
    /// `--config` was given without a file name.
    #[error("--config needs a file name")]
    MissingValue,
}

/// The config file named by `--config FILE`, `--config=FILE` or
/// `$PATE_CONFIG`, if any.
pub fn config_path(args: &[OsString]) -> Result<Option<PathBuf>, ConfigError> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let Some(s) = arg.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            return iter.next().map(|v| Some(PathBuf::from(v))).ok_or(ConfigError::MissingValue);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Ok(Some(PathBuf::from(v)));
        }
    }
    Ok(std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Every flag of `C` (its subcommands included) that can be set from a
/// file: long name -> environment variable.
pub fn settable_flags<C: CommandFactory>() -> BTreeMap<String, String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeMap<String, String>) {
        for arg in cmd.get_arguments() {
            if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
                out.insert(long.to_string(), env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&C::command(), &mut out);
    out
}

/// Reads `path` and returns the environment variables it sets, checked
/// against the flags of `C`.
pub fn read_config<C: CommandFactory>(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse { path: path.into(), source })?;
    let flags = settable_flags::<C>();
    let mut vars = Vec::with_capacity(table.len());
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(env) = flags.get(&long).filter(|_| long != "config") else {
            let known = flags.keys().filter(|k| *k != "config").cloned().collect::<Vec<_>>().join(", ");
            return Err(ConfigError::UnknownKey { path: path.into(), key, known });
        };
        let value = match &value {
            toml::Value::Array(items) => {
                let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
                parts.map(|p| p.join(","))
            }
            other => scalar(other),
        };
        let value = value.ok_or_else(|| ConfigError::BadValue { path: path.into(), key: key.clone() })?;
        vars.push((env.clone(), value));
    }
    Ok(vars)
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Applies the config file named on the command line (or by `$PATE_CONFIG`)
/// to this process's environment, leaving every variable already set alone.
/// Call it first in `main`, before any thread starts, then parse `C` as usual.
/// Returns the file applied, if any.
pub fn apply_config_file<C: CommandFactory>() -> Result<Option<PathBuf>, ConfigError> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(path) = config_path(&args)? else { return Ok(None) };
    for (var, value) in read_config::<C>(&path)? {
        if std::env::var_os(&var).is_none() {
            // Called first in `main`, before any task or thread of ours reads
            // the environment, so nothing reads it while it changes.
            std::env::set_var(var, value);
        }
    }
    Ok(Some(path))
}

/// The `--config` flag itself, to flatten into each server's command line
/// so that `--help` lists it and clap accepts it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArg {
    /// TOML file of flag values (keys are the long flag names); flags and
    /// PATE_* environment variables override it.
    #[arg(long = "config", env = CONFIG_ENV, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[allow(dead_code)] // only its clap description is used
    struct Cli {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, env = "PATE_TEST_LIMIT", default_value_t = 10.0)]
        epsilon_limit: f64,
        #[arg(long = "teacher", env = "PATE_TEST_TEACHERS", value_delimiter = ',')]
        teachers: Vec<String>,
        #[arg(long, env = "PATE_TEST_JSON")]
        log_json: bool,
        #[arg(long)]
        no_env: Option<String>,
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn finds_the_file_in_every_spelling() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(config_path(&args(&["p", "--config", "a.toml"])).ok().flatten(), Some("a.toml".into()));
        assert_eq!(config_path(&args(&["p", "--x", "--config=b.toml"])).ok().flatten(), Some("b.toml".into()));
        assert!(matches!(config_path(&args(&["p", "--config"])), Err(ConfigError::MissingValue)));
        // After `--` everything is positional.
        assert!(!matches!(config_path(&args(&["p", "--", "--config", "c"])), Ok(Some(p)) if p == Path::new("c")));
    }

    #[test]
    fn maps_keys_to_env_vars_with_arrays_joined() {
        let f = write("epsilon_limit = 2.5\nteacher = [\"t0:1\", \"t1:2\"]\nlog-json = true\n");
        let mut vars = read_config::<Cli>(f.path()).expect("valid file");
        vars.sort();
        assert_eq!(
            vars,
            vec![
                ("PATE_TEST_JSON".to_string(), "true".to_string()),
                ("PATE_TEST_LIMIT".to_string(), "2.5".to_string()),
                ("PATE_TEST_TEACHERS".to_string(), "t0:1,t1:2".to_string()),
            ]
        );
    }

    #[test]
    fn rejects_unknown_keys_flags_without_env_and_tables() {
        let f = write("epsilon-limt = 2\n");
        let err = read_config::<Cli>(f.path()).expect_err("typo must fail");
        assert!(err.to_string().contains("epsilon-limt") && err.to_string().contains("epsilon-limit"), "{err}");
        let f = write("no-env = \"x\"\n");
        assert!(matches!(read_config::<Cli>(f.path()), Err(ConfigError::UnknownKey { .. })));
        let f = write("config = \"other.toml\"\n");
        assert!(matches!(read_config::<Cli>(f.path()), Err(ConfigError::UnknownKey { .. })));
        let f = write("[epsilon-limit]\nx = 1\n");
        assert!(matches!(read_config::<Cli>(f.path()), Err(ConfigError::BadValue { .. })));
        let f = write("epsilon-limit = ");
        assert!(matches!(read_config::<Cli>(f.path()), Err(ConfigError::Parse { .. })));
    }
}
