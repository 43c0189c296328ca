//! The Porter stemmer exactly as nltk's `PorterStemmer()` runs it (mode `NLTK_EXTENSIONS`, nltk 3.10),
//! which is the stemmer behind rouge-score's `use_stemmer=True` and nltk's METEOR stem stage.
//!
//! Snowball's "english" stemmer (rust-stemmers) is Porter2 and stems differently (e.g. "generously"),
//! so it cannot reproduce those scores; this is a line-by-line port of nltk's rules instead, checked
//! against nltk on thousands of words in the tests.

type Word = Vec<char>;
type Condition<'a> = Option<Box<dyn Fn(&[char]) -> bool + 'a>>;

/// nltk's irregular forms, looked up before any rule runs.
const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// Stems one word: lowercases it, then applies nltk's Porter rules. Words of at most two characters
/// come back lowercased only.
pub fn stem(word: &str) -> String {
    let lowered = word.to_lowercase();
    if let Some((_, base)) = IRREGULAR.iter().find(|(form, _)| *form == lowered) {
        return base.to_string();
    }
    if word.chars().count() <= 2 {
        return lowered;
    }
    let mut w: Word = lowered.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

fn consonant_flags(word: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(word.len());
    for (i, &c) in word.iter().enumerate() {
        let flag = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(flag);
    }
    flags
}

fn is_consonant(word: &[char], i: usize) -> bool {
    consonant_flags(&word[..=i])[i]
}

fn measure(stem: &[char]) -> usize {
    let flags = consonant_flags(stem);
    flags.windows(2).filter(|w| !w[0] && w[1]).count()
}

fn contains_vowel(stem: &[char]) -> bool {
    !consonant_flags(stem).iter().all(|&c| c)
}

fn ends_double_consonant(word: &[char]) -> bool {
    let n = word.len();
    n >= 2 && word[n - 1] == word[n - 2] && is_consonant(word, n - 1)
}

fn ends_cvc(word: &[char]) -> bool {
    let n = word.len();
    (n >= 3
        && is_consonant(word, n - 3)
        && !is_consonant(word, n - 2)
        && is_consonant(word, n - 1)
        && !matches!(word[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(word, 0) && is_consonant(word, 1))
}

fn ends_with(word: &[char], suffix: &str) -> bool {
    let suffix: Vec<char> = suffix.chars().collect();
    word.len() >= suffix.len() && word[word.len() - suffix.len()..] == suffix[..]
}

fn without_suffix(word: &[char], suffix: &str) -> Word {
    word[..word.len() - suffix.chars().count()].to_vec()
}

fn join(stem: &[char], replacement: &str) -> Word {
    let mut out = stem.to_vec();
    out.extend(replacement.chars());
    out
}

/// A rule: suffix (or "*d" for a double consonant), replacement, condition on the stem.
struct Rule<'a> {
    suffix: &'a str,
    replacement: String,
    condition: Condition<'a>,
}

fn rule<'a>(suffix: &'a str, replacement: &str, condition: Condition<'a>) -> Rule<'a> {
    Rule {
        suffix,
        replacement: replacement.to_string(),
        condition,
    }
}

fn positive_measure<'a>() -> Condition<'a> {
    Some(Box::new(|stem: &[char]| measure(stem) > 0))
}

/// nltk's `_apply_rule_list`: the first rule whose suffix matches decides, whether or not its
/// condition holds.
fn apply_rule_list(word: Word, rules: &[Rule]) -> Word {
    for r in rules {
        if r.suffix == "*d" && ends_double_consonant(&word) {
            let stem = &word[..word.len() - 2];
            return match &r.condition {
                Some(cond) if !cond(stem) => word,
                _ => join(stem, &r.replacement),
            };
        }
        if ends_with(&word, r.suffix) {
            let stem = without_suffix(&word, r.suffix);
            return match &r.condition {
                Some(cond) if !cond(&stem) => word,
                _ => join(&stem, &r.replacement),
            };
        }
    }
    word
}

fn step1a(word: Word) -> Word {
    if ends_with(&word, "ies") && word.len() == 4 {
        return join(&without_suffix(&word, "ies"), "ie");
    }
    apply_rule_list(
        word,
        &[
            rule("sses", "ss", None),
            rule("ies", "i", None),
            rule("ss", "ss", None),
            rule("s", "", None),
        ],
    )
}

fn step1b(word: Word) -> Word {
    if ends_with(&word, "ied") {
        let replacement = if word.len() == 4 { "ie" } else { "i" };
        return join(&without_suffix(&word, "ied"), replacement);
    }
    if ends_with(&word, "eed") {
        let stem = without_suffix(&word, "eed");
        return if measure(&stem) > 0 {
            join(&stem, "ee")
        } else {
            word
        };
    }
    let mut intermediate = None;
    for suffix in ["ed", "ing"] {
        if ends_with(&word, suffix) {
            let candidate = without_suffix(&word, suffix);
            if contains_vowel(&candidate) {
                intermediate = Some(candidate);
                break;
            }
        }
    }
    let Some(intermediate) = intermediate else {
        return word;
    };
    let last = *intermediate
        .last()
        .expect("a stem with a vowel is not empty");
    let last_string = last.to_string();
    apply_rule_list(
        intermediate,
        &[
            rule("at", "ate", None),
            rule("bl", "ble", None),
            rule("iz", "ize", None),
            rule(
                "*d",
                &last_string,
                Some(Box::new(move |_: &[char]| !matches!(last, 'l' | 's' | 'z'))),
            ),
            rule(
                "",
                "e",
                Some(Box::new(|stem: &[char]| {
                    measure(stem) == 1 && ends_cvc(stem)
                })),
            ),
        ],
    )
}

fn step1c(word: Word) -> Word {
    apply_rule_list(
        word,
        &[rule(
            "y",
            "i",
            Some(Box::new(|stem: &[char]| {
                stem.len() > 1 && is_consonant(stem, stem.len() - 1)
            })),
        )],
    )
}

fn step2(word: Word) -> Word {
    if ends_with(&word, "alli") {
        let stem = without_suffix(&word, "alli");
        if measure(&stem) > 0 {
            return step2(join(&stem, "al"));
        }
    }
    let without_ogi: Word = word[..word.len().saturating_sub(3)].to_vec();
    let mut rules: Vec<Rule> = [
        ("ational", "ate"),
        ("tional", "tion"),
        ("enci", "ence"),
        ("anci", "ance"),
        ("izer", "ize"),
        ("bli", "ble"),
        ("alli", "al"),
        ("entli", "ent"),
        ("eli", "e"),
        ("ousli", "ous"),
        ("ization", "ize"),
        ("ation", "ate"),
        ("ator", "ate"),
        ("alism", "al"),
        ("iveness", "ive"),
        ("fulness", "ful"),
        ("ousness", "ous"),
        ("aliti", "al"),
        ("iviti", "ive"),
        ("biliti", "ble"),
        ("fulli", "ful"),
    ]
    .into_iter()
    .map(|(s, r)| rule(s, r, positive_measure()))
    .collect();
    rules.push(rule(
        "logi",
        "log",
        Some(Box::new(move |_: &[char]| measure(&without_ogi) > 0)),
    ));
    apply_rule_list(word, &rules)
}

fn step3(word: Word) -> Word {
    let rules: Vec<Rule> = [
        ("icate", "ic"),
        ("ative", ""),
        ("alize", "al"),
        ("iciti", "ic"),
        ("ical", "ic"),
        ("ful", ""),
        ("ness", ""),
    ]
    .into_iter()
    .map(|(s, r)| rule(s, r, positive_measure()))
    .collect();
    apply_rule_list(word, &rules)
}

fn step4(word: Word) -> Word {
    let measure_gt_1 = || -> Condition { Some(Box::new(|stem: &[char]| measure(stem) > 1)) };
    let mut rules: Vec<Rule> = Vec::new();
    for suffix in [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
    ] {
        rules.push(rule(suffix, "", measure_gt_1()));
    }
    rules.push(rule(
        "ion",
        "",
        Some(Box::new(|stem: &[char]| {
            measure(stem) > 1 && matches!(stem.last(), Some('s' | 't'))
        })),
    ));
    for suffix in ["ou", "ism", "ate", "iti", "ous", "ive", "ize"] {
        rules.push(rule(suffix, "", measure_gt_1()));
    }
    apply_rule_list(word, &rules)
}

fn step5a(word: Word) -> Word {
    if ends_with(&word, "e") {
        let stem = without_suffix(&word, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    word
}

fn step5b(word: Word) -> Word {
    let without_last: Word = word[..word.len().saturating_sub(1)].to_vec();
    apply_rule_list(
        word,
        &[rule(
            "ll",
            "l",
            Some(Box::new(move |_: &[char]| measure(&without_last) > 1)),
        )],
    )
}
