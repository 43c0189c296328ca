//! What a run measured, as data (`report.json`) and as a page (`report.md`), both written
//! atomically into the run folder; and the process's peak resident memory, read as the pipeline's
//! stage records read it.

use crate::config::{ClassifyConfig, Task};
use crate::metrics::Scores;
use crate::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct SplitSizes {
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub stratified: bool,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    pub run_dir: PathBuf,
    pub task: Task,
    /// full, lora, ia3, houlsby, pfeiffer, prompt_tuning or prefix_tuning.
    pub method: String,
    pub base: PathBuf,
    pub labels: usize,
    pub split: SplitSizes,
    /// Values the optimizer updates (adapter or encoder, plus the head).
    pub trainable_parameters: i64,
    /// Every value of the model: encoder, adapter and head.
    pub total_parameters: i64,
    /// The base learning rate used (`peft.lr` when set, else `trainer.optimizer.lr`).
    pub lr: f64,
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub stopped_early: bool,
    /// The step whose weights were evaluated (the best validation checkpoint), if one was kept.
    pub best_step: Option<u64>,
    /// Mean wall time of an optimizer step (forward, backward, AdamW) over the steps of this
    /// process that neither evaluated nor checkpointed.
    pub mean_step_seconds: Option<f64>,
    pub timed_steps: usize,
    pub train_seconds: f64,
    /// The process's peak resident memory during the run (VmHWM, reset at the start).
    pub peak_rss_bytes: u64,
    pub validation: Scores,
    pub test: Option<Scores>,
    pub model_dir: PathBuf,
    pub predictions: PathBuf,
    pub config: ClassifyConfig,
}

impl ClassifyReport {
    /// Writes `report.json` and `report.md` into the run folder.
    pub fn write(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("the report serializes");
        ragtune_models::checkpoint::atomic_write(&self.run_dir.join("report.json"), &json)?;
        ragtune_models::checkpoint::atomic_write(
            &self.run_dir.join("report.md"),
            self.markdown().as_bytes(),
        )?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# {} — {:?}, method: {}\n",
            self.run_dir.display(),
            self.task,
            self.method
        );
        let _ = writeln!(
            md,
            "Base `{}`; {} labels; split {} / {} / {} (train / val / test, {}seed {}).\n",
            self.base.display(),
            self.labels,
            self.split.train,
            self.split.val,
            self.split.test,
            if self.split.stratified {
                "stratified by label, "
            } else {
                ""
            },
            self.split.seed
        );
        let _ = writeln!(md, "| | |\n| --- | --- |");
        let _ = writeln!(
            md,
            "| trainable parameters | {} of {} ({:.2}%) |",
            self.trainable_parameters,
            self.total_parameters,
            100.0 * self.trainable_parameters as f64 / self.total_parameters.max(1) as f64
        );
        let _ = writeln!(md, "| learning rate | {} |", self.lr);
        let _ = writeln!(
            md,
            "| steps | {}{}{} |",
            self.steps,
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            self.best_step
                .map(|s| format!(", evaluated at step {s}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            md,
            "| mean step time | {} |",
            self.mean_step_seconds.map_or("n/a".into(), |s| format!(
                "{:.1} ms ({} steps)",
                s * 1e3,
                self.timed_steps
            ))
        );
        let _ = writeln!(md, "| peak RSS | {} |", mebibytes(self.peak_rss_bytes));
        let _ = writeln!(md, "| train time | {:.1} s |\n", self.train_seconds);
        for (name, scores) in [
            ("validation", Some(&self.validation)),
            ("test", self.test.as_ref()),
        ] {
            let Some(scores) = scores else { continue };
            let _ = writeln!(md, "## {name} ({} examples)\n", scores.examples);
            let _ = writeln!(md, "- loss: {:.4}", scores.loss);
            if let Some(a) = scores.accuracy {
                let _ = writeln!(md, "- accuracy: {a:.4}{}", interval(&scores.accuracy_ci));
            }
            if let Some(f) = scores.macro_f1 {
                let _ = writeln!(md, "- macro-F1: {f:.4}{}", interval(&scores.macro_f1_ci));
            }
            for (label, value) in [
                ("MSE", scores.mse),
                ("MAE", scores.mae),
                ("Pearson r", scores.pearson),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(md, "- {label}: {v:.4}");
                }
            }
            if name == "test" && !scores.per_class.is_empty() {
                let _ = writeln!(md, "\n| label | precision | recall | F1 | support |\n| --- | --- | --- | --- | --- |");
                for c in &scores.per_class {
                    let _ = writeln!(
                        md,
                        "| {} | {:.3} | {:.3} | {:.3} | {} |",
                        c.label, c.precision, c.recall, c.f1, c.support
                    );
                }
            }
            md.push('\n');
        }
        let _ = writeln!(
            md,
            "Model: `{}`; predictions: `{}`.",
            self.model_dir.display(),
            self.predictions.display()
        );
        md
    }
}

fn interval(ci: &Option<crate::metrics::Interval>) -> String {
    ci.map(|c| {
        format!(
            " ({:.0}% CI [{:.4}, {:.4}], {} bootstrap resamples of the items)",
            c.confidence * 100.0,
            c.low,
            c.high,
            c.resamples
        )
    })
    .unwrap_or_default()
}

pub fn mebibytes(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Peak resident memory since the last [`reset_peak_rss`] (Linux VmHWM; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the kernel's peak-RSS counter of this process, so a run reports its own peak rather than
/// the largest of the process so far.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Writes one JSON object per line, atomically.
pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let mut bytes = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut bytes, row).expect("a JSON value serializes");
        bytes.push(b'\n');
    }
    ragtune_models::checkpoint::atomic_write(path, &bytes)?;
    Ok(())
}
