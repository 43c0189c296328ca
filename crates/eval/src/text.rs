//! Small text helpers shared by the metrics, written to behave like the Python string methods the
//! reference implementations use (`str.split()`, `str.lower()`).

/// Python's `str.isspace` for one character: Unicode whitespace plus the ASCII file, group, record
/// and unit separators (U+001C..U+001F), which Python splits on and Rust's `char::is_whitespace` does not.
pub fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no argument: runs of whitespace separate tokens, no empty tokens.
pub fn split_whitespace(text: &str) -> Vec<&str> {
    text.split(is_python_whitespace)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Python's `str.lower()` (Rust's `to_lowercase` applies the same Unicode mappings, final sigma included).
pub fn lower(text: &str) -> String {
    text.to_lowercase()
}

/// Splits text into sentences for sentence-level checks: a sentence ends at a newline, or at `.`, `!`
/// or `?` followed by whitespace. Empty pieces are dropped and each piece is trimmed.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(pos, c)) in chars.iter().enumerate() {
        let end_here = c == '\n'
            || (matches!(c, '.' | '!' | '?')
                && chars
                    .get(i + 1)
                    .is_some_and(|&(_, next)| is_python_whitespace(next)));
        if end_here {
            let end = pos + c.len_utf8();
            sentences.push(&text[start..end]);
            start = end;
        }
    }
    sentences.push(&text[start..]);
    sentences
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}
