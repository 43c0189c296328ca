//! MS MARCO-style text triples: `query \t positive passage \t negative passage` per line, no ids.
//! Ids are derived from the normalized text (`q` / `d` + 16 hex of SHA-256), so equal texts share an
//! id across lines. Yields triplets plus the corpus, queries and qrels they imply.

use super::{for_each_line_chunk, open, parse_chunk, text_id, ImportReport};
use crate::dataset::Dataset;
use crate::records::{Doc, MiningProvenance, Negative, Qrel, Query, Triplet};
use crate::text::normalize_text;
use crate::{DataError, Location, Result};
use std::collections::HashSet;
use std::path::Path;

/// Parses one triple line; `None` when a text is empty after normalization.
pub fn parse_triple_line(path: &Path, line: usize, text: &str) -> Result<Option<Triplet>> {
    let cols: Vec<&str> = text.split('\t').collect();
    if cols.len() != 3 {
        let field = ["query", "positive", "negative"]
            .get(cols.len())
            .copied()
            .unwrap_or("negative");
        return Err(DataError::bad(
            path,
            Location::Line(line),
            Some(field),
            format!(
                "expected 3 tab-separated columns (query, positive, negative), found {}",
                cols.len()
            ),
        ));
    }
    let (q, p, n) = (
        normalize_text(cols[0]),
        normalize_text(cols[1]),
        normalize_text(cols[2]),
    );
    if q.is_empty() || p.is_empty() || n.is_empty() {
        return Ok(None);
    }
    Ok(Some(Triplet {
        query_id: text_id("q", &q),
        positive_id: text_id("d", &p),
        negatives: vec![Negative {
            doc_id: text_id("d", &n),
            text: n,
            score: f32::NAN,
        }],
        query: q,
        positive_text: p,
        provenance: MiningProvenance {
            model: None,
            index: None,
            parameters: Some(r#"{"source":"msmarco-triples"}"#.into()),
        },
        positive_score: None,
        scored_by: None,
    }))
}

pub fn import_msmarco_triples(path: &Path) -> Result<(Dataset, ImportReport)> {
    let mut report = ImportReport::new("msmarco", path);
    let mut ds = Dataset::default();
    let (mut docs, mut queries, mut qrels) = (HashSet::new(), HashSet::new(), HashSet::new());
    for_each_line_chunk(open(path)?, path, |chunk| {
        let parsed = parse_chunk(path, &chunk, |line, text| {
            parse_triple_line(path, line, text)
        })?;
        report.rows_read += parsed.len();
        for t in parsed {
            let Some(t) = t else {
                report.drop_empty("triplets");
                continue;
            };
            if queries.insert(t.query_id.clone()) {
                ds.queries.push(Query {
                    query_id: t.query_id.clone(),
                    text: t.query.clone(),
                });
            }
            if qrels.insert((t.query_id.clone(), t.positive_id.clone())) {
                ds.qrels.push(Qrel {
                    query_id: t.query_id.clone(),
                    doc_id: t.positive_id.clone(),
                    relevance: 1,
                });
            }
            for (id, text) in std::iter::once((&t.positive_id, &t.positive_text))
                .chain(t.negatives.iter().map(|n| (&n.doc_id, &n.text)))
            {
                if docs.insert(id.clone()) {
                    ds.corpus.push(Doc {
                        doc_id: id.clone(),
                        title: String::new(),
                        text: text.clone(),
                        metadata: None,
                    });
                }
            }
            ds.triplets.push(t);
        }
        Ok(())
    })?;
    for (table, n) in [
        ("corpus", ds.corpus.len()),
        ("queries", ds.queries.len()),
        ("qrels", ds.qrels.len()),
        ("triplets", ds.triplets.len()),
    ] {
        report.written.insert(table.into(), n);
    }
    report
        .notes
        .push("negative scores are NaN: the triples file carries no miner scores".into());
    Ok((ds, report))
}
