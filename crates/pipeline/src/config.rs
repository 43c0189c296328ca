//! One TOML file for a whole experiment (`configs/demo.toml`): the data, then each stage's own
//! table in the format of that stage's recipe config, less what the pipeline fills in (data
//! paths, run folders, the retriever the generator reads from).

use crate::{PipelineError, Result};
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_retrieval::{HnswConfig, SearchKind};
use ragtune_retriever_train::train::RetrieverConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Import, clean, dedup and split, or take the dataset's own splits.
    Data,
    /// Mine hard negatives, train, export.
    Retriever,
    /// Encode the corpus with the zero-shot and the tuned retriever (cached for every later stage).
    Index,
    /// SFT on the tuned retriever's top-k.
    GeneratorSft,
    /// Preference pairs from the SFT model's own answers.
    MakePairs,
    Dpo,
    /// Joint retriever-generator training (rag-joint: LSR, RA-DIT or RAG-sequence), from the
    /// tuned retriever and the SFT adapter.
    Joint,
    /// The end-to-end 2×2 on the test split.
    Eval,
    Report,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Data,
        Stage::Retriever,
        Stage::Index,
        Stage::GeneratorSft,
        Stage::MakePairs,
        Stage::Dpo,
        Stage::Joint,
        Stage::Eval,
        Stage::Report,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Data => "data",
            Stage::Retriever => "retriever",
            Stage::Index => "index",
            Stage::GeneratorSft => "generator-sft",
            Stage::MakePairs => "make-pairs",
            Stage::Dpo => "dpo",
            Stage::Joint => "joint",
            Stage::Eval => "eval",
            Stage::Report => "report",
        }
    }

    pub fn parse(name: &str) -> Result<Stage> {
        Stage::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                PipelineError::Config(format!(
                    "unknown stage `{name}`: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The FAQ JSONL; a dataset folder (split here); a folder with its own `train/`, `val/` and
    /// `test/` dataset folders; or a BEIR folder with `qrels/{train,dev,test}.tsv`.
    pub source: PathBuf,
    /// Used when the data has no splits of its own (and to carve BEIR's val from train when it has no dev).
    pub split_seed: u64,
    pub fractions: [f64; 3],
    /// Remove empty, exact and near-duplicate passages (MinHash-LSH) before splitting; qrels and
    /// gold ids of removed passages move to the passage kept in their place.
    pub dedup: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: PathBuf::from("assets/zaragoza-faq/faq-en.jsonl"),
            split_seed: 42,
            fractions: [0.8, 0.1, 0.1],
            dedup: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// How every later stage searches the corpus.
    pub search: SearchKind,
    pub hnsw: HnswConfig,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            search: SearchKind::Exact,
            hnsw: HnswConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairsConfig {
    /// Training questions to make preference pairs from (all when unset).
    pub limit: Option<usize>,
    /// Held-out pairs from validation questions, for DPO's reward accuracy.
    pub heldout_limit: Option<usize>,
}

impl Default for PairsConfig {
    fn default() -> Self {
        Self {
            limit: None,
            heldout_limit: Some(32),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Test questions answered in each cell of the 2×2 (all when unset).
    pub questions: Option<usize>,
    /// Recall cut-offs reported besides nDCG@10 (the generator's k is always among them).
    pub recall_at: Vec<usize>,
    pub bootstrap_resamples: usize,
    pub confidence: f64,
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            questions: None,
            recall_at: vec![10, 100],
            bootstrap_resamples: 2000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Open the report in headless Chromium (when installed), check that every figure rendered
    /// and no network request was made, and save a screenshot beside it.
    pub browser_check: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            browser_check: true,
        }
    }
}

/// The whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The run folder is `<runs_dir>/<name>/`, one subfolder per stage.
    pub name: String,
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// The stages to run; by default every stage whose table is present (joint with `[joint]`),
    /// without make-pairs and dpo.
    #[serde(default)]
    pub stages: Option<Vec<Stage>>,
    #[serde(default)]
    pub data: DataConfig,
    /// A retriever recipe config (`configs/retriever-*.toml`) without `[data]`.
    #[serde(default)]
    pub retriever: Option<RetrieverConfig>,
    #[serde(default)]
    pub index: IndexConfig,
    /// A generator recipe config (`configs/generator-*.toml`) without `train`, `valid`, `test`,
    /// `corpus` and `[retrieval]`.
    #[serde(default)]
    pub generator: Option<GeneratorConfig>,
    #[serde(default)]
    pub pairs: PairsConfig,
    /// A joint recipe config (`configs/joint-*.toml`) without `generator`, `adapter`, `run_name`,
    /// `runs_dir` and `[retriever.dense]`: it starts from the tuned retriever and the SFT adapter.
    #[serde(default)]
    pub joint: Option<ragtune_rag_joint::JointConfig>,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub report: ReportConfig,
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// Keys the pipeline fills in itself, and may not be set in the file.
const FILLED_IN: [(&str, &str); 10] = [
    ("retriever", "data"),
    ("joint", "generator"),
    ("joint", "adapter"),
    ("joint", "run_name"),
    ("joint", "runs_dir"),
    ("generator", "train"),
    ("generator", "valid"),
    ("generator", "test"),
    ("generator", "corpus"),
    ("generator", "retrieval"),
];

/// Sets `section.key=value` in the parsed TOML (see [`ragtune_trainer::config_errors::apply_override`]).
pub fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<()> {
    ragtune_trainer::config_errors::apply_override(root, assignment).map_err(PipelineError::Config)
}

impl PipelineConfig {
    /// Reads `path`, applies `--set` overrides, and validates everything before any model loads.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
        Self::parse(&text, path, overrides)
    }

    pub fn parse(text: &str, origin: &Path, overrides: &[String]) -> Result<Self> {
        let in_file = |e: String| PipelineError::Config(format!("{}: {e}", origin.display()));
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            in_file(ragtune_trainer::config_errors::with_suggestion(
                &e.to_string(),
            ))
        })?;
        for (section, key) in FILLED_IN {
            if value.get(section).and_then(|s| s.get(key)).is_some() {
                return Err(in_file(format!(
                    "`{section}.{key}` is filled in by the pipeline (from [data] and the earlier \
                     stages); remove it"
                )));
            }
        }
        if value
            .get("joint")
            .and_then(|j| j.get("retriever"))
            .and_then(|r| r.get("dense"))
            .is_some()
        {
            return Err(in_file(
                "`joint.retriever.dense` is filled in by the pipeline (the tuned retriever, \
                 searched as [index] says); remove it"
                    .into(),
            ));
        }
        for assignment in overrides {
            apply_override(&mut value, assignment)?;
        }
        let config: PipelineConfig = value.try_into().map_err(|e: toml::de::Error| {
            in_file(ragtune_trainer::config_errors::with_suggestion(
                &e.to_string(),
            ))
        })?;
        config.validate().map_err(|e| in_file(e.to_string()))?;
        Ok(config)
    }

    /// The stages this config runs, in order.
    pub fn stages(&self) -> Vec<Stage> {
        let mut stages = match &self.stages {
            Some(s) => s.clone(),
            None => {
                let mut s = vec![Stage::Data];
                if self.retriever.is_some() {
                    s.extend([Stage::Retriever, Stage::Index]);
                }
                if self.generator.is_some() {
                    s.push(Stage::GeneratorSft);
                }
                if self.joint.is_some() {
                    s.push(Stage::Joint);
                }
                s.extend([Stage::Eval, Stage::Report]);
                s
            }
        };
        stages.sort();
        stages.dedup();
        stages
    }

    /// The stages in run order, as `data → retriever → …`, for logs and the report.
    pub fn stage_names(&self) -> String {
        let names: Vec<&str> = self.stages().iter().map(|s| s.name()).collect();
        names.join(" → ")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.name)
    }

    pub fn stage_dir(&self, stage: Stage) -> PathBuf {
        self.run_dir().join(stage.name())
    }

    fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(PipelineError::Config(m));
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return invalid(format!("name {:?}: a non-empty folder name", self.name));
        }
        let stages = self.stages();
        let needs = |stage: Stage, what: &str, present: bool| -> Result<()> {
            if stages.contains(&stage) && !present {
                return Err(PipelineError::Config(format!(
                    "stage `{}` is listed but the config has no [{what}] table",
                    stage.name()
                )));
            }
            Ok(())
        };
        needs(Stage::Retriever, "retriever", self.retriever.is_some())?;
        needs(Stage::Index, "retriever", self.retriever.is_some())?;
        for stage in [Stage::GeneratorSft, Stage::MakePairs, Stage::Dpo] {
            needs(stage, "generator", self.generator.is_some())?;
        }
        if stages.contains(&Stage::Joint) {
            needs(Stage::Joint, "joint", self.joint.is_some())?;
            needs(Stage::Joint, "generator", self.generator.is_some())?;
            needs(Stage::Joint, "retriever", self.retriever.is_some())?;
            let mut j = self.joint.clone().expect("checked above");
            let mut g = self.generator.clone().expect("checked above");
            // Placeholders for what the pipeline fills in, so the rest is checked now.
            g.train = PathBuf::from("train");
            g.valid = Some(PathBuf::from("val"));
            j.generator = Some(g);
            if stages.contains(&Stage::GeneratorSft)
                && self.generator.as_ref().is_some_and(|g| g.peft.is_some())
            {
                j.adapter = Some(PathBuf::from("adapter"));
            }
            j.validate()
                .map_err(|e| PipelineError::Config(format!("[joint]: {e}")))?;
        }
        if stages.contains(&Stage::Dpo) && !stages.contains(&Stage::MakePairs) {
            return invalid(
                "stage `dpo` trains on the pairs of stage `make-pairs`: list both".into(),
            );
        }
        if stages.contains(&Stage::Retriever) && !stages.contains(&Stage::Index) {
            return invalid(
                "stage `retriever` is listed without `index`, which every later stage reads from"
                    .into(),
            );
        }
        if let Some(g) = &self.generator {
            let mut g = g.clone();
            // Placeholders for what the pipeline fills in, so the rest is checked now.
            g.train = PathBuf::from("train");
            g.validate()
                .map_err(|e| PipelineError::Config(format!("[generator]: {e}")))?;
            if g.peft.is_none() && stages.contains(&Stage::Dpo) {
                return invalid("[generator]: DPO trains an adapter: set [generator.peft]".into());
            }
        }
        if let Some(r) = &self.retriever {
            r.validate()
                .map_err(|e| PipelineError::Config(format!("[retriever]: {e}")))?;
            if r.model.architecture == ragtune_retriever_train::model::Architecture::Colbert {
                return invalid(
                    "[retriever.model]: the pipeline's index is single-vector; ColBERT runs \
                     through `ragtune retriever train`"
                        .into(),
                );
            }
        }
        if self.eval.confidence <= 0.0 || self.eval.confidence >= 1.0 {
            return invalid(format!(
                "eval.confidence must be within (0, 1), got {}",
                self.eval.confidence
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"x\"\n[data]\nsource = \"faq.jsonl\"\n";

    #[test]
    fn overrides_are_typed_toml_and_reach_nested_tables() {
        let mut value: toml::Value = toml::from_str(MINIMAL).unwrap();
        apply_override(&mut value, "eval.questions=7").unwrap();
        apply_override(&mut value, "data.fractions=[0.5, 0.25, 0.25]").unwrap();
        apply_override(&mut value, "data.source=other/faq.jsonl").unwrap();
        let config: PipelineConfig = value.try_into().unwrap();
        assert_eq!(config.eval.questions, Some(7));
        assert_eq!(config.data.fractions, [0.5, 0.25, 0.25]);
        assert_eq!(config.data.source, PathBuf::from("other/faq.jsonl"));
        assert!(apply_override(&mut toml::Value::Table(Default::default()), "eval").is_err());
    }

    #[test]
    fn default_stages_follow_the_tables_present_in_run_order() {
        let config = PipelineConfig::parse(MINIMAL, Path::new("x.toml"), &[]).unwrap();
        assert_eq!(config.stages(), [Stage::Data, Stage::Eval, Stage::Report]);
        let listed = "name = \"x\"\nstages = [\"report\", \"data\", \"eval\"]\n";
        let config = PipelineConfig::parse(listed, Path::new("x.toml"), &[]).unwrap();
        assert_eq!(config.stages(), [Stage::Data, Stage::Eval, Stage::Report]);
        let err = PipelineConfig::parse(
            "name = \"x\"\nstages = [\"dpo\"]\n",
            Path::new("x.toml"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("[generator]"), "{err}");
        let err = PipelineConfig::parse(
            "name = \"x\"\nstages = [\"trian\"]\n",
            Path::new("x.toml"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `trian`"), "{err}");
    }
}
