//! PEFT adapters on bi-encoder towers (`[model.peft]` in a retriever config, e.g.
//! `method = "lora"`, `r = 8`, `target_modules = ["query", "value"]`).
//!
//! Each tower's BERT is frozen and carries a fresh LoRA or IA3 adapter from the models crate. The
//! adapter's variables are also registered in the tower's `VarStore` under `peft.` (the same
//! storage, trainable), so the trainer, its checkpoints and exact resume handle them as any other
//! weights, while the frozen base gets no gradients and no optimizer state. The export
//! ([`crate::export`]) writes the merged model as a sentence-transformers folder and the adapter
//! in PEFT's format under `adapter/`, which Python loads with
//! `PeftModel.from_pretrained(AutoModel.from_pretrained(base), dir / "adapter")`.

use crate::{Result, RetrieverError};
use ragtune_models::encoder::SentenceEncoder;
use ragtune_models::peft::{EncoderPeft, PeftConfig};
use tch::nn;

/// Where adapter variables sit in a tower's `VarStore`.
pub const VAR_PREFIX: &str = "peft";

/// The adapter folder inside an exported model folder.
pub const ADAPTER_DIR: &str = "adapter";

/// Whether a tower variable belongs to the adapter rather than the base model.
pub fn is_adapter_variable(name: &str) -> bool {
    name.strip_prefix(VAR_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Freezes `tower` and puts a fresh adapter on it (which leaves its embeddings unchanged until
/// trained). Only adapters that merge into the weights (LoRA, IA3) are accepted, because the
/// export must also give a plain sentence-transformers folder.
pub fn attach(tower: &mut SentenceEncoder, config: &PeftConfig) -> Result<()> {
    if !matches!(config, PeftConfig::Lora(_) | PeftConfig::Ia3(_)) {
        return Err(RetrieverError::Invalid(
            "model.peft: retrievers train LoRA or IA3 adapters, which merge into the exported sentence-transformers model; prompt tuning, prefix tuning and bottleneck adapters run on the encoder but cannot merge into a plain sentence-transformers folder (use method = \"lora\" or \"ia3\")".into(),
        ));
    }
    if tower.model().adapter().is_some() {
        return Err(RetrieverError::Invalid(
            "this tower already carries an adapter".into(),
        ));
    }
    let adapter = EncoderPeft::new(config, tower.model(), tower.device())?;
    tower.var_store_mut().freeze();
    register(tower.var_store(), adapter.var_store());
    tower.model_mut().set_adapter(Some(adapter));
    Ok(())
}

/// Registers every variable of `from` in `into` under `peft.` (same storage, trainable).
fn register(into: &nn::VarStore, from: &nn::VarStore) {
    let mut named: Vec<(String, tch::Tensor)> = from.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in named {
        // tch refuses dots in a variable name, so the dotted name becomes a path of sub-paths.
        let mut parts = name.split('.').collect::<Vec<_>>();
        let last = parts.pop().expect("a variable has a name");
        let path = parts
            .iter()
            .fold(into.root() / VAR_PREFIX, |path, part| path / *part);
        let _registered = path.add(last, tensor.shallow_clone(), true);
    }
}
