//! The stages before evaluation, each a call of its recipe's library function with the paths the
//! pipeline fills in: data, retriever, index, generator-sft, make-pairs, dpo and joint.

use crate::config::{PipelineConfig, Stage};
use crate::record::Throughput;
use crate::{PipelineError, Result};
use ragtune_data::split::{split_dataset, SplitConfig};
use ragtune_data::Dataset;
use ragtune_generator_train::config::GeneratorConfig;
use ragtune_generator_train::make_pairs::PairSplit;
use ragtune_rag_joint::JointConfig;
use ragtune_retrieval::{Corpus, DenseConfig, DenseRetriever, RetrievalConfig, Similarity};
use ragtune_retriever_train::model::Architecture;
use ragtune_retriever_train::train::RetrieverConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::Device;

pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// What a stage gives back to the runner: its outputs and throughput.
pub struct Done {
    pub outputs: Value,
    pub throughput: Option<Throughput>,
}

pub fn data_dir(config: &PipelineConfig) -> PathBuf {
    config.stage_dir(Stage::Data)
}

/// The three split folders the data stage wrote.
pub fn read_splits(config: &PipelineConfig) -> Result<[Dataset; 3]> {
    let dir = data_dir(config);
    let read = |name: &str| Dataset::read(&dir.join(name));
    Ok([read("train")?, read("val")?, read("test")?])
}

pub fn data(config: &PipelineConfig) -> Result<Done> {
    let source = &config.data.source;
    let (splits, how) = if source.is_dir() {
        match ragtune_data::read_given_splits(source, config.data.split_seed)? {
            Some(given) => {
                let how = json!({"splits": "given", "layout": given.layout, "notes": given.notes});
                (given.splits, how)
            }
            None => split(Dataset::read(source)?, config)?,
        }
    } else {
        let (dataset, import) = ragtune_data::import::import_faq(source)?;
        let (splits, mut how) = split(dataset, config)?;
        how["import"] = serde_json::to_value(import).expect("the import report serializes");
        (splits, how)
    };
    let dir = data_dir(config);
    let mut counts = serde_json::Map::new();
    for (name, part) in SPLITS.iter().zip(&splits) {
        part.validate(&dir.join(name))?;
        part.write(&dir.join(name))?;
        counts.insert(
            name.to_string(),
            json!({"passages": part.corpus.len(), "queries": part.queries.len(),
                   "qrels": part.qrels.len(), "qa": part.qa.len()}),
        );
    }
    if splits[0].queries.is_empty() && splits[0].qa.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "{}: the training split has no queries and no qa rows",
            source.display()
        )));
    }
    Ok(Done {
        outputs: json!({"dir": dir, "counts": counts, "how": how}),
        throughput: None,
    })
}

/// Our own seeded, leak-checked split (after dedup, when asked for).
fn split(mut dataset: Dataset, config: &PipelineConfig) -> Result<([Dataset; 3], Value)> {
    let mut dedup = Value::Null;
    if config.data.dedup {
        let docs = std::mem::take(&mut dataset.corpus);
        let (kept, mut report) =
            ragtune_data::dedup::dedup_corpus(docs, &ragtune_data::dedup::DedupConfig::default());
        dataset.corpus = kept;
        dataset.qrels =
            ragtune_data::dedup::remap_qrels(std::mem::take(&mut dataset.qrels), &mut report);
        let moved: std::collections::HashMap<String, Option<String>> = report
            .removed
            .iter()
            .map(|r| {
                let to = match &r.reason {
                    ragtune_data::dedup::Reason::Empty => None,
                    ragtune_data::dedup::Reason::ExactDuplicate { of }
                    | ragtune_data::dedup::Reason::NearDuplicate { of, .. } => Some(of.clone()),
                };
                (r.doc_id.clone(), to)
            })
            .collect();
        for qa in &mut dataset.qa {
            let mut ids: Vec<String> = qa
                .gold_doc_ids
                .iter()
                .filter_map(|id| match moved.get(id) {
                    None => Some(id.clone()),
                    Some(to) => to.clone(),
                })
                .collect();
            ids.dedup();
            qa.gold_doc_ids = ids;
        }
        dedup = json!({"input_docs": report.input_docs, "kept_docs": report.kept_docs,
                       "exact_duplicates": report.exact_duplicates, "near_duplicates": report.near_duplicates,
                       "qrels_remapped": report.qrels_remapped, "qrels_dropped": report.qrels_dropped});
    }
    let (splits, report) = split_dataset(
        &dataset,
        &SplitConfig {
            seed: config.data.split_seed,
            fractions: config.data.fractions,
            stratify: false,
        },
    )?;
    let how = json!({"splits": "made here", "seed": config.data.split_seed,
                     "fractions": config.data.fractions, "dedup": dedup,
                     "report": serde_json::to_value(report).expect("the split report serializes")});
    Ok((splits, how))
}

/// The retriever recipe's config as the pipeline runs it.
pub fn retriever_config(config: &PipelineConfig) -> Option<RetrieverConfig> {
    let mut r = config.retriever.clone()?;
    r.data.source = data_dir(config);
    r.data.split_seed = config.data.split_seed;
    r.trainer.runs_dir = config.run_dir();
    r.trainer.run_name = Stage::Retriever.name().into();
    Some(r)
}

/// The tuned retriever's sentence-transformers folder.
pub fn tuned_model(config: &PipelineConfig) -> PathBuf {
    config.stage_dir(Stage::Retriever).join("model")
}

pub fn retriever(config: &PipelineConfig, device: Device) -> Result<Done> {
    let r = retriever_config(config).expect("validated: the stage has a [retriever] table");
    let report = ragtune_retriever_train::train::run(&r, device)?;
    let metrics = ragtune_trainer::MetricsLog::read(&report.run_dir.join("metrics.jsonl"))
        .unwrap_or_default();
    let rate = metrics
        .iter()
        .rev()
        .find(|m| m["type"] == "train")
        .and_then(|m| m["examples_per_s"].as_f64());
    Ok(Done {
        outputs: json!({
            "model": tuned_model(config),
            "steps": report.steps,
            "train_pairs": report.train_pairs,
            "mining": report.mining,
            "report": report.report,
        }),
        throughput: rate.map(|value| Throughput {
            value,
            unit: "pairs/s (evaluations included)".into(),
        }),
    })
}

/// The dense retrieval config of `model` as every later stage searches with it.
pub fn dense_config(config: &PipelineConfig, model: &Path) -> DenseConfig {
    let r = config.retriever.as_ref();
    let similarity = match r.map(|r| (r.model.similarity, r.model.architecture)) {
        Some((Some(s), _)) => s,
        Some((None, Architecture::Dpr | Architecture::Contriever)) => Similarity::Dot,
        _ => Similarity::Cosine,
    };
    DenseConfig {
        model: model.to_path_buf(),
        search: config.index.search,
        hnsw: config.index.hnsw,
        similarity,
        max_length: r.map(|r| r.model.max_length),
        batch_size: r.map_or(64, |r| r.model.encode_batch_size),
        cache_dir: Some(config.stage_dir(Stage::Index).join("cache")),
    }
}

/// The retrievers of the 2×2: zero-shot (the base model) and tuned, or TF-IDF alone when the
/// config trains no retriever.
pub fn retrieval_configs(config: &PipelineConfig) -> Vec<(&'static str, RetrievalConfig)> {
    match &config.retriever {
        Some(r) => vec![
            (
                "zero-shot",
                RetrievalConfig::Dense(dense_config(config, &r.model.base)),
            ),
            (
                "tuned",
                RetrievalConfig::Dense(dense_config(config, &tuned_model(config))),
            ),
        ],
        None => vec![("tfidf", RetrievalConfig::Tfidf)],
    }
}

/// The joint stage's tuned retriever, for the eval stage, when the joint stage runs.
pub fn joint_retrieval(config: &PipelineConfig) -> Option<RetrievalConfig> {
    config.stages().contains(&Stage::Joint).then(|| {
        RetrievalConfig::Dense(dense_config(
            config,
            &config.stage_dir(Stage::Joint).join("model"),
        ))
    })
}

pub fn index(config: &PipelineConfig, device: Device) -> Result<Done> {
    let [_, _, test] = read_splits(config)?;
    let mut outputs = serde_json::Map::new();
    let mut encoded = 0usize;
    let started = std::time::Instant::now();
    for (label, retrieval) in retrieval_configs(config) {
        let RetrievalConfig::Dense(dense) = &retrieval else {
            continue;
        };
        let retriever = DenseRetriever::load(dense, Corpus::new(test.corpus.clone()), device)?;
        if matches!(
            retriever.cache_status(),
            ragtune_retrieval::dense::CacheStatus::Miss(_)
        ) {
            encoded += test.corpus.len();
        }
        outputs.insert(
            label.to_string(),
            json!({"model": dense.model, "passages": test.corpus.len(), "cache": retriever.cache_status()}),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Done {
        outputs: Value::Object(outputs),
        throughput: (encoded > 0).then(|| Throughput {
            value: encoded as f64 / seconds.max(1e-9),
            unit: "passages/s".into(),
        }),
    })
}

/// The generator recipe's config as the pipeline runs it in `stage`: the split folders, the
/// tuned retriever (or TF-IDF), and the stage's run folder.
pub fn generator_config(config: &PipelineConfig, stage: Stage) -> Option<GeneratorConfig> {
    let mut g = config.generator.clone()?;
    let data = data_dir(config);
    g.train = data.join("train");
    g.valid = Some(data.join("val"));
    // The 2×2 of the eval stage scores the test split, with every cell on the same questions.
    g.test = None;
    g.corpus = None;
    g.retrieval = retrieval_configs(config)
        .pop()
        .map(|(_, r)| r)
        .expect("there is always one retriever");
    g.eval.base = false;
    g.trainer.runs_dir = config.run_dir();
    g.trainer.run_name = stage.name().into();
    Some(g)
}

pub fn generator_sft(config: &PipelineConfig, device: Device) -> Result<Done> {
    let g = generator_config(config, Stage::GeneratorSft).expect("validated: [generator] is set");
    let report = ragtune_generator_train::sft::run(&g, device)?;
    Ok(Done {
        outputs: json!({
            "output": report.output,
            "adapter": g.peft.is_some(),
            "retriever": report.retriever,
            "train_examples": report.train_examples,
            "train_tokens": report.train_tokens,
            "steps": report.steps,
            "train_seconds": report.train_seconds,
        }),
        throughput: Some(Throughput {
            value: report.tokens_per_second,
            unit: "tokens/s".into(),
        }),
    })
}

/// The SFT stage's adapter (or full model folder).
pub fn sft_output(config: &PipelineConfig) -> PathBuf {
    let dir = config.stage_dir(Stage::GeneratorSft);
    if config.generator.as_ref().is_some_and(|g| g.peft.is_some()) {
        dir.join("adapter")
    } else {
        dir.join("model")
    }
}

pub fn make_pairs(config: &PipelineConfig, device: Device) -> Result<Done> {
    let mut g = generator_config(config, Stage::MakePairs).expect("validated: [generator] is set");
    // The SFT model writes the rejected answers: DPO then moves it off its own mistakes.
    g.pairs.adapter = Some(sft_output(config));
    let dir = config.stage_dir(Stage::MakePairs);
    let started = std::time::Instant::now();
    let train = ragtune_generator_train::make_pairs::run(
        &g,
        PairSplit::Train,
        config.pairs.limit,
        &dir.join("train"),
        device,
    )?;
    let heldout = ragtune_generator_train::make_pairs::run(
        &g,
        PairSplit::Val,
        config.pairs.heldout_limit,
        &dir.join("heldout"),
        device,
    )?;
    let questions = train.pairs.len() + train.skipped_empty + train.skipped_same;
    let questions = questions + heldout.pairs.len() + heldout.skipped_empty + heldout.skipped_same;
    Ok(Done {
        outputs: json!({
            "train_pairs": train.pairs.len(), "heldout_pairs": heldout.pairs.len(),
            "skipped_empty": train.skipped_empty + heldout.skipped_empty,
            "skipped_same": train.skipped_same + heldout.skipped_same,
        }),
        throughput: Some(Throughput {
            value: questions as f64 / started.elapsed().as_secs_f64().max(1e-9),
            unit: "questions/s".into(),
        }),
    })
}

pub fn dpo(config: &PipelineConfig, device: Device) -> Result<Done> {
    let mut g = generator_config(config, Stage::Dpo).expect("validated: [generator] is set");
    let pairs = config.stage_dir(Stage::MakePairs);
    g.dpo.train_pairs = Some(pairs.join("train"));
    g.dpo.eval_pairs = Some(pairs.join("heldout"));
    g.dpo.sft_adapter = Some(sft_output(config));
    let report = ragtune_generator_train::dpo::run(&g, device)?;
    Ok(Done {
        outputs: json!({"adapter": report.adapter, "steps": report.steps, "report": report.json}),
        throughput: Some(Throughput {
            value: report.tokens_per_second,
            unit: "tokens/s".into(),
        }),
    })
}

/// The generator the eval stage calls tuned: DPO's adapter when DPO ran, else SFT's output.
pub fn tuned_generator(config: &PipelineConfig) -> Option<PathBuf> {
    let stages = config.stages();
    if stages.contains(&Stage::Dpo) {
        Some(config.stage_dir(Stage::Dpo).join("adapter"))
    } else if stages.contains(&Stage::GeneratorSft) {
        Some(sft_output(config))
    } else {
        None
    }
}

/// The joint recipe's config as the pipeline runs it: from the tuned retriever (searched as
/// `[index]` says, its corpus embeddings from the index stage's cache) and the SFT adapter, on
/// the data stage's splits. The test comparison is the eval stage's, so the recipe skips its own.
pub fn joint_config(config: &PipelineConfig) -> Option<JointConfig> {
    let mut j = config.joint.clone()?;
    let mut g = generator_config(config, Stage::Joint)?;
    g.test = None;
    j.generator = Some(g);
    // It starts from the stage-by-stage generator: DPO's or SFT's adapter, or SFT's full model.
    match tuned_generator(config) {
        Some(dir) if dir.join("config.json").is_file() || g_is_full(config) => {
            if let Some(g) = j.generator.as_mut() {
                g.model = dir;
            }
            j.adapter = None;
        }
        tuned => j.adapter = tuned,
    }
    j.retriever.dense = dense_config(config, &tuned_model(config));
    j.runs_dir = config.run_dir();
    j.run_name = Stage::Joint.name().into();
    // Outside the stage's folder, so a rerun with another seed or method keeps the LM's scores.
    if j.lsr.cache.is_none() {
        j.lsr.cache = Some(config.run_dir().join("joint-lm-scores.parquet"));
    }
    j.eval.test = false;
    Some(j)
}

/// Whether the generator stages fine-tune every weight (no `[generator.peft]`).
fn g_is_full(config: &PipelineConfig) -> bool {
    config.generator.as_ref().is_some_and(|g| g.peft.is_none())
}

/// The adapter the joint stage trained, when its method tunes the generator.
pub fn joint_adapter(config: &PipelineConfig) -> Option<PathBuf> {
    let j = config.joint.as_ref()?;
    (config.stages().contains(&Stage::Joint) && j.trains_generator())
        .then(|| config.stage_dir(Stage::Joint).join("adapter"))
}

pub fn joint(config: &PipelineConfig, device: Device) -> Result<Done> {
    let j = joint_config(config).expect("validated: [joint] is set");
    let report = ragtune_rag_joint::run(&j, device)?;
    let scored: (usize, f64) = report
        .steps
        .iter()
        .filter_map(|s| s.scoring.as_ref())
        .fold((0, 0.0), |(t, s), st| (t + st.tokens, s + st.seconds));
    Ok(Done {
        outputs: serde_json::to_value(&report).expect("the joint report serializes"),
        throughput: (scored.0 > 0).then(|| Throughput {
            value: scored.0 as f64 / scored.1.max(1e-9),
            unit: "LM-scored tokens/s".into(),
        }),
    })
}
