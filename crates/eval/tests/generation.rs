//! Generation metrics against the reference libraries (SQuAD script, sacrebleu, rouge-score, nltk),
//! all cases in one Python call.

mod common;

use ragtune_eval::{bleu, meteor, porter, rouge, squad};
use serde_json::{json, Value};

fn close(label: &str, ours: f64, theirs: &Value, tol: f64) {
    let theirs = theirs
        .as_f64()
        .unwrap_or_else(|| panic!("{label}: reference gave {theirs}"));
    assert!(
        (ours - theirs).abs() <= tol,
        "{label}: ours {ours}, reference {theirs}"
    );
}

fn check_rouge(label: &str, ours: &rouge::RougeScores, theirs: &Value) {
    for (name, score) in [
        ("rouge1", ours.rouge1),
        ("rouge2", ours.rouge2),
        ("rougeL", ours.rouge_l),
        ("rougeLsum", ours.rouge_lsum),
    ] {
        let t = &theirs[name];
        close(&format!("{label} {name} P"), score.precision, &t[0], 1e-6);
        close(&format!("{label} {name} R"), score.recall, &t[1], 1e-6);
        close(&format!("{label} {name} F"), score.fmeasure, &t[2], 1e-6);
    }
}

/// Words for the stemmer check: every FAQ token plus suffix-heavy and non-ASCII forms.
fn stemmer_words() -> Vec<String> {
    let mut words: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for row in common::faq() {
        for text in [&row.answer, &row.question] {
            for w in text.split(|c: char| !c.is_alphanumeric()) {
                if !w.is_empty() {
                    words.insert(w.to_lowercase());
                    words.insert(w.to_string());
                }
            }
        }
    }
    for w in [
        "caresses",
        "ponies",
        "ties",
        "cats",
        "feed",
        "agreed",
        "plastered",
        "bled",
        "motoring",
        "sing",
        "conflated",
        "troubled",
        "sized",
        "hopping",
        "tanned",
        "falling",
        "hissing",
        "fizzed",
        "failing",
        "filing",
        "happy",
        "sky",
        "relational",
        "conditional",
        "rational",
        "valenci",
        "hesitanci",
        "digitizer",
        "conformabli",
        "radicalli",
        "differentli",
        "vileli",
        "analogousli",
        "vietnamization",
        "predication",
        "operator",
        "feudalism",
        "decisiveness",
        "hopefulness",
        "callousness",
        "formaliti",
        "sensitiviti",
        "sensibiliti",
        "triplicate",
        "formative",
        "formalize",
        "electriciti",
        "electrical",
        "hopeful",
        "goodness",
        "revival",
        "allowance",
        "inference",
        "airliner",
        "gyroscopic",
        "adjustable",
        "defensible",
        "irritant",
        "replacement",
        "adjustment",
        "dependent",
        "adoption",
        "homologou",
        "communism",
        "activate",
        "angulariti",
        "homologous",
        "effective",
        "bowdlerize",
        "probate",
        "rate",
        "cease",
        "controll",
        "roll",
        "generously",
        "dying",
        "lying",
        "news",
        "innings",
        "proceed",
        "exceed",
        "succeed",
        "yyy",
        "syzygy",
        "enjoy",
        "toy",
        "says",
        "analogies",
        "ied",
        "dies",
        "spied",
        "ys",
        "y",
        "by",
        "ahead",
        "fully",
        "archaeology",
        "biology",
        "tessellated",
        "multiply",
        "résumé",
        "naïveté",
        "zürich",
        "façades",
        "straßen",
        "ΟΔΟΣ",
        "İstanbul",
        "ab",
        "ies",
        "eed",
        "ing",
    ] {
        words.insert(w.to_string());
    }
    words.into_iter().collect()
}

#[test]
fn generation_metrics_match_reference_libraries() {
    let cases = common::text_cases(280, 7);
    let words = stemmer_words();
    let input = json!({
        "cases": cases.iter().map(|c| json!({"prediction": c.prediction, "references": c.references})).collect::<Vec<_>>(),
        "words": words,
    });
    let reference = ragtune_testkit::reference("eval_generation.py", &input);

    let stems = reference["stems"].as_array().expect("stems");
    assert_eq!(stems.len(), words.len());
    assert!(
        words.len() > 2000,
        "only {} words for the stemmer check",
        words.len()
    );
    let their_cases = reference["cases"].as_array().expect("cases");
    assert_eq!(their_cases.len(), cases.len());
    let partial = |key: &str| {
        their_cases
            .iter()
            .filter(|c| c[key].as_f64().is_some_and(|v| v > 0.05 && v < 0.95))
            .count()
    };
    assert!(
        partial("meteor") > 60 && partial("f1") > 60,
        "too few cases with partial overlap: meteor {} f1 {}",
        partial("meteor"),
        partial("f1")
    );
    let mismatched: Vec<String> = words
        .iter()
        .zip(stems)
        .filter(|(w, s)| porter::stem(w) != s.as_str().unwrap())
        .map(|(w, s)| format!("{w}: ours {} nltk {s}", porter::stem(w)))
        .collect();
    assert!(
        mismatched.is_empty(),
        "{} of {} stems differ: {:?}",
        mismatched.len(),
        words.len(),
        &mismatched[..mismatched.len().min(20)]
    );

    for (i, (case, theirs)) in cases.iter().zip(their_cases).enumerate() {
        let label = format!("case {i} ({:?} vs {:?})", case.prediction, case.references);
        close(
            &format!("{label} EM"),
            squad::exact_match(&case.prediction, &case.references),
            &theirs["em"],
            0.0,
        );
        close(
            &format!("{label} F1"),
            squad::token_f1(&case.prediction, &case.references),
            &theirs["f1"],
            1e-9,
        );
        let sentence = bleu::sentence_bleu(&case.prediction, &case.references);
        close(
            &format!("{label} sentence BLEU"),
            sentence.score,
            &theirs["sentence_bleu"],
            1e-4,
        );
        let counts: Vec<usize> =
            serde_json::from_value(theirs["sentence_bleu_counts"].clone()).unwrap();
        assert_eq!(sentence.counts.to_vec(), counts, "{label} BLEU counts");
        check_rouge(
            &label,
            &rouge::rouge_multi(&case.prediction, &case.references, false),
            &theirs["rouge"],
        );
        check_rouge(
            &format!("{label} stemmed"),
            &rouge::rouge_multi(&case.prediction, &case.references, true),
            &theirs["rouge_stem"],
        );
        close(
            &format!("{label} METEOR"),
            meteor::meteor(&case.prediction, &case.references),
            &theirs["meteor"],
            1e-9,
        );
    }

    let hypotheses: Vec<&str> = cases.iter().map(|c| c.prediction.as_str()).collect();
    let references: Vec<Vec<String>> = cases.iter().map(|c| c.references.clone()).collect();
    let corpus = bleu::corpus_bleu(&hypotheses, &references).unwrap();
    close("corpus BLEU", corpus.score, &reference["corpus_bleu"], 1e-4);
    assert_eq!(
        corpus.sys_len as u64,
        reference["corpus_sys_len"].as_u64().unwrap()
    );
    assert_eq!(
        corpus.ref_len as u64,
        reference["corpus_ref_len"].as_u64().unwrap()
    );
    let totals: Vec<usize> =
        serde_json::from_value(reference["corpus_bleu_totals"].clone()).unwrap();
    assert_eq!(corpus.totals.to_vec(), totals);
}

#[test]
fn bleu_rejects_unparallel_input() {
    let err = bleu::corpus_bleu(&["a"], &[vec!["a"], vec!["b"]]).unwrap_err();
    assert!(err.to_string().contains("1 vs 2"), "{err}");
}
