//! How text becomes index terms for lexical retrieval, one documented chain like a Lucene analyzer:
//!
//! 1. Unicode word splitting (UAX #29 word boundaries, as Lucene's `StandardTokenizer`): runs of
//!    letters, digits and word-internal punctuation ("can't", "3.14") are words; spaces and other
//!    punctuation are not.
//! 2. Lowercasing (Unicode full lowercase), when `lowercase` is on.
//! 3. Stopword removal, when a list is set: `english` is Lucene's default English stop set
//!    (`EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`, the 33 words Anserini removes).
//! 4. Stemming, when set: `porter` is nltk's Porter stemmer (the eval crate's port, as ROUGE uses).
//!    Lucene's `PorterStemFilter` is Martin Porter's original; the two differ on a few rare suffixes.
//!
//! The same chain runs over passages and queries, so a term matches only itself.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use unicode_segmentation::UnicodeSegmentation;

/// Lucene's default English stop set (the one Anserini's default analyzer removes).
pub const ENGLISH_STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopwords {
    None,
    English,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stemmer {
    None,
    Porter,
}

/// The analyzer's settings, as a config's `[retrieval.analyzer]` table spells them. The defaults
/// are Anserini's: lowercase, English stopwords, Porter stemming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Analyzer {
    pub lowercase: bool,
    pub stopwords: Stopwords,
    pub stemmer: Stemmer,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self {
            lowercase: true,
            stopwords: Stopwords::English,
            stemmer: Stemmer::Porter,
        }
    }
}

impl Analyzer {
    /// The terms of `text`, in order, repeats kept (term frequency counts them).
    pub fn terms(&self, text: &str) -> Vec<String> {
        self.terms_memo(text, &mut HashMap::new())
    }

    /// As [`Analyzer::terms`], with the stems of words already seen looked up in `stems`: the
    /// stemmer runs once per distinct word of a batch rather than once per occurrence.
    pub fn terms_memo(&self, text: &str, stems: &mut HashMap<String, String>) -> Vec<String> {
        let mut out = Vec::new();
        for word in text.unicode_words() {
            let word = if self.lowercase {
                word.to_lowercase()
            } else {
                word.to_string()
            };
            if self.stopwords == Stopwords::English
                && ENGLISH_STOPWORDS.binary_search(&word.as_str()).is_ok()
            {
                continue;
            }
            out.push(match self.stemmer {
                Stemmer::None => word,
                Stemmer::Porter => match stems.get(&word) {
                    Some(stem) => stem.clone(),
                    None => {
                        let stem = stem_keeping_case(&word, self.lowercase);
                        stems.insert(word, stem.clone());
                        stem
                    }
                },
            });
        }
        out
    }
}

/// nltk's Porter lowercases as it stems; without lowercasing, a word that is not all lowercase is
/// kept as it is rather than silently lowercased.
fn stem_keeping_case(word: &str, lowercased: bool) -> String {
    if lowercased || word.chars().all(|c| !c.is_uppercase()) {
        ragtune_eval::porter::stem(word)
    } else {
        word.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopword_list_is_sorted_for_binary_search() {
        assert!(ENGLISH_STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ENGLISH_STOPWORDS.len(), 33);
    }

    #[test]
    fn the_chain_splits_lowercases_drops_stopwords_and_stems() {
        let analyzer = Analyzer::default();
        assert_eq!(
            analyzer.terms("The Building permits, in Helsingborg: can't wait 3.14!"),
            ["build", "permit", "helsingborg", "can't", "wait", "3.14"]
        );
        let plain = Analyzer {
            lowercase: false,
            stopwords: Stopwords::None,
            stemmer: Stemmer::None,
        };
        assert_eq!(plain.terms("The Permits."), ["The", "Permits"]);
    }
}
