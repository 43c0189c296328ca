//! The progress bar: step, loss, throughput and ETA. Hidden when stderr is not a terminal (CI,
//! tests, logs piped to a file), where metrics.jsonl is the record anyway.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total_steps` optimizer steps, starting at `start_step` (non-zero when resumed).
    pub fn new(total_steps: u64, start_step: u64, enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total_steps),
            if enabled && std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .expect("a valid template"),
        );
        bar.set_position(start_step);
        bar.reset_eta();
        Progress { bar }
    }

    /// A bar over `total` items of some other work (`what`: "questions (base)", "passages"), for
    /// the evaluation and encoding passes around training.
    pub fn items(total: u64, what: &str) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{bar:30}} {{pos}}/{{len}} {what}  [{{elapsed_precise}} < {{eta_precise}}]"
            ))
            .expect("a valid template"),
        );
        Progress { bar }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn update(&self, step: u64, loss: f64, examples_per_s: f64) {
        self.bar.set_position(step);
        self.bar
            .set_message(format!("loss {loss:.4}  {examples_per_s:.1} ex/s"));
    }

    /// Prints a line above the bar (or plainly when the bar is hidden).
    pub fn println(&self, message: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", message.as_ref());
        } else {
            self.bar.println(message.as_ref());
        }
    }

    pub fn finish(&self) {
        self.bar.finish();
    }

    /// Ends the bar and removes it from the terminal.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}
