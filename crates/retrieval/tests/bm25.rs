//! BM25 against bm25s (method "lucene") on the same analyzed tokens, over several thousand real
//! passages (the FAQ's passages and their sentences, FanOutQA's questions and sub-questions); the
//! saved index file (round trip, checksum, sizes); the cache; hybrid search through the config.

use ragtune_data::Doc;
use ragtune_retrieval::dense::CacheStatus;
use ragtune_retrieval::{
    passage_text, Analyzer, Bm25Config, Bm25Index, Bm25Retriever, Corpus, Fusion, HybridRetriever,
    RetrievalConfig, Retriever, TfIdfRetriever,
};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::{json, Value};
use tch::Device;

fn doc(id: String, text: String) -> Doc {
    Doc {
        doc_id: id,
        title: String::new(),
        text,
        metadata: None,
    }
}

/// The FAQ's passages, each of their sentences as a passage too, and FanOutQA's questions and
/// sub-questions: real text of varied length, several thousand passages.
fn real_corpus() -> (Vec<Doc>, Vec<String>) {
    let (faq, _) =
        ragtune_data::import::import_faq(&asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    let mut docs = faq.corpus.clone();
    for d in &faq.corpus {
        for (i, sentence) in d.text.split(". ").enumerate() {
            docs.push(doc(format!("{}#s{i}", d.doc_id), sentence.to_string()));
        }
    }
    fn walk(node: &Value, docs: &mut Vec<Doc>) {
        if let (Some(id), Some(q)) = (node["id"].as_str(), node["question"].as_str()) {
            docs.push(doc(format!("fanout-{id}"), q.to_string()));
        }
        if let Some(parts) = node["decomposition"].as_array() {
            parts.iter().for_each(|p| walk(p, docs));
        }
    }
    for split in ["dev", "test"] {
        let path = asset("fanoutqa").join(format!("fanout-final-{split}.json"));
        let questions: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        questions
            .as_array()
            .unwrap()
            .iter()
            .for_each(|q| walk(q, &mut docs));
    }
    let mut seen = std::collections::HashSet::new();
    docs.retain(|d| seen.insert(d.doc_id.clone()));
    let queries = faq.qa.iter().map(|q| q.question.clone()).collect();
    (docs, queries)
}

#[test]
fn scores_and_top_10_match_bm25s_lucene_on_the_same_tokens() {
    let (docs, queries) = real_corpus();
    assert!(docs.len() >= 3000, "only {} passages", docs.len());
    let corpus = Corpus::new(docs);
    let config = Bm25Config::default();
    let index = Bm25Index::build(&corpus, &config).unwrap();
    let analyzer = Analyzer::default();
    let corpus_terms: Vec<Vec<String>> = corpus
        .docs()
        .iter()
        .map(|d| analyzer.terms(&passage_text(d)))
        .collect();
    let query_terms: Vec<Vec<String>> = queries.iter().map(|q| analyzer.terms(q)).collect();
    let expected = reference(
        "bm25_ref.py",
        &json!({"corpus": corpus_terms, "queries": query_terms, "k1": config.k1, "b": config.b, "k": 10}),
    );
    let expected = expected["top"].as_array().unwrap();
    let (mut positions, mut tied) = (0, 0);
    for (q, terms) in query_terms.iter().enumerate() {
        let ours = index.search_terms(terms, 10);
        let theirs = expected[q].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len());
        let their = |i: usize| {
            (
                theirs[i][0].as_u64().unwrap() as usize,
                theirs[i][1].as_f64().unwrap(),
            )
        };
        for (i, hit) in ours.iter().enumerate() {
            let (doc, score) = their(i);
            assert!(
                (hit.score as f64 - score).abs() <= 1e-5,
                "query {q} `{}` rank {i}: ours {} ({}), bm25s {score} ({doc})",
                queries[q],
                hit.score,
                hit.index
            );
            // Equal scores may come in either order; every separated rank must hold the same passage.
            let separated = |j: Option<usize>| {
                j.filter(|&j| j < theirs.len())
                    .is_none_or(|j| (their(j).1 - score).abs() > 1e-4)
            };
            if separated(i.checked_sub(1)) && separated(Some(i + 1)) {
                assert_eq!(hit.index, doc, "query {q} `{}` rank {i}", queries[q]);
                positions += 1;
            } else {
                tied += 1;
            }
        }
    }
    // Ties are real here (repeated sentences, short questions); most ranks are still separated.
    assert!(
        positions * 4 >= (positions + tied) * 3,
        "{positions} ranks compared exactly, {tied} within ties"
    );
}

fn small_corpus() -> Corpus {
    let (faq, _) =
        ragtune_data::import::import_faq(&asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    Corpus::new(faq.corpus.into_iter().take(80).collect())
}

#[test]
fn a_saved_index_loads_to_the_same_results_and_damage_is_detected() {
    let dir = scratch("bm25-file");
    let corpus = small_corpus();
    let config = Bm25Config::default();
    let index = Bm25Index::build(&corpus, &config).unwrap();
    let file = dir.join("bm25.bin");
    index.save(&file).unwrap();
    let loaded = Bm25Index::load(&file).unwrap();
    let queries = [
        "building permit time",
        "what does the warranty cover",
        "kök",
    ];
    assert_eq!(index.search(&queries, 7), loaded.search(&queries, 7));
    assert_eq!(loaded.vocabulary_size(), index.vocabulary_size());
    assert_eq!(loaded.corpus_hash(), corpus.hash());

    let bytes = std::fs::read(&file).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x20;
    std::fs::write(dir.join("flipped.bin"), &flipped).unwrap();
    let err = Bm25Index::load(&dir.join("flipped.bin"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("flipped.bin") && err.contains("checksum"),
        "{err}"
    );
    std::fs::write(dir.join("short.bin"), &bytes[..bytes.len() - 100]).unwrap();
    assert!(Bm25Index::load(&dir.join("short.bin")).is_err());
    std::fs::write(
        dir.join("foreign.bin"),
        b"PAR1 not an index at all, just bytes",
    )
    .unwrap();
    let err = Bm25Index::load(&dir.join("foreign.bin"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no BM25 magic"), "{err}");

    // A header that claims 2^40 postings, with a valid checksum: refused before any allocation.
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[16..16 + header_len]).unwrap();
    let postings = format!("\"postings\":{}", index.postings());
    assert!(header.contains(&postings), "{header}");
    let lying = header.replace(&postings, &format!("\"postings\":{}", 1u64 << 40));
    let mut forged = bytes[..12].to_vec();
    forged.extend_from_slice(&(lying.len() as u32).to_le_bytes());
    forged.extend_from_slice(lying.as_bytes());
    forged.extend_from_slice(&bytes[16 + header_len..bytes.len() - 32]);
    use sha2::Digest;
    let checksum = sha2::Sha256::digest(&forged);
    forged.extend_from_slice(&checksum);
    std::fs::write(dir.join("forged.bin"), &forged).unwrap();
    let err = Bm25Index::load(&dir.join("forged.bin"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("sizes do not match"), "{err}");
}

#[test]
fn the_index_is_cached_by_corpus_and_settings() {
    let dir = scratch("bm25-cache");
    let config = Bm25Config {
        cache_dir: Some(dir.clone()),
        ..Default::default()
    };
    let first = Bm25Retriever::load(&config, small_corpus()).unwrap();
    let CacheStatus::Miss(file) = first.cache_status().clone() else {
        panic!("first load builds: {:?}", first.cache_status());
    };
    let again = Bm25Retriever::load(&config, small_corpus()).unwrap();
    assert_eq!(again.cache_status(), &CacheStatus::Hit(file.clone()));
    let queries = ["terrace", "permit fees"];
    assert_eq!(
        first.search(&queries, 5).unwrap(),
        again.search(&queries, 5).unwrap()
    );
    let other = Bm25Config {
        k1: 1.2,
        ..config.clone()
    };
    let third = Bm25Retriever::load(&other, small_corpus()).unwrap();
    assert!(
        matches!(third.cache_status(), CacheStatus::Miss(f) if *f != file),
        "another k1 is another index"
    );
}

#[test]
fn every_query_gets_k_hits_and_unmatched_ones_rank_in_corpus_order() {
    let retriever = Bm25Retriever::load(&Bm25Config::default(), small_corpus()).unwrap();
    let hits = retriever
        .search(&["the of and", "xyzzy permit"], 5)
        .unwrap();
    assert_eq!(
        hits[0].iter().map(|h| h.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert!(hits[0].iter().all(|h| h.score == 0.0));
    assert_eq!(hits[1].len(), 5);
    assert!(hits[1][0].score > 0.0);
    assert!(hits[1].windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn configs_build_bm25_and_hybrid_retrievers_and_refuse_bad_settings() {
    let config: RetrievalConfig = toml::from_str(
        r#"
        backend = "hybrid"
        depth = 50
        [fusion]
        method = "weighted"
        normalization = "z_score"
        weights = [0.7, 0.3]
        [[retrievers]]
        backend = "bm25"
        k1 = 1.2
        [retrievers.analyzer]
        stemmer = "none"
        [[retrievers]]
        backend = "tfidf"
        "#,
    )
    .unwrap();
    let hybrid = config.build(small_corpus(), Device::Cpu).unwrap();
    let description = hybrid.describe();
    assert!(
        description.contains("bm25 (k1 1.2") && description.contains("tfidf"),
        "{description}"
    );
    let hits = hybrid.search(&["building permit"], 10).unwrap();
    assert_eq!(hits[0].len(), 10);

    // With one retriever weighted 0, the fused ranking is the other's.
    let bm25 = Bm25Retriever::load(&Bm25Config::default(), small_corpus()).unwrap();
    let alone = bm25.search(&["terrace permit fees"], 10).unwrap();
    let fused = HybridRetriever::new(
        vec![
            Box::new(bm25),
            Box::new(TfIdfRetriever::new(small_corpus())),
        ],
        Fusion::Rrf {
            k: 60.0,
            weights: vec![1.0, 0.0],
        },
        100,
    )
    .unwrap();
    let fused_hits = fused.search(&["terrace permit fees"], 10).unwrap();
    let ids = |h: &[ragtune_retrieval::Hit]| h.iter().map(|x| x.index).collect::<Vec<_>>();
    assert_eq!(ids(&fused_hits[0]), ids(&alone[0]));

    for (bad, says) in [
        (
            "backend = \"bm25\"\nb = 1.5",
            "retrieval.b must lie in [0, 1]",
        ),
        (
            "backend = \"hybrid\"\n[[retrievers]]\nbackend = \"tfidf\"",
            "at least 2 retrievers",
        ),
    ] {
        let config: RetrievalConfig = toml::from_str(bad).unwrap();
        let err = config
            .build(small_corpus(), Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let unknown = toml::from_str::<RetrievalConfig>("backend = \"bm25\"\nk3 = 1.0");
    assert!(unknown.unwrap_err().to_string().contains("k3"));
}
