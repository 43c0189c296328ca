//! SmolLM2 (GGUF, dequantized) vs transformers' LlamaForCausalLM and AutoTokenizer loaded from
//! the folder ragtune converts it to: tokenizer ids and chat rendering, fp32 logits (single and
//! left-padded batch), and greedy generation token for token.

use ragtune_models::chat::{ChatMessage, ChatTemplate};
use ragtune_models::generation::{generate, GenerationConfig, Sampling};
use ragtune_models::gguf::GgufFile;
use ragtune_models::gguf_convert::convert_gguf_to_hf;
use ragtune_models::gguf_tokenizer::tokenizer_from_gguf;
use ragtune_models::llama::Llama;
use ragtune_models::llama_load::{load_gguf, load_hf_folder, CausalLm};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

fn gguf_path() -> PathBuf {
    asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The converted folder, made once per test binary.
fn converted() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("llama-parity").join("smollm2-hf");
        let summary = convert_gguf_to_hf(&gguf_path(), &dir).expect("conversion");
        assert_eq!(summary.tensors, 272);
        assert!(summary.config.tie_word_embeddings);
        dir
    })
}

const PROMPTS: &[&str] = &[
    "The capital of Germany is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is 17 * 23?<|im_end|>\n<|im_start|>assistant\n",
    "Zaragoza is a city in",
    "Once upon a time, in a land far away, there lived a",
];

fn encode_all(model: &CausalLm, texts: &[&str]) -> Vec<Vec<i64>> {
    texts
        .iter()
        .map(|t| model.tokenizer.encode(t, true).unwrap())
        .collect()
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    let texts = [
        "Hello, world!",
        "  leading and trailing spaces  ",
        "multiple     spaces\tand\ttabs\nnewlines\n\n\n",
        "1234567890 and 3.14159 and 1,000,000",
        "Year 2024: 12 apples + 30 pears = 42 fruits",
        "naïve café résumé — “quotes” ‘single’",
        "日本語のテキストと中文文本",
        "Emoji 🤗🚀 and flags 🇪🇸",
        "Привет, мир! Γειά σου κόσμε",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
        "<|endoftext|>text after special<|im_end|>",
        "<|im_start|>assistant\n",
        "code: fn main() { println!(\"{}\", x); }",
        "def f(x):\n    return x**2  # square",
        "URL https://example.com/path?q=1&r=two#frag",
        "email: someone@example.org",
        "CamelCaseWordsAndsnake_case_words",
        "don't won't it's I'm we'll they've",
        "",
        " ",
        "a",
        "\n",
        "Tab\tseparated\tvalues",
        "The quick brown fox jumps over the lazy dog.",
        "ALL CAPS SENTENCE WITH NUMBERS 99",
        "mixed 1a2b3c and ½ ¾ ² ³",
        "<repo_name>ragtune<file_sep>src/main.rs",
        "Zaragoza's construction permit FAQ (2024 edition)",
        "   \n  \t ",
        "¿Dónde está la biblioteca? ¡Aquí!",
    ];
    let chats = vec![
        vec![ChatMessage::new("user", "What is the capital of Germany?")],
        vec![
            ChatMessage::new("system", "Answer briefly."),
            ChatMessage::new("user", "Name a prime."),
        ],
        vec![
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello! How can I help?"),
            ChatMessage::new("user", "Tell me a joke."),
        ],
    ];
    let expected = reference(
        "llama_ref.py",
        &json!({"op": "tokenize", "model_dir": converted(), "texts": texts, "chats": chats, "gguf": gguf_path()}),
    );
    let gguf = GgufFile::open(&gguf_path()).unwrap();
    let tokenizer = tokenizer_from_gguf(&gguf).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let ids = tokenizer.encode(text, true).unwrap();
        let want: Vec<i64> = serde_json::from_value(expected["ids"][i].clone()).unwrap();
        assert_eq!(ids, want, "ids of {text:?}");
        // transformers' GGUF converter has no entry for llama.cpp's `smollm` pre-tokenizer and falls
        // back to a split that isolates ASCII digits only; SmolLM2's own tokenizer (Digits) and
        // llama.cpp (`\p{N}`) isolate every numeric character (½, ²), as ragtune does.
        if !text.chars().any(|c| c.is_numeric() && !c.is_ascii_digit()) {
            let independent: Vec<i64> =
                serde_json::from_value(expected["gguf_ids"][i].clone()).unwrap();
            assert_eq!(
                ids, independent,
                "ids of {text:?} vs transformers' own GGUF tokenizer"
            );
        }
        let decoded = tokenizer.decode(&ids, false).unwrap();
        assert_eq!(
            decoded,
            expected["decoded"][i].as_str().unwrap(),
            "decode of {text:?}"
        );
    }
    let special = &expected["special"];
    assert_eq!(
        tokenizer.eos_token_id(),
        special["eos_id"].as_i64().unwrap()
    );
    assert_eq!(
        tokenizer.pad_token_id(),
        special["pad_id"].as_i64().unwrap()
    );
    assert_eq!(
        Some(tokenizer.special.eos_token.as_str()),
        special["eos"].as_str()
    );

    let template = tokenizer.chat_template().unwrap();
    assert!(template.default_system.is_some());
    for (i, chat) in chats.iter().enumerate() {
        assert_eq!(
            template.render(chat, true),
            expected["chat_renders"][i].as_str().unwrap(),
            "chat {i}"
        );
    }
    // The exported folder's tokenizer (what `generate --model DIR` uses) agrees as well.
    let from_folder =
        ragtune_models::llama_tokenizer::LlamaTokenizer::from_hf_folder(converted()).unwrap();
    assert_eq!(from_folder.chat_template, tokenizer.chat_template);
    assert_eq!(from_folder.special, tokenizer.special);
    assert_eq!(
        from_folder.encode(texts[9], true).unwrap(),
        tokenizer.encode(texts[9], true).unwrap()
    );
    assert_eq!(
        ChatTemplate::from_jinja(from_folder.chat_template.as_deref().unwrap()).unwrap(),
        template
    );
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn logits(model: &Llama, ids: &Tensor, mask: Option<&Tensor>) -> Tensor {
    tch::no_grad(|| model.forward(ids, mask, None, None).unwrap())
}

#[test]
fn fp32_logits_match_transformers_single_and_left_padded_batch() {
    // Singles through the GGUF loader, the batch through the converted folder: both loaders
    // are held to transformers.
    let from_gguf = load_gguf(&gguf_path(), Device::Cpu, Kind::Float).unwrap();
    let prompts = encode_all(&from_gguf, PROMPTS);
    let out = scratch("llama-logits").join("reference.safetensors");
    let batch: Vec<Vec<i64>> = prompts[..3].to_vec();
    reference(
        "llama_ref.py",
        &json!({"op": "logits", "model_dir": converted(), "singles": prompts, "batch": batch, "out": out}),
    );
    let expected = ragtune_models::checkpoint::load_safetensors(&out, Device::Cpu).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let ours =
            logits(&from_gguf.model, &Tensor::from_slice(p).unsqueeze(0), None).squeeze_dim(0);
        let diff = max_abs_diff(&ours, &expected[&format!("single_{i}")]);
        println!("prompt {i} ({} tokens): max |Δlogit| = {diff:.2e}", p.len());
        assert!(diff <= 1e-3, "prompt {i}: max abs logit diff {diff}");
    }
    drop(from_gguf);

    let from_folder = load_hf_folder(converted(), Device::Cpu, Kind::Float).unwrap();
    let (ids, mask) = ragtune_models::generation::left_pad(
        &batch,
        from_folder.tokenizer.pad_token_id(),
        Device::Cpu,
    );
    let ours = logits(&from_folder.model, &ids, Some(&mask));
    let want = &expected["batch"];
    let width = ids.size()[1];
    for (row, p) in batch.iter().enumerate() {
        let real = p.len() as i64;
        let diff = max_abs_diff(
            &ours.get(row as i64).narrow(0, width - real, real),
            &want.get(row as i64).narrow(0, width - real, real),
        );
        println!(
            "batch row {row} ({} pad): max |Δlogit| = {diff:.2e}",
            width - real
        );
        assert!(diff <= 1e-3, "batched row {row}: max abs logit diff {diff}");
    }
}

#[test]
fn greedy_generation_matches_transformers_token_for_token() {
    let model = load_hf_folder(converted(), Device::Cpu, Kind::Float).unwrap();
    let template = model.tokenizer.chat_template().unwrap();
    let texts: Vec<String> = [
        "What is the capital of Germany?",
        "Write a haiku about rain.",
        "List three colors.",
    ]
    .iter()
    .map(|q| template.prompt(None, q))
    .chain(std::iter::once("The capital of Germany is".to_string()))
    .collect();
    let prompts: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| model.tokenizer.encode(t, true).unwrap())
        .collect();
    let config = GenerationConfig {
        max_new_tokens: 32,
        sampling: Sampling::Greedy,
        seed: 0,
        eos_token_ids: model.config.eos_token_ids.clone(),
        pad_token_id: model.tokenizer.pad_token_id(),
    };
    let tokens = |batched: bool| -> Vec<Vec<i64>> {
        if batched {
            generate(&model.model, &prompts, &config)
                .unwrap()
                .into_iter()
                .map(|g| g.tokens)
                .collect()
        } else {
            prompts
                .iter()
                .map(|p| {
                    generate(&model.model, std::slice::from_ref(p), &config)
                        .unwrap()
                        .remove(0)
                        .tokens
                })
                .collect()
        }
    };
    let single = tokens(false);
    let batched = tokens(true);
    let expected = reference(
        "llama_ref.py",
        &json!({"op": "generate", "model_dir": converted(), "prompts": prompts, "max_new_tokens": 32}),
    );
    let want =
        |key: &str| -> Vec<Vec<i64>> { serde_json::from_value(expected[key].clone()).unwrap() };
    assert_eq!(single, want("single"), "one prompt at a time");
    assert_eq!(batched, want("batched"), "left-padded batch");
    let answer = model.tokenizer.decode(&single[0], true).unwrap();
    println!("SmolLM2: {answer}");
    assert!(answer.contains("Berlin"), "{answer}");
}

#[test]
fn bf16_model_tracks_fp32_and_sampling_is_seeded() {
    let fp32 = load_gguf(&gguf_path(), Device::Cpu, Kind::Float).unwrap();
    let bf16 = load_gguf(&gguf_path(), Device::Cpu, Kind::BFloat16).unwrap();
    assert!(bf16
        .var_store
        .variables()
        .values()
        .all(|v| v.kind() == Kind::BFloat16));
    let ids = Tensor::from_slice(&fp32.tokenizer.encode(PROMPTS[4], true).unwrap()).unsqueeze(0);
    let a = logits(&fp32.model, &ids, None);
    let b = logits(&bf16.model, &ids, None).to_kind(Kind::Float);
    let agree = a
        .argmax(-1, false)
        .eq_tensor(&b.argmax(-1, false))
        .to_kind(Kind::Float)
        .mean(Kind::Float);
    assert!(
        agree.double_value(&[]) >= 0.8,
        "bf16 top-1 agrees on {agree} of positions"
    );

    let prompt = vec![fp32.tokenizer.encode(PROMPTS[3], true).unwrap()];
    let config = |seed| GenerationConfig {
        max_new_tokens: 12,
        sampling: Sampling::TopP {
            temperature: 1.0,
            top_p: 0.95,
        },
        seed,
        eos_token_ids: vec![],
        pad_token_id: fp32.tokenizer.pad_token_id(),
    };
    let run = |seed| {
        generate(&fp32.model, &prompt, &config(seed))
            .unwrap()
            .remove(0)
            .tokens
    };
    assert_eq!(run(1), run(1));
    assert_eq!(run(1).len(), 12);
    assert_ne!(
        run(1),
        run(2),
        "different seeds gave the same 12 sampled tokens"
    );
}
