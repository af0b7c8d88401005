//! The aggregator's teachers: connect, check they form one ensemble, and
//! fan a batch of samples out to all of them concurrently.

use std::time::Duration;

use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use pate_proto::tls::{ServerRole, Transport};
use pate_proto::v1::{teacher_client::TeacherClient, DescribeRequest, TeacherInfo, VoteRequest, VoteResponse};
use pate_proto::Samples;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// Why the pool could not be built or could not collect votes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// No teacher was configured.
    #[error("no teachers configured: pass --teacher URL (repeatable) or --teachers-file")]
    NoTeachers,
    /// A teacher address does not parse.
    #[error("bad teacher address {addr:?}: {reason}")]
    BadAddress {
        /// The address given.
        addr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The quorum is zero or larger than the ensemble.
    #[error("quorum {quorum} must be between 1 and the number of teachers ({teachers})")]
    BadQuorum {
        /// Configured quorum.
        quorum: usize,
        /// Number of teachers.
        teachers: usize,
    },
    /// A teacher disagrees with the first on input shape or class count.
    #[error("teacher {addr} serves input {got_shape:?} with {got_classes} classes, but {first} serves {want_shape:?} with {want_classes}: they are not one ensemble")]
    Inconsistent {
        /// The odd teacher.
        addr: String,
        /// Its input shape.
        got_shape: Vec<u32>,
        /// Its class count.
        got_classes: u32,
        /// The reference teacher.
        first: String,
        /// Reference input shape.
        want_shape: Vec<u32>,
        /// Reference class count.
        want_classes: u32,
    },
    /// Too few teachers answered Describe at start-up.
    #[error("only {reached} of {teachers} teachers reachable, quorum is {quorum}; unreachable: {failures}")]
    StartupQuorum {
        /// Teachers that answered.
        reached: usize,
        /// Teachers configured.
        teachers: usize,
        /// Quorum needed.
        quorum: usize,
        /// What went wrong with the others.
        failures: String,
    },
    /// Too few teachers answered a vote in time: the query costs nothing.
    /// The message goes to students, so it names no teacher (their
    /// addresses and errors are logged here instead).
    #[error("only {answered} of {teachers} teachers voted, quorum is {quorum}; retry later")]
    NoQuorum {
        /// Teachers that voted.
        answered: usize,
        /// Teachers asked.
        teachers: usize,
        /// Quorum needed.
        quorum: usize,
    },
    /// The task that sends votes out has stopped (the aggregator is
    /// shutting down): nothing was asked, the query costs nothing.
    #[error("the vote fan-out has stopped; retry later")]
    Stopped,
}

/// How long teachers still missing get once a quorum answered at start-up.
pub const STARTUP_GRACE: Duration = Duration::from_secs(10);

struct Member {
    addr: String,
    client: TeacherClient<Channel>,
    channel: Channel,
    /// It holds the public images' features: ask it by sample key.
    by_key: bool,
}

/// The ensemble as seen from the aggregator.
pub struct TeacherPool {
    members: Vec<Member>,
    quorum: usize,
    timeout: Duration,
    rows: usize,
    cols: usize,
    classes: usize,
    infos: Vec<TeacherInfo>,
}

fn endpoint(addr: &str, timeout: Duration, transport: &Transport) -> Result<Endpoint, PoolError> {
    transport
        .endpoint(addr, ServerRole::Teacher)
        .map(|e| e.connect_timeout(timeout).timeout(timeout))
        .map_err(|e| PoolError::BadAddress { addr: addr.to_string(), reason: e.to_string() })
}

type Described = (TeacherClient<Channel>, Channel, TeacherInfo);

async fn describe(ep: Endpoint, connect_for: Duration) -> Result<Described, String> {
    let ep = &ep;
    pate_proto::retry::retry_for(connect_for, || async move {
        let channel = ep.connect().await.map_err(|e| e.to_string())?;
        let mut client = TeacherClient::new(channel.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        let info = client.describe(DescribeRequest {}).await.map_err(|s| s.message().to_string())?;
        Ok((client, channel, info.into_inner()))
    })
    .await
}

impl TeacherPool {
    /// Connects to every teacher (retrying for up to `connect_for`), asks
    /// each to describe itself and checks they agree on input shape and
    /// classes. Teachers unreachable now are left out, as long as the
    /// quorum is met. With TLS, `transport` authenticates the aggregator to
    /// the teachers and checks their certificates.
    pub async fn connect(
        addrs: &[String],
        quorum: usize,
        timeout: Duration,
        connect_for: Duration,
        transport: &Transport,
    ) -> Result<Self, PoolError> {
        if addrs.is_empty() {
            return Err(PoolError::NoTeachers);
        }
        if quorum == 0 || quorum > addrs.len() {
            return Err(PoolError::BadQuorum { quorum, teachers: addrs.len() });
        }
        let endpoints = addrs.iter().map(|a| endpoint(a, timeout, transport)).collect::<Result<Vec<_>, _>>()?;
        let results = describe_all(endpoints, quorum, connect_for).await;
        let (mut members, mut infos, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        for (addr, result) in addrs.iter().zip(results) {
            match result {
                Ok((client, channel, info)) => {
                    members.push(Member { addr: addr.clone(), client, channel, by_key: info.votes_by_key });
                    infos.push(info);
                }
                Err(e) => {
                    tracing::warn!(teacher = %addr, error = %e, "teacher unreachable at start-up");
                    failures.push(format!("{addr}: {e}"));
                }
            }
        }
        if members.len() < quorum {
            return Err(PoolError::StartupQuorum { reached: members.len(), teachers: addrs.len(), quorum, failures: failures.join("; ") });
        }
        let first = &infos[0];
        for (m, info) in members.iter().zip(&infos).skip(1) {
            if info.input_shape != first.input_shape || info.num_classes != first.num_classes {
                return Err(PoolError::Inconsistent {
                    addr: m.addr.clone(),
                    got_shape: info.input_shape.clone(),
                    got_classes: info.num_classes,
                    first: members[0].addr.clone(),
                    want_shape: first.input_shape.clone(),
                    want_classes: first.num_classes,
                });
            }
        }
        let shape = &first.input_shape;
        let (rows, cols) = match shape.as_slice() {
            [r, c] => (*r as usize, *c as usize),
            _ => return Err(PoolError::BadAddress { addr: members[0].addr.clone(), reason: format!("input shape {shape:?} is not [rows, cols]") }),
        };
        let classes = first.num_classes as usize;
        Ok(TeacherPool { members, quorum, timeout, rows, cols, classes, infos })
    }

    /// Per-sample `[rows, cols]` the ensemble serves.
    pub fn input_shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Teachers in the pool.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the pool is empty (never, once connected).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Teachers that must vote for a query to be answered.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Asks every teacher's gRPC health service whether it is serving;
    /// one flag per teacher, in pool order. A teacher that does not answer
    /// within `timeout` counts as down.
    pub async fn probe(&self, timeout: Duration) -> Vec<bool> {
        let checks = self.members.iter().map(|m| {
            let mut client = HealthClient::new(m.channel.clone());
            async move {
                let check = client.check(HealthCheckRequest { service: String::new() });
                matches!(tokio::time::timeout(timeout, check).await,
                    Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32)
            }
        });
        join_all(checks).await
    }

    /// The teachers' addresses, in pool order.
    pub fn addrs(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.addr.as_str())
    }

    /// The largest Vote every teacher accepts (the smallest `max_batch`
    /// they described), or 0 if any did not say.
    pub fn vote_limit(&self) -> usize {
        self.infos.iter().map(|i| i.max_batch as usize).min().unwrap_or(0)
    }

    /// What each teacher said about itself at start-up.
    pub fn infos(&self) -> &[TeacherInfo] {
        &self.infos
    }

    /// Asks every teacher for its votes on `samples`; each vector holds one
    /// label per sample from one teacher. A teacher that fails or misses
    /// the deadline abstains; fewer than the quorum is an error. A teacher
    /// holding the public images' features is asked by the samples' keys
    /// (32 bytes each, hashed once here, instead of every pixel to every
    /// teacher), and by pixels for the samples it does not hold.
    pub async fn collect_votes(&self, request_id: &str, samples: &Samples) -> Result<Vec<Vec<u8>>, PoolError> {
        let tensor = self.members.iter().any(|m| !m.by_key).then(|| samples.to_tensor());
        let keys = if self.members.iter().any(|m| m.by_key) { samples.keys() } else { Vec::new() };
        let calls = self.members.iter().map(|m| {
            let req = if m.by_key {
                VoteRequest { request_id: request_id.to_string(), sample_keys: keys.clone(), ..Default::default() }
            } else {
                VoteRequest { request_id: request_id.to_string(), samples: tensor.clone(), ..Default::default() }
            };
            async move {
                let started = std::time::Instant::now();
                let result = if m.by_key {
                    self.vote_by_key(m, req, samples).await
                } else {
                    self.call(m, req, samples.n).await.map(|r| r.labels)
                };
                crate::metrics::teacher_vote(&m.addr, started.elapsed(), result.is_ok());
                result
            }
        });
        let results = join_all(calls).await;
        let mut votes = Vec::new();
        for (m, r) in self.members.iter().zip(results) {
            match r {
                Ok(v) => votes.push(v),
                Err(e) => tracing::warn!(teacher = %m.addr, request_id, error = %e, "teacher abstained"),
            }
        }
        if votes.len() < self.quorum {
            return Err(PoolError::NoQuorum { answered: votes.len(), teachers: self.members.len(), quorum: self.quorum });
        }
        Ok(votes)
    }

    /// One Vote call, its labels checked: `n` of them, each a class.
    async fn call(&self, m: &Member, req: VoteRequest, n: usize) -> Result<VoteResponse, String> {
        let resp = tokio::time::timeout(self.timeout, m.client.clone().vote(req))
            .await
            .map_err(|_| "deadline exceeded".to_string())?
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        if resp.labels.len() != n || resp.labels.iter().any(|&l| l as usize >= self.classes) {
            return Err(format!("malformed vote: {} labels for {n} samples", resp.labels.len()));
        }
        Ok(resp)
    }

    /// A vote by key, then by pixels for the samples the teacher did not
    /// hold (within the same deadline for each call).
    async fn vote_by_key(&self, m: &Member, req: VoteRequest, samples: &Samples) -> Result<Vec<u8>, String> {
        let request_id = req.request_id.clone();
        let VoteResponse { mut labels, unknown } = self.call(m, req, samples.n).await?;
        if unknown.is_empty() {
            return Ok(labels);
        }
        let unknown: Vec<usize> = unknown.into_iter().map(|i| i as usize).collect();
        if unknown.windows(2).any(|w| w[0] >= w[1]) || unknown.last().is_some_and(|&i| i >= samples.n) {
            return Err(format!("malformed vote: unknown keys {unknown:?} for {} samples", samples.n));
        }
        let rest = samples.select(&unknown).to_tensor();
        let req = VoteRequest { request_id, samples: Some(rest), ..Default::default() };
        let got = self.call(m, req, unknown.len()).await?.labels;
        unknown.iter().zip(got).for_each(|(&i, l)| labels[i] = l);
        Ok(labels)
    }
}

/// Describes every teacher, one result per endpoint in order. It waits for
/// every teacher, but not for a dead one once a quorum is up: after the
/// quorum is reached the rest get [`STARTUP_GRACE`] more, so a restarted
/// aggregator does not stall for `connect_for` on a teacher that died while
/// it was down.
async fn describe_all(endpoints: Vec<Endpoint>, quorum: usize, connect_for: Duration) -> Vec<Result<Described, String>> {
    let mut pending: FuturesUnordered<_> =
        endpoints.into_iter().enumerate().map(|(i, ep)| async move { (i, describe(ep, connect_for).await) }).collect();
    let mut results: Vec<Option<Result<Described, String>>> = (0..pending.len()).map(|_| None).collect();
    let (mut reached, mut deadline) = (0, None);
    loop {
        let next = match deadline {
            None => pending.next().await,
            Some(d) => tokio::time::timeout_at(d, pending.next()).await.unwrap_or_default(),
        };
        let Some((i, r)) = next else { break };
        reached += usize::from(r.is_ok());
        results[i] = Some(r);
        if reached >= quorum && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + STARTUP_GRACE.min(connect_for));
        }
    }
    let missing = || Err(format!("not reachable within {STARTUP_GRACE:?} of the quorum being up"));
    results.into_iter().map(|r| r.unwrap_or_else(missing)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_bad_configuration() {
        let t = Duration::from_millis(100);
        let p = Transport::plaintext();
        assert!(matches!(TeacherPool::connect(&[], 1, t, t, &p).await, Err(PoolError::NoTeachers)));
        let addrs = vec!["127.0.0.1:1".to_string()];
        assert!(matches!(TeacherPool::connect(&addrs, 2, t, t, &p).await, Err(PoolError::BadQuorum { .. })));
        assert!(matches!(TeacherPool::connect(&addrs, 1, t, t, &p).await, Err(PoolError::StartupQuorum { reached: 0, .. })));
        let bad = vec!["http://[not an address".to_string()];
        assert!(matches!(TeacherPool::connect(&bad, 1, t, t, &p).await, Err(PoolError::BadAddress { .. })));
    }
}
