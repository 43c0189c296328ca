//! The shared training loop: AdamW with saved state, schedules, mixed precision, atomic checkpoints that resume exactly, and logging.
