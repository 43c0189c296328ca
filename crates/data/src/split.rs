//! Deterministic, seeded train/val/test splits BY QUERY, grouped by normalized question text so that
//! duplicated questions always land together, optionally stratified by a label. The leakage check
//! (no question text in two splits) runs on every split and fails loudly.

use crate::dataset::Dataset;
use crate::text::{question_key, splitmix64, stable_hash};
use crate::{DataError, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

#[derive(Debug, Clone)]
pub struct SplitConfig {
    pub seed: u64,
    /// Fractions of items for train, val, test; they must sum to 1.
    pub fractions: [f64; 3],
    /// Balance each label's share across the splits (items without a label form their own stratum).
    pub stratify: bool,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            seed: 42,
            fractions: [0.8, 0.1, 0.1],
            stratify: false,
        }
    }
}

/// One thing to split: a query (or QA id, or preference id) with its text and optional label.
#[derive(Debug, Clone)]
pub struct SplitItem {
    pub id: String,
    pub text: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelBalance {
    pub label: String,
    /// Items per split, in the order of [`SPLIT_NAMES`].
    pub counts: [usize; 3],
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub seed: u64,
    pub fractions: [f64; 3],
    pub stratified: bool,
    pub items: usize,
    /// Groups of items sharing one normalized question text; a group is never divided.
    pub groups: usize,
    pub groups_with_duplicates: usize,
    pub sizes: [usize; 3],
    pub balance: Vec<LabelBalance>,
    pub leakage_check: &'static str,
}

/// Which split (index into [`SPLIT_NAMES`]) each item id went to.
#[derive(Debug, Clone)]
pub struct SplitAssignment {
    pub split_of: HashMap<String, usize>,
    pub report: SplitReport,
}

/// Splits `items` by group of equal normalized question text.
pub fn split_items(items: &[SplitItem], config: &SplitConfig) -> Result<SplitAssignment> {
    let sum: f64 = config.fractions.iter().sum();
    if (sum - 1.0).abs() > 1e-6 || config.fractions.iter().any(|f| *f < 0.0) {
        return Err(DataError::Invalid(format!(
            "split fractions {:?} must be non-negative and sum to 1",
            config.fractions
        )));
    }
    // Group by question key; BTreeMap so iteration order never depends on hashing.
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(question_key(&item.text)).or_default().push(i);
    }
    let label_of = |members: &[usize]| -> String {
        if !config.stratify {
            return String::new();
        }
        // The most common label of the group (ties to the smallest), so duplicates agree.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for &m in members {
            *counts
                .entry(items[m].label.as_deref().unwrap_or(""))
                .or_default() += 1;
        }
        let top = counts.values().copied().max().unwrap_or(0);
        counts
            .into_iter()
            .find(|(_, c)| *c == top)
            .map(|(l, _)| l.to_owned())
            .unwrap_or_default()
    };
    // label -> (shuffle order, question key, member indices) of each group.
    type Strata<'a> = BTreeMap<String, Vec<(u64, &'a String, &'a Vec<usize>)>>;
    let mut strata: Strata<'_> = BTreeMap::new();
    for (key, members) in &groups {
        let order = splitmix64(stable_hash(key.as_bytes()) ^ splitmix64(config.seed));
        strata
            .entry(label_of(members))
            .or_default()
            .push((order, key, members));
    }
    let mut split_of = HashMap::with_capacity(items.len());
    for groups in strata.values_mut() {
        groups.sort();
        let total: usize = groups.iter().map(|g| g.2.len()).sum();
        let mut filled = [0usize; 3];
        for (_, _, members) in groups.iter() {
            // Give the group to the split furthest below its target share of this stratum.
            let pick = (0..3)
                .filter(|&s| config.fractions[s] > 0.0)
                .max_by(|&a, &b| {
                    let deficit = |s: usize| config.fractions[s] * total as f64 - filled[s] as f64;
                    deficit(a).total_cmp(&deficit(b)).then(b.cmp(&a))
                })
                .unwrap_or(0);
            filled[pick] += members.len();
            for &m in members.iter() {
                split_of.insert(items[m].id.clone(), pick);
            }
        }
    }
    let mut sizes = [0usize; 3];
    let mut balance: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for item in items {
        let s = split_of[&item.id];
        sizes[s] += 1;
        balance
            .entry(item.label.clone().unwrap_or_else(|| "(none)".into()))
            .or_default()[s] += 1;
    }
    check_leakage(items, &split_of)?;
    Ok(SplitAssignment {
        split_of,
        report: SplitReport {
            seed: config.seed,
            fractions: config.fractions,
            stratified: config.stratify,
            items: items.len(),
            groups: groups.len(),
            groups_with_duplicates: groups.values().filter(|m| m.len() > 1).count(),
            sizes,
            balance: balance
                .into_iter()
                .map(|(label, counts)| LabelBalance { label, counts })
                .collect(),
            leakage_check: "passed",
        },
    })
}

/// Fails if any normalized question text is assigned to two different splits.
pub fn check_leakage(items: &[SplitItem], split_of: &HashMap<String, usize>) -> Result<()> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in items {
        let Some(&s) = split_of.get(&item.id) else {
            continue;
        };
        match seen.entry(question_key(&item.text)) {
            std::collections::hash_map::Entry::Occupied(e) if *e.get() != s => {
                return Err(DataError::Leakage {
                    text: item.text.clone(),
                    first: SPLIT_NAMES[*e.get()].into(),
                    second: SPLIT_NAMES[s].into(),
                })
            }
            std::collections::hash_map::Entry::Occupied(_) => {}
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(s);
            }
        }
    }
    Ok(())
}

/// The items of a dataset: queries, QA examples, triplets (by query id) and preferences, labelled
/// from the QA table where it has a label.
pub fn dataset_items(ds: &Dataset) -> Vec<SplitItem> {
    let labels: HashMap<&str, &str> = ds
        .qa
        .iter()
        .filter_map(|q| q.label.as_deref().map(|l| (q.id.as_str(), l)))
        .collect();
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    let mut push = |id: &str, text: &str| {
        if seen.insert(id.to_owned()) {
            items.push(SplitItem {
                id: id.to_owned(),
                text: text.to_owned(),
                label: labels.get(id).map(|l| (*l).to_owned()),
            });
        }
    };
    ds.queries.iter().for_each(|q| push(&q.query_id, &q.text));
    ds.qa.iter().for_each(|q| push(&q.id, &q.question));
    ds.triplets.iter().for_each(|t| push(&t.query_id, &t.query));
    ds.preferences.iter().for_each(|p| push(&p.id, &p.prompt));
    items
}

/// Splits a whole dataset by query. Each split keeps the full corpus (retrieval needs every passage)
/// and the rows of the other tables that belong to its queries.
pub fn split_dataset(ds: &Dataset, config: &SplitConfig) -> Result<([Dataset; 3], SplitReport)> {
    let items = dataset_items(ds);
    let assignment = split_items(&items, config)?;
    let of = |id: &str| assignment.split_of.get(id).copied().unwrap_or(0);
    let mut out: [Dataset; 3] = Default::default();
    for part in out.iter_mut() {
        part.corpus = ds.corpus.clone();
    }
    for q in &ds.queries {
        out[of(&q.query_id)].queries.push(q.clone());
    }
    for q in &ds.qrels {
        out[of(&q.query_id)].qrels.push(q.clone());
    }
    for q in &ds.qa {
        out[of(&q.id)].qa.push(q.clone());
    }
    for t in &ds.triplets {
        out[of(&t.query_id)].triplets.push(t.clone());
    }
    for p in &ds.preferences {
        out[of(&p.id)].preferences.push(p.clone());
    }
    Ok((out, assignment.report))
}
