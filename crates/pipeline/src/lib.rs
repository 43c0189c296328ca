//! Stage-by-stage RAG fine-tuning from one config: data, then the retriever, then an index over
//! the tuned retriever, then the generator trained on that retriever's passages, (then preference
//! pairs and DPO,) then the end-to-end 2×2 and a report a person reads.
//!
//! Each stage calls its recipe's library function (`retriever_train::train::run`,
//! `generator_train::sft::run`, ...) with the paths the pipeline fills in, and writes
//! `runs/<name>/<stage>/stage.json` ([`record`]): the resolved config, the hashes of its inputs,
//! its time, throughput and peak memory. A stage whose inputs and config are unchanged is skipped;
//! one that was interrupted resumes from its last checkpoint.
//!
//! - [`config`]: the pipeline's TOML and `--set` overrides.
//! - [`stages`]: the stages before evaluation; [`end_to_end`]: the 2×2; [`report`]: the page.

pub mod compare;
pub mod config;
pub mod end_to_end;
mod error;
pub mod record;
pub mod report;
pub mod stages;

pub use config::{PipelineConfig, Stage};
pub use error::{PipelineError, Result};

use record::{Fingerprint, StageRecord, Status};
use std::path::PathBuf;
use tch::Device;

/// Which stages to run (`--from`, `--only`); a chosen stage runs even when unchanged.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub from: Option<Stage>,
    pub only: Option<Stage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ran,
    Resumed,
    /// Finished before with the same inputs and config.
    Skipped,
    /// Not selected by `--from`/`--only`; its earlier result is used.
    NotSelected,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StageOutcome {
    pub stage: Stage,
    pub outcome: Outcome,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineReport {
    pub run_dir: PathBuf,
    pub stages: Vec<StageOutcome>,
    /// `runs/<name>/report.html`, when the report stage ran.
    pub report_html: Option<PathBuf>,
    /// The browser check of the report, when Chromium was there to make it.
    pub browser_check: Option<serde_json::Value>,
}

/// The resolved config as TOML, for records and the report.
pub fn resolved_text(config: &PipelineConfig) -> String {
    toml::to_string_pretty(config)
        .unwrap_or_else(|_| serde_json::to_string_pretty(config).expect("the config serializes"))
}

fn finished(config: &PipelineConfig, stage: Stage) -> Result<StageRecord> {
    match StageRecord::read(&config.stage_dir(stage))? {
        Some(r) if r.status == Status::Done => Ok(r),
        _ => Err(PipelineError::Invalid(format!(
            "stage `{}` has not finished in {}: run the pipeline without --only/--from first",
            stage.name(),
            config.stage_dir(stage).display()
        ))),
    }
}

/// The fingerprint of `stage` from its config, the content of its external inputs and the
/// fingerprints of the stages it reads.
fn fingerprint(
    config: &PipelineConfig,
    stage: Stage,
) -> Result<(
    String,
    serde_json::Map<String, serde_json::Value>,
    serde_json::Value,
)> {
    let present = config.stages();
    let upstream = |f: Fingerprint, stages: &[Stage]| -> Result<Fingerprint> {
        let mut f = f;
        for s in stages.iter().filter(|s| present.contains(s)) {
            f = f.upstream(s.name(), &finished(config, *s)?);
        }
        Ok(f)
    };
    let earlier: Vec<Stage> = present.iter().copied().filter(|s| *s < stage).collect();
    let (f, stage_config) = match stage {
        Stage::Data => {
            let c = serde_json::to_value(&config.data).expect("serializes");
            (
                Fingerprint::default()
                    .value("config", &c)
                    .path("source", &config.data.source)?,
                c,
            )
        }
        Stage::Retriever => {
            let r = stages::retriever_config(config).expect("validated");
            let c = serde_json::to_value(&r).expect("serializes");
            let f = Fingerprint::default()
                .value("config", &c)
                .path("base model", &r.model.base)?;
            (upstream(f, &[Stage::Data])?, c)
        }
        Stage::Index => {
            let c = serde_json::to_value(stages::retrieval_configs(config)).expect("serializes");
            let f = Fingerprint::default().value("config", &c);
            (upstream(f, &[Stage::Data, Stage::Retriever])?, c)
        }
        Stage::GeneratorSft | Stage::MakePairs | Stage::Dpo => {
            let g = stages::generator_config(config, stage).expect("validated");
            let mut c = serde_json::to_value(&g).expect("serializes");
            if stage == Stage::MakePairs {
                c["pipeline_pairs"] = serde_json::to_value(&config.pairs).expect("serializes");
            }
            let f = Fingerprint::default()
                .value("config", &c)
                .path("generator model", &g.model)?;
            (upstream(f, &earlier)?, c)
        }
        Stage::Joint => {
            let j = stages::joint_config(config).expect("validated");
            let c = serde_json::to_value(&j).expect("serializes");
            let f = Fingerprint::default()
                .value("config", &c)
                .path("generator model", &j.generator()?.model)?;
            (upstream(f, &earlier)?, c)
        }
        Stage::Eval => {
            let c = serde_json::json!({"eval": config.eval, "generator": config.generator});
            (
                upstream(Fingerprint::default().value("config", &c), &earlier)?,
                c,
            )
        }
        Stage::Report => {
            let c = serde_json::json!({"report": config.report, "config": resolved_text(config)});
            (
                upstream(Fingerprint::default().value("config", &c), &earlier)?,
                c,
            )
        }
    };
    let (hash, inputs) = f.finish();
    Ok((hash, inputs, stage_config))
}

/// Runs the pipeline as `config` and `selection` say, on `device`.
pub fn run(
    config: &PipelineConfig,
    selection: &Selection,
    device: Device,
) -> Result<PipelineReport> {
    let run_dir = config.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(|e| PipelineError::io(&run_dir, e))?;
    ragtune_models::checkpoint::atomic_write(
        &run_dir.join("config.toml"),
        resolved_text(config).as_bytes(),
    )?;
    let present = config.stages();
    for chosen in [selection.from, selection.only].into_iter().flatten() {
        if !present.contains(&chosen) {
            return Err(PipelineError::Config(format!(
                "stage `{}` is not among this config's stages ({})",
                chosen.name(),
                present
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut outcomes = Vec::new();
    let mut browser_check = None;
    for stage in present.iter().copied() {
        let selected = match (selection.only, selection.from) {
            (Some(only), _) => stage == only,
            (None, Some(from)) => stage >= from,
            (None, None) => true,
        };
        let forced = selected && (selection.only.is_some() || selection.from.is_some());
        if !selected {
            finished(config, stage)?;
            outcomes.push(StageOutcome {
                stage,
                outcome: Outcome::NotSelected,
                seconds: 0.0,
            });
            continue;
        }
        let dir = config.stage_dir(stage);
        let (fingerprint, inputs, stage_config) =
            fingerprint(config, stage).map_err(|e| in_stage(stage, e))?;
        let previous = StageRecord::read(&dir)?;
        let same = previous
            .as_ref()
            .is_some_and(|p| p.fingerprint == fingerprint);
        let outcome = match &previous {
            Some(p) if same && p.status == Status::Done && !forced => {
                println!(
                    "stage {:<14} unchanged, skipped ({})",
                    stage.name(),
                    record::record_path(&dir).display()
                );
                outcomes.push(StageOutcome {
                    stage,
                    outcome: Outcome::Skipped,
                    seconds: 0.0,
                });
                continue;
            }
            Some(p) if same && p.status == Status::Running && !forced => Outcome::Resumed,
            _ => {
                // Changed inputs or config (or a forced rerun): nothing of the old run may be resumed.
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| PipelineError::io(&dir, e))?;
                }
                Outcome::Ran
            }
        };
        println!(
            "stage {:<14} {}",
            stage.name(),
            if outcome == Outcome::Resumed {
                "resuming"
            } else {
                "running"
            }
        );
        let mut record = StageRecord {
            stage: stage.name().into(),
            fingerprint,
            status: Status::Running,
            config: stage_config,
            inputs,
            seconds: 0.0,
            peak_rss_bytes: 0,
            throughput: None,
            outputs: serde_json::Value::Null,
        };
        record.write(&dir)?;
        record::reset_peak_rss();
        let started = std::time::Instant::now();
        let done = match stage {
            Stage::Data => stages::data(config),
            Stage::Retriever => stages::retriever(config, device),
            Stage::Index => stages::index(config, device),
            Stage::GeneratorSft => stages::generator_sft(config, device),
            Stage::MakePairs => stages::make_pairs(config, device),
            Stage::Dpo => stages::dpo(config, device),
            Stage::Joint => stages::joint(config, device),
            Stage::Eval => end_to_end::run(config, device),
            Stage::Report => report_stage(config, &present, &mut browser_check),
        }
        .map_err(|e| in_stage(stage, e))?;
        record.seconds = started.elapsed().as_secs_f64();
        record.peak_rss_bytes = record::peak_rss_bytes();
        record.throughput = done.throughput;
        record.outputs = done.outputs;
        record.status = Status::Done;
        record.write(&dir)?;
        println!("stage {:<14} done in {:.1} s", stage.name(), record.seconds);
        outcomes.push(StageOutcome {
            stage,
            outcome,
            seconds: record.seconds,
        });
    }
    let html = run_dir.join("report.html");
    Ok(PipelineReport {
        run_dir,
        stages: outcomes,
        report_html: html.is_file().then_some(html),
        browser_check,
    })
}

fn in_stage(stage: Stage, e: PipelineError) -> PipelineError {
    match e {
        PipelineError::Stage { .. } => e,
        other => PipelineError::Stage {
            stage: stage.name(),
            source: Box::new(other),
        },
    }
}

fn report_stage(
    config: &PipelineConfig,
    present: &[Stage],
    browser_check: &mut Option<serde_json::Value>,
) -> Result<stages::Done> {
    let mut records = Vec::new();
    for stage in present.iter().copied().filter(|s| *s != Stage::Report) {
        records.push((stage, finished(config, stage)?));
    }
    let page = report::build(config, &records, &resolved_text(config))?;
    let run_dir = config.run_dir();
    ragtune_report::write_report(&page, &run_dir)?;
    let html = run_dir.join("report.html");
    let mut outputs = serde_json::json!({"html": html, "markdown": run_dir.join("report.md")});
    if config.report.browser_check {
        match ragtune_report::browser::find_chromium() {
            Some(_) => {
                let screenshot = config.stage_dir(Stage::Report).join("screenshot.png");
                let check = ragtune_report::browser::check_in_chromium(&html, &screenshot)?;
                let value = serde_json::to_value(&check).expect("the check serializes");
                if check
                    .figures
                    .iter()
                    .any(|f| f.width <= 0.0 || f.height <= 0.0)
                    || !check.network_requests.is_empty()
                    || !check.resources.is_empty()
                {
                    return Err(PipelineError::Invalid(format!(
                        "the report failed its browser check: {value}"
                    )));
                }
                outputs["browser_check"] = value.clone();
                *browser_check = Some(value);
            }
            None => {
                outputs["browser_check"] =
                    "skipped: Chromium is not installed (`cargo xtask setup` installs it)".into();
            }
        }
    }
    Ok(stages::Done {
        outputs,
        throughput: None,
    })
}
