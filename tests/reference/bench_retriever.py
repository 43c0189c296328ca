"""The Python side of `cargo xtask bench retriever`.

  bench_retriever.py train MODEL_DIR SPLIT_DIR OUT_DIR --epochs E --batch-size B --max-length L
                     --lr LR --warmup-ratio W --weight-decay WD --limit N --seed S --dtype fp32|bf16
      Fine-tunes MODEL_DIR with sentence-transformers' MultipleNegativesRankingLoss (scale 20, in-batch
      negatives only) on the pairs of SPLIT_DIR/train (the qrels in file order, the first N when
      N > 0), the way `ragtune retriever train` builds them (passage = "title. text"), and saves the
      model to OUT_DIR. Prints `key value` lines: pairs, steps, load_seconds, train_seconds (the
      trainer.train() call only), save_seconds.
  bench_retriever.py eval SPLIT_DIR RESAMPLES SEED NAME=MODEL_DIR ... [--compare A,B ...]
      Encodes SPLIT_DIR/test's corpus and queries with each model (sentence-transformers encode, fp32)
      and scores exact cosine search with one nDCG@10 code for every model; prints per model
      `ndcg@10_<NAME>` and its 95% bootstrap interval (`ci_low_own_<NAME>`, `ci_high_own_<NAME>`);
      for each --compare A,B the mean of A - B over the queries with a 95% paired bootstrap interval
      (`diff_A,B`, `ci_low_A,B`, `ci_high_A,B`; the same resampled queries for every model); then
      `queries N` and a JSON line `per_query {...}`.
"""

import argparse
import json
import math
import sys
import time


def passage_text(title, text):
    title = (title or "").strip()
    return text if not title else f"{title}. {text}"


def read_split(split_dir):
    import pyarrow.parquet as pq

    corpus = pq.read_table(f"{split_dir}/corpus.parquet").to_pylist()
    queries = pq.read_table(f"{split_dir}/queries.parquet").to_pylist()
    qrels = pq.read_table(f"{split_dir}/qrels.parquet").to_pylist()
    return corpus, queries, qrels


def train_pairs(split_dir, limit):
    corpus, queries, qrels = read_split(split_dir)
    docs = {d["doc_id"]: passage_text(d["title"], d["text"]) for d in corpus}
    query_text = {q["query_id"]: q["text"] for q in queries}
    pairs = [(query_text[r["query_id"]], docs[r["doc_id"]]) for r in qrels if r["relevance"] > 0]
    return pairs[:limit] if limit > 0 else pairs


def train(args):
    import torch

    torch.set_num_threads(2)
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    pairs = train_pairs(f"{args.split_dir}/train", args.limit)
    start = time.perf_counter()
    model = SentenceTransformer(args.model_dir, device="cpu")
    model.max_seq_length = args.max_length
    loaded = time.perf_counter()
    dataset = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=f"{args.out_dir}-trainer",
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=args.seed,
        bf16=args.dtype == "bf16",
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=10_000,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=dataset, loss=loss
    )
    began = time.perf_counter()
    output = trainer.train()
    trained = time.perf_counter()
    model.save(args.out_dir)
    saved = time.perf_counter()
    result = {
        "pairs": len(pairs),
        "steps": output.global_step,
        "load_seconds": loaded - start,
        "train_seconds": trained - began,
        "save_seconds": saved - trained,
    }
    for key, value in result.items():
        print(f"{key} {value}")


def ndcg_at_10(ranked, relevant):
    dcg = sum(
        relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:10])
    )
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum(rel / math.log2(rank + 2) for rank, rel in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def evaluate(args):
    import numpy as np
    import torch

    torch.set_num_threads(2)
    from sentence_transformers import SentenceTransformer

    corpus, queries, qrels = read_split(f"{args.split_dir}/test")
    doc_ids = [d["doc_id"] for d in corpus]
    doc_texts = [passage_text(d["title"], d["text"]) for d in corpus]
    relevant = {}
    for r in qrels:
        if r["relevance"] > 0:
            relevant.setdefault(r["query_id"], {})[r["doc_id"]] = r["relevance"]
    queries = [q for q in queries if q["query_id"] in relevant]
    per_query = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        model = SentenceTransformer(path, device="cpu")
        d = model.encode(doc_texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        q = model.encode(
            [x["text"] for x in queries], batch_size=64, convert_to_numpy=True, normalize_embeddings=True
        )
        scores = q @ d.T
        values = []
        for i, query in enumerate(queries):
            # Stable sort on -score: ties keep corpus order.
            order = np.argsort(-scores[i], kind="stable")
            values.append(ndcg_at_10([doc_ids[j] for j in order[:10]], relevant[query["query_id"]]))
        per_query[name] = values
        print(f"ndcg@10_{name} {float(np.mean(values))}")
    names = [s.partition("=")[0] for s in args.models]
    rng = np.random.default_rng(args.seed)
    n = len(queries)
    samples = rng.integers(0, n, size=(args.resamples, n))
    for name in names:
        own = np.asarray(per_query[name])[samples].mean(axis=1)
        print(f"ci_low_own_{name} {float(np.quantile(own, 0.025))}")
        print(f"ci_high_own_{name} {float(np.quantile(own, 0.975))}")
    for pair in args.compare:
        first, _, second = pair.partition(",")
        diff = np.asarray(per_query[first]) - np.asarray(per_query[second])
        boot = diff[samples].mean(axis=1)
        print(f"diff_{pair} {float(diff.mean())}")
        print(f"ci_low_{pair} {float(np.quantile(boot, 0.025))}")
        print(f"ci_high_{pair} {float(np.quantile(boot, 0.975))}")
    print(f"queries {n}")
    print("per_query " + json.dumps(per_query))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("model_dir")
    t.add_argument("split_dir")
    t.add_argument("out_dir")
    t.add_argument("--epochs", type=float, required=True)
    t.add_argument("--batch-size", type=int, required=True)
    t.add_argument("--max-length", type=int, required=True)
    t.add_argument("--lr", type=float, required=True)
    t.add_argument("--warmup-ratio", type=float, required=True)
    t.add_argument("--weight-decay", type=float, required=True)
    t.add_argument("--limit", type=int, default=0)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    e = sub.add_parser("eval")
    e.add_argument("split_dir")
    e.add_argument("resamples", type=int)
    e.add_argument("seed", type=int)
    e.add_argument("models", nargs="+")
    e.add_argument("--compare", action="append", default=[])
    args = parser.parse_args()
    if args.command == "train":
        train(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
