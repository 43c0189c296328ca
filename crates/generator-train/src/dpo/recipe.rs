//! The DPO recipe, top to bottom ([`run`]): pairs, policy and reference, reference log-probs,
//! held-out rewards before, training, held-out rewards after, and the report.

use super::*;

/// What [`run`] did, also written as `<run dir>/report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct DpoReport {
    pub run_dir: PathBuf,
    pub adapter: PathBuf,
    pub train_pairs: usize,
    pub heldout_pairs: usize,
    pub steps: u64,
    pub train_seconds: f64,
    pub tokens_per_second: f64,
    /// Held-out reward metrics: (model, reference, metrics), the starting policy first.
    pub heldout: Vec<HeldOut>,
    pub json: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    pub model: String,
    pub reference: String,
    pub metrics: RewardMetrics,
}

fn normalized_question(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The DPO recipe, top to bottom: read the pairs (held-out pairs whose question is a training
/// question dropped); the policy (an SFT adapter or a fresh one) and the reference; reference
/// log-probs from the cache or computed; held-out rewards before; training; held-out rewards
/// after; the adapter and `report.json` in the run folder.
pub fn run(config: &GeneratorConfig, device: Device) -> Result<DpoReport> {
    config.validate()?;
    let settings = config.dpo.clone();
    let mut lm = ragtune_models::llama_load::load_causal_lm(&config.model, device, Kind::Float)?;

    // 1. Pairs.
    let train_path = settings.train_pairs.clone().ok_or_else(|| {
        GeneratorError::Invalid(
            "[dpo] train_pairs is not set (make pairs with `ragtune generator make-pairs`)".into(),
        )
    })?;
    let mut train_prefs = read_preferences(&train_path)?;
    if let Some(n) = settings.max_train_pairs {
        train_prefs.truncate(n);
    }
    let mut eval_prefs = match &settings.eval_pairs {
        Some(p) => read_preferences(p)?,
        None => vec![],
    };
    // Held out means held out: no evaluation question may also be a training question.
    let seen: std::collections::HashSet<String> = train_prefs
        .iter()
        .map(|p| normalized_question(&p.prompt))
        .collect();
    let before = eval_prefs.len();
    eval_prefs.retain(|p| !seen.contains(&normalized_question(&p.prompt)));
    if eval_prefs.len() < before {
        println!(
            "dropped {} held-out pairs whose question is also a training question",
            before - eval_prefs.len()
        );
    }
    let (mut train_pairs, mut eval_pairs) = {
        let builder = PromptBuilder::new(&config.prompt, &lm.tokenizer)?;
        (
            build_pairs(&train_prefs, &builder)?,
            build_pairs(&eval_prefs, &builder)?,
        )
    };
    let tokens: usize = train_pairs
        .iter()
        .map(|p| p.chosen.input_ids.len() + p.rejected.input_ids.len())
        .sum();
    println!(
        "{} training pairs ({} tokens, {:.0} per pair), {} held-out pairs",
        train_pairs.len(),
        tokens,
        tokens as f64 / train_pairs.len().max(1) as f64,
        eval_pairs.len()
    );

    // 2. Policy and reference.
    let policy = match &settings.sft_adapter {
        Some(dir) => Peft::load(dir, &lm.model, device)?,
        None => {
            let c = config.peft.as_ref().ok_or_else(|| {
                GeneratorError::Invalid(
                    "DPO trains an adapter: set [peft] or [dpo] sft_adapter".into(),
                )
            })?;
            let init = crate::setup::init_text_ids(config, &lm)?;
            Peft::new(c, &lm.model, device, init.as_deref())?
        }
    };
    let reference = match settings.reference {
        ReferenceModel::Base => None,
        ReferenceModel::Sft => {
            let dir = settings.sft_adapter.as_ref().ok_or_else(|| {
                GeneratorError::Invalid("[dpo] reference = \"sft\" needs sft_adapter".into())
            })?;
            let r = Peft::load(dir, &lm.model, device)?;
            freeze_adapter(&r);
            Some(r)
        }
    };

    // 3. Reference log-probs: held-out ones against the base (and the SFT reference), and the
    // training ones when they are cached rather than computed every step.
    let bf16 = config.trainer.precision.uses_bf16(device);
    let run_dir = config.trainer.run_dir();
    let cache = settings
        .cache
        .clone()
        .unwrap_or_else(|| run_dir.join("reference_logps.parquet"));
    let base_fp = reference_fingerprint(&config.model, None, Kind::Float, bf16)?;
    let train_fp = match settings.reference {
        ReferenceModel::Base => base_fp.clone(),
        ReferenceModel::Sft => reference_fingerprint(
            &config.model,
            settings.sft_adapter.as_deref(),
            Kind::Float,
            bf16,
        )?,
    };
    let fill = |lm: &mut CausalLm,
                pairs: &mut [PairExample],
                adapter: Option<&Peft>,
                fp: &str,
                what: &str|
     -> Result<()> {
        let progress = ragtune_trainer::Progress::items(
            pairs.len() as u64,
            &format!("pairs ({what} reference log-probs)"),
        );
        let stats = fill_reference(
            lm,
            adapter,
            fp,
            pairs,
            Some(&cache),
            settings.eval_batch_size,
            device,
            bf16,
            |n| progress.inc(n as u64),
        )?;
        progress.finish_and_clear();
        println!(
            "{what} reference log-probs: {} reused from {}, {} computed",
            stats.reused,
            cache.display(),
            stats.computed
        );
        Ok(())
    };
    fill(&mut lm, &mut eval_pairs, None, &base_fp, "held-out, base")?;
    let mut eval_vs_sft = eval_pairs.clone();
    if let Some(r) = &reference {
        fill(
            &mut lm,
            &mut eval_vs_sft,
            Some(r),
            &train_fp,
            "held-out, SFT",
        )?;
    }
    if settings.reference_logps == ReferenceLogps::Cached {
        fill(
            &mut lm,
            &mut train_pairs,
            reference.as_ref(),
            &train_fp,
            "training",
        )?;
    }

    // 4. Held-out rewards of the starting policy: the SFT adapter as loaded, or the base itself
    // (rewards all 0).
    let start_label = if settings.sft_adapter.is_some() {
        "sft"
    } else {
        "base"
    };
    let initial = if eval_pairs.is_empty() {
        None
    } else {
        let policy_now = settings.sft_adapter.as_ref().map(|_| &policy);
        Some(evaluate_pairs(
            &mut lm,
            policy_now,
            &eval_pairs,
            &settings,
            device,
            bf16,
        )?)
    };

    // 5. Training.
    let started = std::time::Instant::now();
    let summary = train(
        config,
        &mut lm,
        &policy,
        reference.as_ref(),
        &train_pairs,
        &eval_pairs,
        device,
    )?;
    let train_seconds = started.elapsed().as_secs_f64();
    let adapter_dir = run_dir.join("adapter");
    policy.save(&adapter_dir)?;

    // 6. Held-out rewards after, and the report.
    let mut heldout = Vec::new();
    if !eval_pairs.is_empty() {
        if let Some(i) = initial {
            heldout.push(HeldOut {
                model: start_label.into(),
                reference: "base".into(),
                metrics: i,
            });
        }
        heldout.push(HeldOut {
            model: "dpo".into(),
            reference: "base".into(),
            metrics: evaluate_pairs(&mut lm, Some(&policy), &eval_pairs, &settings, device, bf16)?,
        });
        if reference.is_some() {
            heldout.push(HeldOut {
                model: "dpo".into(),
                reference: "sft".into(),
                metrics: evaluate_pairs(
                    &mut lm,
                    Some(&policy),
                    &eval_vs_sft,
                    &settings,
                    device,
                    bf16,
                )?,
            });
        }
    }
    let json = json!({
        "definition": "held-out reward accuracy: share of pairs with beta*(log pi(chosen) - log pi_ref(chosen)) > beta*(log pi(rejected) - log pi_ref(rejected)), log-probs summed over answer tokens, as TRL 1.16; strict >, so a model against itself scores 0",
        "beta": settings.beta,
        "loss": settings.loss,
        "train_pairs": train_pairs.len(),
        "heldout_pairs": eval_pairs.len(),
        "train_reference": settings.reference,
        "reference_logps": settings.reference_logps,
        "sft_adapter": settings.sft_adapter,
        "steps": summary.steps,
        "train_seconds": train_seconds,
        "heldout": heldout.iter().map(|h| json!({
            "model": h.model, "reference": h.reference, "pairs": h.metrics.pairs, "metrics": h.metrics.means(""),
        })).collect::<Vec<_>>(),
    });
    ragtune_models::checkpoint::atomic_write(
        &run_dir.join("report.json"),
        serde_json::to_string_pretty(&json)
            .expect("the report serializes")
            .as_bytes(),
    )?;
    Ok(DpoReport {
        run_dir,
        adapter: adapter_dir,
        train_pairs: train_pairs.len(),
        heldout_pairs: eval_pairs.len(),
        steps: summary.steps,
        train_seconds,
        tokens_per_second: tokens as f64 * config.trainer.epochs / train_seconds.max(1e-9),
        heldout,
        json,
    })
}
