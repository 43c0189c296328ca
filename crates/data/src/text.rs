//! Text normalization applied by every importer: Unicode NFC, then whitespace runs collapsed to one
//! space and trimmed, so equal texts compare equal byte for byte.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// NFC + whitespace normalization. Allocation-free checks keep the common clean-ASCII case cheap.
pub fn normalize_text(text: &str) -> String {
    let nfc: std::borrow::Cow<'_, str> = if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        text.into()
    } else {
        text.nfc().collect::<String>().into()
    };
    let mut out = String::with_capacity(nfc.len());
    for word in nfc.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The key under which two questions count as the same: normalized and lowercased.
pub fn question_key(text: &str) -> String {
    normalize_text(text).to_lowercase()
}

/// A fast, stable 64-bit hash (FNV-1a folded through splitmix64); stable across runs and platforms,
/// unlike std's randomly seeded hasher, so splits and MinHash signatures are reproducible.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix64(h)
}

pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Nearest-rank percentiles of `values` (which this sorts) at each of `ps` (0..=100).
pub fn percentiles(values: &mut [usize], ps: &[f64]) -> Vec<usize> {
    values.sort_unstable();
    ps.iter()
        .map(|p| {
            if values.is_empty() {
                return 0;
            }
            let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        })
        .collect()
}
