//! Shared by the classify tests: small labelled JSONL sets and bert-tiny configs.

#![allow(dead_code)]

use ragtune_classify::ClassifyConfig;
use std::path::{Path, PathBuf};

/// Three topics a tiny BERT separates in a few steps, 24 questions each.
pub fn topics_jsonl(dir: &Path) -> PathBuf {
    let topics = [
        (
            "weather",
            ["rain", "snow", "sunshine", "wind", "storm", "fog"],
        ),
        (
            "food",
            ["pasta", "bread", "cheese", "soup", "apples", "rice"],
        ),
        (
            "sport",
            [
                "football", "tennis", "running", "swimming", "golf", "skiing",
            ],
        ),
    ];
    let frames = [
        "Tell me about {} please",
        "What do you know about {}?",
        "Is there any news on {} today",
        "I would like to hear about {}",
    ];
    let mut lines = String::new();
    for (label, words) in topics {
        for (i, word) in words.iter().enumerate() {
            for (j, frame) in frames.iter().enumerate() {
                let text = frame.replace("{}", word);
                let id = format!("{label}-{i}-{j}");
                lines.push_str(&format!(
                    "{{\"id\": \"{id}\", \"text\": \"{text}\", \"label\": \"{label}\"}}\n"
                ));
            }
        }
    }
    let path = dir.join("topics.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// Sentences scored +1 (praise), 0 (neutral) or -1 (complaint), for regression.
pub fn sentiment_jsonl(dir: &Path) -> PathBuf {
    let groups = [
        (
            1.0,
            [
                "great",
                "excellent",
                "wonderful",
                "superb",
                "lovely",
                "perfect",
            ],
        ),
        (
            0.0,
            [
                "ordinary", "average", "standard", "typical", "regular", "usual",
            ],
        ),
        (
            -1.0,
            ["awful", "terrible", "horrible", "dreadful", "poor", "bad"],
        ),
    ];
    let frames = [
        "The service was {}",
        "Honestly the work felt {}",
        "Our new kitchen is {}",
        "That builder was {} overall",
    ];
    let mut lines = String::new();
    for (score, words) in groups {
        for (i, word) in words.iter().enumerate() {
            for (j, frame) in frames.iter().enumerate() {
                let text = frame.replace("{}", word);
                lines.push_str(&format!(
                    "{{\"id\": \"s{score}-{i}-{j}\", \"text\": \"{text}\", \"score\": {score}}}\n"
                ));
            }
        }
    }
    let path = dir.join("sentiment.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// A bert-tiny classification config over `source` (JSONL with text and label) in `runs`.
pub fn tiny_toml(source: &Path, runs: &Path, name: &str, extra: &str) -> String {
    format!(
        r#"
task = "classification"
[data]
source = "{source}"
format = "jsonl"
fractions = [0.6, 0.2, 0.2]
[model]
base = "{base}"
max_length = 32
pooling = "mean"
[head]
dropout = 0.1
lr = 1e-2
[trainer]
run_name = "{name}"
runs_dir = "{runs}"
batch_size = 8
max_steps = 16
progress = false
precision = "fp32"
[trainer.optimizer]
lr = 1e-3
[trainer.eval]
every_steps = 4
[trainer.checkpoint]
every_steps = 4
{extra}
"#,
        source = source.display(),
        base = ragtune_testkit::asset("bert-tiny").display(),
        runs = runs.display(),
    )
}

pub fn config(toml: &str) -> ClassifyConfig {
    ClassifyConfig::from_toml_str(toml, Path::new("test.toml"), &[]).unwrap()
}

/// The `[peft]` table of each row of the comparison, with a rate that moves bert-tiny in a few steps.
pub const METHODS: &[(&str, &str)] = &[
    ("full", ""),
    ("lora", "[peft]\nmethod = \"lora\"\nr = 4\nlora_alpha = 8\ntarget_modules = [\"query\", \"value\"]\nlr = 1e-2"),
    ("ia3", "[peft]\nmethod = \"ia3\"\nlr = 3e-2"),
    ("houlsby", "[peft]\nmethod = \"bottleneck\"\nplacement = \"houlsby\"\nbottleneck_size = 8\nlr = 1e-2"),
    ("pfeiffer", "[peft]\nmethod = \"bottleneck\"\nplacement = \"pfeiffer\"\nbottleneck_size = 8\nlr = 1e-2"),
    ("prompt_tuning", "[peft]\nmethod = \"prompt_tuning\"\nnum_virtual_tokens = 4\nlr = 1e-2"),
    ("prefix_tuning", "[peft]\nmethod = \"prefix_tuning\"\nnum_virtual_tokens = 4\nlr = 1e-2"),
];
