//! What the end-to-end tests of the `ragtune` binary share: running it, a slice of the bundled
//! FAQ, and a tiny random Llama with SmolLM2's tokenizer.
#![allow(dead_code)]

use ragtune_testkit::asset;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

pub fn ragtune(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragtune"));
    cmd.args(args).arg("--device").arg("cpu");
    cmd
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("ragtune starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ragtune failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The first `n` rows of the bundled FAQ as a JSONL file.
pub fn faq_slice(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    let rows: Vec<&str> = text.lines().take(n).collect();
    let path = dir.join("faq.jsonl");
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path
}

/// A 1-layer random Llama (hidden 32) with SmolLM2's tokenizer, as a Hugging Face folder.
pub fn tiny_generator(dir: &Path) -> PathBuf {
    use ragtune_models::llama::{Llama, LlamaConfig};
    let config: LlamaConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 49152, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": true, "rms_norm_eps": 1e-5, "model_type": "llama", "hidden_act": "silu"
    }))
    .unwrap();
    tch::manual_seed(0);
    let var_store = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = Llama::new(&var_store.root(), &config).unwrap();
    let gguf = ragtune_models::gguf::GgufFile::open(
        &asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    .unwrap();
    let lm = ragtune_models::llama_load::CausalLm {
        config,
        var_store,
        model,
        tokenizer: ragtune_models::gguf_tokenizer::tokenizer_from_gguf(&gguf).unwrap(),
    };
    let out = dir.join("tiny-llama");
    ragtune_models::peft::save_hf_folder(&lm, &out).unwrap();
    out
}

pub const RETRIEVER: &str = r#"
[retriever.model]
base = "BERT_TINY"
max_length = 64
encode_batch_size = 32

[retriever.negatives]
hard = true

[retriever.negatives.mining]
search = "exact"

[retriever.report]
hnsw = false

[retriever.trainer]
batch_size = 8
epochs = 4.0
progress = false
precision = "fp32"

[retriever.trainer.optimizer]
lr = 5e-4

[retriever.trainer.eval]
every_steps = 6
metric = "ndcg@10"

[retriever.trainer.checkpoint]
every_steps = 2
keep_last = 1
"#;

pub const GENERATOR: &str = r#"
[generator]
model = "TINY_LLAMA"
max_train_examples = 16

[generator.peft]
method = "lora"
r = 4
lora_alpha = 8
target_modules = "all-linear"

[generator.prompt]
max_length = 256

[generator.contexts]
k = 2

[generator.eval]
max_new_tokens = 6
batch_size = 8

[generator.pairs]
max_new_tokens = 6

[generator.trainer]
batch_size = 4
epochs = 1.0
progress = false
precision = "fp32"

[generator.trainer.checkpoint]
every_steps = 2
save_frozen = false

[pairs]
limit = 8
heldout_limit = 4

[eval]
questions = 8
bootstrap_resamples = 200
"#;

/// LSR from the tuned retriever and the DPO adapter, on a few questions.
pub const JOINT: &str = r#"
[joint]
method = "lsr"
max_train_questions = 12

[joint.lsr]
k = 3

[joint.retriever.trainer]
batch_size = 4
epochs = 1.0
progress = false
precision = "fp32"

[joint.eval]
questions = 4
"#;

pub fn config(
    dir: &Path,
    name: &str,
    source: &Path,
    generator: Option<&Path>,
    stages: &str,
) -> PathBuf {
    let mut text = format!(
        "name = \"{name}\"\nruns_dir = \"{}\"\n{stages}\n[data]\nsource = \"{}\"\nfractions = [0.6, 0.2, 0.2]\n",
        dir.join("runs").display(),
        source.display()
    );
    text.push_str(&RETRIEVER.replace("BERT_TINY", &asset("bert-tiny").display().to_string()));
    if let Some(g) = generator {
        text.push_str(&GENERATOR.replace("TINY_LLAMA", &g.display().to_string()));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub fn record(run: &Path, stage: &str) -> Value {
    let text = std::fs::read_to_string(run.join(stage).join("stage.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits until `dir` holds an entry (a checkpoint), then kills `child` with SIGKILL: an
/// interruption at a moment the run did not choose.
pub fn kill_once_saved(child: &mut Child, dir: &Path) {
    let started = std::time::Instant::now();
    loop {
        let saved = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        if saved > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before anything was saved in {}",
            dir.display()
        );
        assert!(
            started.elapsed().as_secs() < 300,
            "nothing saved in {} after 300 s",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
