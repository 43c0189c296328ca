//! Config errors that say what to do: serde names an unknown key and lists the valid ones; this
//! adds the closest valid key, so a typo is fixed at a glance.

/// `message` (a serde/toml error) with "did you mean `x`?" added when it names an unknown field or
/// variant and a valid one is within a small edit distance.
pub fn with_suggestion(message: &str) -> String {
    let Some(unknown) = quoted_after(message, "unknown field `")
        .or_else(|| quoted_after(message, "unknown variant `"))
    else {
        return message.to_string();
    };
    let Some(expected) = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .map(|(_, rest)| rest)
    else {
        return message.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (edit_distance(unknown, c), *c))
        .min();
    match best {
        Some((distance, name)) if distance <= 2.max(unknown.len() / 3) => {
            let first_line = message.lines().next().unwrap_or(message);
            let rest: Vec<&str> = message.lines().skip(1).collect();
            let mut out = format!("{first_line} (did you mean `{name}`?)");
            for line in rest {
                out.push('\n');
                out.push_str(line);
            }
            // The toml crate puts the serde message on a later line; keep the hint next to it.
            if !first_line.contains(unknown) {
                out = format!("{message}\ndid you mean `{name}` instead of `{unknown}`?");
            }
            out
        }
        _ => message.to_string(),
    }
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let end = message[start..].find('`')? + start;
    Some(&message[start..end])
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Sets `section.key=value` (dotted, any depth) in a parsed TOML config, as `--set` does; the value
/// is read as TOML (`3`, `1e-4`, `true`, `"text"`, `[1, 2]`) and taken as a string when it is not
/// valid TOML. The error says what is wrong with the assignment.
pub fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<(), String> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| format!("--set {assignment}: expected section.key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let mut table = root
        .as_table_mut()
        .ok_or_else(|| "the config's top level is not a table".to_string())?;
    for key in &keys[..keys.len() - 1] {
        table = table
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("--set {assignment}: `{key}` is not a table"))?;
    }
    table.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_key() {
        let message =
            "unknown field `lerning_rate`, expected one of `lr`, `learning_rate`, `betas`";
        assert!(with_suggestion(message).contains("did you mean `learning_rate`?"));
        let far = "unknown field `zzz`, expected one of `lr`, `betas`";
        assert_eq!(with_suggestion(far), far);
        assert_eq!(
            with_suggestion("missing field `model`"),
            "missing field `model`"
        );
    }
}
