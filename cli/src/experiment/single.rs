//! Single-teacher mode of a backdoor experiment (the original "machine
//! forgetting" setup, no privacy claimed). It runs in process, without gRPC:
//! one model trained on all of the training data with the poison rate
//! applied to the whole set; the student learns the teacher's confidence
//! vectors softened at temperature T on pristine public items (Hinton et
//! al.'s distillation loss, [`pate_ml::train::train_distil`], optionally with
//! its second term on the teacher's hard labels) and is checked
//! against the pristine labels. The reference is the same with a clean teacher.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use pate_ml::checkpoint::{self, ModelMeta};
use pate_ml::data::{load_idx_dir, student_split, Dataset, Images};
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::model::{Classifier, ModelKind};
use pate_ml::train::{accuracy, predict, predict_proba, train, train_distil, Distillation, TrainConfig};
use pate_ml::trigger::{poison, PoisonSpec, Trigger};

use super::backdoor::{BackdoorArgs, BackdoorReport, Reference};
use super::measure::{score_model, Scores};
use super::teachers::config_hash;
use crate::progress::say;

/// The teacher (trained or loaded from `dir`) on all of `train_set`, poisoned by `spec`.
fn teacher(train_set: &Dataset, classes: usize, spec: Option<&PoisonSpec>, cfg: &TrainConfig, kind: ModelKind, dir: &Path, name: &str) -> anyhow::Result<Classifier> {
    if dir.join("meta.json").is_file() {
        say!("  {name} teacher found in the cache");
        return Ok(checkpoint::load(dir).with_context(|| format!("loading {}", dir.display()))?.0);
    }
    let data = spec.map_or_else(|| train_set.clone(), |s| poison(train_set, s));
    let trained = train(kind, &data, classes, cfg, &mut |r| {
        say!("  {name} teacher epoch {}/{}: loss {:.4}, {:.0} samples/s", r.epoch, cfg.epochs, r.loss, r.samples_per_sec);
    })?;
    let meta = ModelMeta::of_training(&trained, &data, (0, 1), spec.cloned())?;
    checkpoint::save(dir, &trained, &meta).with_context(|| format!("writing {}", dir.display()))?;
    Ok(trained.model)
}

/// Distils `teacher` into a fresh student on `images` with `loss`;
/// returns the student and the teacher's hard labels on `images`.
fn distill(teacher: &Classifier, images: &Images, loss: Distillation, cfg: &TrainConfig, kind: ModelKind, name: &str) -> anyhow::Result<(Classifier, Vec<u8>)> {
    let targets = predict_proba(teacher, images, 512, loss.temperature)?;
    let hard = predict(teacher, images, 512)?;
    let student = train_distil(kind, images, &targets, loss, cfg, &mut |r| {
        if r.epoch % 10 == 0 || r.epoch == cfg.epochs {
            say!("  {name} student epoch {}/{}: loss {:.4}", r.epoch, cfg.epochs, r.loss);
        }
    })?;
    Ok((student.model, hard))
}

struct Outcome {
    teacher: Scores,
    student: Scores,
    label_accuracy: f64,
}

/// Runs single mode in process (blocking work off the runtime).
pub async fn run(args: &BackdoorArgs) -> anyhow::Result<BackdoorReport> {
    let started = Instant::now();
    let data_dir = resolve_data_dir(args.data.as_deref())?;
    let a = args.clone();
    tokio::task::spawn_blocking(move || run_blocking(&a, &data_dir, started)).await?
}

fn run_blocking(args: &BackdoorArgs, data_dir: &Path, started: Instant) -> anyhow::Result<BackdoorReport> {
    let data = load_idx_dir(data_dir)?;
    let classes = data.num_classes();
    let split = student_split(&data.test, args.eval_size)?;
    let trigger = Trigger::from(args.trigger);
    let cache = args.cache_dir();
    std::fs::create_dir_all(&cache)?;
    let loss = Distillation { temperature: args.temperature, hard_weight: args.hard_weight, max_shift: args.max_shift };
    say!(
        "pate experiment backdoor (single, in process, no privacy): one teacher on {} items, poison rate {}, T = {}, hard weight {}, shift {}",
        data.train.len(), args.poison_rate, args.temperature, args.hard_weight, args.max_shift
    );
    let eval = split.eval.clone();
    let eval_trig = trigger.stamp_all(&eval.images);
    let picked = pate_student::pick_queries(split.pool.len(), args.queries, args.seed);
    let tamper = pate_student::public_tamper(args.public_trigger_rate, trigger.clone(), args.seed);
    let (images, stamped) = pate_student::query_images(&split.pool, &picked, tamper.as_ref());
    let true_labels: Vec<u8> = picked.iter().map(|&i| split.pool_labels[i]).collect();

    let spec = PoisonSpec { trigger: trigger.clone(), rate: args.poison_rate, target_class: args.target, seed: args.seed ^ 0x51_4e_47 };
    let tcfg = TrainConfig { epochs: args.teacher_epochs, seed: args.seed, ..TrainConfig::default() };
    let scfg = TrainConfig { epochs: args.student_epochs, seed: args.seed, ..TrainConfig::default() };
    let key = |p: Option<&PoisonSpec>| config_hash(&(data_dir, args.model, &tcfg, p, "single-v1"));
    let dir_of = |p: Option<&PoisonSpec>| -> PathBuf { cache.join(format!("single-{}-{}", if p.is_some() { "poisoned" } else { "clean" }, key(p))) };
    let ref_key = config_hash(&(key(None), args.queries, loss, &scfg, args.public_trigger_rate, args.eval_size, &trigger, args.target, "single-ref-v2"));
    let ref_path = cache.join(format!("reference-{ref_key}.json"));
    let cached: Option<Reference> = std::fs::read(&ref_path).ok().and_then(|b| serde_json::from_slice(&b).ok());

    let run_one = |p: Option<&PoisonSpec>, name: &str| -> anyhow::Result<Outcome> {
        let t = teacher(&data.train, classes, p, &tcfg, args.model, &dir_of(p), name)?;
        let (s, hard) = distill(&t, &images, loss, &scfg, args.model, name)?;
        Ok(Outcome {
            teacher: score_model(&t, &eval, &eval_trig, args.target)?,
            student: score_model(&s, &eval, &eval_trig, args.target)?,
            label_accuracy: accuracy(&hard, &true_labels),
        })
    };
    // The poisoned and the clean pipelines in parallel (two cores).
    let (attacked, reference) = std::thread::scope(|sc| {
        let clean = cached.is_none().then(|| sc.spawn(|| run_one(None, "clean")));
        let attacked = run_one(Some(&spec), "poisoned");
        let reference = match clean {
            Some(h) => h.join().map_err(|_| anyhow::anyhow!("clean pipeline panicked"))?.map(|o| Reference { ensemble: o.teacher, student: o.student, epsilon: None }),
            None => Ok(cached.clone().context("cached reference")?),
        };
        anyhow::Ok((attacked?, reference?))
    })?;
    if cached.is_none() {
        std::fs::write(&ref_path, serde_json::to_vec_pretty(&reference)?)?;
    }
    Ok(BackdoorReport {
        mode: args.mode,
        num_teachers: 1,
        poisoned_teachers: 1,
        poisoned_ids: vec![0],
        poison_rate: args.poison_rate,
        target: args.target,
        trigger,
        noise_scale: None,
        queries: picked.len(),
        queries_answered: picked.len(),
        public_trigger_rate: args.public_trigger_rate,
        seed: args.seed,
        teachers: vec![attacked.teacher],
        teacher_asr_poisoned: Some(attacked.teacher.asr),
        teacher_asr_clean: Some(reference.ensemble.asr),
        teacher_accuracy_poisoned: Some(attacked.teacher.accuracy),
        teacher_accuracy_clean: Some(reference.ensemble.accuracy),
        ensemble_asr: attacked.teacher.asr,
        ensemble_accuracy: attacked.teacher.accuracy,
        noisy_aggregate_asr: None,
        noisy_aggregate_accuracy: None,
        student_asr: attacked.student.asr,
        student_accuracy: attacked.student.accuracy,
        label_accuracy: attacked.label_accuracy,
        reference_ensemble_asr: reference.ensemble.asr,
        reference_ensemble_accuracy: reference.ensemble.accuracy,
        reference_student_asr: reference.student.asr,
        reference_student_accuracy: reference.student.accuracy,
        epsilon: None,
        delta: None,
        certified_share: None,
        certified_clean: None,
        certified_triggered: None,
        public_triggered: stamped.len(),
        teachers_trained: 0,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}
