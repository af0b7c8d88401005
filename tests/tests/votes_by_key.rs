//! Votes by sample key: a teacher holding the public images' features (a
//! feature cache) is asked for an image by the SHA-256 of its pixels, and
//! gives exactly the vote it gives the pixels; keys it lacks come back as
//! unknown and the aggregator asks those by pixels. Malformed or misdirected
//! keys are refused with a clear status.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use pate_aggregator::TeacherPool;
use pate_proto::auth::Role;
use pate_proto::v1::{DescribeRequest, VoteRequest};
use tonic::Code;

/// A small scatter teacher (the kind that reads a feature cache).
fn scatter_checkpoint(out: PathBuf) -> PathBuf {
    train_teacher(&out, &["--partition", "0", "--partitions", "120", "--epochs", "2", "--model", "scatter"]);
    out
}

async fn serve(checkpoint: &std::path::Path, cache: Option<PathBuf>, role: Role) -> Server {
    let config =
        pate_teacher::ServeConfig { checkpoint: checkpoint.to_path_buf(), id: None, max_batch: 64, feature_cache: cache, tls: tls(role) };
    start_teacher_config(config).await
}

#[tokio::test]
async fn votes_by_key_are_votes_by_pixels_and_unknown_keys_fall_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("scatter");
    let checkpoint = tokio::task::spawn_blocking(move || scatter_checkpoint(out)).await.expect("train");
    let samples = eval_samples(20);
    // The cache holds the first 12 of the 20 samples.
    let cache = dir.path().join("features.bin");
    let held = samples.select(&(0..12).collect::<Vec<_>>());
    let images = pate_ml::data::Images { data: held.pixels.clone(), rows: held.rows, cols: held.cols };
    pate_ml::feature_cache::FeatureCache::build(&cache, &images).expect("build cache");

    let cached = serve(&checkpoint, Some(cache), Role::Teacher(0)).await;
    let plain = serve(&checkpoint, None, Role::Teacher(1)).await;
    let (mut a, mut b) = (teacher_client(cached.addr).await, teacher_client(plain.addr).await);
    assert!(a.describe(DescribeRequest {}).await.expect("describe").into_inner().votes_by_key);
    assert!(!b.describe(DescribeRequest {}).await.expect("describe").into_inner().votes_by_key);

    let by_pixels = |s: &pate_proto::Samples| VoteRequest { request_id: "p".into(), samples: Some(s.to_tensor()), ..Default::default() };
    let by_key = |keys: Vec<u8>| VoteRequest { request_id: "k".into(), sample_keys: keys, ..Default::default() };
    let want = b.vote(by_pixels(&samples)).await.expect("vote by pixels").into_inner().labels;
    // The pure-pixel vote of the cached teacher is the plain one's: same model.
    assert_eq!(a.vote(by_pixels(&samples)).await.expect("vote").into_inner().labels, want);
    let got = a.vote(by_key(samples.keys())).await.expect("vote by key").into_inner();
    assert_eq!(got.unknown, (12..20).collect::<Vec<u32>>());
    assert_eq!(got.labels[..12], want[..12]);
    // Keys in another order: the votes follow them.
    let mixed = samples.select(&[15, 3, 11, 0]);
    let got = a.vote(by_key(mixed.keys())).await.expect("vote by key").into_inner();
    assert_eq!((got.unknown, [got.labels[1], got.labels[2], got.labels[3]]), (vec![0], [want[3], want[11], want[0]]));

    // Misdirected and malformed keys: a clear refusal, nothing served.
    let refusals = [
        (b.vote(by_key(samples.keys())).await, "holds no feature cache"),
        (a.vote(by_key(samples.keys()[..40].to_vec())).await, "whole number"),
        (a.vote(by_key(eval_samples(65).keys())).await, "exceeds the limit"),
        (a.vote(VoteRequest { sample_keys: samples.keys(), ..by_pixels(&samples) }).await, "not both"),
    ];
    for (result, words) in refusals {
        let err = result.expect_err("must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(words), "{:?} should mention {words:?}", err.message());
    }

    // Through the aggregator's pool: the cached teacher is asked by key
    // (the 8 samples it lacks then by pixels), the plain one by pixels, and
    // both give the same votes on every sample.
    let addrs = [cached.addr.to_string(), plain.addr.to_string()];
    let t = Duration::from_secs(10);
    let pool = TeacherPool::connect(&addrs, 2, t, t, &transport(Role::Aggregator)).await.expect("pool");
    assert_eq!(pool.infos().iter().map(|i| i.votes_by_key).collect::<Vec<_>>(), [true, false]);
    let votes = pool.collect_votes("r", &samples).await.expect("votes");
    assert_eq!(votes, vec![want.clone(), want]);
    cached.stop().await.expect("clean shutdown");
    plain.stop().await.expect("clean shutdown");
}
