//! The run config (`configs/joint-*.toml`, or the pipeline's `[joint]` table): which method, the
//! retriever to start from and how it trains, where the LM's scores come from, the generator (a
//! generator recipe config) and how each step is evaluated.

use crate::{JointError, Result};
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_models::peft::PeftConfig;
use ragtune_retrieval::DenseConfig;
use ragtune_trainer::TrainerConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The joint methods, in the order they build on each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// LM-supervised retrieval (REPLUG LSR): the retriever learns the generator's preferences.
    Lsr,
    /// RA-DIT: rounds of an LSR retriever step and a retrieval-augmented generator step.
    RaDit,
    /// RAG-sequence marginal likelihood: one loss over retriever and generator together.
    RagSequence,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Lsr, Method::RaDit, Method::RagSequence];

    pub fn name(self) -> &'static str {
        match self {
            Method::Lsr => "lsr",
            Method::RaDit => "ra-dit",
            Method::RagSequence => "rag-sequence",
        }
    }

    pub fn parse(name: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                JointError::Invalid(format!(
                    "unknown joint method `{name}`: expected lsr, ra-dit or rag-sequence"
                ))
            })
    }
}

/// Which retriever towers train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Towers {
    /// The query tower alone (RA-DIT, Atlas few-shot): passage embeddings and the index stay as
    /// they are; the exported model has its own `query/` and the untouched `passage/` tower.
    #[default]
    QueryOnly,
    /// Both towers (one, when they are shared): the corpus is encoded again and the index rebuilt
    /// every `refresh_every_steps` steps.
    Both,
}

/// Where the LM's scores of each (question, passage) come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// RA-DIT: the starting retriever's top-k, scored once up front; later rounds reuse them.
    #[default]
    Once,
    /// Each round searches again with the current retriever and scores its top-k with the current
    /// generator (cached pairs are reused only while the generator is unchanged).
    Online,
}

/// Which KL divergence the retriever minimises (Q the LM's target, P the retriever's distribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum KlDirection {
    /// KL(Q ‖ P), as REPLUG, RA-DIT and Atlas train.
    #[default]
    #[serde(rename = "kl_q_p")]
    TargetToRetriever,
    /// KL(P ‖ Q): mode-seeking; the retriever may ignore passages the LM likes.
    #[serde(rename = "kl_p_q")]
    RetrieverToTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrieverSide {
    /// The retriever to start from (a sentence-transformers folder, or a retriever export with
    /// `query/` and `passage/`) and how it searches; `cache_dir` keeps its corpus embeddings.
    pub dense: DenseConfig,
    pub towers: Towers,
    /// With both towers: encode the corpus again and rebuild the index every this many steps.
    pub refresh_every_steps: u64,
    /// τ_r: the retriever's distribution is softmax(s / τ_r) over the top-k.
    pub temperature: f64,
    /// The retriever step's optimiser, schedule and checkpoints (run folders are set per step);
    /// the trainer's own defaults, as every recipe has them (lr 5e-5, batch 8).
    pub trainer: TrainerConfig,
}

impl Default for RetrieverSide {
    fn default() -> Self {
        Self {
            dense: DenseConfig::default(),
            towers: Towers::QueryOnly,
            refresh_every_steps: 50,
            temperature: ragtune_retriever_train::losses::DEFAULT_TEMPERATURE,
            trainer: TrainerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LsrConfig {
    /// Passages per question the LM scores and the retriever's distribution ranges over.
    pub k: usize,
    /// τ_lm: the target is softmax(g / τ_lm) of the mean answer log-likelihoods g.
    pub lm_temperature: f64,
    pub direction: KlDirection,
    pub scoring: Scoring,
    /// (question, passage, answer) triples per scoring forward pass.
    pub score_batch_size: usize,
    /// The LM-score cache; `<run dir>/lm-scores.parquet` when unset. Runs that share a file (other
    /// seeds, other methods from the same start) reuse each other's scores where the keys match.
    pub cache: Option<PathBuf>,
    /// Write each scored triple (token ids, prompt length, score) to `<step>/triples.jsonl`, so
    /// another implementation can score exactly them (`cargo xtask bench joint`).
    pub save_triples: bool,
}

impl Default for LsrConfig {
    fn default() -> Self {
        Self {
            k: 8,
            lm_temperature: 0.1,
            direction: KlDirection::TargetToRetriever,
            scoring: Scoring::Once,
            score_batch_size: 8,
            cache: None,
            save_triples: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagSequenceConfig {
    /// Passages marginalised over per question.
    pub k: usize,
    /// Train the generator's adapter too (the starting adapter, or a new one from
    /// `[generator.peft]`); otherwise only the query tower learns.
    pub train_generator: bool,
    /// Generator forwards kept in memory at once while gradients are accumulated over passages.
    pub generator_chunk: usize,
    /// The adapter's learning rate (the query tower's is `retriever.trainer.optimizer.lr`): one
    /// optimizer holds both, the adapter's variables as a group of their own.
    pub generator_lr: f64,
}

impl Default for RagSequenceConfig {
    fn default() -> Self {
        Self {
            k: 4,
            train_generator: true,
            generator_chunk: 4,
            generator_lr: 1e-3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JointEvalConfig {
    /// Validation questions answered at every point of the trajectory (none: retrieval only).
    pub questions: Option<usize>,
    /// At the end, the starting and the final system on the test split, with paired bootstrap CIs.
    pub test: bool,
    /// Test questions answered there (all when unset).
    pub test_questions: Option<usize>,
    pub bootstrap_resamples: usize,
    pub confidence: f64,
    pub seed: u64,
}

impl Default for JointEvalConfig {
    fn default() -> Self {
        Self {
            questions: Some(32),
            test: true,
            test_questions: None,
            bootstrap_resamples: 2000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JointConfig {
    pub method: Method,
    /// The run folder is `<runs_dir>/<run_name>/`.
    pub run_name: String,
    pub runs_dir: PathBuf,
    /// RA-DIT rounds (LSR: retriever steps, each on fresh top-k when scoring is online).
    pub rounds: usize,
    /// Train on at most this many training questions.
    pub max_train_questions: Option<usize>,
    pub retriever: RetrieverSide,
    pub lsr: LsrConfig,
    pub rag_sequence: RagSequenceConfig,
    /// A generator recipe config: model, data (`train`, `valid`, `test`), prompt, contexts (the
    /// generator step's and the evaluation's k, RAFT's gold probability), PEFT and the generator
    /// step's trainer; `max_train_examples` caps the questions of the steps that train the
    /// generator (RA-DIT's generator step, RAG-sequence with `train_generator`). Its
    /// `[retrieval]` is unused: passages come from the retriever above.
    pub generator: Option<GeneratorConfig>,
    /// The generator's starting adapter (an SFT adapter); the base model when unset.
    pub adapter: Option<PathBuf>,
    pub eval: JointEvalConfig,
}

impl Default for JointConfig {
    fn default() -> Self {
        Self {
            method: Method::Lsr,
            run_name: "joint".into(),
            runs_dir: "runs".into(),
            rounds: 1,
            max_train_questions: None,
            retriever: RetrieverSide::default(),
            lsr: LsrConfig::default(),
            rag_sequence: RagSequenceConfig::default(),
            generator: None,
            adapter: None,
            eval: JointEvalConfig::default(),
        }
    }
}

impl JointConfig {
    /// Reads `path`, applies `--set` overrides (`lsr.k=4`), and validates before any model loads.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| JointError::io(path, e))?;
        let in_file = |message: String| JointError::Config {
            path: path.to_path_buf(),
            message,
        };
        let mut value: toml::Value = toml::from_str(&text).map_err(|e| {
            in_file(ragtune_trainer::config_errors::with_suggestion(
                &e.to_string(),
            ))
        })?;
        for assignment in overrides {
            ragtune_trainer::config_errors::apply_override(&mut value, assignment)
                .map_err(&in_file)?;
        }
        let config: Self = value.try_into().map_err(|e: toml::de::Error| {
            in_file(ragtune_trainer::config_errors::with_suggestion(
                &e.to_string(),
            ))
        })?;
        config.validate().map_err(|e| JointError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(config)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.run_name)
    }

    /// The generator config (validated to be present).
    pub fn generator(&self) -> Result<&GeneratorConfig> {
        self.generator.as_ref().ok_or_else(|| {
            JointError::Invalid(
                "[generator] is not set: joint training needs the generator that scores passages"
                    .into(),
            )
        })
    }

    /// Whether this run trains the generator (through an adapter).
    pub fn trains_generator(&self) -> bool {
        match self.method {
            Method::Lsr => false,
            Method::RaDit => true,
            Method::RagSequence => self.rag_sequence.train_generator,
        }
    }

    /// Settings that contradict each other or are missing, found before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(JointError::Invalid(m));
        let g = self.generator()?;
        g.validate()?;
        if g.valid.is_none() {
            return invalid(
                "generator.valid is not set: every step is evaluated on the validation split"
                    .into(),
            );
        }
        if self.rounds == 0 {
            return invalid("rounds must be at least 1".into());
        }
        if self.lsr.k < 2 || self.rag_sequence.k < 2 {
            return invalid(format!(
                "lsr.k and rag_sequence.k must be at least 2 (a distribution over one passage \
                 teaches nothing), got {} and {}",
                self.lsr.k, self.rag_sequence.k
            ));
        }
        for (name, t) in [
            ("lsr.lm_temperature", self.lsr.lm_temperature),
            ("retriever.temperature", self.retriever.temperature),
        ] {
            if !(t > 0.0 && t.is_finite()) {
                return invalid(format!("{name} must be positive, got {t}"));
            }
        }
        if !(self.rag_sequence.generator_lr.is_finite() && self.rag_sequence.generator_lr > 0.0) {
            return invalid(format!(
                "rag_sequence.generator_lr must be positive, got {}",
                self.rag_sequence.generator_lr
            ));
        }
        if self.lsr.score_batch_size == 0 || self.rag_sequence.generator_chunk == 0 {
            return invalid(
                "lsr.score_batch_size and rag_sequence.generator_chunk must be at least 1".into(),
            );
        }
        if self.retriever.towers == Towers::Both && self.retriever.refresh_every_steps == 0 {
            return invalid(
                "retriever.refresh_every_steps must be at least 1 with towers = \"both\"".into(),
            );
        }
        if self.method == Method::RagSequence && self.retriever.towers == Towers::Both {
            return invalid(
                "rag-sequence trains the query tower against a fixed passage index (as RAG does): \
                 set retriever.towers = \"query_only\""
                    .into(),
            );
        }
        if self.trains_generator() && self.adapter.is_none() {
            match &g.peft {
                Some(PeftConfig::Lora(_) | PeftConfig::Ia3(_)) => {}
                Some(_) => {
                    return invalid(
                        "joint training tunes the generator through a LoRA or IA3 adapter (the ones \
                         generation can evaluate): set [generator.peft] method = \"lora\" or \"ia3\""
                            .into(),
                    )
                }
                None => {
                    return invalid(format!(
                        "method {} trains the generator through an adapter: set `adapter` (an SFT \
                         adapter to continue) or [generator.peft]",
                        self.method.name()
                    ))
                }
            }
        }
        self.retriever.trainer.validate()?;
        Ok(())
    }
}
