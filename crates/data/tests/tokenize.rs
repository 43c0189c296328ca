//! Token caches match Hugging Face tokenizers (truncation explicit, no padding) and are reused.

use ragtune_data::dataset::Dataset;
use ragtune_data::import::import_faq;
use ragtune_data::tokenize::{build_token_cache, CacheSource, CacheTokenizer, TokenCache};
use ragtune_testkit::{asset, reference, scratch};
use serde_json::json;

fn tricky_texts() -> Vec<String> {
    let long: String = (0..400).map(|i| format!("word{i}, ")).collect();
    vec![
        long,
        "Ünïcödé àccents and naïve café-au-lait, repeated. ".repeat(40),
        "日本語のテキスト と English mixed 中文字符 ".repeat(30),
        format!(
            "{}{}",
            "\u{7}\u{8} ".repeat(300),
            "tail words after control characters"
        ),
        "short".into(),
        "x".repeat(300),
        "a ".repeat(126),
        "a ".repeat(127),
    ]
}

#[test]
fn cache_matches_hf_tokenizers_and_is_reused() {
    let tokenizer_path = asset("all-MiniLM-L6-v2").join("tokenizer.json");
    let (mut ds, _) = import_faq(&asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    for (i, text) in tricky_texts().into_iter().enumerate() {
        ds.corpus.push(ragtune_data::Doc {
            doc_id: format!("tricky{i}"),
            title: String::new(),
            text,
            metadata: None,
        });
    }
    let dir = scratch("data-tok");
    Dataset {
        corpus: ds.corpus.clone(),
        queries: ds.queries.clone(),
        ..Default::default()
    }
    .write(&dir)
    .unwrap();

    for max_length in [32usize, 128] {
        let tok = CacheTokenizer::load(&tokenizer_path, max_length).unwrap();
        let report = build_token_cache(&dir, CacheSource::Corpus, &tok).unwrap();
        assert!(!report.reused);
        assert_eq!(report.rows, ds.corpus.len());
        let cache = TokenCache::read(&report.path).unwrap();
        let expected = reference(
            "data_tokenize.py",
            &json!({
                "tokenizer": tokenizer_path.display().to_string(),
                "max_length": max_length,
                "texts": ds.corpus.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            }),
        );
        let expected: Vec<Vec<i32>> =
            serde_json::from_value(expected["input_ids"].clone()).unwrap();
        assert_eq!(
            cache.ids,
            ds.corpus
                .iter()
                .map(|d| d.doc_id.clone())
                .collect::<Vec<_>>()
        );
        for (i, (got, want)) in cache.input_ids.iter().zip(&expected).enumerate() {
            assert_eq!(
                got, want,
                "row {i} ({}) at max_length {max_length}",
                cache.ids[i]
            );
        }
        assert!(
            cache.input_ids.iter().any(|ids| ids.len() < max_length),
            "no padding"
        );
        let again = build_token_cache(&dir, CacheSource::Corpus, &tok).unwrap();
        assert!(again.reused, "same tokenizer, length and source: reuse");
        assert_eq!(again.length_percentiles, report.length_percentiles);
    }
    let tok = CacheTokenizer::load(&tokenizer_path, 64).unwrap();
    let queries = build_token_cache(&dir, CacheSource::Queries, &tok).unwrap();
    assert_eq!(queries.rows, ds.queries.len());
    assert!(queries
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("queries.text.tok-"));

    // A changed source invalidates the cache.
    Dataset {
        corpus: ds.corpus[..10].to_vec(),
        ..Default::default()
    }
    .write(&dir)
    .unwrap();
    let rebuilt = build_token_cache(
        &dir,
        CacheSource::Corpus,
        &CacheTokenizer::load(&tokenizer_path, 32).unwrap(),
    )
    .unwrap();
    assert!(!rebuilt.reused);
    assert_eq!(rebuilt.rows, 10);
}

#[test]
fn a_bad_tokenizer_file_is_an_error() {
    let dir = scratch("data-badtok");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, "{not json").unwrap();
    let err = CacheTokenizer::load(&path, 128).err().unwrap();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    assert!(CacheTokenizer::load(&dir.join("missing.json"), 128).is_err());
}
