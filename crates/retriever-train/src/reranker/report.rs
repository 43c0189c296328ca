//! The reranker run's report: `report.json` and `report.md`, the first stage alone against it
//! reranked on validation and test, with paired bootstrap intervals.

use super::{NegativeSource, RerankerConfig};
use crate::evaluate::{measures, Evaluation};
use crate::Result;
use ragtune_eval::significance::paired_bootstrap;
use serde_json::json;
use std::path::Path;

pub(super) fn build_report(
    config: &RerankerConfig,
    first_stage: &str,
    evaluations: &[(&str, Evaluation, Evaluation); 2],
    summary: &ragtune_trainer::RunSummary,
    train_triplets: usize,
) -> Result<(serde_json::Value, String)> {
    let e = &config.eval;
    let mut md = format!(
        "# Reranker run `{}`\n\nCross-encoder from `{}`, loss {:?}, {} training rows \
         (negatives: {}), {} optimizer steps{}. First stage: {}; the cross-encoder reranks its \
         top {}.\n",
        config.trainer.run_name,
        config.model.base.display(),
        config.loss.kind,
        train_triplets,
        match config.negatives.source {
            NegativeSource::Triplets => format!("mined, {}", config.triplets.display()),
            NegativeSource::FirstStage => format!(
                "{} per question per step, drawn from the first stage's top {}",
                config.negatives.per_query, config.negatives.k
            ),
        },
        summary.steps,
        if summary.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        first_stage,
        e.k,
    );
    let mut splits = serde_json::Map::new();
    for (split, before, after) in evaluations {
        md.push_str(&format!(
            "\n## {split} ({} queries; paired bootstrap, {} resamples, {:.0}% CI of reranked − first stage)\n\n\
             | measure | first stage | reranked | difference | CI low | CI high | p |\n|---|---|---|---|---|---|---|\n",
            after.exact.num_queries,
            e.bootstrap_resamples,
            e.confidence * 100.0
        ));
        let mut rows = Vec::new();
        for measure in measures() {
            let name = measure.to_string();
            let per_query = |ev: &Evaluation| -> Vec<f64> {
                ev.exact
                    .per_query
                    .values()
                    .map(|m| m.get(&name).copied().unwrap_or(0.0))
                    .collect()
            };
            let ci = paired_bootstrap(
                &per_query(before),
                &per_query(after),
                e.bootstrap_resamples,
                e.confidence,
                e.bootstrap_seed,
            )?;
            md.push_str(&format!(
                "| {name} | {:.4} | {:.4} | {:+.4} | {:+.4} | {:+.4} | {:.4} |\n",
                ci.mean_a, ci.mean_b, ci.mean_difference, ci.ci_low, ci.ci_high, ci.p_value
            ));
            rows.push(json!({
                "measure": name, "first_stage": ci.mean_a, "reranked": ci.mean_b,
                "difference": ci.mean_difference, "ci_low": ci.ci_low, "ci_high": ci.ci_high,
                "p_value": ci.p_value,
            }));
        }
        splits.insert(split.to_string(), json!(rows));
    }
    let report = json!({
        "run": config.trainer.run_name,
        "base": config.model.base,
        "first_stage": first_stage,
        "k": e.k,
        "steps": summary.steps,
        "stopped_early": summary.stopped_early,
        "best_checkpoint": summary.best_checkpoint,
        "train_triplets": train_triplets,
        "splits": splits,
        "config": config,
    });
    Ok((report, md))
}

pub(super) fn write_report(
    run_dir: &Path,
    report: &serde_json::Value,
    markdown: &str,
) -> Result<()> {
    let json_text = serde_json::to_vec_pretty(report).expect("the report serializes");
    ragtune_models::checkpoint::atomic_write(&run_dir.join("report.json"), &json_text)?;
    ragtune_models::checkpoint::atomic_write(&run_dir.join("report.md"), markdown.as_bytes())?;
    Ok(())
}
