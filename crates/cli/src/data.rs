//! `ragtune data`: import, inspect, tokenize, dedup, split and export datasets (folders of Parquet tables).

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ragtune_data::dataset::{Dataset, REPORT_FILE};
use ragtune_data::dedup::{dedup_corpus, remap_qrels, DedupConfig};
use ragtune_data::import::{self, FieldMap, ImportReport, TargetTable};
use ragtune_data::split::{split_dataset, SplitConfig, SPLIT_NAMES};
use ragtune_data::table::{table_info, BatchReader};
use ragtune_data::text::percentiles;
use ragtune_data::tokenize::{build_token_cache, CacheSource, CacheTokenizer, TokenCacheReport};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ImportFormat {
    /// The bundled FAQ JSONL (id, category, q, a, sources): corpus + queries + qrels + qa.
    Faq,
    /// FanOutQA dev JSON: queries + qa (gold ids are Wikipedia titles).
    Fanoutqa,
    /// A BEIR folder: corpus.jsonl, queries.jsonl, qrels/*.tsv.
    Beir,
    /// SQuAD v1.1 or v2.0 JSON: corpus (paragraphs) + queries + qrels + qa.
    Squad,
    /// MS MARCO-style TSV triples (query, positive, negative): triplets + corpus + queries + qrels.
    Msmarco,
    /// Generic JSONL into one table (--table), with --map column=field.
    Jsonl,
    /// Generic CSV with a header row into one table (--table), with --map column=field.
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    Beir,
    /// One <table>.jsonl per table.
    Jsonl,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum TokenizeTable {
    Corpus,
    Queries,
    Both,
}

#[derive(ClapArgs)]
struct TokenizeOpts {
    /// tokenizer.json to build token caches with (e.g. assets/all-MiniLM-L6-v2/tokenizer.json).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Truncation length of the token cache (special tokens included; never padded).
    #[arg(long, default_value_t = 256)]
    max_length: usize,
    /// Which text tables to tokenize.
    #[arg(long, value_enum, default_value = "both")]
    tokenize: TokenizeTable,
}

#[derive(Subcommand)]
enum Command {
    /// Import a dataset into a folder of Parquet tables (corpus, queries, qrels, qa, triplets, preferences).
    Import {
        /// The source file (or folder, for BEIR).
        input: PathBuf,
        #[arg(long, value_enum)]
        format: ImportFormat,
        /// Dataset folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Table to fill for jsonl/csv: corpus, queries, qrels, qa, preferences.
        #[arg(long, default_value = "corpus")]
        table: String,
        /// Field mapping for jsonl/csv, `column=field,...` (e.g. `doc_id=_id,text=body`).
        #[arg(long, default_value = "")]
        map: String,
        /// BEIR qrels split to import (qrels/<split>.tsv); all .tsv files when absent.
        #[arg(long)]
        qrels_split: Option<String>,
        #[command(flatten)]
        tokenize: TokenizeOpts,
    },
    /// Show the tables of a dataset folder (or one Parquet file): schema, counts, length percentiles.
    Inspect { path: PathBuf },
    /// Build token caches for a dataset folder (reused when already up to date).
    Tokenize {
        dataset: PathBuf,
        #[command(flatten)]
        tokenize: TokenizeOpts,
    },
    /// Remove empty, exact-duplicate and near-duplicate passages; qrels follow the kept passage.
    Dedup {
        dataset: PathBuf,
        /// Where to write the cleaned dataset (default: in place).
        #[arg(long)]
        out: Option<PathBuf>,
        /// MinHash Jaccard threshold for near duplicates.
        #[arg(long, default_value_t = 0.8)]
        threshold: f64,
        /// Words per shingle.
        #[arg(long, default_value_t = 5)]
        shingle: usize,
        /// Only remove empty and exact duplicates.
        #[arg(long)]
        no_near: bool,
    },
    /// Split by query into <out>/train, <out>/val, <out>/test (no question text in two splits).
    Split {
        dataset: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Train, val and test fractions.
        #[arg(long, value_delimiter = ',', default_value = "0.8,0.1,0.1")]
        fractions: Vec<f64>,
        /// Balance each QA label (e.g. the FAQ category) across the splits.
        #[arg(long)]
        stratify: bool,
    },
    /// Export a dataset folder to BEIR or plain JSONL.
    Export {
        dataset: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[arg(long)]
        out: PathBuf,
        /// Name of the BEIR qrels file (qrels/<split>.tsv).
        #[arg(long, default_value = "test")]
        qrels_split: String,
    },
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Import {
            input,
            format,
            out,
            table,
            map,
            qrels_split,
            tokenize,
        } => {
            let started = Instant::now();
            let bar = spinner(&format!("importing {}", input.display()));
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let in_memory =
                |result: ragtune_data::Result<(Dataset, ImportReport)>| -> Result<ImportReport> {
                    let (ds, report) = result?;
                    ds.validate(&out)?;
                    ds.write(&out)?;
                    Ok(report)
                };
            let report = match format {
                ImportFormat::Faq => in_memory(import::import_faq(&input))?,
                ImportFormat::Fanoutqa => in_memory(import::import_fanoutqa(&input))?,
                ImportFormat::Squad => in_memory(import::import_squad(&input))?,
                ImportFormat::Msmarco => in_memory(import::import_msmarco_triples(&input))?,
                ImportFormat::Beir => import::import_beir(&input, qrels_split.as_deref(), &out)?,
                ImportFormat::Jsonl => import::import_jsonl(
                    &input,
                    table.parse::<TargetTable>()?,
                    &FieldMap::parse(&map)?,
                    &out,
                )?,
                ImportFormat::Csv => import::import_csv(
                    &input,
                    table.parse::<TargetTable>()?,
                    &FieldMap::parse(&map)?,
                    &out,
                )?,
            };
            bar.finish_and_clear();
            ragtune_data::atomic::write_atomic(
                &out.join(REPORT_FILE),
                &serde_json::to_vec_pretty(&report)?,
            )?;
            println!(
                "imported {} ({}) into {} in {:.1}s",
                input.display(),
                report.format,
                out.display(),
                started.elapsed().as_secs_f64()
            );
            println!("  rows read: {}", report.rows_read);
            for (table, n) in &report.written {
                println!("  {table:<12} {n:>9} rows written");
            }
            for (table, n) in &report.dropped_empty {
                println!("  {table:<12} {n:>9} rows dropped (empty after normalization)");
            }
            for note in &report.notes {
                println!("  note: {note}");
            }
            run_tokenize(&out, &tokenize)?;
            Ok(())
        }
        Command::Inspect { path } => inspect(&path),
        Command::Tokenize { dataset, tokenize } => {
            if tokenize.tokenizer.is_none() {
                bail!("--tokenizer is required");
            }
            run_tokenize(&dataset, &tokenize)
        }
        Command::Dedup {
            dataset,
            out,
            threshold,
            shingle,
            no_near,
        } => {
            if !(0.0..=1.0).contains(&threshold) {
                bail!("--threshold must be within 0..=1, got {threshold}");
            }
            let mut ds = Dataset::read(&dataset)?;
            let config = DedupConfig {
                near_threshold: (!no_near).then_some(threshold),
                shingle_words: shingle,
                ..Default::default()
            };
            let bar = spinner("deduplicating");
            let (kept, mut report) = dedup_corpus(std::mem::take(&mut ds.corpus), &config);
            ds.corpus = kept;
            ds.qrels = remap_qrels(std::mem::take(&mut ds.qrels), &mut report);
            bar.finish_and_clear();
            let out = out.unwrap_or_else(|| dataset.clone());
            std::fs::create_dir_all(&out)?;
            ds.write(&out)?;
            ragtune_data::atomic::write_atomic(
                &out.join("dedup_report.json"),
                &serde_json::to_vec_pretty(&report)?,
            )?;
            println!("dedup of {} -> {}", dataset.display(), out.display());
            println!("  passages in        {:>9}", report.input_docs);
            println!("  empty              {:>9}", report.empty);
            println!("  exact duplicates   {:>9}", report.exact_duplicates);
            match config.near_threshold {
                Some(t) => println!(
                    "  near duplicates    {:>9}   (MinHash Jaccard >= {t}, {} bands x {} rows, {}-word shingles)",
                    report.near_duplicates, report.lsh_bands, report.lsh_rows, config.shingle_words
                ),
                None => println!("  near duplicates          off"),
            }
            println!("  passages kept      {:>9}", report.kept_docs);
            println!(
                "  qrels remapped     {:>9}   dropped {}",
                report.qrels_remapped, report.qrels_dropped
            );
            for r in report.removed.iter().take(10) {
                println!(
                    "    removed {:<24} {}",
                    r.doc_id,
                    serde_json::to_string(&r.reason)?
                );
            }
            if report.removed.len() > 10 {
                println!(
                    "    ... {} more in {}",
                    report.removed.len() - 10,
                    out.join("dedup_report.json").display()
                );
            }
            Ok(())
        }
        Command::Split {
            dataset,
            out,
            seed,
            fractions,
            stratify,
        } => {
            let [train, val, test] = fractions[..] else {
                bail!(
                    "--fractions takes three numbers (train,val,test), got {}",
                    fractions.len()
                );
            };
            let ds = Dataset::read(&dataset)?;
            let config = SplitConfig {
                seed,
                fractions: [train, val, test],
                stratify,
            };
            let (parts, report) = split_dataset(&ds, &config)?;
            for (name, part) in SPLIT_NAMES.iter().zip(&parts) {
                let dir = out.join(name);
                std::fs::create_dir_all(&dir)?;
                part.write(&dir)?;
            }
            ragtune_data::atomic::write_atomic(
                &out.join("split_report.json"),
                &serde_json::to_vec_pretty(&report)?,
            )?;
            println!(
                "split {} -> {} (seed {seed}{})",
                dataset.display(),
                out.display(),
                if stratify { ", stratified" } else { "" }
            );
            println!(
                "  items {}  groups {}  groups holding duplicated questions {}",
                report.items, report.groups, report.groups_with_duplicates
            );
            println!("  {:<8} {:>7} {:>7} {:>7}", "", "train", "val", "test");
            println!(
                "  {:<8} {:>7} {:>7} {:>7}",
                "queries", report.sizes[0], report.sizes[1], report.sizes[2]
            );
            println!(
                "  {:<8} {:>7} {:>7} {:>7}",
                "qrels",
                parts[0].qrels.len(),
                parts[1].qrels.len(),
                parts[2].qrels.len()
            );
            println!(
                "  {:<8} {:>7} {:>7} {:>7}",
                "qa",
                parts[0].qa.len(),
                parts[1].qa.len(),
                parts[2].qa.len()
            );
            println!("  leakage check: {}", report.leakage_check);
            if report.balance.len() > 1 {
                println!("  class balance (label: train/val/test):");
                for b in &report.balance {
                    println!(
                        "    {:<28} {:>5} {:>5} {:>5}",
                        b.label, b.counts[0], b.counts[1], b.counts[2]
                    );
                }
            }
            Ok(())
        }
        Command::Export {
            dataset,
            format,
            out,
            qrels_split,
        } => {
            let ds = Dataset::read(&dataset)?;
            match format {
                ExportFormat::Beir => {
                    ragtune_data::export::export_beir(&ds, &out, &qrels_split)?;
                    println!(
                        "exported {} to BEIR at {}: {} passages, {} queries, {} qrels",
                        dataset.display(),
                        out.display(),
                        ds.corpus.len(),
                        ds.queries.len(),
                        ds.qrels.len()
                    );
                }
                ExportFormat::Jsonl => {
                    let tables = ragtune_data::export::export_jsonl(&ds, &out)?;
                    println!(
                        "exported {} to JSONL at {}: {}",
                        dataset.display(),
                        out.display(),
                        tables.join(", ")
                    );
                }
            }
            Ok(())
        }
    }
}

fn run_tokenize(dir: &Path, opts: &TokenizeOpts) -> Result<()> {
    let Some(path) = &opts.tokenizer else {
        return Ok(());
    };
    let tokenizer = CacheTokenizer::load(path, opts.max_length)?;
    let mut sources = Vec::new();
    if opts.tokenize != TokenizeTable::Queries && dir.join("corpus.parquet").exists() {
        sources.push(CacheSource::Corpus);
    }
    if opts.tokenize != TokenizeTable::Corpus && dir.join("queries.parquet").exists() {
        sources.push(CacheSource::Queries);
    }
    for source in sources {
        let started = Instant::now();
        let bar = spinner(&format!("tokenizing {}", source.table()));
        let report = build_token_cache(dir, source, &tokenizer)?;
        bar.finish_and_clear();
        print_cache(source.table(), &report, started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn print_cache(table: &str, r: &TokenCacheReport, seconds: f64) {
    let p = &r.length_percentiles;
    println!(
        "  tokens {table:<8} {:>9} rows {} in {seconds:.1}s; length p50 {} p90 {} p99 {} max {}; {} truncated -> {}",
        r.rows,
        if r.reused { "reused" } else { "tokenized" },
        p[0], p[1], p[2], p[3], r.truncated,
        r.path.display()
    );
}

/// Word counts of a string column, streamed batch by batch.
fn word_lengths(path: &Path, column: &str) -> Result<Option<Vec<usize>>> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for batch in BatchReader::open(path)? {
        let (_, batch) = batch?;
        let Some(col) = batch.column_by_name(column) else {
            return Ok(None);
        };
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)?;
        let strings = col.as_string::<i32>();
        out.extend((0..strings.len()).map(|i| {
            if strings.is_null(i) {
                0
            } else {
                strings.value(i).split_whitespace().count()
            }
        }));
    }
    Ok(Some(out))
}

fn inspect(path: &Path) -> Result<()> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .chain(
                std::fs::read_dir(path.join("cache"))
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok().map(|e| e.path())),
            )
            .filter(|p| {
                p.extension().is_some_and(|x| x == "parquet")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        bail!("{} holds no Parquet tables", path.display());
    }
    println!(
        "{:<56} {:<12} {:>3} {:>9}   lengths p50/p90/p99/max",
        "file", "schema", "v", "rows"
    );
    for file in files {
        let info = table_info(&file)?;
        let name = file
            .strip_prefix(path)
            .unwrap_or(&file)
            .display()
            .to_string();
        let (column, unit) = match info.schema_name.as_deref() {
            Some("corpus" | "queries") => ("text", "words"),
            Some("qa") => ("question", "words"),
            Some("triplets") => ("positive_text", "words"),
            Some("preferences") => ("prompt", "words"),
            Some("token_cache") => ("length", "tokens"),
            _ => ("", ""),
        };
        let lengths = if unit == "tokens" {
            let mut v = Vec::new();
            for batch in BatchReader::open(&file)? {
                let (_, b) = batch?;
                if let Some(c) = b.column_by_name("length") {
                    use arrow::array::AsArray;
                    v.extend(
                        c.as_primitive::<arrow::datatypes::Int32Type>()
                            .values()
                            .iter()
                            .map(|&x| x as usize),
                    );
                }
            }
            Some(v)
        } else if column.is_empty() {
            None
        } else {
            word_lengths(&file, column)?
        };
        let summary = match lengths {
            Some(mut v) if !v.is_empty() => {
                let p = percentiles(&mut v, &[50.0, 90.0, 99.0, 100.0]);
                format!("{}/{}/{}/{} {unit} ({column})", p[0], p[1], p[2], p[3])
            }
            _ => String::new(),
        };
        println!(
            "{:<56} {:<12} {:>3} {:>9}   {summary}",
            name,
            info.schema_name.as_deref().unwrap_or("(unknown)"),
            info.schema_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            info.rows
        );
    }
    if path.is_dir() && path.join("corpus.parquet").exists() {
        let ds = Dataset::read(path)?;
        let mut seen = std::collections::HashSet::new();
        let exact = ds
            .corpus
            .iter()
            .filter(|d| !seen.insert(ragtune_data::text::normalize_text(&d.text)))
            .count();
        let mut qseen = std::collections::HashSet::new();
        let dup_questions = ds
            .queries
            .iter()
            .filter(|q| !qseen.insert(ragtune_data::text::question_key(&q.text)))
            .count();
        println!("exact duplicate passages: {exact}; duplicated question texts: {dup_questions}");
        ds.validate(path)?;
        println!("cross-table check: ok (unique ids, every qrel points at a passage and a query)");
    }
    Ok(())
}
