//! `ragtune retrieve` with a BM25 config on a slice of the bundled FAQ: a run of k lines per query,
//! the index saved in `cache_dir` and loaded by the next run (same run file), timings recorded, and
//! a bad config refused with the field named.

mod common;

use common::{faq_slice, ragtune, run_ok};
use ragtune_testkit::scratch;
use std::collections::BTreeMap;

fn config(dir: &std::path::Path, name: &str, retrieval: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, retrieval).unwrap();
    path.display().to_string()
}

#[test]
fn bm25_run_has_k_lines_per_query_and_the_second_run_loads_the_index() {
    let dir = scratch("cli-retrieve");
    let faq = faq_slice(&dir, 40);
    let data = dir.join("faq");
    run_ok(
        ragtune(&["data", "import", "--format", "faq"])
            .arg(&faq)
            .arg("--out")
            .arg(&data),
    );
    let cache = dir.join("cache");
    let cfg = config(
        &dir,
        "bm25.toml",
        &format!(
            "# a recipe's other tables are ignored\n[trainer]\nepochs = 1\n\n[retrieval]\nbackend = \"bm25\"\ncache_dir = \"{}\"\n",
            cache.display()
        ),
    );
    let data_arg = data.display().to_string();
    let retrieve = |out: &str, timings: &str| {
        run_ok(&mut ragtune(&[
            "retrieve",
            "--config",
            &cfg,
            "--data",
            &data_arg,
            "--k",
            "5",
            "--out",
            out,
            "--timings",
            timings,
            "--warmup",
            "3",
        ]))
    };
    let (first, second) = (dir.join("first.trec"), dir.join("second.trec"));
    let (t1, t2) = (dir.join("first.json"), dir.join("second.json"));
    retrieve(first.to_str().unwrap(), t1.to_str().unwrap());

    let run = std::fs::read_to_string(&first).unwrap();
    let mut per_query: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for line in run.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 6, "{line}");
        assert_eq!((f[1], f[5]), ("Q0", "ragtune"), "{line}");
        f[4].parse::<f64>().unwrap();
        per_query
            .entry(f[0])
            .or_default()
            .push(f[3].parse().unwrap());
    }
    let queries = ragtune_data::read_table::<ragtune_data::Query>(&data.join("queries.parquet"))
        .unwrap()
        .len();
    assert!(queries > 0);
    assert_eq!(per_query.len(), queries);
    assert!(per_query.values().all(|ranks| ranks == &[1, 2, 3, 4, 5]));

    let index: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(index.len(), 1, "{index:?}");
    assert!(index[0].starts_with("bm25-") && index[0].ends_with(".bin"));
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&t1).unwrap()).unwrap();
    assert_eq!(timings["index_phase"], "build+save");
    assert_eq!(timings["queries"], queries);
    for phase in ["corpus_load", "index", "search", "write_run"] {
        assert!(
            timings["seconds"][phase].as_f64().unwrap() >= 0.0,
            "{phase}"
        );
    }
    assert!(timings["queries_per_s"].as_f64().unwrap() > 0.0);

    let modified = std::fs::metadata(cache.join(&index[0]))
        .unwrap()
        .modified()
        .unwrap();
    retrieve(second.to_str().unwrap(), t2.to_str().unwrap());
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&t2).unwrap()).unwrap();
    assert_eq!(timings["index_phase"], "load");
    assert_eq!(
        std::fs::metadata(cache.join(&index[0]))
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "the index was rewritten rather than loaded"
    );
    assert_eq!(std::fs::read_to_string(&second).unwrap(), run);
}

#[test]
fn a_bad_retrieval_config_names_the_field() {
    let dir = scratch("cli-retrieve-bad");
    let faq = faq_slice(&dir, 10);
    let data = dir.join("faq");
    run_ok(
        ragtune(&["data", "import", "--format", "faq"])
            .arg(&faq)
            .arg("--out")
            .arg(&data),
    );
    let data_arg = data.display().to_string();
    let out = dir.join("run.trec").display().to_string();
    for (name, retrieval, field) in [
        (
            "unknown.toml",
            "[retrieval]\nbackend = \"bm25\"\nk3 = 1.0\n",
            "`k3`",
        ),
        (
            "typed.toml",
            "[retrieval]\nbackend = \"bm25\"\nk1 = \"high\"\n",
            "retrieval.k1",
        ),
        (
            "nested.toml",
            "[retrieval]\nbackend = \"bm25\"\n[retrieval.analyzer]\nstemmer = \"snowball\"\n",
            "retrieval.analyzer.stemmer",
        ),
        (
            "range.toml",
            "[retrieval]\nbackend = \"bm25\"\nb = 2.0\n",
            "retrieval.b",
        ),
    ] {
        let cfg = config(&dir, name, retrieval);
        let output = ragtune(&[
            "retrieve", "--config", &cfg, "--data", &data_arg, "--out", &out,
        ])
        .output()
        .unwrap();
        assert!(!output.status.success(), "{name} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(field), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    assert!(!dir.join("run.trec").exists());
}
