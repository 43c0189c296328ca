//! The retrieval interface on real data: dense retrieval with bert-tiny over a slice of the FAQ
//! (corpus embeddings cached, reused while model and corpus are unchanged, rebuilt when either
//! changes) and the TF-IDF baseline.

use ragtune_data::Doc;
use ragtune_retrieval::dense::CacheStatus;
use ragtune_retrieval::{
    Corpus, DenseConfig, DenseRetriever, RetrievalConfig, Retriever, SearchKind, TfIdfRetriever,
};
use ragtune_testkit::{asset, scratch};
use tch::Device;

fn faq_docs(n: usize) -> Vec<Doc> {
    let (ds, _) =
        ragtune_data::import::import_faq(&asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    ds.corpus.into_iter().take(n).collect()
}

fn dense(cache: &std::path::Path) -> DenseConfig {
    DenseConfig {
        model: asset("bert-tiny"),
        max_length: Some(64),
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn dense_corpus_embeddings_are_cached_by_model_and_corpus() {
    let dir = scratch("retrieval-cache");
    let docs = faq_docs(60);
    let config = dense(&dir.join("cache"));
    let first = DenseRetriever::load(&config, Corpus::new(docs.clone()), Device::Cpu).unwrap();
    assert!(matches!(first.cache_status(), CacheStatus::Miss(_)));
    let again = DenseRetriever::load(&config, Corpus::new(docs.clone()), Device::Cpu).unwrap();
    let CacheStatus::Hit(file) = again.cache_status() else {
        panic!("second load should hit: {:?}", again.cache_status());
    };
    assert!(file.is_file());

    // Every passage's own text finds itself first, and cached and fresh searches agree exactly.
    let queries: Vec<&str> = docs.iter().take(20).map(|d| d.text.as_str()).collect();
    let a = first.search(&queries, 5).unwrap();
    let b = again.search(&queries, 5).unwrap();
    assert_eq!(a, b);
    for (i, hits) in a.iter().enumerate() {
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].index, i, "passage {i} should retrieve itself first");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }

    // A changed passage is a different corpus: encoded again, into another file.
    let mut changed = docs.clone();
    changed[3].text.push_str(" Updated.");
    let third = DenseRetriever::load(&config, Corpus::new(changed), Device::Cpu).unwrap();
    let CacheStatus::Miss(other) = third.cache_status() else {
        panic!("a changed corpus must not hit the cache");
    };
    assert_ne!(other, file);

    // HNSW over the same cached embeddings finds the same nearest passage here.
    let hnsw = DenseConfig {
        search: SearchKind::Hnsw,
        ..config.clone()
    };
    let graph = RetrievalConfig::Dense(hnsw)
        .build(Corpus::new(docs.clone()), Device::Cpu)
        .unwrap();
    let approx = graph.search(&queries, 1).unwrap();
    let found = approx
        .iter()
        .enumerate()
        .filter(|(i, h)| h[0].index == *i)
        .count();
    assert!(found >= 19, "HNSW found {found} of 20 self-matches");
    assert!(graph.describe().contains("hnsw"));
}

#[test]
fn a_folder_that_is_no_model_is_refused_with_what_to_do() {
    let dir = scratch("retrieval-bad-model");
    let config = DenseConfig {
        model: dir.clone(),
        ..Default::default()
    };
    let err = DenseRetriever::load(&config, Corpus::new(faq_docs(3)), Device::Cpu)
        .err()
        .expect("an empty folder is no model");
    let message = err.to_string();
    assert!(
        message.contains("not a sentence-transformers folder"),
        "{message}"
    );
    assert!(RetrievalConfig::Tfidf
        .build(Corpus::new(Vec::new()), Device::Cpu)
        .is_err());
}

#[test]
fn tfidf_ranks_by_shared_rare_terms_and_breaks_ties_by_corpus_order() {
    let doc = |id: &str, text: &str| Doc {
        doc_id: id.into(),
        title: String::new(),
        text: text.into(),
        metadata: None,
    };
    let corpus = Corpus::new(vec![
        doc("a", "building permit for a terrace"),
        doc("b", "opening hours of the office"),
        doc("c", "opening hours of the office"),
        doc("d", "terrace permit fees"),
    ]);
    assert_eq!(corpus.position("c"), Some(2));
    let tfidf = TfIdfRetriever::new(corpus);
    let hits = tfidf
        .search(&["terrace permit", "office hours"], 2)
        .unwrap();
    let ids = |h: &[ragtune_retrieval::Hit]| -> Vec<String> {
        h.iter()
            .map(|x| tfidf.corpus().doc(x.index).doc_id.clone())
            .collect()
    };
    assert_eq!(ids(&hits[0]), ["d", "a"]);
    assert_eq!(ids(&hits[1]), ["b", "c"]);
    assert_eq!(hits[1][0].score, hits[1][1].score);
}
