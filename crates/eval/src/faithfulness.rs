//! Groundedness of an answer in its retrieved contexts, and citation precision/recall. These are
//! lexical measures with no reference library; the definitions are ours:
//!
//! - Tokens: rouge-score's tokenizer ([`crate::rouge::tokenize`], lowercase `[a-z0-9]` runs) with
//!   Porter stemming, so "builds" is supported by "building". Content tokens are those not in a
//!   small English stopword list. Citation markers (`[doc_id]`) are removed before scoring.
//! - `token_support`: share of the answer's content tokens (with repetition) that occur anywhere
//!   in the contexts.
//! - `ngram_support`: share of the answer's token bigrams (stopwords kept, within one sentence)
//!   that occur in some context; falls back to `token_support` when the answer has no bigram.
//! - A sentence is supported when at least `sentence_threshold` (default 0.5) of its content
//!   tokens occur in the contexts; sentences with no content token are skipped.
//!   `unsupported_sentence_rate` = unsupported / scored sentences.
//! - An answer with no content token gets 1.0 support and 0 unsupported sentences (nothing is claimed).
//! - Citations: ids inside square brackets, comma- or semicolon-separated (`[d1]`, `[d1, d2]`).
//!   precision = cited ids that are gold / distinct cited ids (1.0 when nothing is cited and there
//!   is no gold; 0.0 when nothing is cited but gold exists); recall = gold ids cited / gold ids
//!   (1.0 when there is no gold).

use crate::rouge::tokenize;
use crate::text::split_sentences;
use regex::Regex;
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;

static CITATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[([^\[\]]+)\]").expect("citation regex"));

/// The usual English function words (NLTK's list trimmed to the tokenizer's `[a-z0-9]` forms).
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "did",
    "do",
    "does",
    "doing",
    "don",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "s",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "t",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Settings of [`groundedness`].
#[derive(Debug, Clone, Copy)]
pub struct GroundednessParams {
    pub sentence_threshold: f64,
}

impl Default for GroundednessParams {
    fn default() -> Self {
        GroundednessParams {
            sentence_threshold: 0.5,
        }
    }
}

/// How well the contexts support an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Groundedness {
    pub token_support: f64,
    pub ngram_support: f64,
    pub unsupported_sentence_rate: f64,
    pub sentences: usize,
    pub unsupported_sentences: Vec<String>,
}

/// Citation precision and recall of one answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CitationScores {
    pub precision: f64,
    pub recall: f64,
    /// Distinct cited ids, sorted.
    pub cited: Vec<String>,
    /// Cited ids that are not among the retrieved ids (hallucinated citations).
    pub cited_not_retrieved: Vec<String>,
}

fn is_stopword(token: &str) -> bool {
    STOPWORDS.contains(&token)
}

fn stemmed(text: &str) -> Vec<String> {
    tokenize(text, true)
}

/// The answer with its citation markers removed.
pub fn strip_citations(answer: &str) -> String {
    CITATION.replace_all(answer, " ").into_owned()
}

/// Lexical support of `answer` by `contexts`.
pub fn groundedness<S: AsRef<str>>(
    answer: &str,
    contexts: &[S],
    params: GroundednessParams,
) -> Groundedness {
    let answer = strip_citations(answer);
    let context_tokens: Vec<Vec<String>> = contexts.iter().map(|c| stemmed(c.as_ref())).collect();
    let vocabulary: HashSet<&str> = context_tokens
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let bigrams: HashSet<(&str, &str)> = context_tokens
        .iter()
        .flat_map(|t| t.windows(2).map(|w| (w[0].as_str(), w[1].as_str())))
        .collect();
    let mut content = 0usize;
    let mut content_supported = 0usize;
    let mut answer_bigrams = 0usize;
    let mut bigrams_supported = 0usize;
    let mut scored_sentences = 0usize;
    let mut unsupported = Vec::new();
    for sentence in split_sentences(&answer) {
        let tokens = stemmed(sentence);
        let content_tokens: Vec<&String> = tokens.iter().filter(|t| !is_stopword(t)).collect();
        let supported = content_tokens
            .iter()
            .filter(|t| vocabulary.contains(t.as_str()))
            .count();
        content += content_tokens.len();
        content_supported += supported;
        for w in tokens.windows(2) {
            answer_bigrams += 1;
            bigrams_supported += usize::from(bigrams.contains(&(w[0].as_str(), w[1].as_str())));
        }
        if !content_tokens.is_empty() {
            scored_sentences += 1;
            if (supported as f64) < params.sentence_threshold * content_tokens.len() as f64 {
                unsupported.push(sentence.to_string());
            }
        }
    }
    let token_support = if content == 0 {
        1.0
    } else {
        content_supported as f64 / content as f64
    };
    Groundedness {
        token_support,
        ngram_support: if answer_bigrams == 0 {
            token_support
        } else {
            bigrams_supported as f64 / answer_bigrams as f64
        },
        unsupported_sentence_rate: if scored_sentences == 0 {
            0.0
        } else {
            unsupported.len() as f64 / scored_sentences as f64
        },
        sentences: scored_sentences,
        unsupported_sentences: unsupported,
    }
}

/// The distinct doc ids cited in `answer`, sorted.
pub fn cited_ids(answer: &str) -> Vec<String> {
    CITATION
        .captures_iter(answer)
        .flat_map(|c| {
            c[1].split([',', ';'])
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
                .collect::<Vec<_>>()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Citation precision and recall of `answer` against the `gold` supporting doc ids; `retrieved`
/// lists what the generator was shown, to flag citations of documents it never saw.
pub fn citation_scores<S: AsRef<str>>(answer: &str, gold: &[S], retrieved: &[S]) -> CitationScores {
    let cited = cited_ids(answer);
    let gold: HashSet<&str> = gold.iter().map(AsRef::as_ref).collect();
    let retrieved: HashSet<&str> = retrieved.iter().map(AsRef::as_ref).collect();
    let correct = cited.iter().filter(|c| gold.contains(c.as_str())).count();
    let precision = match (cited.is_empty(), gold.is_empty()) {
        (true, true) => 1.0,
        (true, false) => 0.0,
        _ => correct as f64 / cited.len() as f64,
    };
    let recall = if gold.is_empty() {
        1.0
    } else {
        correct as f64 / gold.len() as f64
    };
    CitationScores {
        precision,
        recall,
        cited_not_retrieved: cited
            .iter()
            .filter(|c| !retrieved.contains(c.as_str()))
            .cloned()
            .collect(),
        cited,
    }
}
