//! Chat formatting. Only ChatML (`<|im_start|>role\ncontent<|im_end|>\n`) is implemented, as a
//! dedicated formatter rather than a Jinja engine: a model's Jinja template is recognised as
//! ChatML (with its default system prompt, if it injects one) or refused.

use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// Inserted as the first message when a conversation does not start with a system message
    /// (SmolLM2's template does this).
    pub default_system: Option<String>,
}

impl ChatTemplate {
    /// Plain ChatML without a default system prompt.
    pub fn chatml() -> Self {
        ChatTemplate {
            default_system: None,
        }
    }

    /// Recognises a ChatML Jinja template (as found in `tokenizer.chat_template` or
    /// `tokenizer_config.json`), and refuses anything else rather than format prompts wrongly.
    pub fn from_jinja(source: &str) -> Result<Self> {
        let per_message = [
            "'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'",
            "'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'",
            "'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'",
            "'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'",
        ];
        let generation_prompt = ["'<|im_start|>assistant\n'", "'<|im_start|>assistant\\n'"];
        let is_chatml = per_message.iter().any(|p| source.contains(p))
            && generation_prompt.iter().any(|p| source.contains(p))
            && !source.contains("tools")
            && !source.contains("raise_exception");
        if !is_chatml {
            let head: String = source.chars().take(120).collect();
            return Err(ModelError::Unsupported(format!(
                "chat template is not plain ChatML, and ragtune formats only ChatML \
                 (template starts {head:?}); pass --no-chat-template and format the prompt yourself"
            )));
        }
        let default_system = if source.contains("messages[0]['role'] != 'system'") {
            let marker = format!("{IM_START}system");
            let start = source.find(&marker).map(|i| i + marker.len());
            let text = start.and_then(|s| {
                let rest = &source[s..];
                let rest = rest
                    .strip_prefix('\n')
                    .or_else(|| rest.strip_prefix("\\n"))?;
                rest.find(IM_END).map(|e| rest[..e].replace("\\n", "\n"))
            });
            Some(text.ok_or_else(|| {
                ModelError::Unsupported(
                    "chat template injects a default system message in a form ragtune cannot read"
                        .into(),
                )
            })?)
        } else {
            None
        };
        Ok(ChatTemplate { default_system })
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, ends with the opening of an
    /// assistant turn so the model answers next.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        let mut turn = |role: &str, content: &str| {
            out.push_str(IM_START);
            out.push_str(role);
            out.push('\n');
            out.push_str(content);
            out.push_str(IM_END);
            out.push('\n');
        };
        if let Some(system) = &self.default_system {
            if messages.first().is_some_and(|m| m.role != "system") {
                turn("system", system);
            }
        }
        for m in messages {
            turn(&m.role, &m.content);
        }
        if add_generation_prompt {
            out.push_str(IM_START);
            out.push_str("assistant\n");
        }
        out
    }

    /// A single-turn prompt: optional system message, the user's text, then the assistant's turn.
    pub fn prompt(&self, system: Option<&str>, user: &str) -> String {
        let mut messages = Vec::with_capacity(2);
        if let Some(s) = system {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", user));
        self.render(&messages, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_chatml_templates() {
        let llama3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}{% endfor %}";
        let err = ChatTemplate::from_jinja(llama3).unwrap_err().to_string();
        assert!(err.contains("not plain ChatML"), "{err}");
    }

    #[test]
    fn renders_chatml_with_and_without_system() {
        let t = ChatTemplate::chatml();
        assert_eq!(
            t.prompt(Some("S"), "U"),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
