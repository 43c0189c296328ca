//! Exact match and token F1 as the official SQuAD v2.0 evaluation script computes them
//! (`normalize_answer`, `compute_exact`, `compute_f1`, max over the gold answers).
//!
//! Normalization: lowercase, drop ASCII punctuation (Python's `string.punctuation`), drop the
//! articles a/an/the as whole words, collapse whitespace. When either side normalizes to no tokens,
//! F1 is 1 if both are empty and 0 otherwise (the v2.0 rule; v1.1 gave 0 for two empty answers).
//! As in the script, a prediction scored against no gold answer at all is scored against "".

use crate::text::{lower, split_whitespace};
use regex::Regex;
use std::collections::HashMap;
use std::sync::LazyLock;

static ARTICLES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(a|an|the)\b").expect("articles regex"));

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// SQuAD's `normalize_answer`.
pub fn normalize_answer(text: &str) -> String {
    let lowered = lower(text);
    let no_punct: String = lowered
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    let no_articles = ARTICLES.replace_all(&no_punct, " ");
    split_whitespace(&no_articles).join(" ")
}

fn tokens(text: &str) -> Vec<String> {
    split_whitespace(&normalize_answer(text))
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn exact_single(prediction: &str, gold: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(gold),
    ))
}

fn f1_single(prediction: &str, gold: &str) -> f64 {
    let pred = tokens(prediction);
    let gold = tokens(gold);
    if pred.is_empty() || gold.is_empty() {
        return f64::from(u8::from(pred == gold));
    }
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for t in &gold {
        *gold_counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &pred {
        if let Some(c) = gold_counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// The script's gold list: answers that normalize to nothing are dropped, and an empty list becomes [""].
fn gold_list<S: AsRef<str>>(golds: &[S]) -> Vec<&str> {
    let kept: Vec<&str> = golds
        .iter()
        .map(AsRef::as_ref)
        .filter(|g| !normalize_answer(g).is_empty())
        .collect();
    if kept.is_empty() {
        vec![""]
    } else {
        kept
    }
}

/// 1.0 when the normalized prediction equals some normalized gold answer, else 0.0.
pub fn exact_match<S: AsRef<str>>(prediction: &str, golds: &[S]) -> f64 {
    gold_list(golds)
        .into_iter()
        .map(|g| exact_single(prediction, g))
        .fold(0.0, f64::max)
}

/// Bag-of-tokens F1 between the normalized prediction and the best gold answer.
pub fn token_f1<S: AsRef<str>>(prediction: &str, golds: &[S]) -> f64 {
    gold_list(golds)
        .into_iter()
        .map(|g| f1_single(prediction, g))
        .fold(0.0, f64::max)
}
