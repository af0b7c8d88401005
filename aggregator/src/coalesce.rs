//! Merging the fan-outs of concurrent Label calls: while the teachers work
//! on one round of votes, the batches that arrive meanwhile wait and then
//! go out together, as one Vote call per teacher, and each call gets its
//! own rows of the answers back.
//!
//! With hundreds of teachers a Label call of ten samples costs hundreds of
//! Vote calls, each a TLS record, an HTTP/2 stream and a forward pass that
//! is mostly fixed cost; merging k concurrent batches divides that by k.
//! Nothing else changes: every sample's votes are exactly the votes it
//! would have got alone (teachers vote per sample), the noise, the ledger
//! and the budget stay per Label call, and a teacher that fails a merged
//! round abstains for each call in it, as it would have for each alone.
//! A round starts as soon as a slot is free, so an idle aggregator adds no
//! wait to a lone call.

use std::sync::Arc;

use pate_proto::Samples;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::pool::{PoolError, TeacherPool};

/// Votes per teacher that answered, one label per sample.
type Votes = Vec<Vec<u8>>;

struct Job {
    id: String,
    samples: Samples,
    reply: oneshot::Sender<Result<Votes, PoolError>>,
}

/// Hands batches to the merging task.
#[derive(Clone)]
pub struct VoteBatcher {
    tx: mpsc::UnboundedSender<Job>,
}

impl VoteBatcher {
    /// Starts the merging task on the current runtime: at most `rounds`
    /// fan-outs at once, each of at most `max_items` samples (a single
    /// larger batch still goes out alone). Must run inside a tokio runtime.
    pub fn spawn(pool: Arc<TeacherPool>, max_items: usize, rounds: usize) -> VoteBatcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx, max_items, rounds.max(1)));
        VoteBatcher { tx }
    }

    /// The votes on `samples`, as [`TeacherPool::collect_votes`] gives them,
    /// from a round shared with whatever other batches are waiting.
    pub async fn collect(&self, id: &str, samples: &Samples) -> Result<Votes, PoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                id: id.to_string(),
                samples: samples.clone(),
                reply,
            })
            .map_err(|_| PoolError::Stopped)?;
        rx.await.map_err(|_| PoolError::Stopped)?
    }
}

async fn run(pool: Arc<TeacherPool>, mut rx: mpsc::UnboundedReceiver<Job>, max_items: usize, rounds: usize) {
    let slots = Arc::new(Semaphore::new(rounds));
    let mut carry: Option<Job> = None;
    loop {
        // Wait for a free slot first: what arrives meanwhile is merged.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut n = first.samples.n;
        let mut jobs = vec![first];
        while let Ok(job) = rx.try_recv() {
            if n + job.samples.n > max_items {
                carry = Some(job);
                break;
            }
            n += job.samples.n;
            jobs.push(job);
        }
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            round(&pool, jobs).await;
            drop(slot);
        });
    }
}

/// One fan-out for `jobs`, its answers split back among them. If every
/// caller goes away meanwhile (a student gave up on its call), the fan-out
/// is dropped, which cancels the Vote calls, as it was before merging.
async fn round(pool: &TeacherPool, mut jobs: Vec<Job>) {
    let (merged, id) = if jobs.len() == 1 {
        (None, jobs[0].id.clone())
    } else {
        (Some(merge(&jobs)), format!("{}+{}", jobs[0].id, jobs.len() - 1))
    };
    let samples = merged.as_ref().unwrap_or(&jobs[0].samples).clone();
    if merged.is_some() {
        tracing::debug!(request_id = %id, calls = jobs.len(), n = samples.n, "merged vote round");
    }
    let gone = futures::future::join_all(jobs.iter_mut().map(|j| j.reply.closed()));
    let result = tokio::select! {
        r = pool.collect_votes(&id, &samples) => r,
        _ = gone => {
            tracing::debug!(request_id = %id, "every caller went away: vote round dropped");
            return;
        }
    };
    let mut offset = 0;
    for job in jobs {
        let n = job.samples.n;
        let mine = result
            .as_ref()
            .map(|votes| split(votes, offset, n))
            .map_err(Clone::clone);
        offset += n;
        // The caller may have gone away: its votes are simply dropped.
        let _ = job.reply.send(mine);
    }
}

/// The samples of every job, in order.
fn merge(jobs: &[Job]) -> Samples {
    let first = &jobs[0].samples;
    let mut pixels = Vec::with_capacity(jobs.iter().map(|j| j.samples.pixels.len()).sum());
    jobs.iter().for_each(|j| pixels.extend_from_slice(&j.samples.pixels));
    let n = jobs.iter().map(|j| j.samples.n).sum();
    Samples {
        n,
        rows: first.rows,
        cols: first.cols,
        pixels,
    }
}

/// Rows `offset..offset + n` of every teacher's votes.
fn split(votes: &[Vec<u8>], offset: usize, n: usize) -> Votes {
    votes.iter().map(|v| v[offset..offset + n].to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, n: usize, fill: u8) -> (Job, oneshot::Receiver<Result<Votes, PoolError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                id: id.into(),
                samples: Samples {
                    n,
                    rows: 1,
                    cols: 2,
                    pixels: vec![fill; n * 2],
                },
                reply,
            },
            rx,
        )
    }

    #[test]
    fn merged_samples_keep_every_job_in_order() {
        let (a, _ra) = job("a", 2, 1);
        let (b, _rb) = job("b", 3, 2);
        let merged = merge(&[a, b]);
        assert_eq!((merged.n, merged.rows, merged.cols), (5, 1, 2));
        assert_eq!(merged.pixels, vec![1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn each_job_gets_exactly_its_rows_from_every_teacher() {
        // Two teachers voting on five merged samples: jobs of 2 and 3.
        let votes = vec![vec![0, 1, 2, 3, 4], vec![9, 8, 7, 6, 5]];
        assert_eq!(split(&votes, 0, 2), vec![vec![0, 1], vec![9, 8]]);
        assert_eq!(split(&votes, 2, 3), vec![vec![2, 3, 4], vec![7, 6, 5]]);
    }
}
