//! Exact resumption: a toy regression run (MLP with dropout, shuffling, AdamW, warm-up + cosine,
//! gradient accumulation, bf16 autocast, the caller's RNG in the loss) is SIGKILLed mid-epoch
//! after a checkpoint, resumed, and must log the same per-step losses as an uninterrupted run.
//!
//! This binary is its own worker: with `RAGTUNE_TOY_RUNS` set it trains (the recipe below, read
//! top to bottom); without, it orchestrates the runs as child processes.

use ragtune_trainer::{Metrics, MetricsLog, Precision, ScheduleKind, Trainer, TrainerConfig};
use rand::Rng;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

const HANG_MARKER: &str = "hanging-after-step";

fn main() {
    match std::env::var_os("RAGTUNE_TOY_RUNS") {
        Some(runs) => worker(Path::new(&runs)),
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

// ---------------------------------------------------------------- the recipe (worker) -----------

fn config(runs: &Path, name: &str) -> TrainerConfig {
    let toml = format!(
        r#"
        run_name = "{name}"
        runs_dir = "{runs}"
        seed = 1234
        batch_size = 8
        grad_accum_steps = 2
        epochs = 3.0
        max_grad_norm = 1.0
        precision = "bf16"
        progress = false

        [optimizer]
        lr = 1e-2
        weight_decay = 0.01

        [schedule]
        kind = "cosine"
        warmup_steps = 5

        [eval]
        every_steps = 8
        metric = "mse"
        higher_is_better = false
        patience = 100

        [checkpoint]
        every_steps = 10
        keep_last = 2
        "#,
        runs = runs.display()
    );
    let config = TrainerConfig::from_toml_str(&toml, Path::new("toy.toml")).expect("toy config");
    assert_eq!(config.schedule.kind, ScheduleKind::Cosine);
    assert_eq!(config.precision, Precision::Bf16);
    config
}

fn worker(runs: &Path) {
    tch::set_num_threads(1);
    let name = std::env::var("RAGTUNE_TOY_NAME").expect("RAGTUNE_TOY_NAME");
    let hang_after: Option<u64> = std::env::var("RAGTUNE_TOY_HANG_AFTER")
        .ok()
        .map(|s| s.parse().unwrap());
    let config = config(runs, &name);

    // Data: y = sin(x·w) + noise, 260 training rows (33 micro-batches an epoch, so optimizer steps
    // straddle epoch ends) and 64 validation rows.
    tch::manual_seed(0);
    let w = Tensor::randn([8, 1], (Kind::Float, Device::Cpu));
    let make = |n: i64| {
        let x = Tensor::randn([n, 8], (Kind::Float, Device::Cpu));
        let y: Tensor =
            x.matmul(&w).sin() + Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) * 0.05;
        (x, y)
    };
    let (train_x, train_y) = make(260);
    let (valid_x, valid_y) = make(64);

    // Model: 8 -> 32 -> 1 with dropout.
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let hidden = nn::linear(&root / "layers" / "0", 8, 32, Default::default());
    let head = nn::linear(&root / "head", 32, 1, Default::default());
    let forward =
        |x: &Tensor, train: bool| head.forward(&hidden.forward(x).gelu("none").dropout(0.2, train));

    let mut trainer = Trainer::new(config, &vs, 260).expect("trainer");
    while !trainer.finished() {
        trainer
            .train_step(
                |batch| {
                    let index = Tensor::from_slice(
                        &batch.indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    );
                    // A random target shift from the checkpointed RNG, so that resuming must restore it too.
                    let jitter: f64 = batch.rng.gen_range(-0.01..0.01);
                    let prediction =
                        forward(&train_x.index_select(0, &index), true).to_kind(Kind::Float);
                    let target = train_y.index_select(0, &index) + jitter;
                    Ok::<_, tch::TchError>(prediction.mse_loss(&target, tch::Reduction::Mean))
                },
                || {
                    let prediction = forward(&valid_x, false).to_kind(Kind::Float);
                    let mse = prediction
                        .mse_loss(&valid_y, tch::Reduction::Mean)
                        .double_value(&[]);
                    Ok(Metrics::from([("mse".to_string(), mse)]))
                },
            )
            .expect("train step");
        if Some(trainer.step()) == hang_after {
            // Stand still with unsaved progress, for the parent to SIGKILL.
            std::fs::write(
                trainer.run_dir().join(HANG_MARKER),
                trainer.step().to_string(),
            )
            .unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
    trainer.finish().expect("finish");
}

// ---------------------------------------------------------------- the test (parent) -------------

fn spawn_worker(runs: &Path, name: &str, hang_after: Option<u64>) -> std::process::Child {
    let log = std::fs::File::create(runs.join(format!("{name}-{}.stderr", hang_after.is_some())))
        .unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env("RAGTUNE_TOY_RUNS", runs)
        .env("RAGTUNE_TOY_NAME", name)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(step) = hang_after {
        command.env("RAGTUNE_TOY_HANG_AFTER", step.to_string());
    }
    command.spawn().expect("start worker")
}

fn run_to_end(runs: &Path, name: &str) {
    let status = spawn_worker(runs, name, None).wait().unwrap();
    assert!(
        status.success(),
        "worker {name} failed:\n{}",
        std::fs::read_to_string(runs.join(format!("{name}-false.stderr"))).unwrap_or_default()
    );
}

fn records(runs: &Path, name: &str, kind: &str) -> Vec<Value> {
    MetricsLog::read(&runs.join(name).join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == kind)
        .collect()
}

/// The fields of a train or eval record that the computation determines (not the timings).
fn trajectory(records: &[Value]) -> Vec<Vec<(String, Value)>> {
    records
        .iter()
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

fn checkpoint_steps(run: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .strip_prefix("step-")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort();
    steps
}

fn resume_after_sigkill_matches_uninterrupted_run() {
    let runs: PathBuf = ragtune_testkit::scratch("trainer-resume");

    run_to_end(&runs, "straight");

    // Steps 21..23 are done but not checkpointed (checkpoints every 10, evals — which checkpoint
    // an improvement — every 8); step 23 ends mid-epoch 1.
    let kill_at = 23;
    let mut child = spawn_worker(&runs, "interrupted", Some(kill_at));
    let marker = runs.join("interrupted").join(HANG_MARKER);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("worker exited early ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "worker never reached step {kill_at}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL on unix
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    std::fs::remove_file(&marker).unwrap();
    let before = records(&runs, "interrupted", "train");
    assert_eq!(before.last().unwrap()["step"], kill_at);
    let epoch = before.last().unwrap()["epoch"].as_f64().unwrap();
    assert!(
        epoch.fract() > 0.1 && epoch.fract() < 0.9,
        "step {kill_at} should end mid-epoch, got epoch {epoch}"
    );
    assert_eq!(
        *checkpoint_steps(&runs.join("interrupted")).last().unwrap(),
        20
    );

    run_to_end(&runs, "interrupted");

    let resumes = records(&runs, "interrupted", "resume");
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0]["step"], 20);
    for kind in ["train", "eval"] {
        let straight = trajectory(&records(&runs, "straight", kind));
        let resumed = trajectory(&records(&runs, "interrupted", kind));
        let expected = if kind == "train" { 50 } else { 7 }; // evals at 8, 16, ..., 48 and the end
        assert_eq!(
            straight.len(),
            expected,
            "{kind} records of the uninterrupted run"
        );
        assert_eq!(
            straight.len(),
            resumed.len(),
            "{kind}: record counts differ"
        );
        for (a, b) in straight.iter().zip(&resumed) {
            // serde_json keeps f64s exactly, so equal values mean bitwise-equal losses.
            assert_eq!(a, b, "{kind} records differ");
        }
    }
    let losses: Vec<f64> = records(&runs, "straight", "train")
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert!(
        losses[losses.len() - 5..].iter().sum::<f64>() < losses[..5].iter().sum::<f64>(),
        "the toy did not learn: {losses:?}"
    );

    // Same final weights, and the same checkpoints kept (last 2 plus the best).
    let last = |name: &str| {
        let run = runs.join(name);
        let step = *checkpoint_steps(&run).last().unwrap();
        std::fs::read(run.join(format!("checkpoints/step-{step:08}/model.safetensors"))).unwrap()
    };
    assert_eq!(
        last("straight"),
        last("interrupted"),
        "final weights differ"
    );
    assert_eq!(
        checkpoint_steps(&runs.join("straight")),
        checkpoint_steps(&runs.join("interrupted"))
    );
    std::fs::remove_dir_all(&runs).unwrap();
}
