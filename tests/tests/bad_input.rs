//! Bad input gets a clear gRPC status, never a crash: wrong shapes and
//! lengths, NaN, empty and oversize batches, unreachable and mismatched
//! teachers.

mod common;

use common::*;
use pate_proto::auth::Role;
use pate_proto::v1::{LabelRequest, VoteRequest};
use pate_proto::{Dtype, Tensor};
use tonic::Code;

fn tensor(shape: &[u32], dtype: Dtype, data: Vec<u8>) -> Option<Tensor> {
    Some(Tensor { shape: shape.to_vec(), dtype: dtype as i32, data })
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every malformed batch, with the words its error must contain.
fn bad_batches() -> Vec<(Option<Tensor>, &'static str)> {
    let mut nan = vec![0.5f32; 784];
    nan[100] = f32::NAN;
    vec![
        (tensor(&[1, 14, 56], Dtype::U8, vec![0; 784]), "does not match the model's input shape"),
        (tensor(&[1, 28, 28], Dtype::U8, vec![0; 700]), "needs 784"),
        (tensor(&[1, 28, 28], Dtype::F32, floats(&nan)), "expected a finite value"),
        (tensor(&[0, 28, 28], Dtype::U8, vec![]), "empty batch"),
        (tensor(&[65, 28, 28], Dtype::U8, vec![0; 65 * 784]), "exceeds the limit of"),
        (tensor(&[28, 28], Dtype::U8, vec![0; 784]), "must be [batch, rows, cols]"),
        (tensor(&[1, 28, 28], Dtype::Unspecified, vec![0; 784]), "unsupported dtype"),
        (None, "no samples"),
    ]
}

/// A feature cache the model cannot read (an MLP checkpoint) or a damaged
/// one stops the teacher at start-up, before it serves a vote.
#[tokio::test]
async fn teacher_refuses_a_feature_cache_it_cannot_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("features.bin");
    let images = pate_ml::data::Images { data: (0..3 * 784).map(|i| (i % 251) as u8).collect(), rows: 28, cols: 28 };
    pate_ml::feature_cache::FeatureCache::build(&path, &images).expect("build");
    let serve = |cache: &std::path::Path| {
        let config = pate_teacher::ServeConfig {
            checkpoint: teacher_checkpoint(0),
            id: None,
            max_batch: 64,
            feature_cache: Some(cache.to_path_buf()),
            tls: tls(Role::Teacher(0)),
        };
        async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            pate_teacher::run(config, l, std::future::pending()).await
        }
    };
    let err = serve(&path).await.expect_err("an MLP cannot read scattering features");
    assert!(format!("{err:#}").contains("scattering features"), "{err:#}");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
    let err = serve(&path).await.expect_err("a truncated cache is refused");
    assert!(format!("{err:#}").contains("not a scattering feature cache"), "{err:#}");
}

#[tokio::test]
async fn teacher_rejects_malformed_votes() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let mut client = teacher_client(teacher.addr).await;
    for (samples, words) in bad_batches() {
        let err = client
            .vote(VoteRequest { request_id: "bad".into(), samples, ..Default::default() })
            .await
            .expect_err("malformed batch must be rejected");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(words), "{:?} should mention {words:?}", err.message());
    }
    // No oracle: a network client asking for probability vectors is refused.
    let err = client
        .vote(VoteRequest { request_id: "p".into(), samples: Some(eval_samples(3).to_tensor()), with_probabilities: true, ..Default::default() })
        .await
        .expect_err("probabilities are never served");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("labels only"), "{}", err.message());
    // Still serving after all that.
    let ok = client
        .vote(VoteRequest { request_id: "ok".into(), samples: Some(eval_samples(3).to_tensor()), ..Default::default() })
        .await
        .expect("valid vote")
        .into_inner();
    assert_eq!(ok.labels.len(), 3);
    teacher.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn aggregator_rejects_malformed_labels_at_no_cost() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let t = teacher.addr.to_string();
    let config = aggregator_config(&["--teacher", &t, "--max-batch", "64", "--ledger", ledger.to_str().expect("utf-8")]);
    let agg = start_aggregator(config).await;
    let mut client = aggregator_client(agg.addr).await;
    for (samples, words) in bad_batches() {
        let err = client.label(LabelRequest { request_id: "bad".into(), samples }).await.expect_err("rejected");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(words), "{:?} should mention {words:?}", err.message());
    }
    let err = client
        .label(LabelRequest { request_id: String::new(), samples: Some(eval_samples(1).to_tensor()) })
        .await
        .expect_err("no request id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let budget = client.budget(pate_proto::v1::BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!((budget.queries_answered, budget.epsilon_spent), (0, 0.0), "rejected input costs nothing");
    agg.stop().await.expect("clean shutdown");
    teacher.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn unreachable_teachers_below_quorum_stop_start_up_with_a_clear_error() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let t = teacher.addr.to_string();
    let config = aggregator_config(&[
        "--teacher", &t, "--teacher", "127.0.0.1:1", "--quorum", "2", "--connect-timeout", "0.5",
        "--ledger", ledger.to_str().expect("utf-8"),
    ]);
    let err = start_aggregator(config).await.join().await.expect_err("quorum of 2 cannot be met");
    let msg = format!("{err:#}");
    assert!(msg.contains("only 1 of 2 teachers reachable") && msg.contains("127.0.0.1:1"), "{msg}");
    teacher.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_teacher_lost_mid_run_fails_the_query_at_no_cost() {
    let (a, b) = (start_teacher(&teacher_checkpoint(0)).await, start_teacher(&teacher_checkpoint(1)).await);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let (ta, tb) = (a.addr.to_string(), b.addr.to_string());
    let config = aggregator_config(&[
        "--teacher", &ta, "--teacher", &tb, "--quorum", "2", "--vote-timeout", "2", "--delta", "0", "--noise-scale", "10",
        "--ledger", ledger.to_str().expect("utf-8"),
    ]);
    let agg = start_aggregator(config).await;
    let mut client = aggregator_client(agg.addr).await;
    let req = |id: &str| LabelRequest { request_id: id.into(), samples: Some(eval_samples(4).to_tensor()) };
    let ok = client.label(req("first")).await.expect("both teachers up").into_inner();
    assert_eq!(ok.labels.len(), 4);
    b.stop().await.expect("clean shutdown");
    let err = client.label(req("second")).await.expect_err("quorum lost");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("only 1 of 2 teachers voted"), "{}", err.message());
    // The student learns nothing about where the teachers are.
    assert!(!err.message().contains("127.0.0.1") && !err.message().contains(&tb), "names a teacher: {}", err.message());
    let budget = client.budget(pate_proto::v1::BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!(budget.queries_answered, 4);
    assert!((budget.epsilon_spent - 4.0 * 2.0 / 10.0).abs() < 1e-12, "only the answered batch is charged");
    agg.stop().await.expect("clean shutdown");
    a.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn teachers_of_different_ensembles_are_refused() {
    use pate_ml::data::{Dataset, Images};
    let dir = tempfile::tempdir().expect("tempdir");
    // A teacher of 8x8 images with 3 classes cannot vote with 28x28 ones.
    let data = Dataset {
        images: Images { data: (0..30 * 64).map(|i| (i % 251) as u8).collect(), rows: 8, cols: 8 },
        labels: (0..30).map(|i| (i % 3) as u8).collect(),
    };
    let cfg = pate_ml::train::TrainConfig { epochs: 1, ..Default::default() };
    let trained = pate_ml::train::train(pate_ml::model::ModelKind::Mlp, &data, 3, &cfg, &mut |_| {}).expect("train");
    let meta = pate_ml::checkpoint::ModelMeta {
        model_kind: pate_ml::model::ModelKind::Mlp, rows: 8, cols: 8, classes: 3, partition_index: 0, partition_count: 1,
        data_fingerprint: String::new(), train_accuracy: 0.0, train_items: 30, poison: None,
    };
    let odd_dir = dir.path().join("odd");
    pate_ml::checkpoint::save(&odd_dir, &trained, &meta).expect("save");
    let (good, odd) = (start_teacher(&teacher_checkpoint(0)).await, start_teacher(&odd_dir).await);
    let (tg, to) = (good.addr.to_string(), odd.addr.to_string());
    let ledger = dir.path().join("ledger.db");
    let config = aggregator_config(&["--teacher", &tg, "--teacher", &to, "--ledger", ledger.to_str().expect("utf-8")]);
    let err = start_aggregator(config).await.join().await.expect_err("mixed ensemble");
    let msg = format!("{err:#}");
    assert!(msg.contains("not one ensemble") && msg.contains("[8, 8]"), "{msg}");
    good.stop().await.expect("clean shutdown");
    odd.stop().await.expect("clean shutdown");
}
