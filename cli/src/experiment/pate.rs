//! PATE mode of a backdoor experiment, on the real processes: M teachers
//! (the first M, or those listed) train on poisoned partitions; every
//! teacher is served as its own process; the operator asks them for
//! noise-free votes (no budget: nothing leaves the operator); an aggregator
//! process answers the student process, which learns from noisy labels on
//! pristine public items. The reference run is the same with all teachers
//! clean (cached across grid cells).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use pate_ml::data::student_split;
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::trigger::Trigger;
use pate_privacy::histogram::histograms;
use pate_ml::decoded::decoded_copy;

use super::backdoor::{BackdoorArgs, BackdoorReport, Reference};
use super::certify::{share_certified, summarize};
use super::measure::{mean_where, score_checkpoint, EvalVotes};
use super::teachers::{config_hash, ensure_trained, TeacherSpec};
use crate::lab::ensemble::teacher_votes_tagged;
use crate::lab::parties::{self, AggregatorSettings, Bins, PartyTls, RunDirs};
use crate::lab::procs::Children;
use crate::lab::{argv, path_arg};
use crate::progress::say;

/// Runs PATE mode; every child is killed when it returns.
pub async fn run(args: &BackdoorArgs) -> anyhow::Result<BackdoorReport> {
    let mut children = Children::default();
    let result = tokio::select! {
        r = run_inner(args, &mut children) => r,
        _ = pate_proto::runtime::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    children.shutdown().await;
    result
}

fn student_args(args: &BackdoorArgs, aggregator: SocketAddr, data: &Path, out: &Path) -> Vec<String> {
    let mut a = argv![
        "--aggregator", aggregator, "--data", path_arg(data), "--eval-size", args.eval_size,
        "--queries", args.queries, "--seed", args.seed, "--model", args.model, "--epochs", args.student_epochs,
        "--public-trigger-rate", args.public_trigger_rate, "--out", path_arg(out),
    ];
    a.extend(args.trigger.to_flags());
    a
}

fn select(votes: &[Vec<u8>], idx: &[usize]) -> Vec<Vec<u8>> {
    idx.iter().map(|&i| votes[i].clone()).collect()
}

async fn run_inner(args: &BackdoorArgs, children: &mut Children) -> anyhow::Result<BackdoorReport> {
    let started = Instant::now();
    let n = args.teachers;
    anyhow::ensure!(n > 0, "--teachers must be at least 1");
    let poisoned_ids = args.poisoned_set()?;
    let m = poisoned_ids.len();
    let bins = Bins::locate(args.bin_dir.as_deref())?;
    let data_dir = resolve_data_dir(args.data.as_deref())?;
    // Decoded once, beside the cached teachers (shared by a grid's cells);
    // the processes read the raw copy.
    let (dd, root) = (data_dir.clone(), args.cache_dir().join("data"));
    let decoded = tokio::task::spawn_blocking(move || decoded_copy(&dd, &root)).await??;
    let (child_data, data) = (decoded.dir, decoded.data);
    let classes = data.num_classes();
    let split = student_split(&data.test, args.eval_size)?;
    let dirs = RunDirs::create(&args.out)?;
    let cache = args.cache_dir();
    let trigger = Trigger::from(args.trigger);
    say!("pate experiment backdoor (pate): {n} teachers, {m} poisoned ({poisoned_ids:?}) at rate {}, {} queries, Laplace scale {}", args.poison_rate, args.queries, args.noise_scale);

    let eval = split.eval.clone();
    let eval_trig = trigger.stamp_all(&eval.images);
    let picked = pate_student::pick_queries(split.pool.len(), args.queries, args.seed);
    let tamper = pate_student::public_tamper(args.public_trigger_rate, trigger.clone(), args.seed);
    let (query_images, stamped) = pate_student::query_images(&split.pool, &picked, tamper.as_ref());

    // Teachers: the attacked ensemble, plus clean twins of the poisoned ones for the reference.
    let spec = |i: usize, poisoned: bool| TeacherSpec {
        data: data_dir.clone(),
        partition: i,
        partitions: n,
        partition_seed: args.seed,
        seed: args.seed + i as u64,
        model: args.model,
        epochs: args.teacher_epochs,
        poison: poisoned.then(|| (args.poison_rate, args.target, trigger.clone())),
    };
    let attacked: Vec<TeacherSpec> = (0..n).map(|i| spec(i, poisoned_ids.contains(&i) && args.poison_rate > 0.0)).collect();
    let clean: Vec<TeacherSpec> = (0..n).map(|i| spec(i, false)).collect();
    let ref_key = config_hash(&(&clean, args.noise_scale, args.queries, args.seed, args.public_trigger_rate, args.student_epochs, args.eval_size, args.delta, &trigger, args.target, "pate-v1"));
    let ref_path = cache.join(format!("reference-{ref_key}.json"));
    let cached: Option<Reference> = std::fs::read(&ref_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let mut served = attacked.clone();
    let clean_idx: Vec<usize> = (0..n)
        .map(|i| {
            if attacked[i] == clean[i] || cached.is_some() {
                i
            } else {
                served.push(clean[i].clone());
                served.len() - 1
            }
        })
        .collect();
    let teachers_trained = ensure_trained(&bins.teacher, &served, &cache, &dirs, args.jobs, &child_data).await?;

    let named: Vec<_> = served.iter().enumerate().map(|(k, t)| (format!("teacher-{k}"), t.dir(&cache))).collect();
    let tls = PartyTls::provision(&args.out, named.len(), 1, false)?;
    let operator = tls.operator()?;
    let addrs = parties::serve_teachers(children, &bins.teacher, &named, &dirs, &tls, None).await?;
    say!("  {} teachers serving", addrs.len());

    // The operator's noise-free votes.
    let votes_eval = teacher_votes_tagged(&addrs, &eval.images, "exp-eval", &operator).await?;
    let votes_trig = teacher_votes_tagged(&addrs, &eval_trig, "exp-trigger", &operator).await?;
    let votes_query = teacher_votes_tagged(&addrs[..n], &query_images, "exp-query", &operator).await?;
    let attacked_idx: Vec<usize> = (0..n).collect();
    let (a_eval, a_trig) = (select(&votes_eval, &attacked_idx), select(&votes_trig, &attacked_idx));
    let ev = EvalVotes { clean: &a_eval, triggered: &a_trig, labels: &eval.labels, classes, target: args.target };
    let teachers = ev.teachers();
    let ensemble = ev.ensemble();
    let noisy = ev.noisy_aggregate(args.noise_scale)?;
    let certified_clean = summarize(&histograms(&a_eval, classes), &eval.labels);
    let certified_triggered = summarize(&histograms(&a_trig, classes), &eval.labels);
    let certified_share = share_certified(&histograms(&votes_query, classes), m as u32);
    say!("  ensemble accuracy {:.4}, ASR {:.4} (noise-free); noisy aggregate ASR {:.4}", ensemble.accuracy, ensemble.asr, noisy.asr);

    // The student of the attacked ensemble.
    let settings = AggregatorSettings::lnmax(args.noise_scale, args.epsilon_limit, args.delta);
    let agg = parties::start_aggregator(children, &bins.aggregator, "aggregator", &addrs[..n], &args.out.join("ledger.db"), settings, &dirs, &tls).await?;
    let student_out = args.out.join("student");
    say!("  student learning from the attacked ensemble");
    let sr = parties::run_student(children, &bins.student, &student_args(args, agg, &child_data, &student_out), &student_out, &dirs.logs.join("student.log"), &tls).await?;
    let (e, t, target, dir) = (eval.clone(), eval_trig.clone(), args.target, student_out.join("model"));
    let student = tokio::task::spawn_blocking(move || score_checkpoint(&dir, &e, &t, target)).await??;
    say!("  student accuracy {:.4}, ASR {:.4}", student.accuracy, student.asr);

    // The reference: the same pipeline with every teacher clean.
    let reference = match cached {
        Some(r) => {
            say!("  reference run found in the cache ({})", ref_path.display());
            r
        }
        None => {
            let (c_eval, c_trig) = (select(&votes_eval, &clean_idx), select(&votes_trig, &clean_idx));
            let cv = EvalVotes { clean: &c_eval, triggered: &c_trig, labels: &eval.labels, classes, target: args.target };
            let clean_addrs: Vec<SocketAddr> = clean_idx.iter().map(|&k| addrs[k]).collect();
            let agg = parties::start_aggregator(children, &bins.aggregator, "reference-aggregator", &clean_addrs, &args.out.join("reference-ledger.db"), settings, &dirs, &tls).await?;
            let out = args.out.join("reference-student");
            say!("  reference student learning from the clean ensemble");
            let rr = parties::run_student(children, &bins.student, &student_args(args, agg, &child_data, &out), &out, &dirs.logs.join("reference-student.log"), &tls).await?;
            let (e, t, target, dir) = (eval.clone(), eval_trig.clone(), args.target, out.join("model"));
            let student = tokio::task::spawn_blocking(move || score_checkpoint(&dir, &e, &t, target)).await??;
            let r = Reference { ensemble: cv.ensemble(), student, epsilon: Some(rr.epsilon) };
            std::fs::write(&ref_path, serde_json::to_vec_pretty(&r)?).with_context(|| format!("writing {}", ref_path.display()))?;
            r
        }
    };

    let poisoned = |i: usize| attacked[i].poison.is_some();
    let acc: Vec<f64> = teachers.iter().map(|t| t.accuracy).collect();
    let asr: Vec<f64> = teachers.iter().map(|t| t.asr).collect();
    Ok(BackdoorReport {
        mode: args.mode,
        num_teachers: n,
        poisoned_teachers: m,
        poisoned_ids,
        poison_rate: args.poison_rate,
        target: args.target,
        trigger,
        noise_scale: Some(args.noise_scale),
        queries: picked.len(),
        queries_answered: sr.queries_answered,
        public_trigger_rate: args.public_trigger_rate,
        seed: args.seed,
        teacher_asr_poisoned: mean_where(&asr, poisoned),
        teacher_asr_clean: mean_where(&asr, |i| !poisoned(i)),
        teacher_accuracy_poisoned: mean_where(&acc, poisoned),
        teacher_accuracy_clean: mean_where(&acc, |i| !poisoned(i)),
        teachers,
        ensemble_asr: ensemble.asr,
        ensemble_accuracy: ensemble.accuracy,
        noisy_aggregate_asr: Some(noisy.asr),
        noisy_aggregate_accuracy: Some(noisy.accuracy),
        student_asr: student.asr,
        student_accuracy: student.accuracy,
        label_accuracy: sr.label_accuracy,
        reference_ensemble_asr: reference.ensemble.asr,
        reference_ensemble_accuracy: reference.ensemble.accuracy,
        reference_student_asr: reference.student.asr,
        reference_student_accuracy: reference.student.accuracy,
        epsilon: Some(sr.epsilon),
        delta: Some(sr.delta),
        certified_share: Some(certified_share),
        certified_clean: Some(certified_clean),
        certified_triggered: Some(certified_triggered),
        public_triggered: stamped.len(),
        teachers_trained,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

