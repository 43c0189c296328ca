//! The joint run as a page: the trajectory (validation retrieval and answers, and the collapse
//! watch, after every step), what each step cost, and start against end on the test split.

use crate::recipe::JointReport;
use crate::Result;
use ragtune_report::{
    Block, Cell, Interval, IntervalChart, LineChart, Report, Section, Series, Table,
};
use std::path::Path;

/// Writes `report.html`, `report.md` and `report.json` (the page) into `dir`.
pub fn write(report: &JointReport, dir: &Path) -> Result<()> {
    let page = Report {
        title: format!("Joint training: {}", report.method.name()),
        subtitle: format!(
            "retriever {} → {}; generator {}",
            report.start_retriever.display(),
            report.retriever.display(),
            match (&report.start_adapter, &report.adapter) {
                (_, Some(a)) => format!("adapter → {}", a.display()),
                (Some(a), None) => format!("adapter {} (frozen)", a.display()),
                (None, None) => "base (frozen)".into(),
            }
        ),
        sections: sections(report),
    };
    ragtune_report::write_report(&page, dir).map_err(|e| crate::JointError::Invalid(e.to_string()))
}

/// The report's sections, for this page and for the pipeline's.
pub fn sections(report: &JointReport) -> Vec<Section> {
    let mut sections = vec![trajectory(report), steps(report)];
    if let Some(test) = &report.test {
        let mut rows = Vec::new();
        let mut items = Vec::new();
        for (kind, table) in [("retrieval", &test.retrieval), ("answers", &test.answers)] {
            for (measure, c) in table {
                rows.push(vec![
                    Cell::text(format!("{measure} ({kind})")),
                    Cell::number(c.start, 4),
                    Cell::number(c.end, 4),
                    Cell::estimate(c.difference, c.ci_low, c.ci_high, 4),
                    Cell::number(c.p_value, 4),
                ]);
                items.push(Interval {
                    label: measure.clone(),
                    value: c.difference,
                    low: c.ci_low,
                    high: c.ci_high,
                });
            }
        }
        sections.push(Section {
            heading: "Test split: start against end".into(),
            blocks: vec![
                Block::paragraph(format!(
                    "{} judged queries and {} answered questions; the difference is end − start \
                     with a paired bootstrap interval.",
                    test.queries, test.questions
                )),
                Block::Table(Table {
                    caption: None,
                    header: ["measure", "start", "end", "difference [CI]", "p"]
                        .map(String::from)
                        .to_vec(),
                    rows,
                }),
                Block::IntervalChart(IntervalChart {
                    id: "joint-test".into(),
                    title: "End − start on the test split".into(),
                    y_label: "difference".into(),
                    items,
                }),
            ],
        });
    }
    sections
}

fn trajectory(report: &JointReport) -> Section {
    let measures: Vec<String> = report
        .trajectory
        .first()
        .map(|p| p.retrieval.keys().cloned().collect())
        .unwrap_or_default();
    let answers: Vec<String> = report
        .trajectory
        .iter()
        .flat_map(|p| p.answers.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut header = vec!["after".to_string()];
    header.extend(measures.iter().cloned());
    header.extend(answers.iter().map(|a| format!("val {a}")));
    header.extend(
        ["entropy of P", "distinct passages", "gold in top-k"]
            .map(String::from)
            .to_vec(),
    );
    let rows = report
        .trajectory
        .iter()
        .map(|p| {
            let mut row = vec![Cell::text(&p.label)];
            row.extend(
                measures
                    .iter()
                    .map(|m| Cell::number(p.retrieval.get(m).copied().unwrap_or(f64::NAN), 4)),
            );
            row.extend(
                answers
                    .iter()
                    .map(|a| Cell::number(p.answers.get(a).copied().unwrap_or(f64::NAN), 4)),
            );
            row.push(Cell::number(p.watch.entropy, 3));
            row.push(Cell::text(format!(
                "{} of {}",
                p.watch.distinct_passages, p.watch.corpus_passages
            )));
            row.push(Cell::number(p.watch.gold_in_top_k, 3));
            row
        })
        .collect();
    let series = |name: &str, value: &dyn Fn(&crate::evaluate::Point) -> Option<f64>| Series {
        name: name.into(),
        points: report
            .trajectory
            .iter()
            .enumerate()
            .filter_map(|(i, p)| value(p).map(|v| (i as f64, v)))
            .collect(),
    };
    let mut curves = vec![series("val nDCG@10", &|p| {
        p.retrieval.get("ndcg@10").copied()
    })];
    if answers.iter().any(|a| a == "f1") {
        curves.push(series("val F1", &|p| p.answers.get("f1").copied()));
    }
    curves.push(series("gold in top-k (train)", &|p| {
        Some(p.watch.gold_in_top_k)
    }));
    let labels: Vec<String> = report
        .trajectory
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{i} = {}", p.label))
        .collect();
    Section {
        heading: "Trajectory".into(),
        blocks: vec![
            Block::paragraph(
                "After every step: retrieval and answers on the validation split, and on the \
                 training questions the entropy of the retriever's distribution over its top-k \
                 (ln k is uniform), the distinct passages they retrieve and how often a gold \
                 passage is among them. Retrieval collapse shows as falling entropy and distinct \
                 passages.",
            ),
            Block::Table(Table {
                caption: None,
                header,
                rows,
            }),
            Block::LineChart(LineChart {
                id: "joint-trajectory".into(),
                title: "Trajectory".into(),
                x_label: labels.join(", "),
                y_label: "value".into(),
                series: curves,
            }),
        ],
    }
}

fn steps(report: &JointReport) -> Section {
    let rows = report
        .steps
        .iter()
        .map(|s| {
            let scoring = match &s.scoring {
                Some(st) => format!(
                    "{} triples, {} cached, {} scored ({:.0} tokens/s)",
                    st.triples,
                    st.reused,
                    st.computed,
                    st.tokens as f64 / st.seconds.max(1e-9)
                ),
                None => "—".into(),
            };
            let refresh = if s.refresh_seconds.is_empty() {
                "—".into()
            } else {
                format!(
                    "{} × {:.1} s",
                    s.refresh_seconds.len(),
                    s.refresh_seconds.iter().sum::<f64>() / s.refresh_seconds.len() as f64
                )
            };
            vec![
                Cell::text(&s.name),
                Cell::number(s.examples as f64, 0),
                Cell::number(s.steps as f64, 0),
                Cell::number(s.seconds, 1),
                Cell::text(scoring),
                Cell::text(refresh),
            ]
        })
        .collect();
    Section {
        heading: "Steps".into(),
        blocks: vec![Block::Table(Table {
            caption: None,
            header: [
                "step",
                "examples",
                "optimizer steps",
                "seconds",
                "LM scoring",
                "index refreshes",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        })],
    }
}
