//! Groundedness and citation scores on hand-built cases whose answers are obvious (no reference
//! library exists for these definitions).

use ragtune_eval::faithfulness::{citation_scores, cited_ids, groundedness, GroundednessParams};

const CONTEXT: &str = "A building permit (bygglov) is required for new construction. \
    The municipality's building committee decides on permits within ten weeks.";

#[test]
fn copied_answer_is_fully_grounded() {
    let g = groundedness(
        "A building permit is required for new construction.",
        &[CONTEXT],
        GroundednessParams::default(),
    );
    assert_eq!(g.token_support, 1.0);
    // 7 bigrams; "permit is" is broken by "(bygglov)" in the context.
    assert!(
        (g.ngram_support - 6.0 / 7.0).abs() < 1e-12,
        "{}",
        g.ngram_support
    );
    assert_eq!(g.unsupported_sentence_rate, 0.0);
    assert_eq!(g.sentences, 1);
    let verbatim = groundedness(CONTEXT, &[CONTEXT], GroundednessParams::default());
    assert_eq!(
        (
            verbatim.token_support,
            verbatim.ngram_support,
            verbatim.sentences
        ),
        (1.0, 1.0, 2)
    );
}

#[test]
fn inflected_words_count_as_supported() {
    // "decided" and "permit" stem to the context's "decides" and "permits".
    let g = groundedness(
        "The committee decided on the permit.",
        &[CONTEXT],
        GroundednessParams::default(),
    );
    assert_eq!(g.token_support, 1.0);
}

#[test]
fn invented_sentence_is_flagged() {
    let answer = "A building permit is required for new construction. Solar panels never need approval in Sweden.";
    let g = groundedness(answer, &[CONTEXT], GroundednessParams::default());
    assert_eq!(g.sentences, 2);
    assert_eq!(g.unsupported_sentence_rate, 0.5);
    assert_eq!(
        g.unsupported_sentences,
        vec!["Solar panels never need approval in Sweden.".to_string()]
    );
    // Content tokens: building permit required new construction (5, supported) + solar panels never
    // need approval sweden (6, none supported).
    assert!(
        (g.token_support - 5.0 / 11.0).abs() < 1e-12,
        "{}",
        g.token_support
    );
    assert!(g.ngram_support < g.token_support + 0.2);
}

#[test]
fn support_comes_from_any_context_and_ignores_citations() {
    let g = groundedness(
        "Permits take ten weeks [d2]. Bygglov is required [d1].",
        &["The decision takes ten weeks.", CONTEXT],
        GroundednessParams::default(),
    );
    assert_eq!(g.token_support, 1.0);
    assert_eq!(g.unsupported_sentence_rate, 0.0);
}

#[test]
fn empty_and_function_word_answers_claim_nothing() {
    for answer in ["", "?!", "It is what it is."] {
        let g = groundedness(answer, &[CONTEXT], GroundednessParams::default());
        assert_eq!(
            (g.token_support, g.unsupported_sentence_rate, g.sentences),
            (1.0, 0.0, 0),
            "{answer:?}"
        );
    }
    let g = groundedness(
        "Zürich permits",
        &[] as &[&str],
        GroundednessParams::default(),
    );
    assert_eq!(g.token_support, 0.0);
    assert_eq!(g.unsupported_sentence_rate, 1.0);
}

#[test]
fn citations_are_scored_against_gold_and_retrieved() {
    assert_eq!(
        cited_ids("See [d1] and [d2, d3]; also [d1]."),
        vec!["d1", "d2", "d3"]
    );
    let s = citation_scores("Yes [d1]. And [d9].", &["d1", "d2"], &["d1", "d2", "d3"]);
    assert_eq!((s.precision, s.recall), (0.5, 0.5));
    assert_eq!(s.cited_not_retrieved, vec!["d9"]);
    let s = citation_scores("No citations.", &["d1"], &["d1"]);
    assert_eq!((s.precision, s.recall), (0.0, 0.0));
    let s = citation_scores("No citations.", &[] as &[&str], &[]);
    assert_eq!((s.precision, s.recall), (1.0, 1.0));
    let s = citation_scores("All [d1; d2].", &["d1", "d2"], &["d1", "d2"]);
    assert_eq!((s.precision, s.recall), (1.0, 1.0));
}
