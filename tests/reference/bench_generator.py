"""The Python side of `cargo xtask bench generator`: TRL 1.16's SFTTrainer with a PEFT LoRA on
exactly the tokenized examples ragtune trained on.

  bench_generator.py MODEL_DIR EXAMPLES_JSONL OUT_DIR --r R --alpha A --dropout D --batch-size B
      --max-length L --lr LR --epochs E --warmup-ratio W [--bf16 0|1] [--gradient-checkpointing 0|1]

EXAMPLES_JSONL is ragtune's `<run dir>/train_examples.jsonl` (`input_ids`, `prompt_len` per line):
the dataset is handed to TRL already tokenized, with a `completion_mask`, so both sides see the same
token ids and the loss covers the same answer tokens. LoRA targets all linear layers of the
decoder (PEFT's "all-linear"), as ragtune's config does. Prints `key value` lines: tokens (non-pad
tokens trained on), train_seconds (around trainer.train() only), load_seconds, steps, final_loss.
"""

import argparse
import json
import os
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("examples")
    p.add_argument("out_dir")
    p.add_argument("--r", type=int, required=True)
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--dropout", type=float, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--epochs", type=float, required=True)
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--bf16", type=int, default=1)
    p.add_argument("--gradient-checkpointing", type=int, default=1)
    args = p.parse_args()

    started = time.perf_counter()
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = []
    with open(args.examples, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                ids = e["input_ids"]
                k = e["prompt_len"]
                rows.append({"input_ids": ids, "completion_mask": [0] * k + [1] * (len(ids) - k)})
    tokens = sum(len(r["input_ids"]) for r in rows)
    longest = max(len(r["input_ids"]) for r in rows)
    if longest > args.max_length:
        raise SystemExit(f"an example has {longest} tokens, more than --max-length {args.max_length}")

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    config = SFTConfig(
        output_dir=args.out_dir,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        # transformers 5: a float below 1 is a fraction of the steps (the old warmup_ratio).
        warmup_steps=args.warmup_ratio,
        max_grad_norm=1.0,
        weight_decay=0.0,
        max_length=args.max_length,
        completion_only_loss=True,
        packing=False,
        bf16=bool(args.bf16),
        gradient_checkpointing=bool(args.gradient_checkpointing),
        use_cpu=True,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        seed=17,
    )
    peft_config = LoraConfig(
        r=args.r,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    load_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - t0
    print(f"tokens {tokens}")
    print(f"examples {len(rows)}")
    print(f"train_seconds {train_seconds:.3f}")
    print(f"load_seconds {load_seconds:.3f}")
    print(f"steps {result.global_step}")
    print(f"final_loss {result.training_loss:.6f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
