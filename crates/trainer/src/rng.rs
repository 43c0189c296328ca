//! Seeded randomness that a resumed run reproduces exactly.
//!
//! - **torch** (dropout, random init inside the loss): tch 0.24 exposes no generator state, so the
//!   trainer reseeds torch before every micro-batch from `(seed, optimizer step, micro-batch)`.
//!   A resumed run reseeds the same way, so it draws the same dropout masks without saving any
//!   torch state. `tch::manual_seed` seeds the CPU and all CUDA generators.
//! - **data order**: epoch `e` is shuffled by a ChaCha8 stream derived from `(seed, e)`, so the
//!   checkpoint needs only the cursor (epoch, position in that epoch's order).
//! - **the caller's RNG** (`Trainer::rng`, for sampling negatives and the like): a ChaCha8Rng whose
//!   full state (key, stream, word position) is saved in every checkpoint.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// SplitMix64's finalizer: spreads nearby inputs over the whole 64-bit range.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The torch seed for micro-batch `micro` of optimizer step `step`.
pub fn torch_seed(seed: u64, step: u64, micro: u64) -> u64 {
    mix(mix(mix(seed) ^ step) ^ micro)
}

/// Reseeds torch (CPU and CUDA) for micro-batch `micro` of optimizer step `step`.
pub fn seed_torch(seed: u64, step: u64, micro: u64) {
    tch::manual_seed(torch_seed(seed, step, micro) as i64);
}

/// The order of the training examples in `epoch`: shuffled from `(seed, epoch)`, or in order.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ 0x6461_7461)); // "data"
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
    }
    order
}

/// The full state of a ChaCha8Rng, as saved in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key, as hex.
    pub key: String,
    pub stream: u64,
    /// The position in the stream in 32-bit words (a u128, as a decimal string since JSON numbers cannot hold it).
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        RngState {
            key: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> Result<ChaCha8Rng, String> {
        if self.key.len() != 64 {
            return Err(format!(
                "rng key has {} hex digits, expected 64",
                self.key.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&self.key[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("rng key: {e}"))?;
        }
        let word_pos: u128 = self
            .word_pos
            .parse()
            .map_err(|e| format!("rng word_pos `{}`: {e}", self.word_pos))?;
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        Ok(rng)
    }
}

/// The caller's RNG for a fresh run.
pub fn caller_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed ^ 0x7573_6572)) // "user"
}

/// Where the data stream stands: the next example is `order(epoch)[position]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub position: usize,
}

/// Cuts the training set into micro-batches of indices, epoch after epoch.
#[derive(Debug)]
pub struct Sampler {
    len: usize,
    batch_size: usize,
    drop_last: bool,
    shuffle: bool,
    seed: u64,
    cursor: DataCursor,
    order: Vec<usize>,
}

impl Sampler {
    pub fn new(
        len: usize,
        batch_size: usize,
        drop_last: bool,
        shuffle: bool,
        seed: u64,
        cursor: DataCursor,
    ) -> Self {
        let order = epoch_order(len, seed, cursor.epoch, shuffle);
        Sampler {
            len,
            batch_size,
            drop_last,
            shuffle,
            seed,
            cursor,
            order,
        }
    }

    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }

    /// Examples in the training set.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next micro-batch's example indices, starting the next epoch when this one is used up.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let remaining = self.len - self.cursor.position;
        if remaining == 0 || (self.drop_last && remaining < self.batch_size) {
            self.cursor = DataCursor {
                epoch: self.cursor.epoch + 1,
                position: 0,
            };
            self.order = epoch_order(self.len, self.seed, self.cursor.epoch, self.shuffle);
        }
        let start = self.cursor.position;
        let end = (start + self.batch_size).min(self.len);
        self.cursor.position = end;
        self.order[start..end].to_vec()
    }
}
