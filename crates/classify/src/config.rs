//! `ClassifyConfig`: one TOML file for a classification or regression run. Every field has a
//! default except what only the user knows, unknown keys are refused with the closest valid one,
//! and `validate` names the field that is wrong. `configs/classify-faq.toml` is the worked example.
//!
//! ```toml
//! task = "classification"          # or "regression"
//!
//! [data]
//! source = "assets/zaragoza-faq/faq-en.jsonl"
//! format = "faq"                   # faq | dataset | jsonl
//! fractions = [0.7, 0.1, 0.2]
//!
//! [model]
//! base = "assets/all-MiniLM-L6-v2"
//! pooling = "model"                # model | cls | mean | pooler
//! freeze_layers = 0
//!
//! [head]
//! dropout = 0.1
//! lr = 2e-3                        # the head's own rate (optional)
//!
//! [peft]                           # absent: full fine-tuning
//! method = "lora"
//! r = 8
//! lr = 1e-3                        # this method's base learning rate (optional)
//!
//! [trainer]                        # ragtune_trainer::TrainerConfig
//! run_name = "classify-faq"
//! ```

use crate::{ClassifyError, Result};
use ragtune_models::peft::{PeftConfig, Placement};
use ragtune_trainer::config_errors::{apply_override, with_suggestion};
use ragtune_trainer::TrainerConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One of the labels; cross-entropy loss.
    #[default]
    Classification,
    /// One number; mean squared error loss.
    Regression,
}

/// Where the (text, label) pairs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// The FAQ JSONL (`assets/zaragoza-faq/faq-en.jsonl`), imported by the data crate: each
    /// question with its `category` as the label (the qa table's `label` column).
    #[default]
    Faq,
    /// A dataset folder of Parquet tables (`ragtune data import`): its qa table's `question` and
    /// `label`. A folder with `train/`, `val/`, `test/` is pooled and split again here, so the
    /// split is always the stratified one this recipe makes.
    Dataset,
    /// A JSONL file of objects with a text field and a label field (string, or number for
    /// regression), named by `text_field` and `label_field`.
    Jsonl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub source: PathBuf,
    pub format: DataFormat,
    pub text_field: String,
    pub label_field: String,
    /// Seeds the split (the data crate's `split_items`: grouped by normalized question text,
    /// stratified by label for classification).
    pub split_seed: u64,
    /// Shares of train, validation and test; they must sum to 1.
    pub fractions: [f64; 3],
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: PathBuf::from("assets/zaragoza-faq/faq-en.jsonl"),
            format: DataFormat::Faq,
            text_field: "text".into(),
            label_field: "label".into(),
            split_seed: 42,
            fractions: [0.7, 0.1, 0.2],
        }
    }
}

/// Which vector of the encoder the head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingChoice {
    /// The folder's own sentence-transformers pooling (`modules.json`), mean for a plain BERT.
    #[default]
    Model,
    /// The first position's hidden state ([CLS]; under prompt tuning the first virtual token).
    Cls,
    /// The mean over real tokens.
    Mean,
    /// BERT's pooler, `tanh(dense(h[CLS]))`, as `BertForSequenceClassification` reads it; only for
    /// checkpoints that have one.
    Pooler,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A sentence-transformers or transformers BERT folder (safetensors).
    pub base: PathBuf,
    /// Truncation length in tokens; the folder's own when unset.
    pub max_length: Option<usize>,
    pub pooling: PoolingChoice,
    /// Freeze the embeddings and the lowest this many layers (their adapter parts, under PEFT).
    pub freeze_layers: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            base: PathBuf::from("assets/all-MiniLM-L6-v2"),
            max_length: None,
            pooling: PoolingChoice::Model,
            freeze_layers: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Dropout on the pooled vector before the linear head (training only).
    pub dropout: f64,
    /// The head's own learning rate, whatever the base rate: the rows of a full-versus-PEFT
    /// comparison then train the same head at the same rate. Unset: the base rate times
    /// `trainer.optimizer.head_lr_multiplier`.
    pub lr: Option<f64>,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            dropout: 0.1,
            lr: None,
        }
    }
}

/// The `[peft]` table: a PEFT method of the models crate (`method = "lora" | "ia3" |
/// "bottleneck" | "prompt_tuning" | "prefix_tuning"` and its settings), plus `lr`, the base
/// learning rate for this method. Adapters and soft prompts want far higher rates than full
/// fine-tuning; keeping the rate in this table lets the rows of a comparison differ in `[peft]` only.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftSettings {
    pub method: PeftConfig,
    /// Replaces `trainer.optimizer.lr` when set.
    pub lr: Option<f64>,
}

impl PeftSettings {
    /// A short name for reports: full, lora, ia3, houlsby, pfeiffer, prompt_tuning, prefix_tuning.
    pub fn name(&self) -> &'static str {
        match &self.method {
            PeftConfig::Lora(_) => "lora",
            PeftConfig::Ia3(_) => "ia3",
            PeftConfig::Bottleneck(b) if b.placement == Placement::Pfeiffer => "pfeiffer",
            PeftConfig::Bottleneck(_) => "houlsby",
            PeftConfig::PromptTuning(_) => "prompt_tuning",
            PeftConfig::PrefixTuning(_) => "prefix_tuning",
        }
    }
}

impl<'de> Deserialize<'de> for PeftSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        let lr = match table.remove("lr") {
            None => None,
            Some(toml::Value::Float(x)) => Some(x),
            Some(toml::Value::Integer(x)) => Some(x as f64),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "peft.lr: expected a number, got {other}"
                )))
            }
        };
        let method = PeftConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| D::Error::custom(format!("peft: {}", e.message().trim())))?;
        Ok(PeftSettings { method, lr })
    }
}

impl Serialize for PeftSettings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut value = serde_json::to_value(&self.method).map_err(S::Error::custom)?;
        if let Some(lr) = self.lr {
            value["lr"] = lr.into();
        }
        value.serialize(serializer)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Resamples of the test items for the confidence intervals of accuracy and macro-F1.
    pub bootstrap_resamples: usize,
    pub confidence: f64,
    pub bootstrap_seed: u64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            bootstrap_resamples: 1000,
            confidence: 0.95,
            bootstrap_seed: 0,
        }
    }
}

/// A whole run. The run folder is `trainer.runs_dir / trainer.run_name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyConfig {
    pub task: Task,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub head: HeadConfig,
    /// Absent: full fine-tuning. The head always trains.
    pub peft: Option<PeftSettings>,
    pub report: ReportConfig,
    pub trainer: TrainerConfig,
}

/// The metrics the validation pass gives, one of which drives early stopping (`trainer.eval.metric`).
pub const CLASSIFICATION_METRICS: &[&str] = &["val_loss", "accuracy", "macro_f1"];
pub const REGRESSION_METRICS: &[&str] = &["val_loss", "mse", "mae", "pearson"];

impl ClassifyConfig {
    /// Reads `path`, applies `--set section.key=value` overrides, and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClassifyError::io(path, e))?;
        Self::from_toml_str(&text, path, overrides)
    }

    /// As [`load`](Self::load) from the text of the file `origin` (named in errors).
    pub fn from_toml_str(text: &str, origin: &Path, overrides: &[String]) -> Result<Self> {
        let in_file = |message: String| ClassifyError::Config {
            path: origin.to_path_buf(),
            message,
        };
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| in_file(with_suggestion(&e.to_string())))?;
        for assignment in overrides {
            apply_override(&mut value, assignment).map_err(in_file)?;
        }
        let config: Self = value
            .try_into()
            .map_err(|e: toml::de::Error| in_file(with_suggestion(&e.to_string())))?;
        config.validate().map_err(|e| match e {
            ClassifyError::Invalid(message) => in_file(message),
            other => other,
        })?;
        Ok(config)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.trainer.run_dir()
    }

    /// full, or the PEFT method's short name.
    pub fn method_name(&self) -> &'static str {
        self.peft.as_ref().map_or("full", PeftSettings::name)
    }

    /// The metrics the validation pass reports for this task.
    pub fn metric_names(&self) -> &'static [&'static str] {
        match self.task {
            Task::Classification => CLASSIFICATION_METRICS,
            Task::Regression => REGRESSION_METRICS,
        }
    }

    /// Checks what serde cannot, naming the field; the trainer's own checks run too.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, why: String| Err(ClassifyError::Invalid(format!("`{field}` {why}")));
        let sum: f64 = self.data.fractions.iter().sum();
        if (sum - 1.0).abs() > 1e-6 || self.data.fractions.iter().any(|f| f.is_nan() || *f < 0.0) {
            return bad(
                "data.fractions",
                format!(
                    "{:?} must be non-negative and sum to 1",
                    self.data.fractions
                ),
            );
        }
        if self.data.fractions[0] <= 0.0 || self.data.fractions[1] <= 0.0 {
            return bad(
                "data.fractions",
                "needs a training and a validation share above 0 (validation drives early stopping)"
                    .into(),
            );
        }
        if self.data.source.as_os_str().is_empty() {
            return bad("data.source", "is empty".into());
        }
        if self.model.base.as_os_str().is_empty() {
            return bad("model.base", "is empty".into());
        }
        if self.model.max_length == Some(0) {
            return bad("model.max_length", "must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.head.dropout) {
            return bad(
                "head.dropout",
                format!("= {}, must lie in [0, 1)", self.head.dropout),
            );
        }
        if let Some(lr) = self.head.lr {
            if !(lr.is_finite() && lr > 0.0) {
                return bad("head.lr", format!("= {lr}, must be a positive number"));
            }
        }
        if let Some(lr) = self.peft.as_ref().and_then(|p| p.lr) {
            if !(lr.is_finite() && lr > 0.0) {
                return bad("peft.lr", format!("= {lr}, must be a positive number"));
            }
        }
        if self.report.bootstrap_resamples == 0 {
            return bad("report.bootstrap_resamples", "must be at least 1".into());
        }
        if !(self.report.confidence > 0.0 && self.report.confidence < 1.0) {
            return bad("report.confidence", "must lie in (0, 1)".into());
        }
        if let Some(metric) = &self.trainer.eval.metric {
            if !self.metric_names().contains(&metric.as_str()) {
                return bad(
                    "trainer.eval.metric",
                    format!(
                        "= {metric:?}; the validation pass of a {:?} run gives {}",
                        self.task,
                        self.metric_names().join(", ")
                    ),
                );
            }
        }
        self.trainer
            .validate()
            .map_err(|e| ClassifyError::Invalid(format!("trainer: {e}")))
    }
}
