//! BLEU exactly as sacrebleu 2.x computes it with its defaults: the `13a` tokenizer, case-sensitive,
//! max n-gram order 4, `exp` smoothing; corpus BLEU without effective order (`corpus_bleu`),
//! sentence BLEU with effective order (`sentence_bleu`). Scores are on sacrebleu's 0-100 scale.
//!
//! Several references per hypothesis are allowed and their number may vary between segments
//! (sacrebleu's `None` references); n-gram counts are clipped by the maximum count over the
//! references and the reference length is the closest one (shorter wins a tie).

use crate::error::{check_parallel, Result};
use crate::text::split_whitespace;
use regex::Regex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::LazyLock;

const MAX_ORDER: usize = 4;

struct Tokenizer13a {
    rules: Vec<(Regex, &'static str)>,
}

static TOKENIZER_13A: LazyLock<Tokenizer13a> = LazyLock::new(|| Tokenizer13a {
    rules: vec![
        (
            Regex::new(r"([\{-~\[-` -&\(-\+:-@/])").expect("13a regex"),
            " $1 ",
        ),
        (Regex::new(r"([^0-9])([\.,])").expect("13a regex"), "$1 $2 "),
        (Regex::new(r"([\.,])([^0-9])").expect("13a regex"), " $1 $2"),
        (Regex::new(r"([0-9])(-)").expect("13a regex"), "$1 $2 "),
    ],
});

/// sacrebleu's `13a` tokenizer (mteval-v13a): unescapes a few XML entities, splits off punctuation
/// and symbols, and splits periods and commas except inside numbers. Returns space-joined tokens.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (re, replacement) in &TOKENIZER_13A.rules {
        line = re.replace_all(&line, *replacement).into_owned();
    }
    split_whitespace(&line).join(" ")
}

/// sacrebleu's per-segment preprocessing: strip trailing whitespace, then tokenize.
fn preprocess(segment: &str) -> Vec<String> {
    let trimmed = segment.trim_end_matches(crate::text::is_python_whitespace);
    split_whitespace(&tokenize_13a(trimmed))
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn ngram_counts(tokens: &[String]) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for window in tokens.windows(n) {
            *counts.entry(window).or_default() += 1;
        }
    }
    counts
}

/// BLEU with its sufficient statistics, as sacrebleu's `BLEUScore` reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScore {
    /// 0-100.
    pub score: f64,
    /// Clipped n-gram matches for n = 1..4.
    pub counts: [usize; MAX_ORDER],
    /// Hypothesis n-grams for n = 1..4.
    pub totals: [usize; MAX_ORDER],
    /// n-gram precisions on the 0-100 scale (after smoothing).
    pub precisions: [f64; MAX_ORDER],
    pub brevity_penalty: f64,
    pub sys_len: usize,
    pub ref_len: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct SegmentStats {
    sys_len: usize,
    ref_len: usize,
    correct: [usize; MAX_ORDER],
    total: [usize; MAX_ORDER],
}

fn segment_stats<S: AsRef<str>>(hypothesis: &str, references: &[S]) -> SegmentStats {
    let refs: Vec<Vec<String>> = references.iter().map(|r| preprocess(r.as_ref())).collect();
    let mut ref_max: HashMap<&[String], usize> = HashMap::new();
    for r in &refs {
        for (gram, count) in ngram_counts(r) {
            let slot = ref_max.entry(gram).or_default();
            *slot = (*slot).max(count);
        }
    }
    let hyp = preprocess(hypothesis);
    let mut stats = SegmentStats {
        sys_len: hyp.len(),
        ..Default::default()
    };
    // sacrebleu's closest reference length: smallest |hyp - ref|, the shorter reference on a tie.
    let mut closest: Option<(usize, usize)> = None;
    for r in &refs {
        let diff = r.len().abs_diff(hyp.len());
        closest = match closest {
            None => Some((diff, r.len())),
            Some((d, l)) if diff < d || (diff == d && r.len() < l) => Some((diff, r.len())),
            keep => keep,
        };
    }
    stats.ref_len = closest.map_or(0, |(_, l)| l);
    for (gram, count) in ngram_counts(&hyp) {
        let n = gram.len() - 1;
        stats.total[n] += count;
        if let Some(&max_ref) = ref_max.get(gram) {
            stats.correct[n] += count.min(max_ref);
        }
    }
    stats
}

fn compute(stats: &SegmentStats, effective_order: bool) -> BleuScore {
    let mut precisions = [0.0; MAX_ORDER];
    let bp = if stats.sys_len < stats.ref_len {
        if stats.sys_len > 0 {
            (1.0 - stats.ref_len as f64 / stats.sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut score = BleuScore {
        score: 0.0,
        counts: stats.correct,
        totals: stats.total,
        precisions,
        brevity_penalty: bp,
        sys_len: stats.sys_len,
        ref_len: stats.ref_len,
    };
    if stats.correct.iter().all(|&c| c == 0) {
        return score;
    }
    let mut smooth_mteval = 1.0;
    let mut eff_order = MAX_ORDER;
    for (n, (&correct, &total)) in stats.correct.iter().zip(&stats.total).enumerate() {
        if total == 0 {
            break;
        }
        if effective_order {
            eff_order = n + 1;
        }
        if correct == 0 {
            smooth_mteval *= 2.0;
            precisions[n] = 100.0 / (smooth_mteval * total as f64);
        } else {
            precisions[n] = 100.0 * correct as f64 / total as f64;
        }
    }
    // sacrebleu's `my_log` floors log(0) at -9999999999.
    let log_sum: f64 = precisions[..eff_order]
        .iter()
        .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
        .sum();
    score.score = bp * (log_sum / eff_order as f64).exp();
    score.precisions = precisions;
    score
}

/// Corpus BLEU (`sacrebleu.corpus_bleu` defaults): statistics summed over segments, no effective order.
/// `references[i]` holds the references of `hypotheses[i]`.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[H],
    references: &[Vec<R>],
) -> Result<BleuScore> {
    check_parallel(
        "BLEU hypotheses and references",
        hypotheses.len(),
        references.len(),
    )?;
    let mut sum = SegmentStats::default();
    for (h, refs) in hypotheses.iter().zip(references) {
        let s = segment_stats(h.as_ref(), refs);
        sum.sys_len += s.sys_len;
        sum.ref_len += s.ref_len;
        for n in 0..MAX_ORDER {
            sum.correct[n] += s.correct[n];
            sum.total[n] += s.total[n];
        }
    }
    Ok(compute(&sum, false))
}

/// Sentence BLEU (`sacrebleu.sentence_bleu` defaults): exp smoothing with effective order.
pub fn sentence_bleu<R: AsRef<str>>(hypothesis: &str, references: &[R]) -> BleuScore {
    compute(&segment_stats(hypothesis, references), true)
}
