//! Test inputs shared by the parity tests: real FAQ answers and deterministic perturbations of them.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub struct FaqRow {
    pub id: String,
    pub category: String,
    pub question: String,
    pub answer: String,
}

pub fn faq() -> Vec<FaqRow> {
    let path = ragtune_testkit::asset("zaragoza-faq").join("faq-en.jsonl");
    let text = std::fs::read_to_string(&path).expect("FAQ readable");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("FAQ row is JSON");
            let field = |name: &str| v[name].as_str().expect("FAQ string field").to_string();
            FaqRow {
                id: field("id"),
                category: field("category"),
                question: field("q"),
                answer: field("a"),
            }
        })
        .collect()
}

const FOREIGN: &[&str] = &[
    "café",
    "naïve",
    "Zürich",
    "日本語の文",
    "ΟΔΟΣ",
    "Ελληνικά",
    "façade",
    "§ 9",
    "m²",
    "→",
    "İstanbul",
    "straße",
];
const PUNCT: &[&str] = &[
    ",", ".", "!", "?", "...", "-", "—", "&amp;", "&quot;", "(", ")", "3.5", "1,000", "10-20", "'s",
];

/// One prediction with its references.
pub struct TextCase {
    pub prediction: String,
    pub references: Vec<String>,
}

fn perturb(text: &str, other: &str, kind: usize, rng: &mut StdRng) -> String {
    let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let others: Vec<&str> = other.split_whitespace().collect();
    match kind {
        0 => text.to_string(),
        1 => words
            .into_iter()
            .filter(|_| rng.gen_bool(0.75))
            .collect::<Vec<_>>()
            .join(" "),
        2 => {
            for i in (1..words.len()).step_by(3) {
                words.swap(i - 1, i);
            }
            words.join(" ")
        }
        3 => words
            .into_iter()
            .map(|w| {
                if rng.gen_bool(0.3) && !others.is_empty() {
                    others[rng.gen_range(0..others.len())].to_string()
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        4 => words
            .into_iter()
            .map(|w| {
                if rng.gen_bool(0.3) {
                    w.to_uppercase()
                } else {
                    w.to_lowercase()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        5 => words[..words.len() / 2].join(" "),
        6 => {
            for _ in 0..3 {
                let at = rng.gen_range(0..=words.len());
                words.insert(at, FOREIGN[rng.gen_range(0..FOREIGN.len())].to_string());
            }
            words.join(" ")
        }
        7 => {
            for _ in 0..4 {
                let at = rng.gen_range(0..=words.len());
                words.insert(at, PUNCT[rng.gen_range(0..PUNCT.len())].to_string());
            }
            words.join(" ").replace(" ,", ",")
        }
        8 => String::new(),
        9 => ["?!...", "—", "...", "!!", "&", "*"][rng.gen_range(0..6)].to_string(),
        10 => words
            .chunks(7)
            .map(|c| c.join(" "))
            .collect::<Vec<_>>()
            .join(if rng.gen_bool(0.5) { "\n" } else { " .\n" }),
        11 => words
            .into_iter()
            .map(|w| match rng.gen_range(0..6) {
                0 => format!("{w}s"),
                1 => format!("{w}ing"),
                2 => format!("{w}ed"),
                3 => format!("{w}ly"),
                _ => w,
            })
            .collect::<Vec<_>>()
            .join(" "),
        12 => format!("  {}  ", words.join("   ")),
        _ => {
            // Reorder whole halves: keeps unigrams, breaks order.
            let half = words.len() / 2;
            words.rotate_left(half);
            words.join(" ")
        }
    }
}

pub const KINDS: usize = 14;

/// `n` prediction/reference cases from FAQ answers: each kind of perturbation in turn, one to
/// three references (sometimes perturbed, rarely empty).
pub fn text_cases(n: usize, seed: u64) -> Vec<TextCase> {
    let rows = faq();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let row = &rows[(i * 7) % rows.len()];
            let other = &rows[(i * 13 + 5) % rows.len()].answer;
            let prediction = perturb(&row.answer, other, i % KINDS, &mut rng);
            let mut references = vec![row.answer.clone()];
            match i % 5 {
                1 => references.push(perturb(
                    &row.answer,
                    other,
                    rng.gen_range(1..KINDS),
                    &mut rng,
                )),
                2 => {
                    references.push(other.clone());
                    references.push(perturb(&row.question, other, 10, &mut rng));
                }
                3 if i % 3 == 0 => references = vec![String::new()],
                3 => references.shuffle(&mut rng),
                _ => {}
            }
            if i % 17 == 4 {
                references = vec![perturb(&row.answer, other, 10, &mut rng)];
            }
            TextCase {
                prediction,
                references,
            }
        })
        .collect()
}
