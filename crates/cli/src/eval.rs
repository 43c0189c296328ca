//! `ragtune eval`: score a retrieval run against qrels, generated answers against references, or
//! predicted labels against gold labels. Prints a table and optionally writes the full report as
//! JSON (atomically).
//!
//! Inputs: TREC run files (`qid Q0 docid rank score tag`) or Parquet runs (`query_id`, `doc_id`,
//! `score`); TREC qrels (`qid iter docid rel`), BEIR qrels TSV (`query-id corpus-id score`) or the
//! data crate's qrels Parquet (`query_id`, `doc_id`, `relevance`); JSONL predictions/references
//! with an id field and a text field (a reference's text may be a list of strings).

use anyhow::{bail, Context, Result};
use arrow::array::{Array, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use ragtune_eval::retrieval::{self, Measure, Qrels, Run};
use ragtune_eval::{bleu, classification, meteor, rouge, squad};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(clap::Subcommand, Debug)]
enum EvalCommand {
    /// Recall, P, MRR, nDCG, Hit at each k, and MAP (trec_eval semantics).
    Retrieval(RetrievalArgs),
    /// Exact match, token F1, BLEU, ROUGE and METEOR of predictions against references.
    Generation(GenerationArgs),
    /// Accuracy, precision/recall/F1 (micro, macro, weighted) and the confusion matrix.
    Classification(ClassificationArgs),
}

#[derive(clap::Args, Debug)]
struct RetrievalArgs {
    /// Run: TREC run file, or Parquet with query_id, doc_id, score.
    #[arg(long)]
    run: PathBuf,
    /// Qrels: TREC qrels file, BEIR qrels TSV (query-id corpus-id score), or Parquet with
    /// query_id, doc_id, relevance.
    #[arg(long)]
    qrels: PathBuf,
    /// Cutoffs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,10,100")]
    k: Vec<usize>,
    /// Write the report (means and per-query values) here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct GenerationArgs {
    /// Predictions JSONL: one object per line with the id and text fields.
    #[arg(long)]
    pred: PathBuf,
    /// References JSONL: id and text fields; the text may be a list of reference strings.
    #[arg(long = "ref")]
    reference: PathBuf,
    #[arg(long, default_value = "id")]
    id_field: String,
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Score ROUGE without Porter stemming (stemming is on by default).
    #[arg(long)]
    no_stem: bool,
    /// Write the report (means, corpus BLEU and per-item scores) here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ClassificationArgs {
    /// Predicted labels JSONL (id and label fields).
    #[arg(long)]
    pred: PathBuf,
    /// Gold labels JSONL (id and label fields).
    #[arg(long)]
    gold: PathBuf,
    #[arg(long, default_value = "id")]
    id_field: String,
    #[arg(long, default_value = "label")]
    label_field: String,
    /// Value of a ratio whose denominator is 0 (scikit-learn's zero_division).
    #[arg(long, default_value_t = 0.0)]
    zero_division: f64,
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        EvalCommand::Retrieval(a) => run_retrieval(a),
        EvalCommand::Generation(a) => run_generation(a),
        EvalCommand::Classification(a) => run_classification(a),
    }
}

fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    ragtune_models::checkpoint::atomic_write(
        path,
        serde_json::to_string_pretty(value)?.as_bytes(),
    )?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Prints rows as an aligned table: first column left-aligned, the rest right-aligned.
fn print_table(header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", parts.join("  "));
    };
    line(header);
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    rows.iter().for_each(|r| line(r));
}

fn read_lines(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_trec_run(path: &Path) -> Result<Run> {
    let mut run = Run::new();
    for (i, line) in read_lines(path)?.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        if fields.len() != 6 {
            bail!(
                "{}: a TREC run line has 6 fields (qid Q0 docid rank score tag), found {}",
                at(),
                fields.len()
            );
        }
        let score: f64 = fields[4].parse().map_err(|_| {
            anyhow::anyhow!("{}: field `score` is not a number: {:?}", at(), fields[4])
        })?;
        if score.is_nan() {
            bail!("{}: field `score` is NaN", at());
        }
        if run
            .entry(fields[0].to_string())
            .or_default()
            .insert(fields[2].to_string(), score)
            .is_some()
        {
            bail!(
                "{}: doc {} appears twice for query {}",
                at(),
                fields[2],
                fields[0]
            );
        }
    }
    Ok(run)
}

/// TREC qrels (`qid iter docid rel`) or BEIR qrels TSV (`query-id corpus-id score`, optional
/// header), detected per file.
fn read_text_qrels(path: &Path) -> Result<Qrels> {
    Ok(ragtune_eval::trec::parse_qrels(path, &read_lines(path)?)?)
}

fn read_parquet_run(path: &Path) -> Result<Run> {
    let mut run = Run::new();
    for batch in ragtune_data::table::BatchReader::open(path)? {
        let (first_row, batch) = batch?;
        let column = |name: &str, to: &DataType| -> Result<std::sync::Arc<dyn Array>> {
            let col = batch.column_by_name(name).with_context(|| {
                format!(
                    "{}: no column `{name}` (a run needs query_id, doc_id, score)",
                    path.display()
                )
            })?;
            cast(col, to).with_context(|| {
                format!("{}: column `{name}` cannot be read as {to}", path.display())
            })
        };
        let queries = column("query_id", &DataType::Utf8)?;
        let docs = column("doc_id", &DataType::Utf8)?;
        let scores = column("score", &DataType::Float64)?;
        let queries = queries
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8");
        let docs = docs
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8");
        let scores = scores
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to Float64");
        for i in 0..batch.num_rows() {
            let row = first_row + i;
            for (name, col) in [
                ("query_id", queries.is_null(i)),
                ("doc_id", docs.is_null(i)),
                ("score", scores.is_null(i)),
            ] {
                if col {
                    bail!("{}: row {row}: field `{name}` is null", path.display());
                }
            }
            let score = scores.value(i);
            if score.is_nan() {
                bail!("{}: row {row}: field `score` is NaN", path.display());
            }
            if run
                .entry(queries.value(i).to_string())
                .or_default()
                .insert(docs.value(i).to_string(), score)
                .is_some()
            {
                bail!(
                    "{}: row {row}: doc {} appears twice for query {}",
                    path.display(),
                    docs.value(i),
                    queries.value(i)
                );
            }
        }
    }
    Ok(run)
}

fn read_parquet_qrels(path: &Path) -> Result<Qrels> {
    let mut qrels = Qrels::new();
    for (row, q) in ragtune_data::read_table::<ragtune_data::Qrel>(path)?
        .into_iter()
        .enumerate()
    {
        if qrels
            .entry(q.query_id.clone())
            .or_default()
            .insert(q.doc_id.clone(), i64::from(q.relevance))
            .is_some()
        {
            bail!(
                "{}: row {row}: doc {} is judged twice for query {}",
                path.display(),
                q.doc_id,
                q.query_id
            );
        }
    }
    Ok(qrels)
}

fn run_retrieval(args: RetrievalArgs) -> Result<()> {
    if args.k.contains(&0) {
        bail!("--k: cutoffs must be at least 1");
    }
    let run = if is_parquet(&args.run) {
        read_parquet_run(&args.run)?
    } else {
        read_trec_run(&args.run)?
    };
    let qrels = if is_parquet(&args.qrels) {
        read_parquet_qrels(&args.qrels)?
    } else {
        read_text_qrels(&args.qrels)?
    };
    let measures = retrieval::standard_measures(&args.k);
    let report = retrieval::evaluate(&run, &qrels, &measures)?;
    if report.num_queries == 0 {
        bail!(
            "no query of {} is judged in {}: check that the query ids match",
            args.run.display(),
            args.qrels.display()
        );
    }
    let header: Vec<String> = ["measure".to_string()]
        .into_iter()
        .chain(args.k.iter().map(|k| format!("@{k}")))
        .collect();
    let mut rows = Vec::new();
    for family in ["recall", "p", "mrr", "ndcg", "hit"] {
        let mut row = vec![family.to_string()];
        row.extend(
            args.k
                .iter()
                .map(|k| format!("{:.4}", report.mean[&format!("{family}@{k}")])),
        );
        rows.push(row);
    }
    print_table(&header, &rows);
    println!("map {:.4}", report.mean[&Measure::Map.to_string()]);
    println!(
        "{} queries scored; {} judged but missing from the run (left out); {} without any relevant document (scored 0)",
        report.num_queries,
        report.queries_missing_from_run.len(),
        report.queries_without_relevant.len()
    );
    if let Some(path) = &args.json {
        write_json(path, &serde_json::to_value(&report)?)?;
    }
    Ok(())
}

/// Reads a JSONL file into id -> (line number, value of `field`), naming file, line and field on error.
fn read_jsonl(path: &Path, id_field: &str, field: &str) -> Result<Vec<(String, usize, Value)>> {
    let mut rows = Vec::new();
    let mut seen = HashMap::new();
    for (i, line) in read_lines(path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
        let id = match value.get(id_field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => bail!(
                "{}: field `{id_field}` is missing or not a string/number",
                at()
            ),
        };
        let Some(text) = value.get(field) else {
            bail!("{}: field `{field}` is missing", at());
        };
        if let Some(first) = seen.insert(id.clone(), i + 1) {
            bail!("{}: id {id} already appeared on line {first}", at());
        }
        rows.push((id, i + 1, text.clone()));
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(rows)
}

fn as_texts(value: &Value, path: &Path, line: usize, field: &str) -> Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .with_context(|| {
                format!(
                    "{}:{line}: field `{field}` must be a string or a list of strings",
                    path.display()
                )
            }),
        _ => bail!(
            "{}:{line}: field `{field}` must be a string or a list of strings",
            path.display()
        ),
    }
}

fn run_generation(args: GenerationArgs) -> Result<()> {
    let predictions = read_jsonl(&args.pred, &args.id_field, &args.text_field)?;
    let references: HashMap<String, (usize, Value)> =
        read_jsonl(&args.reference, &args.id_field, &args.text_field)?
            .into_iter()
            .map(|(id, line, v)| (id, (line, v)))
            .collect();
    let mut ids = Vec::new();
    let mut hyps = Vec::new();
    let mut refs = Vec::new();
    for (id, line, value) in &predictions {
        let Value::String(text) = value else {
            bail!(
                "{}:{line}: field `{}` must be a string",
                args.pred.display(),
                args.text_field
            );
        };
        let (ref_line, ref_value) = references.get(id).with_context(|| {
            format!(
                "{}:{line}: id {id} has no reference in {}",
                args.pred.display(),
                args.reference.display()
            )
        })?;
        ids.push(id.clone());
        hyps.push(text.clone());
        refs.push(as_texts(
            ref_value,
            &args.reference,
            *ref_line,
            &args.text_field,
        )?);
    }
    let stem = !args.no_stem;
    let names = [
        "exact_match",
        "token_f1",
        "bleu",
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "meteor",
    ];
    let bar = indicatif::ProgressBar::new(hyps.len() as u64);
    let per_item: Vec<BTreeMap<&str, f64>> = hyps
        .iter()
        .zip(&refs)
        .map(|(h, r)| {
            bar.inc(1);
            let rouge = rouge::rouge_multi(h, r, stem);
            BTreeMap::from([
                ("exact_match", squad::exact_match(h, r)),
                ("token_f1", squad::token_f1(h, r)),
                ("bleu", bleu::sentence_bleu(h, r).score),
                ("rouge1", rouge.rouge1.fmeasure),
                ("rouge2", rouge.rouge2.fmeasure),
                ("rougeL", rouge.rouge_l.fmeasure),
                ("rougeLsum", rouge.rouge_lsum.fmeasure),
                ("meteor", meteor::meteor(h, r)),
            ])
        })
        .collect();
    bar.finish_and_clear();
    let corpus = bleu::corpus_bleu(&hyps, &refs)?;
    let mean: BTreeMap<&str, f64> = names
        .iter()
        .map(|&n| {
            (
                n,
                per_item.iter().map(|m| m[n]).sum::<f64>() / per_item.len() as f64,
            )
        })
        .collect();
    let mut rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| vec![n.to_string(), format!("{:.4}", mean[n])])
        .collect();
    rows.push(vec!["corpus_bleu".into(), format!("{:.4}", corpus.score)]);
    print_table(
        &["metric (mean)".to_string(), format!("n={}", hyps.len())],
        &rows,
    );
    println!(
        "ROUGE F1 {} stemming; BLEU on sacrebleu's 0-100 scale; METEOR without WordNet synonyms",
        if stem { "with" } else { "without" }
    );
    if let Some(path) = &args.json {
        let items: Vec<Value> = ids
            .iter()
            .zip(&per_item)
            .map(|(id, m)| json!({"id": id, "scores": m}))
            .collect();
        write_json(
            path,
            &json!({"mean": mean, "corpus_bleu": corpus, "rouge_stemming": stem, "items": items}),
        )?;
    }
    Ok(())
}

fn run_classification(args: ClassificationArgs) -> Result<()> {
    let predictions = read_jsonl(&args.pred, &args.id_field, &args.label_field)?;
    let gold: HashMap<String, (usize, Value)> =
        read_jsonl(&args.gold, &args.id_field, &args.label_field)?
            .into_iter()
            .map(|(id, l, v)| (id, (l, v)))
            .collect();
    let label = |v: &Value, path: &Path, line: usize| -> Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => bail!(
                "{}:{line}: field `{}` must be a string, number or boolean",
                path.display(),
                args.label_field
            ),
        }
    };
    let mut y_true = Vec::new();
    let mut y_pred = Vec::new();
    for (id, line, value) in &predictions {
        let (gold_line, gold_value) = gold.get(id).with_context(|| {
            format!(
                "{}:{line}: id {id} has no gold label in {}",
                args.pred.display(),
                args.gold.display()
            )
        })?;
        y_pred.push(label(value, &args.pred, *line)?);
        y_true.push(label(gold_value, &args.gold, *gold_line)?);
    }
    let report = classification::classification_report(&y_true, &y_pred, args.zero_division)?;
    let header = ["label", "precision", "recall", "f1", "support"].map(String::from);
    let mut rows: Vec<Vec<String>> = report
        .labels
        .iter()
        .zip(&report.per_label)
        .zip(&report.support)
        .map(|((l, p), s)| {
            vec![
                l.clone(),
                format!("{:.4}", p.precision),
                format!("{:.4}", p.recall),
                format!("{:.4}", p.f1),
                s.to_string(),
            ]
        })
        .collect();
    for (name, p) in [
        ("micro avg", report.micro),
        ("macro avg", report.macro_avg),
        ("weighted avg", report.weighted),
    ] {
        rows.push(vec![
            name.into(),
            format!("{:.4}", p.precision),
            format!("{:.4}", p.recall),
            format!("{:.4}", p.f1),
            y_true.len().to_string(),
        ]);
    }
    print_table(&header, &rows);
    println!("accuracy {:.4}", report.accuracy);
    if let Some(path) = &args.json {
        write_json(path, &serde_json::to_value(&report)?)?;
    }
    Ok(())
}
