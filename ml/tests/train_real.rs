//! Training on a real Fashion-MNIST subset with fixed seeds: honest accuracy
//! on held-out items, checkpoint round trip, teacher partitions, and a
//! backdoor that takes on a poisoned model.

use pate_ml::checkpoint::{self, ModelMeta};
use pate_ml::data::{fingerprint, load_idx_dir, IdxData};
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::model::ModelKind;
use pate_ml::partition::partition;
use pate_ml::train::{accuracy, predict, predict_proba, train, train_soft, TrainConfig};
use pate_ml::trigger::{attack_success_rate, poison, PoisonSpec, Trigger};

fn data() -> IdxData {
    let dir = resolve_data_dir(None).expect("Fashion-MNIST not found: apt-get install dataset-fashion-mnist");
    load_idx_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn mlp_learns_fashion_mnist_and_checkpoint_round_trips() {
    let d = data();
    let train_set = d.train.range(0..2000);
    let held_out = d.test.range(0..1000);
    let cfg = TrainConfig {
        seed: 1,
        ..TrainConfig::default()
    };
    let mut reports = Vec::new();
    let t = train(ModelKind::Mlp, &train_set, 10, &cfg, &mut |r| reports.push(r)).expect("train");
    assert_eq!(reports.len(), cfg.epochs);
    assert!(reports.last().expect("report").loss < reports[0].loss, "loss falls");
    let pred = predict(&t.model, &held_out.images, 256).expect("predict");
    let acc = accuracy(&pred, &held_out.labels);
    eprintln!("MLP, 2000 train items, held-out accuracy {acc:.4}");
    assert!(acc > 0.75, "held-out accuracy {acc}");

    let dir = tempfile::tempdir().expect("tempdir");
    let meta = ModelMeta {
        model_kind: t.kind,
        rows: t.rows,
        cols: t.cols,
        classes: t.classes,
        partition_index: 0,
        partition_count: 30,
        data_fingerprint: fingerprint(&train_set),
        train_accuracy: accuracy(
            &predict(&t.model, &train_set.images, 256).expect("predict"),
            &train_set.labels,
        ),
        train_items: train_set.len(),
        poison: None,
    };
    checkpoint::save(dir.path(), &t, &meta).expect("save");
    let (loaded, back) = checkpoint::load(dir.path()).expect("load");
    assert_eq!(back, meta);
    assert_eq!(predict(&loaded, &held_out.images, 100).expect("predict"), pred);
    assert_eq!(
        predict_proba(&loaded, &held_out.images, 100, 1.0).expect("proba"),
        predict_proba(&t.model, &held_out.images, 100, 1.0).expect("proba")
    );
}

#[test]
fn cnn_learns_a_teacher_partition() {
    let d = data();
    let parts = partition(d.train.len(), 30, 7).expect("partition");
    let part = d.train.select(&parts[3]);
    assert_eq!(part.len(), 2000);
    let cfg = TrainConfig {
        epochs: 5,
        seed: 2,
        ..TrainConfig::default()
    };
    let t = train(ModelKind::Cnn, &part, 10, &cfg, &mut |_| {}).expect("train");
    let held_out = d.test.range(0..1000);
    let acc = accuracy(
        &predict(&t.model, &held_out.images, 250).expect("predict"),
        &held_out.labels,
    );
    eprintln!("CNN, 2000 train items, held-out accuracy {acc:.4}");
    assert!(acc > 0.72, "held-out accuracy {acc}");
}

#[test]
fn backdoor_takes_and_distillation_on_clean_items_drops_it() {
    let d = data();
    let target = 0u8;
    let spec = PoisonSpec {
        trigger: Trigger::default(),
        rate: 0.1,
        target_class: target,
        seed: 3,
    };
    let poisoned = poison(&d.train.range(0..3000), &spec);
    let cfg = TrainConfig {
        seed: 4,
        ..TrainConfig::default()
    };
    let teacher = train(ModelKind::Mlp, &poisoned, 10, &cfg, &mut |_| {}).expect("train");
    let eval = d.test.range(9000..10_000);
    let triggered = spec.trigger.stamp_all(&eval.images);
    let pred = predict(&teacher.model, &triggered, 500).expect("predict");
    let asr = attack_success_rate(&pred, &eval.labels, target);
    eprintln!("poisoned MLP teacher ASR {asr:.4}");
    assert!(asr > 0.8, "teacher ASR {asr}");

    // Distil on clean public items against the teacher's softened outputs.
    let public = d.test.images.range(0..3000);
    let temperature = 4.0;
    let soft = predict_proba(&teacher.model, &public, 500, temperature).expect("proba");
    let student = train_soft(ModelKind::Mlp, &public, &soft, temperature, &cfg, &mut |_| {}).expect("distil");
    let s_asr = attack_success_rate(
        &predict(&student.model, &triggered, 500).expect("predict"),
        &eval.labels,
        target,
    );
    let s_acc = accuracy(
        &predict(&student.model, &eval.images, 500).expect("predict"),
        &eval.labels,
    );
    eprintln!("distilled student ASR {s_asr:.4}, clean accuracy {s_acc:.4}");
    assert!(s_asr < 0.3, "student ASR {s_asr}");
    assert!(s_acc > 0.7, "student accuracy {s_acc}");
}
