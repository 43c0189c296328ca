//! Exact resumption of a classification run: a LoRA run on bert-tiny (head dropout, encoder
//! dropout, shuffling, warm-up) is SIGKILLed after a step that no checkpoint holds, run again
//! from its folder, and must log the same per-step losses and validation metrics as an
//! uninterrupted run, and end with the same test scores and adapter.
//!
//! This binary is its own worker: with `RAGTUNE_CLASSIFY_WORKER` set it runs the recipe (and
//! with `RAGTUNE_CLASSIFY_HANG_AFTER` stands still after that step); without, it orchestrates.

mod common;

use ragtune_trainer::MetricsLog;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::Device;

const HANG_MARKER: &str = "hanging-after-step";

fn main() {
    match std::env::var_os("RAGTUNE_CLASSIFY_WORKER") {
        Some(dir) => worker(Path::new(&dir)),
        None => {
            let started = Instant::now();
            resume_after_sigkill_matches_uninterrupted_run();
            println!(
                "test resume_after_sigkill_matches_uninterrupted_run ... ok ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

fn worker(dir: &Path) {
    tch::set_num_threads(1);
    let name = std::env::var("RAGTUNE_CLASSIFY_NAME").unwrap();
    let hang_after: Option<u64> = std::env::var("RAGTUNE_CLASSIFY_HANG_AFTER")
        .ok()
        .map(|s| s.parse().unwrap());
    let source = dir.join("topics.jsonl");
    let toml = common::tiny_toml(
        &source,
        dir,
        &name,
        "[peft]\nmethod = \"lora\"\nr = 4\nlora_dropout = 0.1\nlr = 1e-2\n",
    )
    .replace("max_steps = 16", "max_steps = 14")
    .replace(
        "[trainer.checkpoint]\nevery_steps = 4",
        "[trainer.checkpoint]\nevery_steps = 5",
    )
    .replace(
        "[trainer.optimizer]",
        "[trainer.schedule]\nwarmup_steps = 3\n[trainer.optimizer]",
    );
    let config = common::config(&toml);
    let run_dir = config.run_dir();
    ragtune_classify::run_with_hook(&config, Device::Cpu, |step| {
        if Some(step.step) == hang_after {
            std::fs::write(run_dir.join(HANG_MARKER), step.step.to_string()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    })
    .unwrap();
}

fn spawn(dir: &Path, name: &str, hang_after: Option<u64>) -> std::process::Child {
    let log =
        std::fs::File::create(dir.join(format!("{name}-{}.stderr", hang_after.is_some()))).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env("RAGTUNE_CLASSIFY_WORKER", dir)
        .env("RAGTUNE_CLASSIFY_NAME", name)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(step) = hang_after {
        command.env("RAGTUNE_CLASSIFY_HANG_AFTER", step.to_string());
    }
    command.spawn().unwrap()
}

fn run_to_end(dir: &Path, name: &str) {
    let status = spawn(dir, name, None).wait().unwrap();
    assert!(
        status.success(),
        "worker {name} failed:\n{}",
        std::fs::read_to_string(dir.join(format!("{name}-false.stderr"))).unwrap_or_default()
    );
}

/// The records of `kind` without their timings.
fn records(dir: &Path, name: &str, kind: &str) -> Vec<Vec<(String, Value)>> {
    MetricsLog::read(&dir.join(name).join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == kind)
        .map(|r| {
            r.as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !["elapsed_s", "examples_per_s"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect()
}

fn resume_after_sigkill_matches_uninterrupted_run() {
    let dir: PathBuf = ragtune_testkit::scratch("classify-resume");
    common::topics_jsonl(&dir);
    run_to_end(&dir, "straight");

    // Checkpoints at 4 and 8 (evaluations that improve) and 5, 10 (every 5): step 11 is done
    // but in no checkpoint.
    let kill_at = 11;
    let mut child = spawn(&dir, "interrupted", Some(kill_at));
    let marker = dir.join("interrupted").join(HANG_MARKER);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "worker exited early ({status}):\n{}",
                std::fs::read_to_string(dir.join("interrupted-true.stderr")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "worker never reached step {kill_at}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    std::fs::remove_file(&marker).unwrap();
    assert!(!dir.join("interrupted/report.json").exists());

    run_to_end(&dir, "interrupted");
    let resumes = records(&dir, "interrupted", "resume");
    assert_eq!(resumes.len(), 1, "the second run did not resume");
    for kind in ["train", "eval"] {
        let straight = records(&dir, "straight", kind);
        let resumed = records(&dir, "interrupted", kind);
        assert!(!straight.is_empty());
        assert_eq!(
            straight.len(),
            resumed.len(),
            "{kind}: record counts differ"
        );
        for (a, b) in straight.iter().zip(&resumed) {
            // serde_json keeps f64s exactly: equal values are bitwise-equal losses.
            assert_eq!(a, b, "{kind} records differ");
        }
    }
    let report = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("report.json")).unwrap())
            .unwrap()
    };
    let (a, b) = (report("straight"), report("interrupted"));
    assert_eq!(a["test"], b["test"], "test scores differ");
    assert_eq!(a["best_step"], b["best_step"]);
    let adapter = |name: &str| {
        std::fs::read(
            dir.join(name)
                .join("model/adapter/adapter_model.safetensors"),
        )
        .unwrap()
    };
    assert_eq!(
        adapter("straight"),
        adapter("interrupted"),
        "final adapters differ"
    );
    let head = |name: &str| std::fs::read(dir.join(name).join("model/head.safetensors")).unwrap();
    assert_eq!(head("straight"), head("interrupted"), "final heads differ");
    std::fs::remove_dir_all(&dir).unwrap();
}
