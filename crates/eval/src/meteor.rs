//! METEOR as nltk 3.10's `meteor_score` computes it, with its defaults (alpha 0.9, beta 3,
//! gamma 0.5, `str.lower` preprocessing, nltk's Porter stemmer), max over references.
//!
//! Alignment runs nltk's stages in order: exact match, then Porter-stem match. nltk's third stage,
//! WordNet synonyms, is not implemented: the WordNet corpus cannot be downloaded on our machines.
//! Against nltk with an empty synonym set the scores agree exactly (tested); with real WordNet, nltk
//! can only score the same or higher, and only where a hypothesis word is a WordNet synonym of a
//! still-unmatched reference word.
//!
//! nltk takes pre-tokenized input; [`meteor`] splits on whitespace (Python's `str.split()`), so
//! punctuation stays attached to words. Use [`meteor_tokens`] to bring your own tokens.

use crate::porter;
use crate::text::split_whitespace;
use std::collections::HashMap;

/// METEOR's parameters, nltk's defaults in [`Default`].
#[derive(Debug, Clone, Copy)]
pub struct MeteorParams {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
}

impl Default for MeteorParams {
    fn default() -> Self {
        MeteorParams {
            alpha: 0.9,
            beta: 3.0,
            gamma: 0.5,
        }
    }
}

type Enumerated = Vec<(usize, String)>;

/// nltk's `_match_enums`: from the last hypothesis word backwards, each word takes the last
/// still-free reference position holding the same string.
fn match_enums(
    hypothesis: Enumerated,
    reference: Enumerated,
) -> (Vec<(usize, usize)>, Enumerated, Enumerated) {
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, word)) in reference.iter().enumerate() {
        positions.entry(word.as_str()).or_default().push(j);
    }
    let mut matched_hyp = vec![false; hypothesis.len()];
    let mut matched_ref = vec![false; reference.len()];
    let mut matches = Vec::new();
    for i in (0..hypothesis.len()).rev() {
        if let Some(j) = positions
            .get_mut(hypothesis[i].1.as_str())
            .and_then(Vec::pop)
        {
            matched_hyp[i] = true;
            matched_ref[j] = true;
            matches.push((hypothesis[i].0, reference[j].0));
        }
    }
    let rest_hyp = hypothesis
        .iter()
        .zip(&matched_hyp)
        .filter(|(_, &m)| !m)
        .map(|(p, _)| p.clone())
        .collect();
    let rest_ref = reference
        .iter()
        .zip(&matched_ref)
        .filter(|(_, &m)| !m)
        .map(|(p, _)| p.clone())
        .collect();
    (matches, rest_hyp, rest_ref)
}

fn count_chunks(matches: &[(usize, usize)]) -> usize {
    let mut chunks = 1;
    for pair in matches.windows(2) {
        if !(pair[1].0 == pair[0].0 + 1 && pair[1].1 == pair[0].1 + 1) {
            chunks += 1;
        }
    }
    chunks
}

fn single(reference: &[String], hypothesis: &[String], params: MeteorParams) -> f64 {
    let hyp: Enumerated = hypothesis
        .iter()
        .map(|w| w.to_lowercase())
        .enumerate()
        .collect();
    let refs: Enumerated = reference
        .iter()
        .map(|w| w.to_lowercase())
        .enumerate()
        .collect();
    let (hyp_len, ref_len) = (hyp.len(), refs.len());
    let (mut matches, hyp_rest, ref_rest) = match_enums(hyp, refs);
    let stem = |list: Enumerated| -> Enumerated {
        list.into_iter()
            .map(|(i, w)| (i, porter::stem(&w)))
            .collect()
    };
    let (stem_matches, _, _) = match_enums(stem(hyp_rest), stem(ref_rest));
    matches.extend(stem_matches);
    matches.sort_by_key(|&(h, _)| h);
    let matched = matches.len() as f64;
    if matches.is_empty() || hyp_len == 0 || ref_len == 0 {
        return 0.0;
    }
    let precision = matched / hyp_len as f64;
    let recall = matched / ref_len as f64;
    let fmean = precision * recall / (params.alpha * precision + (1.0 - params.alpha) * recall);
    let fragmentation = count_chunks(&matches) as f64 / matched;
    let penalty = params.gamma * fragmentation.powf(params.beta);
    (1.0 - penalty) * fmean
}

/// METEOR of pre-tokenized `hypothesis` against pre-tokenized references (max over references;
/// 0 when there are none).
pub fn meteor_tokens(
    references: &[Vec<String>],
    hypothesis: &[String],
    params: MeteorParams,
) -> f64 {
    references
        .iter()
        .map(|r| single(r, hypothesis, params))
        .fold(0.0, f64::max)
}

/// METEOR on whitespace-tokenized text with nltk's default parameters.
pub fn meteor<S: AsRef<str>>(hypothesis: &str, references: &[S]) -> f64 {
    let tokens = |s: &str| -> Vec<String> {
        split_whitespace(s)
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    let refs: Vec<Vec<String>> = references.iter().map(|r| tokens(r.as_ref())).collect();
    meteor_tokens(&refs, &tokens(hypothesis), MeteorParams::default())
}
