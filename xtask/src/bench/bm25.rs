//! `cargo xtask bench bm25`: `ragtune retrieve` with a BM25 config against bm25s (method "lucene",
//! tests/reference/bench_bm25.py) on the same generated dataset folder.
//!
//! The corpus is generated as `bench data` generates its own (passages of 8..400 words, most
//! short, a one-word title, splitmix64 from a fixed seed), except that words are drawn by their
//! frequency in the FAQ's answers rather than uniformly from its distinct words: BM25's cost lies
//! in the posting lists of frequent words, which a uniform draw would not have. Queries are 2..8
//! words drawn the same way from the FAQ's questions. Both are imported with `ragtune data import`,
//! so both sides read the same normalized Parquet.
//!
//! ragtune runs five times (each its own process, peak RSS from wait4): built in memory (the build
//! alone), built and saved to the cache folder, loaded from it (these three search one query only,
//! so their peak RSS is the build's or the load's), then loaded and searched at k = 10 and at
//! k = 100. bm25s runs twice: build + save, then load + search at both k. Build is from raw text,
//! tokenization included, on both sides; searched queries are analyzed inside the timed search on
//! both. Each side searches one untimed warm-up batch (the first `--warmup` queries) before the
//! timed pass. Threads: RAYON/OMP/MKL/OPENBLAS_NUM_THREADS and bm25s' `n_threads` all equal to
//! `--threads`, and both pinned to the same cores with taskset where it exists.

use super::{measure, Measured};
use anyhow::{bail, ensure, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args, Debug)]
pub struct Bm25Args {
    /// Passages to generate.
    #[arg(long, default_value_t = 200_000)]
    passages: usize,
    /// Queries to generate and search.
    #[arg(long, default_value_t = 5_000)]
    queries: usize,
    /// Threads on both sides (rayon, OpenMP/MKL/OpenBLAS, bm25s' n_threads), pinned with taskset.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Queries in the untimed warm-up batch, both sides.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Queries whose top 10 are compared between the sides.
    #[arg(long, default_value_t = 500)]
    sample: usize,
    #[arg(long, default_value_t = 0.9)]
    k1: f64,
    #[arg(long, default_value_t = 0.4)]
    b: f64,
}

/// splitmix64, the generator of `bench data`: fixed seed, so every run searches the same text.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every word occurrence of one string field of the FAQ's lines, repeats kept, so that a uniform
/// draw from the list is a draw by frequency.
fn field_words(faq: &str, field: &str) -> Vec<String> {
    let key = format!("\"{field}\":\"");
    let mut words = Vec::new();
    for line in faq.lines() {
        if let Some(start) = line.find(&key) {
            let rest = &line[start + key.len()..];
            let end = rest.find("\",\"").unwrap_or(rest.len());
            words.extend(
                rest[..end]
                    .split_whitespace()
                    .map(|w| w.replace(['"', '\\'], ""))
                    .filter(|w| !w.is_empty()),
            );
        }
    }
    words
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn pick<'a>(words: &'a [String], state: &mut u64) -> &'a str {
    &words[(splitmix(state) % words.len() as u64) as usize]
}

/// corpus.jsonl (`_id`, `title`, `text`) and queries.jsonl (`_id`, `text`).
fn generate(
    faq: &Path,
    corpus: &Path,
    queries: &Path,
    passages: usize,
    n_queries: usize,
) -> Result<()> {
    let text =
        std::fs::read_to_string(faq).with_context(|| format!("reading {}", faq.display()))?;
    let answers = field_words(&text, "a");
    let questions = field_words(&text, "q");
    ensure!(
        answers.len() > 1000 && questions.len() > 100,
        "too few words in {}",
        faq.display()
    );
    let mut state = 0x5eed_u64;
    let file =
        std::fs::File::create(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for i in 0..passages {
        // Squaring a uniform skews towards short passages; 8..400 words, as `bench data`.
        let u = (splitmix(&mut state) % 1000) as f64 / 1000.0;
        let words = 8 + (u * u * 392.0) as usize;
        let passage: Vec<&str> = (0..words).map(|_| pick(&answers, &mut state)).collect();
        let title = pick(&answers, &mut state);
        writeln!(
            w,
            "{{\"_id\":\"doc{i}\",\"title\":{},\"text\":{}}}",
            json_string(title),
            json_string(&passage.join(" "))
        )?;
    }
    w.flush()?;
    let file = std::fs::File::create(queries)
        .with_context(|| format!("creating {}", queries.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for i in 0..n_queries {
        let words = 2 + (splitmix(&mut state) % 7) as usize;
        let query: Vec<&str> = (0..words).map(|_| pick(&questions, &mut state)).collect();
        writeln!(
            w,
            "{{\"_id\":\"q{i}\",\"text\":{}}}",
            json_string(&query.join(" "))
        )?;
    }
    w.flush()?;
    Ok(())
}

/// Pins `program` to the first `threads` cores when taskset exists and the machine has them.
fn pinned(program: &Path, threads: usize) -> (Command, bool) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let taskset = Path::new("/usr/bin/taskset");
    if taskset.is_file() && threads <= cores {
        let mut cmd = Command::new(taskset);
        cmd.arg("-c").arg(format!("0-{}", threads - 1)).arg(program);
        (with_threads(cmd, threads), true)
    } else {
        (with_threads(Command::new(program), threads), false)
    }
}

fn with_threads(mut cmd: Command, threads: usize) -> Command {
    let n = threads.to_string();
    for var in [
        "RAYON_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    ] {
        cmd.env(var, &n);
    }
    cmd
}

/// The number after `"key":` in a JSON text whose keys are unique (the timings file).
fn json_number(text: &str, key: &str, file: &Path) -> Result<f64> {
    let pattern = format!("\"{key}\":");
    let start = text
        .find(&pattern)
        .with_context(|| format!("{}: no `{key}`", file.display()))?
        + pattern.len();
    let rest = text[start..].trim_start();
    let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .with_context(|| format!("{}: `{key}` is not a number", file.display()))
}

/// The number after `key` on a `key value` line of a side's output.
fn value(stdout: &str, key: &str, what: &str) -> Result<f64> {
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
            if let Ok(v) = rest.trim().parse::<f64>() {
                return Ok(v);
            }
        }
    }
    bail!("{what} printed no `{key}` line; its output:\n{stdout}")
}

/// One `ragtune retrieve` run: its process measurements and timings file.
struct RagtuneRun {
    measured: Measured,
    timings: String,
    timings_path: PathBuf,
}

impl RagtuneRun {
    fn seconds(&self, key: &str) -> Result<f64> {
        json_number(&self.timings, key, &self.timings_path)
    }
}

/// A TREC run's hits per query, in rank order: (doc id, score).
fn read_trec(path: &Path) -> Result<HashMap<String, Vec<(String, f64)>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut run: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            f.len() == 6,
            "{}:{}: a TREC line has 6 fields",
            path.display(),
            i + 1
        );
        let score: f64 = f[4]
            .parse()
            .with_context(|| format!("{}:{}: score is not a number", path.display(), i + 1))?;
        run.entry(f[0].to_string())
            .or_default()
            .push((f[2].to_string(), score));
    }
    Ok(run)
}

struct Agreement {
    queries: usize,
    mean_overlap: f64,
    identical_sets: usize,
    equal_scores: usize,
    max_rel_diff: f64,
}

/// Top-10 agreement on the queries bm25s wrote: the share of bm25s' ten that ragtune also
/// returned, and whether the scores agree rank by rank (which holds whatever order tied passages
/// take, so it tells a tie broken differently from a different ranking).
fn agreement(
    ours: &HashMap<String, Vec<(String, f64)>>,
    theirs: &HashMap<String, Vec<(String, f64)>>,
) -> Result<Agreement> {
    let mut out = Agreement {
        queries: 0,
        mean_overlap: 0.0,
        identical_sets: 0,
        equal_scores: 0,
        max_rel_diff: 0.0,
    };
    for (query, their_hits) in theirs {
        let our_hits = ours
            .get(query)
            .with_context(|| format!("ragtune's run has no query {query}"))?;
        let our_top: Vec<_> = our_hits.iter().take(10).collect();
        let their_top: Vec<_> = their_hits.iter().take(10).collect();
        let our_docs: HashSet<&str> = our_top.iter().map(|(d, _)| d.as_str()).collect();
        let common = their_top
            .iter()
            .filter(|(d, _)| our_docs.contains(d.as_str()))
            .count();
        out.mean_overlap += common as f64 / their_top.len().max(1) as f64;
        out.identical_sets +=
            usize::from(common == their_top.len() && our_top.len() == their_top.len());
        let mut worst = 0f64;
        for ((_, a), (_, b)) in our_top.iter().zip(&their_top) {
            worst = worst.max((a - b).abs() / a.abs().max(b.abs()).max(1e-6));
        }
        // f32 impacts summed in different orders differ in the last bits only.
        out.equal_scores += usize::from(worst <= 1e-4 && our_top.len() == their_top.len());
        out.max_rel_diff = out.max_rel_diff.max(worst);
        out.queries += 1;
    }
    ensure!(out.queries > 0, "bm25s wrote no sample queries");
    out.mean_overlap /= out.queries as f64;
    Ok(out)
}

pub fn run(root: &Path, python: &Path, args: Bm25Args) -> Result<()> {
    ensure!(args.threads > 0, "--threads must be at least 1");
    ensure!(
        args.passages > 0 && args.queries > 0,
        "--passages and --queries must be positive"
    );
    let ragtune = root.join("target/release/ragtune");
    if !ragtune.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p ragtune-cli`",
            ragtune.display()
        );
    }
    let work = root.join("target/bench-bm25");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let script = root.join("tests/reference/bench_bm25.py");

    let (corpus_jsonl, queries_jsonl) = (work.join("corpus.jsonl"), work.join("queries.jsonl"));
    generate(
        &root.join("assets/zaragoza-faq/faq-en.jsonl"),
        &corpus_jsonl,
        &queries_jsonl,
        args.passages,
        args.queries,
    )?;
    // One query, for the runs that measure building or loading alone: a full search batch would
    // add its own memory to their peak RSS.
    let probe_jsonl = work.join("probe.jsonl");
    let first = std::fs::read_to_string(&queries_jsonl)?
        .lines()
        .next()
        .context("no queries generated")?
        .to_string();
    std::fs::write(&probe_jsonl, first + "\n")?;
    let (data, query_dir, probe_dir) =
        (work.join("data"), work.join("queries"), work.join("probe"));
    for (file, table, map, out) in [
        (&corpus_jsonl, "corpus", "doc_id=_id", &data),
        (&queries_jsonl, "queries", "query_id=_id", &query_dir),
        (&probe_jsonl, "queries", "query_id=_id", &probe_dir),
    ] {
        crate::run(
            Command::new(&ragtune)
                .args([
                    "data", "import", "--format", "jsonl", "--table", table, "--map", map,
                ])
                .arg(file)
                .arg("--out")
                .arg(out),
            "ragtune data import",
        )?;
    }
    let queries = query_dir.join("queries.parquet");
    let probe = probe_dir.join("queries.parquet");
    let corpus_mb = std::fs::metadata(&corpus_jsonl)?.len() as f64 / 1e6;

    let cache = work.join("ragtune-cache");
    let config = |name: &str, cache_dir: Option<&Path>| -> Result<PathBuf> {
        let mut text = format!(
            "[retrieval]\nbackend = \"bm25\"\nk1 = {}\nb = {}\n",
            args.k1, args.b
        );
        if let Some(dir) = cache_dir {
            let _ = writeln!(
                text,
                "cache_dir = {}",
                json_string(&dir.display().to_string())
            );
        }
        text.push_str(
            "\n[retrieval.analyzer]\nlowercase = true\nstopwords = \"english\"\nstemmer = \"none\"\n",
        );
        let path = work.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let in_memory = config("bm25-memory.toml", None)?;
    let cached = config("bm25-cache.toml", Some(&cache))?;

    let mut pinned_any = false;
    let mut ragtune_run =
        |name: &str, config: &Path, k: usize, queries: &Path| -> Result<RagtuneRun> {
            let timings_path = work.join(format!("{name}.timings.json"));
            let (mut cmd, pinned_now) = pinned(&ragtune, args.threads);
            pinned_any |= pinned_now;
            cmd.args(["--device", "cpu", "retrieve", "--config"])
                .arg(config)
                .arg("--data")
                .arg(&data)
                .arg("--queries")
                .arg(queries)
                .args(["--k", &k.to_string(), "--warmup", &args.warmup.to_string()])
                .arg("--out")
                .arg(work.join(format!("{name}.trec")))
                .arg("--timings")
                .arg(&timings_path);
            let what = format!("ragtune retrieve ({name})");
            eprintln!("running {what} ...");
            let measured = measure(&mut cmd, &what)?;
            let timings = std::fs::read_to_string(&timings_path)
                .with_context(|| format!("reading {}", timings_path.display()))?;
            Ok(RagtuneRun {
                measured,
                timings,
                timings_path,
            })
        };
    let py_dir = work.join("bm25s-index");
    let py_top = work.join("bm25s-top10.trec");
    let py_run = |mode: &str| -> Result<Measured> {
        let (mut cmd, _) = pinned(python, args.threads);
        cmd.arg(&script).arg(mode).arg(&data).arg(&py_dir);
        if mode == "build" {
            cmd.args(["--k1", &args.k1.to_string(), "--b", &args.b.to_string()]);
        } else {
            cmd.arg(&queries)
                .args(["--threads", &args.threads.to_string()])
                .args(["--warmup", &args.warmup.to_string()])
                .args(["--sample", &args.sample.to_string()])
                .arg("--top")
                .arg(&py_top);
        }
        let what = format!("bm25s {mode}");
        eprintln!("running {what} ...");
        measure(&mut cmd, &what)
    };

    // Interleaved, so that a change in the machine's load falls on both sides alike.
    let r_build = ragtune_run("build", &in_memory, 10, &probe)?;
    let p_build = py_run("build")?;
    let r_save = ragtune_run("build-save", &cached, 10, &probe)?;
    let r_load = ragtune_run("load-only", &cached, 10, &probe)?;
    let r_top10 = ragtune_run("load-top10", &cached, 10, &queries)?;
    let r_top100 = ragtune_run("load-top100", &cached, 100, &queries)?;
    let p_search = py_run("search")?;
    for (run, phase) in [
        (&r_build, "build"),
        (&r_save, "build+save"),
        (&r_load, "load"),
        (&r_top10, "load"),
        (&r_top100, "load"),
    ] {
        ensure!(
            run.timings
                .contains(&format!("\"index_phase\": \"{phase}\"")),
            "{}: expected index phase {phase}",
            run.timings_path.display()
        );
    }

    let ps = &p_build.stdout;
    let pq = &p_search.stdout;
    let py = |out: &str, key: &str| value(out, key, "bench_bm25.py");
    let ours_terms = r_build
        .timings
        .split("; ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    let their_terms = py(ps, "vocabulary")?;
    let index_bytes = json_number(&r_save.timings, "index_file_bytes", &r_save.timings_path)?;
    let agree = agreement(
        &read_trec(&work.join("load-top10.trec"))?,
        &read_trec(&py_top)?,
    )?;

    let r_build_s = r_build.seconds("index")?;
    let r_build_save_s = r_save.seconds("index")?;
    let r_load_s =
        (r_load.seconds("index")? + r_top10.seconds("index")? + r_top100.seconds("index")?) / 3.0;
    let p_build_s = py(ps, "build_seconds")?;
    let p_save_s = py(ps, "save_seconds")?;
    let p_load_s = py(pq, "load_seconds")?;
    let r_qps10 = r_top10.seconds("queries_per_s")?;
    let r_qps100 = r_top100.seconds("queries_per_s")?;
    let p_qps10 = py(pq, "queries_per_s_10")?;
    let p_qps100 = py(pq, "queries_per_s_100")?;
    let r_rss_build = r_build
        .measured
        .peak_rss_mib
        .max(r_save.measured.peak_rss_mib);
    let r_rss_search = r_top10
        .measured
        .peak_rss_mib
        .max(r_top100.measured.peak_rss_mib);
    let backend = pq
        .lines()
        .find_map(|l| l.strip_prefix("backend "))
        .unwrap_or("?")
        .to_string();

    println!(
        "\nbm25: {} generated passages ({corpus_mb:.0} MB JSONL, {} tokens after analysis on the bm25s side), {} queries of 2..8 words",
        args.passages,
        py(ps, "tokens")?,
        args.queries
    );
    println!(
        "BM25 Lucene variant, k1 {}, b {}; analyzer on both sides: lowercase, Lucene's 33 English stopwords, no stemmer \
         (bm25s stems only through PyStemmer, which is not installed; ragtune's default Porter stemming is off for this comparison)",
        args.k1, args.b
    );
    println!(
        "{} threads each (RAYON/OMP/MKL/OPENBLAS_NUM_THREADS, bm25s n_threads){}; one untimed warm-up batch of {} queries on each side; bm25s backend {backend} (numba not installed)",
        args.threads,
        if pinned_any {
            format!(", both pinned with taskset -c 0-{}", args.threads - 1)
        } else {
            ", not pinned (no taskset)".to_string()
        },
        args.warmup
    );
    println!(
        "vocabulary: ragtune {}, bm25s {their_terms:.0}; load average at the end: {}\n",
        ours_terms.map_or("?".into(), |n| format!("{n:.0}")),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    println!("{:<40}{:>12}{:>12}{:>10}", "", "ragtune", "bm25s", "ratio");
    let row = |name: &str, ours: f64, theirs: f64, ratio: f64, unit: &str| {
        println!("{name:<40}{ours:>12.2}{theirs:>12.2}{ratio:>9.2}x  {unit}");
    };
    row(
        "index build from raw text (s)",
        r_build_s,
        p_build_s,
        p_build_s / r_build_s,
        "faster",
    );
    row(
        "index build + save (s)",
        r_build_save_s,
        p_build_s + p_save_s,
        (p_build_s + p_save_s) / r_build_save_s,
        "faster",
    );
    row(
        "index load (s)",
        r_load_s,
        p_load_s,
        p_load_s / r_load_s,
        "faster",
    );
    let p_bytes = py(ps, "index_bytes")?;
    row(
        "index on disk (MiB)",
        index_bytes / 1048576.0,
        p_bytes / 1048576.0,
        index_bytes / p_bytes,
        "size",
    );
    row(
        "queries/s, top-10",
        r_qps10,
        p_qps10,
        r_qps10 / p_qps10,
        "faster",
    );
    row(
        "queries/s, top-100",
        r_qps100,
        p_qps100,
        r_qps100 / p_qps100,
        "faster",
    );
    row(
        "peak RSS, build (+ save) (MiB)",
        r_rss_build,
        p_build.peak_rss_mib,
        r_rss_build / p_build.peak_rss_mib,
        "memory",
    );
    row(
        "peak RSS, load + search (MiB)",
        r_rss_search,
        p_search.peak_rss_mib,
        r_rss_search / p_search.peak_rss_mib,
        "memory",
    );
    println!(
        "\nbuild = analysis + indexing, from the corpus in memory (ragtune also computes its per-posting impacts); \
         ragtune's build + save is a separate process that builds again (its save alone ≈ {:.2}s); \
         queries/s = all queries analyzed and searched, after the warm-up",
        r_build_save_s - r_build_s
    );
    println!(
        "ragtune peak RSS loading alone (index + corpus, one query searched): {:.0} MiB; bm25s' search process does not hold the passages' text",
        r_load.measured.peak_rss_mib
    );
    println!(
        "top-10 agreement on {} sample queries: mean overlap {:.4}, identical sets {} ({:.1}%), scores equal rank by rank (rel. 1e-4) {} ({:.1}%), max rel. score difference {:.2e}",
        agree.queries,
        agree.mean_overlap,
        agree.identical_sets,
        100.0 * agree.identical_sets as f64 / agree.queries as f64,
        agree.equal_scores,
        100.0 * agree.equal_scores as f64 / agree.queries as f64,
        agree.max_rel_diff
    );
    println!(
        "process wall (s): ragtune build {:.1}, build+save {:.1}, load {:.1}, load+top-10 {:.1}, load+top-100 {:.1}; bm25s build+save {:.1}, load+search(both k) {:.1}",
        r_build.measured.seconds,
        r_save.measured.seconds,
        r_load.measured.seconds,
        r_top10.measured.seconds,
        r_top100.measured.seconds,
        p_build.seconds,
        p_search.seconds
    );

    let mut json = String::from("{\n");
    let _ = writeln!(
        json,
        "  \"passages\": {}, \"queries\": {}, \"threads\": {}, \"warmup\": {}, \"k1\": {}, \"b\": {},",
        args.passages, args.queries, args.threads, args.warmup, args.k1, args.b
    );
    let _ = writeln!(
        json,
        "  \"ragtune\": {{\"build_s\": {r_build_s}, \"build_save_s\": {r_build_save_s}, \"load_s\": {r_load_s}, \"qps_10\": {r_qps10}, \"qps_100\": {r_qps100}, \"rss_build_mib\": {r_rss_build}, \"rss_search_mib\": {r_rss_search}, \"rss_load_only_mib\": {}, \"index_bytes\": {index_bytes}}},",
        r_load.measured.peak_rss_mib
    );
    let _ = writeln!(
        json,
        "  \"bm25s\": {{\"build_s\": {p_build_s}, \"save_s\": {p_save_s}, \"load_s\": {p_load_s}, \"qps_10\": {p_qps10}, \"qps_100\": {p_qps100}, \"rss_build_mib\": {}, \"rss_search_mib\": {}, \"index_bytes\": {p_bytes}}},",
        p_build.peak_rss_mib, p_search.peak_rss_mib
    );
    let _ = writeln!(
        json,
        "  \"top10\": {{\"queries\": {}, \"mean_overlap\": {}, \"identical_sets\": {}, \"equal_scores\": {}, \"max_rel_diff\": {}}}\n}}",
        agree.queries, agree.mean_overlap, agree.identical_sets, agree.equal_scores, agree.max_rel_diff
    );
    let out_dir = root.join("runs/bench-bm25");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = out_dir.join(format!("result-{stamp}.json"));
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
