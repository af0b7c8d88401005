//! Ranked querying: after a first share of random queries, ask the rest of
//! the pool in order of how sure a cheap model trained on the answers so
//! far is about each item, surest first, its predicted classes taking
//! turns.
//!
//! Why one would: under Confident-GNMax every query asked pays for its
//! threshold check, answered or not, and an answered query pays least
//! where the teachers agree most. Items a public model is sure about are
//! mostly the ones the teachers agree on, so ranked queries pass the check
//! more often and come back right more often. The ranking is
//! post-processing of released answers and public data: it costs no
//! privacy.
//!
//! What it gave (docs/PRIVATE_LAB.md, "Sixth session"): on the private
//! lab's teachers at the same data-dependent target, 701 answers at 96 %
//! right instead of 299 at 86 %, but a WORSE semi-supervised student (0.70
//! against 0.78): the items the ensemble is surest of teach a student that
//! already pseudo-labels them little, and skew what it is taught. So it is
//! off by default (`--rank-after 0`); it stays for students that learn
//! from labels alone, and for budget experiments.
//!
//! The model is the teachers' cheap one: a linear classifier on fixed
//! scattering features, a few seconds on the CPU.

use pate_ml::data::{Dataset, Images};
use pate_ml::model::ModelKind;
use pate_ml::train::{predict_proba, train, TrainConfig, TrainError};

use crate::query::{label_pool, Labelled};
use crate::Config;

/// Indices of `rest` in asking order: the classes the model trained on
/// `answered` predicts take turns (one item of each in turn), and within
/// a class the item it is surest of (highest top probability) comes first.
/// Taking turns keeps the answers spread over the classes: surest-first
/// alone asked mostly about the few easy classes (in a run on the private
/// lab's teachers, 298 of 791 answers were ankle boots, 7 were shirts).
/// Images the scattering cannot take (below 3x3) are an error.
pub fn rank_by_confidence(
    answered: &Dataset,
    rest: &Images,
    classes: usize,
    seed: u64,
) -> Result<Vec<usize>, TrainError> {
    // The private lab's teacher recipe, on the answers of the first phase.
    let cfg = TrainConfig::scatter_head(seed);
    let trained = train(ModelKind::Scatter, answered, classes, &cfg, &mut |_| {})?;
    let probs = predict_proba(&trained.model, rest, 512, 1.0)?;
    // (top probability, predicted class) of each item.
    let top: Vec<(f32, usize)> = probs
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .fold((f32::MIN, 0), |best, (c, &v)| if v > best.0 { (v, c) } else { best })
        })
        .collect();
    // `top`'s classes index the model's `classes` outputs.
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &(_, c)) in top.iter().enumerate() {
        by_class[c].push(i);
    }
    for items in &mut by_class {
        items.sort_by(|&a, &b| top[b].0.total_cmp(&top[a].0));
    }
    let mut order = Vec::with_capacity(rest.len());
    for turn in 0.. {
        let before = order.len();
        order.extend(by_class.iter().filter_map(|items| items.get(turn)));
        if order.len() == before {
            break;
        }
    }
    Ok(order)
}

/// Asks the first `config.rank_after` of `queried` as they come, then,
/// unless the budget already ran out, the rest ranked by
/// [`rank_by_confidence`] (its model seeded by `config.seed`). The
/// result indexes `queried` as [`label_pool`]'s does. The second phase asks
/// under its own request ids (`<run id>-ranked-<batch>`), so a rerun with
/// the same run id replays both phases.
pub async fn label_ranked(config: &Config, queried: &Images, classes: usize) -> anyhow::Result<Labelled> {
    let (first, seed) = (config.rank_after.min(queried.len()), config.seed);
    let run_id = config.run_id.clone().unwrap_or_else(crate::query::random_run_id);
    let phase1 = Config {
        run_id: Some(run_id.clone()),
        ..config.clone()
    };
    let mut out = label_pool(&phase1, &queried.range(0..first), classes).await?;
    if out.refused > 0 || first == queried.len() {
        // The budget ran out in the first phase: the rest was never asked.
        out.refused += queried.len() - first;
        return Ok(out);
    }
    let rest = queried.range(first..queried.len());
    let order = if out.items.is_empty() {
        // Nothing to learn a ranking from: keep the random order.
        (0..rest.len()).collect()
    } else {
        let answered = Dataset {
            images: queried.select(&out.items),
            labels: out.labels.clone(),
        };
        tokio::task::spawn_blocking(move || rank_by_confidence(&answered, &rest, classes, seed)).await??
    };
    tracing::info!(
        first,
        answered = out.items.len(),
        ranked = order.len(),
        "asking the rest of the pool surest first"
    );
    let ranked: Vec<usize> = order.iter().map(|&i| first + i).collect();
    let phase2 = Config {
        run_id: Some(format!("{run_id}-ranked")),
        ..config.clone()
    };
    let more = label_pool(&phase2, &queried.select(&ranked), classes).await?;
    out.items.extend(more.items.iter().map(|&i| ranked[i]));
    out.labels.extend(more.labels);
    out.abstained += more.abstained;
    out.refused += more.refused;
    if more.budget.epsilon_spent >= out.budget.epsilon_spent {
        out.budget = more.budget;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bright images (class 1) and dark ones (class 0), with a grey middle
    /// ground: the ranking puts the extremes first, one of each class, and
    /// the greys after them; every item exactly once.
    #[test]
    fn surest_items_come_first_taking_turns() -> anyhow::Result<()> {
        let side = 8;
        let image = |v: u8| vec![v; side * side];
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for k in 0..20u8 {
            data.extend(image(if k % 2 == 0 { 10 + k } else { 240 - k }));
            labels.push(k % 2);
        }
        let answered = Dataset {
            images: Images {
                data,
                rows: side,
                cols: side,
            },
            labels,
        };
        // rest: grey 128, dark 5, grey 120, bright 250, dark 8, bright 245
        let rest: Vec<u8> = [128u8, 5, 120, 250, 8, 245].iter().flat_map(|&v| image(v)).collect();
        let rest = Images {
            data: rest,
            rows: side,
            cols: side,
        };
        let order = rank_by_confidence(&answered, &rest, 2, 0)?;
        let mut firsts = order[..2].to_vec();
        firsts.sort_unstable();
        assert_eq!(firsts, vec![1, 3], "the surest of each class first: {order:?}");
        let mut all = order.clone();
        all.sort_unstable();
        assert_eq!(all, (0..6).collect::<Vec<_>>(), "every item once: {order:?}");
        assert!(
            order.iter().position(|&i| i == 0) > order.iter().position(|&i| i == 4),
            "{order:?}"
        );
        Ok(())
    }
}
