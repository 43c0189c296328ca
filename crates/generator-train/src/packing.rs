//! Packing short SFT examples into rows of a fixed capacity with best-fit decreasing, and the
//! collation of packed rows: segment ids for the block-diagonal causal mask, positions that
//! restart at 0 for each example, and a completion mask per example.

use crate::sft::SftExample;
use crate::{GeneratorError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// `[packing]` in the run config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackingConfig {
    pub enabled: bool,
    /// Tokens per packed row; unset: the prompt's `max_length`.
    pub max_length: Option<usize>,
}

/// Best-fit decreasing: items sorted by length, longest first (ties by index, so the result is
/// deterministic), each put into the fullest bin that still has room, or a new bin. Returns the
/// item indices of each bin, bins in creation order. An item longer than `capacity` is an error.
pub fn best_fit_decreasing(lengths: &[usize], capacity: usize) -> Result<Vec<Vec<usize>>> {
    if let Some((i, &len)) = lengths.iter().enumerate().find(|(_, &l)| l > capacity) {
        return Err(GeneratorError::Invalid(format!(
            "packing: example {i} has {len} tokens, more than the row capacity {capacity}"
        )));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let mut bins: Vec<Vec<usize>> = vec![];
    // Room left -> bins with that much room (lowest bin index first).
    let mut by_room: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in order {
        let len = lengths[i];
        let fit = by_room
            .range(len..)
            .next()
            .map(|(&room, bins)| (room, bins[0]));
        let (bin, room) = match fit {
            Some((room, bin)) => {
                let list = by_room.get_mut(&room).expect("room key exists");
                list.remove(0);
                if list.is_empty() {
                    by_room.remove(&room);
                }
                bins[bin].push(i);
                (bin, room - len)
            }
            None => {
                bins.push(vec![i]);
                (bins.len() - 1, capacity - len)
            }
        };
        let list = by_room.entry(room).or_default();
        let at = list.partition_point(|&b| b < bin);
        list.insert(at, bin);
    }
    Ok(bins)
}

/// One packed batch, each tensor `[rows, longest row]`.
#[derive(Debug)]
pub struct PackedBatch {
    pub input_ids: Tensor,
    /// 1, 2, ... for the examples of a row, 0 for padding.
    pub segment_ids: Tensor,
    /// Restart at 0 for each example.
    pub position_ids: Tensor,
    /// 1 on answer tokens.
    pub completion_mask: Tensor,
}

/// Right-padded packed rows; each row is its examples back to back.
pub fn collate_packed(rows: &[Vec<&SftExample>], pad_token_id: i64, device: Device) -> PackedBatch {
    let width = rows
        .iter()
        .map(|r| r.iter().map(|e| e.input_ids.len()).sum::<usize>())
        .max()
        .unwrap_or(0);
    let (mut ids, mut segments, mut positions, mut completion) = (vec![], vec![], vec![], vec![]);
    for row in rows {
        let mut used = 0;
        for (s, e) in row.iter().enumerate() {
            let n = e.input_ids.len();
            ids.extend_from_slice(&e.input_ids);
            segments.extend(std::iter::repeat_n(s as i64 + 1, n));
            positions.extend(0..n as i64);
            // A packed example's first token must never be a target: the token before it is the
            // previous example's last.
            completion.extend((0..n).map(|t| i64::from(t >= e.prompt_len.max(1))));
            used += n;
        }
        let pad = width - used;
        ids.extend(std::iter::repeat_n(pad_token_id, pad));
        segments.extend(std::iter::repeat_n(0, pad));
        positions.extend(std::iter::repeat_n(0, pad));
        completion.extend(std::iter::repeat_n(0, pad));
    }
    let shape = [rows.len() as i64, width as i64];
    let t = |v: Vec<i64>| Tensor::from_slice(&v).reshape(shape).to_device(device);
    PackedBatch {
        input_ids: t(ids),
        segment_ids: t(segments),
        position_ids: t(positions),
        completion_mask: t(completion),
    }
}
