//! The process plan of a lab: how many teacher processes train at once and
//! how many compute threads each one starts, from the machine's cores.
//!
//! Every child would otherwise size its thread pools to the whole machine,
//! so two teachers training at once on two cores would run four busy
//! threads, and 250 teachers voting at once would start 500: the threads
//! then contend for the cores instead of sharing them. Small models train
//! better one thread per process, several processes at once, than several
//! threads per process (docs/BENCHMARKS.md).

/// The variable that sizes a child's compute threads. candle 0.11 reads it
/// for the parallelism it hands to `gemm` (`candle_core::utils::
/// get_num_threads`, `Parallelism::None` at 1) and for its own rayon pool,
/// and rayon reads it for the global pool that `gemm` and candle's
/// element-wise kernels run on. (`CANDLE_NUM_THREADS` sizes only the pool
/// of candle's quantized kernels, which these models do not use.)
pub const THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// How many processes run at once, and threads each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Processes at once (at least 1).
    pub processes: usize,
    /// Compute threads per process (at least 1).
    pub threads: usize,
}

impl Concurrency {
    /// `jobs` processes at once if given, else one per core, never more
    /// than the `pending` jobs (so a lone teacher gets every core), with
    /// the cores shared out among them.
    pub fn choose(jobs: Option<usize>, pending: usize, cores: usize) -> Concurrency {
        let cores = cores.max(1);
        let processes = jobs.unwrap_or(cores).min(pending).max(1);
        Concurrency {
            processes,
            threads: (cores / processes).max(1),
        }
    }

    /// [`Concurrency::choose`] on this machine's cores.
    pub fn on_this_machine(jobs: Option<usize>, pending: usize) -> Concurrency {
        Concurrency::choose(jobs, pending, cores())
    }

    /// For `running` processes that all compute at the same moments (the
    /// teachers of an ensemble answering one vote): the cores shared out.
    pub fn serving(running: usize) -> Concurrency {
        Concurrency::choose(None, running, cores())
    }

    /// The environment that gives a child this many threads.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(THREADS_ENV.to_string(), self.threads.to_string())]
    }
}

/// This machine's cores (what the scheduler lets this process use).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_follow_the_cores_and_share_them() {
        // Two cores, twenty teachers: two at once, one thread each.
        assert_eq!(
            Concurrency::choose(None, 20, 2),
            Concurrency {
                processes: 2,
                threads: 1
            }
        );
        // A lone teacher gets every core.
        assert_eq!(
            Concurrency::choose(None, 1, 8),
            Concurrency {
                processes: 1,
                threads: 8
            }
        );
        // Three teachers on eight cores: three at once, two threads each.
        assert_eq!(
            Concurrency::choose(None, 3, 8),
            Concurrency {
                processes: 3,
                threads: 2
            }
        );
        // 250 teachers serving on two cores: one thread each, never zero.
        assert_eq!(
            Concurrency::choose(None, 250, 2),
            Concurrency {
                processes: 2,
                threads: 1
            }
        );
    }

    #[test]
    fn the_flag_overrides_the_cores_within_bounds() {
        assert_eq!(
            Concurrency::choose(Some(1), 20, 4),
            Concurrency {
                processes: 1,
                threads: 4
            }
        );
        assert_eq!(
            Concurrency::choose(Some(6), 20, 2),
            Concurrency {
                processes: 6,
                threads: 1
            }
        );
        assert_eq!(
            Concurrency::choose(Some(6), 3, 12),
            Concurrency {
                processes: 3,
                threads: 4
            }
        );
        // Zero jobs, zero pending or zero cores still run one at a time.
        assert_eq!(
            Concurrency::choose(Some(0), 5, 2),
            Concurrency {
                processes: 1,
                threads: 2
            }
        );
        assert_eq!(
            Concurrency::choose(None, 0, 0),
            Concurrency {
                processes: 1,
                threads: 1
            }
        );
    }

    #[test]
    fn the_environment_names_the_threads() {
        let env = Concurrency {
            processes: 2,
            threads: 3,
        }
        .env();
        assert_eq!(env, vec![("RAYON_NUM_THREADS".to_string(), "3".to_string())]);
    }
}
