//! The report stage: one page a person reads. The 2×2 with confidence intervals (table and error
//! bars), retrieval before and after tuning, training curves per stage, time, throughput and
//! peak memory per stage, and the resolved config.

use crate::config::{PipelineConfig, Stage};
use crate::end_to_end::{Compared, Results, ANSWER_METRICS};
use crate::record::StageRecord;
use crate::Result;
use ragtune_report::{
    Block, Cell, Interval, IntervalChart, LineChart, Report, Section, Series, Table,
};
use std::path::Path;

fn estimate(c: &Compared) -> Cell {
    Cell::number(c.mean, 4)
}

/// How a metric is headed in tables and charts.
fn title(metric: &str) -> &str {
    match metric {
        "exact_match" => "EM",
        "f1" => "F1",
        "rouge_l" => "ROUGE-L",
        other => other,
    }
}

fn difference(c: &Compared) -> Cell {
    match (c.difference, c.ci_low, c.ci_high) {
        (Some(d), Some(lo), Some(hi)) => Cell::estimate(d, lo, hi, 3),
        _ => Cell::text("baseline"),
    }
}

fn p_value(c: &Compared) -> Cell {
    match c.p_value {
        Some(p) => Cell::number(p, 4),
        None => Cell::text("–"),
    }
}

/// Loss (and validation) curves of a stage's `metrics.jsonl`, when it trained.
fn curves(stage: Stage, dir: &Path) -> Vec<Block> {
    let Ok(records) = ragtune_trainer::MetricsLog::read(&dir.join("metrics.jsonl")) else {
        return Vec::new();
    };
    let loss: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r["type"] == "train")
        .filter_map(|r| Some((r["step"].as_f64()?, r["loss"].as_f64()?)))
        .collect();
    let mut blocks = Vec::new();
    if !loss.is_empty() {
        blocks.push(Block::LineChart(LineChart {
            id: format!("{}-loss", stage.name()),
            title: format!("{}: training loss", stage.name()),
            x_label: "optimizer step".into(),
            y_label: "loss".into(),
            series: vec![Series {
                name: "train loss".into(),
                points: loss,
            }],
        }));
    }
    // Every numeric field of the eval records is one validation series.
    let mut validation: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for r in records.iter().filter(|r| r["type"] == "eval") {
        let (Some(step), Some(fields)) = (r["step"].as_f64(), r.as_object()) else {
            continue;
        };
        for (name, value) in fields {
            if let (false, Some(v)) = (name == "step", value.as_f64()) {
                validation.entry(name.clone()).or_default().push((step, v));
            }
        }
    }
    let keep = [
        "ndcg@10",
        "recall@10",
        "mrr@10",
        "eval/loss",
        "eval/rewards/accuracies",
    ];
    let series: Vec<Series> = validation
        .into_iter()
        .filter(|(name, _)| keep.contains(&name.as_str()))
        .map(|(name, points)| Series { name, points })
        .collect();
    if !series.is_empty() {
        blocks.push(Block::LineChart(LineChart {
            id: format!("{}-validation", stage.name()),
            title: format!("{}: validation", stage.name()),
            x_label: "optimizer step".into(),
            y_label: "value".into(),
            series,
        }));
    }
    blocks
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn build(
    config: &PipelineConfig,
    records: &[(Stage, StageRecord)],
    config_text: &str,
) -> Result<Report> {
    let mut sections = Vec::new();
    let results: Option<Results> = records
        .iter()
        .find(|(s, _)| *s == Stage::Eval)
        .and_then(|(_, r)| serde_json::from_value(r.outputs.clone()).ok());

    if let Some(results) = &results {
        let level = format!("{:.0}%", results.confidence * 100.0);
        // The 2×2 of answers.
        if !results.cells.is_empty() {
            let mut blocks = vec![Block::paragraph(format!(
                "{} test questions per cell, the same questions, prompt and top-{} passages in every \
                 cell. Differences are against zero-shot RAG (the first row), with {level} paired \
                 bootstrap intervals over questions ({} resamples).",
                results.cells[0].questions, results.k, results.resamples
            ))];
            let mut header = vec!["retriever".to_string(), "generator".to_string()];
            header.extend(ANSWER_METRICS.iter().map(|m| title(m).to_string()));
            blocks.push(Block::Table(Table {
                caption: Some("Answers on the test split (means over questions)".into()),
                header,
                rows: results
                    .cells
                    .iter()
                    .map(|c| {
                        let mut row = vec![Cell::text(&c.retriever), Cell::text(&c.generator)];
                        row.extend(ANSWER_METRICS.iter().map(|m| estimate(&c.metrics[*m])));
                        row
                    })
                    .collect(),
            }));
            let mut short_header = vec!["retriever / generator".to_string()];
            short_header.extend(ANSWER_METRICS.iter().map(|m| format!("Δ {}", title(m))));
            blocks.push(Block::Table(Table {
                caption: Some(format!(
                    "Difference from zero-shot RAG [{level} paired bootstrap CI]"
                )),
                header: short_header,
                rows: results
                    .cells
                    .iter()
                    .map(|c| {
                        let mut row =
                            vec![Cell::text(format!("{} / {}", c.retriever, c.generator))];
                        row.extend(ANSWER_METRICS.iter().map(|m| difference(&c.metrics[*m])));
                        row
                    })
                    .collect(),
            }));
            for m in ANSWER_METRICS {
                blocks.push(Block::IntervalChart(IntervalChart {
                    id: format!("cells-{m}"),
                    title: format!(
                        "{}: difference from zero-shot RAG ({level} CI; R retriever, G generator)",
                        title(m)
                    ),
                    y_label: format!("Δ {}", title(m)),
                    items: results
                        .cells
                        .iter()
                        .skip(1)
                        .filter_map(|c| {
                            let x = &c.metrics[m];
                            Some(Interval {
                                label: format!("{} R / {} G", c.retriever, c.generator),
                                value: x.difference?,
                                low: x.ci_low?,
                                high: x.ci_high?,
                            })
                        })
                        .collect(),
                }));
            }
            sections.push(Section {
                heading: "End to end: retriever × generator".into(),
                blocks,
            });
        }
        // Retrieval.
        let mut header = vec!["retriever".to_string()];
        for m in &results.measures {
            header.push(m.clone());
        }
        header.push(format!("Δ nDCG@10 [{level} CI]"));
        header.push("p".into());
        let rows = results
            .retrieval
            .iter()
            .map(|r| {
                let mut row = vec![Cell::text(&r.retriever)];
                for m in &results.measures {
                    row.push(estimate(&r.measures[m]));
                }
                row.push(difference(&r.measures["ndcg@10"]));
                row.push(p_value(&r.measures["ndcg@10"]));
                row
            })
            .collect();
        let mut blocks = vec![
            Block::paragraph(format!(
                "{} judged test queries, full-corpus search. {}.",
                results.test_queries,
                results
                    .retrieval
                    .iter()
                    .map(|r| format!("{}: {}", r.retriever, r.description))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Block::Table(Table {
                caption: Some("Retrieval on the test split".into()),
                header,
                rows,
            }),
        ];
        if results.retrieval.len() > 1 {
            blocks.push(Block::IntervalChart(IntervalChart {
                id: "retrieval-ndcg".into(),
                title: format!("Tuned − zero-shot retrieval ({level} CI)"),
                y_label: "Δ".into(),
                items: results
                    .measures
                    .iter()
                    .filter_map(|m| {
                        let x = &results.retrieval[1].measures[m];
                        Some(Interval {
                            label: m.clone(),
                            value: x.difference?,
                            low: x.ci_low?,
                            high: x.ci_high?,
                        })
                    })
                    .collect(),
            }));
        }
        sections.push(Section {
            heading: "Retrieval".into(),
            blocks,
        });
        if !results.examples.is_empty() {
            let rows = results
                .examples
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                    vec![
                        Cell::text(format!("{} / {}", s("retriever"), s("generator"))),
                        Cell::text(s("question")),
                        Cell::text(s("prediction")),
                        Cell::text(s("gold")),
                    ]
                })
                .collect();
            sections.push(Section {
                heading: "Example answers".into(),
                blocks: vec![Block::Table(Table {
                    caption: None,
                    header: vec![
                        "cell".into(),
                        "question".into(),
                        "answer".into(),
                        "gold".into(),
                    ],
                    rows,
                })],
            });
        }
    }

    // Joint training: its trajectory and steps.
    let joint: Option<ragtune_rag_joint::JointReport> = records
        .iter()
        .find(|(s, _)| *s == Stage::Joint)
        .and_then(|(_, r)| serde_json::from_value(r.outputs.clone()).ok());
    if let Some(joint) = &joint {
        for mut section in ragtune_rag_joint::report::sections(joint) {
            section.heading = format!("Joint ({}): {}", joint.method.name(), section.heading);
            sections.push(section);
        }
    }

    // Training curves.
    let mut blocks = Vec::new();
    for (stage, _) in records {
        blocks.extend(curves(*stage, &config.stage_dir(*stage)));
    }
    if !blocks.is_empty() {
        sections.push(Section {
            heading: "Training".into(),
            blocks,
        });
    }

    // Cost of each stage.
    let rows = records
        .iter()
        .map(|(stage, r)| {
            vec![
                Cell::text(stage.name()),
                Cell::number(r.seconds, 1),
                match &r.throughput {
                    Some(t) => Cell::text(format!("{:.1} {}", t.value, t.unit)),
                    None => Cell::text("–"),
                },
                Cell::text(mebibytes(r.peak_rss_bytes)),
                Cell::text(&r.fingerprint[..12]),
            ]
        })
        .collect();
    sections.push(Section {
        heading: "Stages".into(),
        blocks: vec![Block::Table(Table {
            caption: Some(
                "Wall time of the stage's last run, its throughput and peak resident memory".into(),
            ),
            header: vec![
                "stage".into(),
                "seconds".into(),
                "throughput".into(),
                "peak RSS".into(),
                "fingerprint".into(),
            ],
            rows,
        })],
    });
    sections.push(Section {
        heading: "Resolved config".into(),
        blocks: vec![Block::code("toml", config_text)],
    });
    Ok(Report {
        title: format!("ragtune pipeline `{}`", config.name),
        subtitle: format!(
            "data {} · stages {}",
            config.data.source.display(),
            config.stage_names()
        ),
        sections,
    })
}
