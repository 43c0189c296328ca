//! `ragtune pipeline` end to end on small real data (a slice of the bundled FAQ), bert-tiny as the
//! retriever and a tiny random Llama with SmolLM2's tokenizer as the generator: every stage runs,
//! the report opens in headless Chromium, unchanged stages are skipped, a killed retriever stage
//! resumes to the numbers of an uninterrupted run, and the same config runs on a dataset with its
//! own splits and (retriever only) on a BEIR folder.

mod common;

use common::{config, faq_slice, kill_once_saved, ragtune, record, run_ok, tiny_generator, JOINT};
use ragtune_testkit::{asset, scratch};
use serde_json::Value;

/// `stage   outcome   seconds` rows of the closing table.
fn outcomes(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("stage ") || !l.contains("outcome"))
        .skip(1)
        .take_while(|l| !l.starts_with("total"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

#[test]
fn every_stage_runs_reports_skips_and_takes_given_splits() {
    let dir = scratch("pipeline-full");
    let faq = faq_slice(&dir, 120);
    let generator = tiny_generator(&dir);
    let stages = format!("stages = [\"data\", \"retriever\", \"index\", \"generator-sft\", \"make-pairs\", \"dpo\", \"joint\", \"eval\", \"report\"]\n{JOINT}");
    let cfg = config(&dir, "full", &faq, Some(&generator), &stages);
    let cfg_arg = cfg.display().to_string();
    let first = run_ok(&mut ragtune(&["pipeline", "--config", &cfg_arg]));
    let run = dir.join("runs/full");
    let ran = outcomes(&first);
    assert_eq!(ran.len(), 9, "{first}");
    assert!(ran.iter().all(|(_, o)| o == "ran"), "{first}");

    // The 2×2: zero-shot and tuned retrievers, base and tuned (DPO) generators, CIs against the
    // first cell; and the joint (LSR) retriever with the tuned generator.
    let eval = record(&run, "eval");
    let cells = eval["outputs"]["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 5);
    assert_eq!(
        (
            cells[4]["retriever"].as_str(),
            cells[4]["generator"].as_str()
        ),
        (Some("joint"), Some("tuned"))
    );
    assert!(cells[0]["metrics"]["f1"]["ci_low"].is_null());
    for cell in &cells[1..] {
        for m in ["exact_match", "f1", "rouge_l", "groundedness"] {
            let x = &cell["metrics"][m];
            let (lo, d, hi) = (
                x["ci_low"].as_f64().unwrap(),
                x["difference"].as_f64().unwrap(),
                x["ci_high"].as_f64().unwrap(),
            );
            assert!(lo <= d && d <= hi, "{m}: {x}");
        }
        assert_eq!(cell["questions"], 8);
    }
    let retrieval = eval["outputs"]["retrieval"].as_array().unwrap();
    assert_eq!(retrieval.len(), 3);
    assert!(retrieval[2]["description"]
        .as_str()
        .unwrap()
        .contains("joint/model"));
    // The joint stage started from the tuned retriever and the DPO adapter.
    let joint = record(&run, "joint");
    assert!(joint["outputs"]["start_retriever"]
        .as_str()
        .unwrap()
        .ends_with("retriever/model"));
    assert!(joint["outputs"]["start_adapter"]
        .as_str()
        .unwrap()
        .ends_with("dpo/adapter"));
    assert_eq!(joint["outputs"]["trajectory"].as_array().unwrap().len(), 2);
    assert!(retrieval[1]["description"]
        .as_str()
        .unwrap()
        .contains("retriever/model"));
    // The generator trained on the tuned retriever's passages.
    let sft = record(&run, "generator-sft");
    assert!(sft["outputs"]["retriever"]
        .as_str()
        .unwrap()
        .contains("retriever/model"));
    assert!(record(&run, "dpo")["outputs"]["adapter"]
        .as_str()
        .unwrap()
        .ends_with("dpo/adapter"));
    assert!(
        record(&run, "retriever")["peak_rss_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );

    // The report: Markdown with the same tables, and an HTML page checked in a real browser.
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("retriever × generator")
            && md.contains("| tuned | tuned |")
            && md.contains("Joint (lsr): Trajectory"),
        "{md}"
    );
    let html = run.join("report.html");
    let screenshot = run.join("report").join("browser-test.png");
    let check = ragtune_report::browser::check_in_chromium(&html, &screenshot).expect(
        "Chromium checks the report (install Debian's `chromium`; `cargo xtask setup` does)",
    );
    assert!(check.figures.len() >= 6, "{check:?}");
    for f in &check.figures {
        assert!(
            f.width > 0.0 && f.height > 0.0,
            "figure {} has no size: {check:?}",
            f.id
        );
    }
    assert!(
        check.network_requests.is_empty() && check.resources.is_empty(),
        "{check:?}"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);

    // Unchanged: every stage is skipped, and the records stay as they were.
    let before = record(&run, "retriever");
    let second = run_ok(&mut ragtune(&["pipeline", "--config", &cfg_arg]));
    assert!(
        outcomes(&second).iter().all(|(_, o)| o == "skipped"),
        "{second}"
    );
    assert_eq!(record(&run, "retriever"), before);

    // A changed eval setting reruns eval and report only; --only reruns one stage.
    let third = run_ok(&mut ragtune(&[
        "pipeline",
        "--config",
        &cfg_arg,
        "--set",
        "eval.questions=4",
    ]));
    for (stage, outcome) in outcomes(&third) {
        let expected = if stage == "eval" || stage == "report" {
            "ran"
        } else {
            "skipped"
        };
        assert_eq!(outcome, expected, "{stage}: {third}");
    }
    let fourth = run_ok(&mut ragtune(&[
        "pipeline",
        "--config",
        &cfg_arg,
        "--set",
        "eval.questions=4",
        "--only",
        "report",
    ]));
    for (stage, outcome) in outcomes(&fourth) {
        assert_eq!(
            outcome,
            if stage == "report" { "ran" } else { "kept" },
            "{stage}: {fourth}"
        );
    }

    // The same config with only [data] changed: the data stage's own folders, as a dataset that
    // brings train/, val/ and test/ (each with corpus, queries, qrels and qa).
    let given = config(&dir, "given", &run.join("data"), Some(&generator), "");
    run_ok(&mut ragtune(&[
        "pipeline",
        "--config",
        &given.display().to_string(),
    ]));
    let data = record(&dir.join("runs/given"), "data");
    assert_eq!(data["outputs"]["how"]["splits"], "given", "{data}");
    assert_eq!(
        data["outputs"]["counts"],
        record(&run, "data")["outputs"]["counts"]
    );
    assert_eq!(
        record(&dir.join("runs/given"), "eval")["outputs"]["cells"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn a_killed_retriever_stage_resumes_to_the_numbers_of_an_uninterrupted_run() {
    let dir = scratch("pipeline-resume");
    let faq = faq_slice(&dir, 120);
    let whole = config(&dir, "whole", &faq, None, "");
    run_ok(&mut ragtune(&[
        "pipeline",
        "--config",
        &whole.display().to_string(),
    ]));

    let killed = config(&dir, "killed", &faq, None, "");
    let mut child = ragtune(&["pipeline", "--config", &killed.display().to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let checkpoints = dir.join("runs/killed/retriever/checkpoints");
    kill_once_saved(&mut child, &checkpoints);
    let interrupted = record(&dir.join("runs/killed"), "retriever");
    assert_eq!(
        interrupted["status"], "running",
        "killed too late: {interrupted}"
    );

    let resumed = run_ok(&mut ragtune(&[
        "pipeline",
        "--config",
        &killed.display().to_string(),
    ]));
    assert!(resumed.contains("retriever      resuming"), "{resumed}");
    let a = record(&dir.join("runs/whole"), "retriever");
    let b = record(&dir.join("runs/killed"), "retriever");
    assert_eq!(
        a["outputs"]["report"]["test_exact"],
        b["outputs"]["report"]["test_exact"]
    );
    assert_eq!(a["outputs"]["steps"], b["outputs"]["steps"]);
    let a = record(&dir.join("runs/whole"), "eval");
    let b = record(&dir.join("runs/killed"), "eval");
    for row in 0..2 {
        let measures = |r: &Value| r["outputs"]["retrieval"][row]["measures"].clone();
        assert!(measures(&a).is_object());
        assert_eq!(measures(&a), measures(&b), "retriever row {row}");
    }
}

#[test]
fn a_retriever_only_config_runs_on_a_beir_folder() {
    let dir = scratch("pipeline-beir");
    let text = std::fs::read_to_string(asset("zaragoza-faq").join("faq-en.jsonl")).unwrap();
    let beir = dir.join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    let (mut corpus, mut queries) = (String::new(), String::new());
    let mut qrels = [String::new(), String::new(), String::new()];
    for (i, line) in text.lines().take(90).enumerate() {
        let row: Value = serde_json::from_str(line).unwrap();
        let id = row["id"].to_string();
        corpus.push_str(
            &serde_json::json!({"_id": format!("d{id}"), "title": "", "text": row["a"]})
                .to_string(),
        );
        corpus.push('\n');
        queries
            .push_str(&serde_json::json!({"_id": format!("q{id}"), "text": row["q"]}).to_string());
        queries.push('\n');
        let split = [0, 0, 0, 1, 2][i % 5];
        qrels[split].push_str(&format!("q{id}\td{id}\t1\n"));
    }
    std::fs::write(beir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(beir.join("queries.jsonl"), queries).unwrap();
    for (name, body) in ["train", "dev", "test"].iter().zip(&qrels) {
        std::fs::write(
            beir.join(format!("qrels/{name}.tsv")),
            format!("query-id\tcorpus-id\tscore\n{body}"),
        )
        .unwrap();
    }
    let cfg = config(
        &dir,
        "beir",
        &beir,
        None,
        "stages = [\"data\", \"retriever\", \"index\", \"eval\", \"report\"]",
    );
    let out = run_ok(&mut ragtune(&[
        "pipeline",
        "--config",
        &cfg.display().to_string(),
    ]));
    assert!(out.contains("report:"), "{out}");
    let run = dir.join("runs/beir");
    let data = record(&run, "data");
    assert_eq!(data["outputs"]["how"]["layout"], "beir", "{data}");
    assert_eq!(data["outputs"]["counts"]["test"]["queries"], 18);
    let eval = record(&run, "eval");
    assert_eq!(eval["outputs"]["retrieval"].as_array().unwrap().len(), 2);
    assert!(eval["outputs"]["cells"].as_array().unwrap().is_empty());
}

#[test]
fn config_mistakes_fail_before_anything_loads_and_name_the_key() {
    let dir = scratch("pipeline-config");
    let faq = faq_slice(&dir, 30);
    let good = std::fs::read_to_string(config(&dir, "cfg", &faq, None, "")).unwrap();
    let cases = [
        (
            good.replace("epochs = 4.0", "epocs = 4.0"),
            "did you mean `epochs`",
        ),
        (
            good.replace(
                "[retriever.model]",
                "[retriever.data]\nsource = \"x\"\n\n[retriever.model]",
            ),
            "filled in by the pipeline",
        ),
        (
            good.replace(
                "name = \"cfg\"",
                "name = \"cfg\"\nstages = [\"data\", \"generator-sft\"]",
            ),
            "no [generator] table",
        ),
        (
            format!("{good}\n[index]\nserch = \"exact\"\n"),
            "did you mean `search`",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = ragtune(&["pipeline", "--config", &path.display().to_string()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(expected),
            "case {i}: expected {expected:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains(&path.display().to_string()),
            "case {i} names the file:\n{stderr}"
        );
    }
    assert!(
        !dir.join("runs").exists(),
        "nothing may run before the config is valid"
    );
    let out = ragtune(&[
        "pipeline",
        "--config",
        &dir.join("cfg.toml").display().to_string(),
        "--set",
        "eval",
    ])
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected section.key=value"));
}
