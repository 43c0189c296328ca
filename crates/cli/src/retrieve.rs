//! `ragtune retrieve`: search a dataset's queries with any retriever a `[retrieval]` table
//! describes, write a TREC run, and record how long each phase took.
//!
//! The retriever comes from `RetrievalConfig::build`, exactly as the recipes build theirs, so a run
//! made here is the run a recipe would see. Phases are timed apart (corpus load, index build or
//! load, search, write) because a cached BM25 index or dense embedding changes the cost of the
//! second phase by orders of magnitude and benchmarks need to tell them apart.

use anyhow::{bail, Context, Result};
use ragtune_data::dataset::{CORPUS_FILE, QUERIES_FILE};
use ragtune_data::{read_table, Doc, Query};
use ragtune_retrieval::{
    Bm25Config, Bm25Index, Corpus, DenseConfig, HybridConfig, RetrievalConfig,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

#[derive(clap::Args)]
pub struct Args {
    /// A TOML file with a `[retrieval]` table (other tables are ignored, so a recipe's config works).
    #[arg(long)]
    config: PathBuf,
    /// A dataset folder with corpus.parquet (and queries.parquet unless --queries is given).
    #[arg(long)]
    data: PathBuf,
    /// A queries Parquet table to search instead of the dataset's own.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Passages per query in the run.
    #[arg(long, default_value_t = 100)]
    k: usize,
    /// The TREC run to write (`qid Q0 docid rank score tag`).
    #[arg(long)]
    out: PathBuf,
    /// Phase timings as JSON.
    #[arg(long)]
    timings: Option<PathBuf>,
    /// Search the first N queries once, untimed, before the timed search: page-ins, allocator and
    /// thread-pool start-up then fall outside queries/s, as a benchmark's warm-up batch.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// The run tag (sixth column).
    #[arg(long, default_value = "ragtune")]
    tag: String,
}

/// Only `[retrieval]` is read; a recipe's other tables pass through unread.
#[derive(Deserialize)]
struct ConfigFile {
    retrieval: RetrievalConfig,
}

fn read_config(path: &Path) -> Result<RetrievalConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match toml::from_str::<ConfigFile>(&text) {
        Ok(file) => Ok(file.retrieval),
        Err(e) => {
            let error = anyhow::Error::new(e);
            Err(match field_error(&text) {
                Some(field) => error.context(format!("{}: {field}", path.display())),
                None => error.context(format!("{}: bad [retrieval] table", path.display())),
            })
        }
    }
}

/// The bad field of a `[retrieval]` table, by its path. serde reads a tagged enum's fields through
/// a buffer, so a wrong type inside `backend = "bm25"` is reported without the key it sits under;
/// reading the backend's own struct directly names it (`in retrieval.k1`).
fn field_error(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let mut retrieval = table.get("retrieval")?.as_table()?.clone();
    let backend = retrieval.remove("backend")?;
    let rest = toml::Value::Table(retrieval);
    let error = match backend.as_str()? {
        "bm25" => Bm25Config::deserialize(rest).err(),
        "dense" => DenseConfig::deserialize(rest).err(),
        "hybrid" => HybridConfig::deserialize(rest).err(),
        _ => None,
    }?;
    let message = error.to_string();
    Some(match message.split_once("\nin `") {
        Some((what, at)) => format!("retrieval.{}: {what}", at.trim_end().trim_end_matches('`')),
        None => format!("[retrieval]: {}", message.trim_end()),
    })
}

/// How the index phase went, for the timings file: a BM25 index with a cache folder is either
/// loaded or built and saved; everything else is built (dense models keep their own caches).
fn index_phase(config: &RetrievalConfig, corpus: &Corpus) -> (&'static str, Option<PathBuf>) {
    match config {
        RetrievalConfig::Bm25(bm25) => match &bm25.cache_dir {
            Some(dir) => {
                let file = dir.join(Bm25Index::cache_name(corpus, bm25));
                if file.is_file() {
                    ("load", Some(file))
                } else {
                    ("build+save", Some(file))
                }
            }
            None => ("build", None),
        },
        _ => ("build", None),
    }
}

pub fn run(args: Args, device: Device) -> Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    if args.tag.is_empty() || args.tag.contains(char::is_whitespace) {
        bail!("--tag must be one word, got {:?}", args.tag);
    }
    let config = read_config(&args.config)?;

    let started = Instant::now();
    let corpus_path = args.data.join(CORPUS_FILE);
    let docs: Vec<Doc> = read_table(&corpus_path)
        .with_context(|| format!("reading the corpus {}", corpus_path.display()))?;
    let queries_path = args
        .queries
        .clone()
        .unwrap_or_else(|| args.data.join(QUERIES_FILE));
    let queries: Vec<Query> = read_table(&queries_path)
        .with_context(|| format!("reading the queries {}", queries_path.display()))?;
    if queries.is_empty() {
        bail!("{}: no queries to search", queries_path.display());
    }
    // TREC runs are whitespace-separated: an id with a space would shift every later column.
    let spaced = |id: &str| id.is_empty() || id.contains(char::is_whitespace);
    if let Some(d) = docs.iter().find(|d| spaced(&d.doc_id)) {
        bail!(
            "{}: doc_id {:?} is empty or holds whitespace, which a TREC run cannot carry",
            corpus_path.display(),
            d.doc_id
        );
    }
    if let Some(q) = queries.iter().find(|q| spaced(&q.query_id)) {
        bail!(
            "{}: query_id {:?} is empty or holds whitespace, which a TREC run cannot carry",
            queries_path.display(),
            q.query_id
        );
    }
    let corpus = Corpus::new(docs);
    let load_s = started.elapsed().as_secs_f64();

    let (phase, index_file) = index_phase(&config, &corpus);
    let started = Instant::now();
    let retriever = config
        .build(corpus, device)
        .with_context(|| format!("building the retriever of {}", args.config.display()))?;
    let index_s = started.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} passages, index {phase} in {index_s:.2}s{}",
        retriever.describe(),
        retriever.corpus().len(),
        index_file
            .as_ref()
            .map(|f| format!(" ({})", f.display()))
            .unwrap_or_default()
    );

    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let warmup = args.warmup.min(texts.len());
    let started = Instant::now();
    if warmup > 0 {
        retriever
            .search(&texts[..warmup], args.k)
            .context("searching the warm-up queries")?;
    }
    let warmup_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let hits = retriever.search(&texts, args.k).context("searching")?;
    let search_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let corpus = retriever.corpus();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    ragtune_data::atomic::write_atomic_with(&args.out, |w| {
        for (query, hits) in queries.iter().zip(&hits) {
            for (rank, hit) in hits.iter().enumerate() {
                writeln!(
                    w,
                    "{} Q0 {} {} {} {}",
                    query.query_id,
                    corpus.doc(hit.index).doc_id,
                    rank + 1,
                    hit.score,
                    args.tag
                )?;
            }
        }
        Ok(())
    })
    .with_context(|| format!("writing the run {}", args.out.display()))?;
    let write_s = started.elapsed().as_secs_f64();
    let qps = texts.len() as f64 / search_s.max(f64::MIN_POSITIVE);
    eprintln!(
        "searched {} queries (k {}) in {search_s:.2}s ({qps:.0} queries/s); wrote {}",
        texts.len(),
        args.k,
        args.out.display()
    );

    if let Some(path) = &args.timings {
        let timings = serde_json::json!({
            "retriever": retriever.describe(),
            "config": args.config,
            "passages": corpus.len(),
            "queries": texts.len(),
            "k": args.k,
            "threads": rayon_threads(),
            "index_phase": phase,
            "index_file": index_file,
            "index_file_bytes": index_file.as_ref().and_then(|f| std::fs::metadata(f).ok()).map(|m| m.len()),
            "warmup_queries": warmup,
            "seconds": {
                "corpus_load": load_s,
                "index": index_s,
                "warmup": warmup_s,
                "search": search_s,
                "write_run": write_s,
            },
            "queries_per_s": qps,
        });
        let bytes = serde_json::to_vec_pretty(&timings)?;
        ragtune_data::atomic::write_atomic(path, &bytes)
            .with_context(|| format!("writing the timings {}", path.display()))?;
    }
    Ok(())
}

/// The thread count the search ran with, as rayon sizes its global pool (for the record only).
fn rayon_threads() -> Option<usize> {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
}
