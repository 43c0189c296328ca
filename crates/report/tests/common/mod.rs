//! A sample report with every block kind and the awkward cases the charts must survive.

use ragtune_report::*;

pub fn sample() -> Report {
    let steps = |f: &dyn Fn(f64) -> f64| (0..=40).map(|i| (i as f64 * 25.0, f(i as f64))).collect();
    Report {
        title: "Retriever fine-tuning: MiniLM on FanOutQA <dev>".into(),
        subtitle: "run `minilm-infonce` · 1000 steps · seed 13 · \"hard\" negatives & BM25".into(),
        sections: vec![
            Section {
                heading: "Summary".into(),
                blocks: vec![
                    Block::paragraph("InfoNCE with mined hard negatives beats the base model on every measure; the confidence intervals are 95% paired bootstrap intervals over queries.\n\nAll numbers are on the held-out dev split."),
                    Block::Table(Table {
                        caption: Some("Retrieval on dev (n = 310 queries)".into()),
                        header: vec!["model".into(), "nDCG@10".into(), "Recall@100".into(), "MRR@10".into(), "p (vs base)".into()],
                        rows: vec![
                            vec![Cell::text("base (all-MiniLM-L6-v2)"), Cell::estimate(0.7123, 0.6631, 0.7580, 3), Cell::estimate(0.901, 0.874, 0.926, 3), Cell::number(0.6841, 3), Cell::text("—")],
                            vec![Cell::text("fine-tuned | hard negatives"), Cell::estimate(0.8121, 0.7603, 0.8612, 3), Cell::estimate(0.947, 0.925, 0.966, 3), Cell::number(0.7902, 3), Cell::number(0.0004, 4)],
                        ],
                    }),
                ],
            },
            Section {
                heading: "Training curves".into(),
                blocks: vec![
                    Block::LineChart(LineChart {
                        id: "loss".into(),
                        title: "Training loss".into(),
                        x_label: "step".into(),
                        y_label: "InfoNCE loss".into(),
                        series: vec![
                            Series { name: "train".into(), points: steps(&|i| 2.3 * (-i / 12.0).exp() + 0.35 + 0.04 * (i * 1.7).sin()) },
                            Series { name: "dev".into(), points: (0..=10).map(|i| (i as f64 * 100.0, 2.0 * (-(i as f64) / 3.0).exp() + 0.5)).chain([(1100.0, f64::NAN)]).collect() },
                            Series { name: "base model (flat)".into(), points: vec![(0.0, 1.9), (1000.0, 1.9)] },
                        ],
                    }),
                    Block::LineChart(LineChart {
                        id: "lr".into(),
                        title: "Learning rate (warm-up, then linear decay)".into(),
                        x_label: "step".into(),
                        y_label: "learning rate".into(),
                        series: vec![Series { name: "lr".into(), points: steps(&|i| if i < 4.0 { 2e-5 * i / 4.0 } else { 2e-5 * (40.0 - i) / 36.0 }) }],
                    }),
                ],
            },
            Section {
                heading: "Confidence intervals".into(),
                blocks: vec![Block::IntervalChart(IntervalChart {
                    id: "ndcg".into(),
                    title: "nDCG@10 with 95% bootstrap intervals".into(),
                    y_label: "nDCG@10".into(),
                    items: vec![
                        Interval { label: "BM25".into(), value: 0.5512, low: 0.4980, high: 0.6020 },
                        Interval { label: "base".into(), value: 0.7123, low: 0.6631, high: 0.7580 },
                        Interval { label: "fine-tuned".into(), value: 0.8121, low: 0.7603, high: 0.8612 },
                        Interval { label: "fine-tuned + rerank".into(), value: 0.8390, low: 0.7915, high: 0.8833 },
                    ],
                })],
            },
            Section {
                heading: "Configuration".into(),
                blocks: vec![Block::code("toml", "[train]\nloss = \"infonce\"  # <symmetric> & 'scaled'\nlr = 2e-5\nsteps = 1000\n")],
            },
        ],
    }
}
