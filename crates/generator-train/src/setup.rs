//! What every generator recipe loads first: the model, the training and test splits, the corpus
//! and the retriever over it (`[retrieval]`: dense with the tuned retriever, or TF-IDF).

use crate::config::GeneratorConfig;
use crate::{GeneratorError, Result};
use ragtune_data::Dataset;
use ragtune_models::llama_load::{load_causal_lm, CausalLm};
use ragtune_models::peft::{Peft, PeftConfig};
use ragtune_retrieval::{Corpus, Retriever};
use std::path::Path;
use tch::{Device, Kind};

pub struct Setup {
    pub config: GeneratorConfig,
    pub lm: CausalLm,
    pub train: Dataset,
    pub valid: Dataset,
    pub test: Dataset,
    pub retriever: Box<dyn Retriever>,
}

fn read_optional(dir: Option<&Path>) -> Result<Dataset> {
    match dir {
        Some(d) => Ok(Dataset::read(d)?),
        None => Ok(Dataset::default()),
    }
}

/// Validates `config`, then loads the model, the datasets and the retriever.
pub fn load(config: &GeneratorConfig, device: Device) -> Result<Setup> {
    config.validate()?;
    let lm = load_causal_lm(&config.model, device, Kind::Float)?;
    let train = Dataset::read(&config.train)?;
    let valid = read_optional(config.valid.as_deref())?;
    let test = read_optional(config.test.as_deref())?;
    let corpus_dir = config.corpus.as_ref().unwrap_or(&config.train);
    let corpus = if corpus_dir == &config.train {
        train.corpus.clone()
    } else {
        Dataset::read(corpus_dir)?.corpus
    };
    if corpus.is_empty() {
        return Err(GeneratorError::Invalid(format!(
            "{}: no corpus.parquet to take passages from",
            corpus_dir.display()
        )));
    }
    let retriever = config.retrieval.build(Corpus::new(corpus), device)?;
    Ok(Setup {
        config: config.clone(),
        lm,
        train,
        valid,
        test,
        retriever,
    })
}

/// Token ids of a prompt-tuning adapter's text initialisation, when the config asks for one.
pub fn init_text_ids(config: &GeneratorConfig, lm: &CausalLm) -> Result<Option<Vec<i64>>> {
    Ok(match &config.peft {
        Some(PeftConfig::PromptTuning(p)) => match &p.init_text {
            Some(t) => Some(lm.tokenizer.encode(t, false)?),
            None => None,
        },
        _ => None,
    })
}

/// Loads an adapter for generation (LoRA or IA3: the others have no generation path) and attaches it.
pub fn attach_for_generation(lm: &mut CausalLm, dir: &Path, device: Device) -> Result<()> {
    let adapter = Peft::load(dir, &lm.model, device)?;
    if matches!(adapter, Peft::Prefix(_) | Peft::Prompt(_)) {
        return Err(GeneratorError::Invalid(format!(
            "{}: generation supports LoRA and IA3 adapters",
            dir.display()
        )));
    }
    adapter.attach(&mut lm.model);
    Ok(())
}
