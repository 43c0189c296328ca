//! Rendering without a browser: escaping, Markdown tables, number formats, and that the HTML loads
//! nothing from anywhere.

mod common;

use ragtune_report::*;

fn tiny(blocks: Vec<Block>) -> Report {
    Report {
        title: "t".into(),
        subtitle: String::new(),
        sections: vec![Section {
            heading: "s".into(),
            blocks,
        }],
    }
}

#[test]
fn html_escapes_every_text_field() {
    let evil = r#"<script>alert("x")</script> & 'q'"#;
    let report = Report {
        title: evil.into(),
        subtitle: evil.into(),
        sections: vec![Section {
            heading: evil.into(),
            blocks: vec![
                Block::paragraph(evil),
                Block::Table(Table {
                    caption: Some(evil.into()),
                    header: vec![evil.into()],
                    rows: vec![vec![Cell::text(evil)]],
                }),
                Block::code(evil, evil),
                Block::LineChart(LineChart {
                    id: evil.into(),
                    title: evil.into(),
                    x_label: evil.into(),
                    y_label: evil.into(),
                    series: vec![Series {
                        name: evil.into(),
                        points: vec![(0.0, 1.0), (1.0, 2.0)],
                    }],
                }),
                Block::IntervalChart(IntervalChart {
                    id: evil.into(),
                    title: evil.into(),
                    y_label: evil.into(),
                    items: vec![Interval {
                        label: evil.into(),
                        value: 0.5,
                        low: 0.4,
                        high: 0.6,
                    }],
                }),
            ],
        }],
    };
    let html = render_html(&report);
    // The only <script> is the page's own measuring script.
    assert_eq!(html.matches("<script>").count(), 1, "{html}");
    assert!(!html.contains("alert(\"x\")"));
    assert!(!html.contains("'q'"));
    assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"));
}

#[test]
fn estimate_cells_show_value_and_interval() {
    assert_eq!(
        Cell::estimate(0.8121, 0.7603, 0.8612, 3).display(),
        "0.812 [0.760, 0.861]"
    );
    assert_eq!(Cell::number(0.5, 2).display(), "0.50");
    let report = tiny(vec![Block::Table(Table {
        caption: None,
        header: vec!["m".into()],
        rows: vec![vec![Cell::estimate(0.8121, 0.7603, 0.8612, 3)]],
    })]);
    assert!(render_html(&report).contains("0.812 [0.760, 0.861]"));
    assert!(render_markdown(&report).contains("| 0.812 [0.760, 0.861] |"));
}

#[test]
fn markdown_tables_have_the_right_columns_and_escape_pipes() {
    let md = render_markdown(&common::sample());
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("| model"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), 4, "{md}");
    assert_eq!(
        table[0],
        "| model | nDCG@10 | Recall@100 | MRR@10 | p (vs base) |"
    );
    assert_eq!(table[1], "| --- | ---: | ---: | ---: | --- |");
    // `fine-tuned | hard negatives` keeps its pipe escaped, so each row still has 5 cells.
    for row in &table {
        let cells = row.replace("\\|", "").matches('|').count() - 1;
        assert_eq!(cells, 5, "{row}");
    }
    assert!(
        table[3].starts_with("| fine-tuned \\| hard negatives | 0.812 [0.760, 0.861] |"),
        "{}",
        table[3]
    );
    // Interval charts become label | value | 95% CI tables; line charts one line per series.
    assert!(md.contains("| label | value | 95% CI |"), "{md}");
    assert!(
        md.contains("| fine-tuned | 0.812 | [0.760, 0.861] |"),
        "{md}"
    );
    assert!(
        md.contains("- train: 41 points, last value at x=1000: "),
        "{md}"
    );
    assert!(
        md.contains("- dev: 11 points, last value at x=1000: 0.5713"),
        "{md}"
    );
    assert!(md.contains("```toml\n[train]"), "{md}");
    // `<dev>` in the title stays visible on GitHub instead of vanishing as an unknown tag.
    assert!(
        md.starts_with("# Retriever fine-tuning: MiniLM on FanOutQA \\<dev>\n"),
        "{md}"
    );
}

#[test]
fn html_references_no_remote_resource() {
    let html = render_html(&common::sample());
    let svg_ns = "xmlns=\"http://www.w3.org/2000/svg\"";
    let stripped = html.replace(svg_ns, "");
    assert!(html.contains(svg_ns));
    assert!(
        !stripped.contains("http://") && !stripped.contains("https://"),
        "a remote URL outside the SVG namespace"
    );
    assert!(!stripped.contains("//"), "no protocol-relative URLs either");
    for attr in ["src=", "href=\"http", "@import", "url("] {
        assert!(!stripped.contains(attr), "{attr} found");
    }
}

#[test]
fn every_chart_is_a_sized_figure() {
    let html = render_html(&common::sample());
    for id in ["loss", "lr", "ndcg"] {
        let at = html
            .find(&format!(
                "<figure class=\"figure\" data-figure-id=\"{id}\">"
            ))
            .unwrap_or_else(|| panic!("figure {id}"));
        let svg = &html[at..html[at..].find("</figure>").unwrap() + at];
        assert!(
            svg.contains("<svg")
                && svg.contains(" width=\"860\"")
                && svg.contains(" viewBox=\"0 0 860 "),
            "{svg}"
        );
        assert!(svg.contains("<figcaption>"));
    }
    assert_eq!(
        html.matches("<polyline").count(),
        4,
        "train, dev, the flat base line and lr"
    );
}

#[test]
fn charts_survive_empty_single_flat_and_non_finite_data() {
    let charts = vec![
        LineChart {
            id: "empty".into(),
            title: "e".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![],
        },
        LineChart {
            id: "nan".into(),
            title: "n".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)],
            }],
        },
        LineChart {
            id: "one".into(),
            title: "o".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(3.0, 0.5)],
            }],
        },
        LineChart {
            id: "flat".into(),
            title: "f".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)],
            }],
        },
    ];
    let mut blocks: Vec<Block> = charts.into_iter().map(Block::LineChart).collect();
    blocks.push(Block::IntervalChart(IntervalChart {
        id: "ie".into(),
        title: "ie".into(),
        y_label: String::new(),
        items: vec![],
    }));
    blocks.push(Block::IntervalChart(IntervalChart {
        id: "inan".into(),
        title: "inan".into(),
        y_label: String::new(),
        items: vec![
            Interval {
                label: "a".into(),
                value: f64::NAN,
                low: f64::NAN,
                high: 1.0,
            },
            Interval {
                label: "b".into(),
                value: 2.0,
                low: 2.0,
                high: 2.0,
            },
        ],
    }));
    let html = render_html(&tiny(blocks));
    assert!(
        !html.contains("NaN") && !html.contains("inf\""),
        "non-finite numbers leaked into the SVG"
    );
    assert_eq!(
        html.matches(">no data</text>").count(),
        3,
        "empty, all-NaN line charts and the empty interval chart"
    );
    assert!(html.contains("<circle"), "a single point shows as a dot");
    let md = render_markdown(&tiny(vec![Block::LineChart(LineChart {
        id: "e".into(),
        title: "e".into(),
        x_label: String::new(),
        y_label: String::new(),
        series: vec![Series {
            name: "a".into(),
            points: vec![(f64::NAN, 1.0)],
        }],
    })]));
    assert!(md.contains("- a: no data"), "{md}");
}

#[test]
fn write_report_writes_three_files_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let report = common::sample();
    write_report(&report, dir.path()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["report.html", "report.json", "report.md"],
        "no temp files left behind"
    );
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    // NaN comes back from JSON's null as NaN (never equal to itself), and serde_json's default float
    // parser may move a last bit, so compare what a reader sees: the rendered outputs.
    assert_eq!(render_markdown(&back), render_markdown(&report));
    assert_eq!(render_html(&back), render_html(&report));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("report.md")).unwrap(),
        render_markdown(&report)
    );
}

#[test]
fn json_uses_kind_tags() {
    let json = serde_json::to_value(Block::Table(Table {
        caption: None,
        header: vec![],
        rows: vec![vec![Cell::number(1.0, 0)]],
    }))
    .unwrap();
    assert_eq!(json["kind"], "table");
    assert_eq!(json["rows"][0][0]["kind"], "number");
    let json = serde_json::to_value(Block::paragraph("x")).unwrap();
    assert_eq!(json, serde_json::json!({"kind": "paragraph", "text": "x"}));
}
