//! The examples of a run: (text, label) pairs read from the FAQ, a dataset folder's qa table or a
//! JSONL file, split into train / validation / test with the data crate's seeded split
//! (`split_items`: questions with the same normalized text stay together; stratified by label for
//! classification, so every category keeps its share in each split).

use crate::config::{DataConfig, DataFormat, Task};
use crate::{ClassifyError, Result};
use ragtune_data::split::{split_items, SplitConfig, SplitItem, SplitReport};
use ragtune_data::{Dataset, Location, QaExample};
use serde_json::Value;
use std::path::Path;

/// One example: the text, its label as written, and the number for regression.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub id: String,
    pub text: String,
    pub label: String,
    /// The label read as a number (regression only).
    pub target: Option<f64>,
}

/// The three splits, the label set and how the split came out.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub test: Vec<Example>,
    /// Sorted union of every split's labels (classification): the head's outputs, in order. A
    /// label with no training example still gets an output, which then never wins.
    pub labels: Vec<String>,
    pub report: SplitReport,
}

/// Reads and splits the examples of `config`.
pub fn load(config: &DataConfig, task: Task) -> Result<Splits> {
    let examples = match config.format {
        DataFormat::Faq => {
            let (dataset, _) = ragtune_data::import::import_faq(&config.source)?;
            from_qa(&dataset.qa, &config.source, task)?
        }
        DataFormat::Dataset => from_qa(&read_dataset_qa(&config.source)?, &config.source, task)?,
        DataFormat::Jsonl => read_jsonl(config, task)?,
    };
    if examples.is_empty() {
        return Err(ClassifyError::Invalid(format!(
            "{}: no labelled examples (data.format = {:?})",
            config.source.display(),
            config.format
        )));
    }
    split(examples, config, task)
}

/// The qa rows of a dataset folder, pooled over `train/`, `val/` (`dev/`, `valid/`) and `test/`
/// when it has them.
fn read_dataset_qa(dir: &Path) -> Result<Vec<QaExample>> {
    let parts: Vec<_> = ["train", "val", "dev", "valid", "test"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|d| d.is_dir())
        .collect();
    if parts.is_empty() {
        return Ok(Dataset::read(dir)?.qa);
    }
    let mut qa = Vec::new();
    for part in parts {
        qa.extend(Dataset::read(&part)?.qa);
    }
    Ok(qa)
}

fn from_qa(qa: &[QaExample], source: &Path, task: Task) -> Result<Vec<Example>> {
    qa.iter()
        .enumerate()
        .map(|(row, q)| {
            let label = q.label.clone().ok_or_else(|| ClassifyError::Row {
                path: source.to_path_buf(),
                location: Location::Row(row),
                field: "label".into(),
                message: format!("question {:?} has no label", q.id),
            })?;
            let target = parse_target(&label, task, || ClassifyError::Row {
                path: source.to_path_buf(),
                location: Location::Row(row),
                field: "label".into(),
                message: format!("{label:?} is not a number (task = \"regression\")"),
            })?;
            Ok(Example {
                id: q.id.clone(),
                text: q.question.clone(),
                label,
                target,
            })
        })
        .collect()
}

fn parse_target(
    label: &str,
    task: Task,
    error: impl FnOnce() -> ClassifyError,
) -> Result<Option<f64>> {
    match task {
        Task::Classification => Ok(None),
        Task::Regression => match label.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(error()),
        },
    }
}

fn read_jsonl(config: &DataConfig, task: Task) -> Result<Vec<Example>> {
    let path = &config.source;
    let text = std::fs::read_to_string(path).map_err(|e| ClassifyError::io(path, e))?;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = Location::Line(index + 1);
        let bad = |field: &str, message: String| ClassifyError::Row {
            path: path.clone(),
            location,
            field: field.into(),
            message,
        };
        let value: Value = serde_json::from_str(line)
            .map_err(|e| bad("(line)", format!("not valid JSON: {e}")))?;
        let text = match value.get(&config.text_field) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(bad(&config.text_field, "is empty".into())),
            Some(_) => return Err(bad(&config.text_field, "expected a string".into())),
            None => return Err(bad(&config.text_field, "is missing".into())),
        };
        let label = match value.get(&config.label_field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => {
                return Err(bad(
                    &config.label_field,
                    "expected a string or a number".into(),
                ))
            }
            None => return Err(bad(&config.label_field, "is missing".into())),
        };
        let target = parse_target(&label, task, || {
            bad(
                &config.label_field,
                format!("{label:?} is not a number (task = \"regression\")"),
            )
        })?;
        let id = match value.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => format!("line-{}", index + 1),
        };
        out.push(Example {
            id,
            text,
            label,
            target,
        });
    }
    Ok(out)
}

fn split(examples: Vec<Example>, config: &DataConfig, task: Task) -> Result<Splits> {
    let mut seen = std::collections::HashSet::new();
    if let Some(duplicate) = examples.iter().find(|e| !seen.insert(e.id.as_str())) {
        return Err(ClassifyError::Invalid(format!(
            "{}: id {:?} appears twice; ids must be unique to split",
            config.source.display(),
            duplicate.id
        )));
    }
    let items: Vec<SplitItem> = examples
        .iter()
        .map(|e| SplitItem {
            id: e.id.clone(),
            text: e.text.clone(),
            label: Some(e.label.clone()),
        })
        .collect();
    let assignment = split_items(
        &items,
        &SplitConfig {
            seed: config.split_seed,
            fractions: config.fractions,
            stratify: task == Task::Classification,
        },
    )?;
    let mut labels: Vec<String> = match task {
        Task::Classification => examples.iter().map(|e| e.label.clone()).collect(),
        Task::Regression => Vec::new(),
    };
    labels.sort();
    labels.dedup();
    let mut parts: [Vec<Example>; 3] = Default::default();
    for example in examples {
        let split = assignment.split_of[&example.id];
        parts[split].push(example);
    }
    let [train, val, test] = parts;
    for (name, part) in [("train", &train), ("validation", &val)] {
        if part.is_empty() {
            return Err(ClassifyError::Invalid(format!(
                "the {name} split is empty (data.fractions = {:?} of {} examples)",
                config.fractions, assignment.report.items
            )));
        }
    }
    Ok(Splits {
        train,
        val,
        test,
        labels,
        report: assignment.report,
    })
}
