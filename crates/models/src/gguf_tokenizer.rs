//! Rebuilds a Hugging Face `tokenizers::Tokenizer` from the tokenizer stored in GGUF metadata
//! (`tokenizer.ggml.*`), for the byte-level BPE ("gpt2") tokenizers of Llama-family models.

use crate::gguf::GgufFile;
use crate::llama_tokenizer::LlamaTokenizer;
use crate::{ModelError, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The pre-tokenizers llama.cpp names (`tokenizer.ggml.pre`) whose split is digits one by one,
/// then the GPT-2 byte-level regex. Others split differently, and guessing would tokenize wrongly.
const DIGITS_THEN_BYTE_LEVEL: &[&str] = &["smollm", "default", "gpt2"];

pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<LlamaTokenizer> {
    let model = gguf.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(ModelError::Unsupported(format!(
            "{}: tokenizer.ggml.model is `{model}`; ragtune rebuilds only byte-level BPE (`gpt2`) tokenizers from GGUF",
            gguf.path().display()
        )));
    }
    let pre = gguf
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    if !DIGITS_THEN_BYTE_LEVEL.contains(&pre) {
        return Err(ModelError::Unsupported(format!(
            "{}: pre-tokenizer `{pre}` (tokenizer.ggml.pre); ragtune knows only {DIGITS_THEN_BYTE_LEVEL:?}",
            gguf.path().display()
        )));
    }
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let token_types = match gguf.get("tokenizer.ggml.token_type") {
        Some(_) => gguf.get_i64_array("tokenizer.ggml.token_type")?,
        None => vec![1; tokens.len()],
    };
    if token_types.len() != tokens.len() {
        return Err(gguf.error(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            token_types.len(),
            tokens.len()
        )));
    }
    let merges = gguf
        .get_str_array("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    gguf.error(format!(
                        "tokenizer.ggml.merges[{i}] is `{m}`, expected two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(gguf.error("tokenizer.ggml.tokens has duplicate tokens"));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| gguf.error(format!("building the BPE model from tokenizer.ggml.*: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&token_types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
        .map(|(tok, _)| AddedToken::from(tok.to_string(), true).normalized(false))
        .collect();
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&token_types)
        .filter(|(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
        .map(|(tok, _)| AddedToken::from(tok.to_string(), false).normalized(false))
        .collect();
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user);

    let token_at = |key: &str| -> Result<Option<String>> {
        match gguf.get(key) {
            None => Ok(None),
            Some(_) => {
                let id = gguf.get_i64(key)?;
                let tok = usize::try_from(id)
                    .ok()
                    .and_then(|i| tokens.get(i))
                    .ok_or_else(|| {
                        gguf.error(format!(
                            "{key} is {id}, outside the vocabulary of {} tokens",
                            tokens.len()
                        ))
                    })?;
                Ok(Some(tok.to_string()))
            }
        }
    };
    let bos_token = token_at("tokenizer.ggml.bos_token_id")?;
    let eos_token = token_at("tokenizer.ggml.eos_token_id")?.ok_or_else(|| {
        gguf.error("tokenizer.ggml.eos_token_id is missing; generation could never stop")
    })?;
    let pad_token = token_at("tokenizer.ggml.padding_token_id")?;
    let unk_token = token_at("tokenizer.ggml.unknown_token_id")?;
    let add_bos_token = gguf
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);

    if add_bos_token {
        let bos = bos_token.clone().ok_or_else(|| {
            gguf.error("tokenizer.ggml.add_bos_token is true but bos_token_id is missing")
        })?;
        let bos_id = tokenizer.token_to_id(&bos).unwrap_or_default();
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos}:0 $A:0"))
            .and_then(|b| b.try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1")))
            .map_err(|e| gguf.error(format!("BOS template: {e}")))?
            .special_tokens(vec![(bos.clone(), bos_id)])
            .build()
            .map_err(|e| gguf.error(format!("BOS template: {e}")))?;
        tokenizer.with_post_processor(Some(template));
    } else {
        tokenizer.with_post_processor(Some(ByteLevel::new(false, false, true)));
    }

    let chat_template = gguf
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let model_max_length = gguf.get("llama.context_length").and_then(|v| v.as_i64());
    LlamaTokenizer::new(
        tokenizer,
        crate::llama_tokenizer::SpecialTokens {
            bos_token,
            eos_token,
            pad_token,
            unk_token,
            add_bos_token,
        },
        chat_template,
        model_max_length,
    )
}
