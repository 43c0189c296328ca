//! Prompts: a ChatML conversation (system, user, assistant) whose user turn comes from a template
//! with `{context}` and `{question}`. The max-length policy cuts the passages (from their end)
//! before it ever touches the question or the answer; only a question and answer that alone
//! exceed the limit lose their own tail.

use crate::{GeneratorError, Result};
use ragtune_models::chat::ChatTemplate;
use ragtune_models::llama_tokenizer::LlamaTokenizer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptConfig {
    pub system: Option<String>,
    /// The user turn; must contain `{context}` before `{question}`.
    pub template: String,
    /// How each passage is written into `{context}` (`{i}` from 1, `{text}`).
    pub passage: String,
    /// Tokens of prompt + answer (+ end of turn).
    pub max_length: usize,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            system: Some(
                "Answer the question using the passages. Reply with the answer only.".into(),
            ),
            template: "Passages:\n{context}\nQuestion: {question}".into(),
            passage: "[{i}] {text}\n".into(),
            max_length: 384,
        }
    }
}

/// Token ids of one example: the prompt, then the answer (ending with the end-of-turn token).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub prompt: Vec<i64>,
    pub answer: Vec<i64>,
}

pub struct PromptBuilder<'a> {
    config: &'a PromptConfig,
    tokenizer: &'a LlamaTokenizer,
    before: String,
    between: String,
    after: String,
}

const CONTEXT: &str = "\u{1}CONTEXT\u{1}";
const QUESTION: &str = "\u{1}QUESTION\u{1}";

impl<'a> PromptBuilder<'a> {
    pub fn new(config: &'a PromptConfig, tokenizer: &'a LlamaTokenizer) -> Result<Self> {
        let (c, q) = (
            config.template.find("{context}"),
            config.template.find("{question}"),
        );
        match (c, q) {
            (Some(c), Some(q)) if c < q => {}
            _ => {
                return Err(GeneratorError::Invalid(format!(
                    "prompt template {:?} must hold {{context}} and then {{question}}",
                    config.template
                )))
            }
        }
        let template = tokenizer
            .chat_template()
            .unwrap_or_else(|_| ChatTemplate::chatml());
        let user = config
            .template
            .replace("{context}", CONTEXT)
            .replace("{question}", QUESTION);
        let rendered = template.prompt(config.system.as_deref(), &user);
        let (before, rest) = rendered.split_once(CONTEXT).expect("placeholder rendered");
        let (between, after) = rest.split_once(QUESTION).expect("placeholder rendered");
        Ok(PromptBuilder {
            config,
            tokenizer,
            before: before.to_string(),
            between: between.to_string(),
            after: after.to_string(),
        })
    }

    fn context_text(&self, passages: &[String]) -> String {
        passages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                self.config
                    .passage
                    .replace("{i}", &(i + 1).to_string())
                    .replace("{text}", p)
            })
            .collect()
    }

    /// The prompt alone (for generation), under the same length policy with no answer.
    pub fn prompt(&self, question: &str, passages: &[String]) -> Result<Vec<i64>> {
        Ok(self.encode(question, passages, None)?.prompt)
    }

    pub fn encode(
        &self,
        question: &str,
        passages: &[String],
        answer: Option<&str>,
    ) -> Result<Encoded> {
        let enc = |t: &str| {
            self.tokenizer
                .encode(t, false)
                .map_err(GeneratorError::from)
        };
        let before = enc(&self.before)?;
        let mut context = enc(&self.context_text(passages))?;
        let mut middle = enc(&self.between)?;
        middle.extend(enc(question)?);
        middle.extend(enc(&self.after)?);
        let mut answer_ids = match answer {
            Some(a) => {
                let mut ids = enc(a)?;
                ids.extend(enc("<|im_end|>")?);
                ids
            }
            None => vec![],
        };
        let fixed = before.len() + middle.len() + answer_ids.len();
        let max = self.config.max_length;
        if fixed <= max {
            context.truncate(max - fixed);
        } else {
            context.clear();
            // Question and answer alone are too long: the answer keeps at least half the room.
            let room = max.saturating_sub(before.len());
            let answer_room = answer_ids
                .len()
                .min(room / 2)
                .max(room.saturating_sub(middle.len()));
            answer_ids.truncate(answer_room);
            let question_room = room - answer_ids.len();
            if middle.len() > question_room {
                let tail = enc(&self.after)?;
                middle.truncate(question_room.saturating_sub(tail.len()));
                middle.extend(tail);
            }
        }
        let mut prompt = before;
        prompt.extend(context);
        prompt.extend(middle);
        Ok(Encoded {
            prompt,
            answer: answer_ids,
        })
    }
}
