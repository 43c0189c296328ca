"""The Python side of `cargo xtask bench joint`: the two costly parts of an LSR retriever step
(REPLUG's LM-supervised retrieval) in PyTorch, on exactly the data `ragtune joint lsr` used.

  bench_joint.py LM_DIR TRIPLES_JSONL ST_DIR TARGETS_JSON CORPUS_PARQUET
      --score-batch-size B --steps S --batch-size 8 --lr 1e-5 --max-grad-norm 1.0
      --retriever-temperature 0.05 --lm-temperature 0.1 [--max-length L] [--seed 42]

1. LM scoring. LM_DIR is the Hugging Face folder ragtune's generator loaded (fp32 both sides);
   TRIPLES_JSONL is ragtune's `<run>/round-1/retriever/triples.jsonl` (`input_ids`, `prompt_len`,
   `mean_logp` per line). Each triple's score is the mean log-probability of its tokens at
   positions >= prompt_len, computed as ragtune does: no gradients (torch.inference_mode()),
   triples sorted longest first (a stable sort, so ties keep file order), batches of B, each
   right-padded to its own longest with an attention mask. The forward pass is transformers'
   AutoModelForCausalLM as a user calls it (`model(...).logits`, every position), then
   log_softmax and the answer tokens' log-probabilities. Timed: the batches, from the first
   padding to the last score.

2. The LSR step. TARGETS_JSON is ragtune's `<run>/round-1/retriever/targets.json` (each
   training question, its top-k corpus positions and doc ids, and the LM's scores of them);
   CORPUS_PARQUET the corpus ragtune searched (passage text as `ragtune_retrieval::passage_text`:
   "title. text" when the title is not blank). The corpus is encoded once by the frozen
   sentence-transformers model (not timed). Then S optimizer steps over the questions in file order
   (ragtune's trainer runs with shuffle = false), batches of 8: the questions encoded with
   gradients in train mode (dropout on, as ragtune's query tower trains), cosine scores against the
   8 x k fixed passage embeddings, log P = log_softmax(s / tau_r), Q = softmax(lm / tau_lm),
   KL(Q || P) summed over the batch, backward, gradient clipping, AdamW (torch's fused CPU kernel,
   which ragtune's trainer also calls; no weight decay) with a linear schedule. Each step is timed
   on its own, tokenization included.

Prints `key value` lines: triples, tokens, score_seconds, max_abs_diff (of the mean log-probs
against ragtune's), mean_abs_diff, steps, step_seconds_mean (steps after the first), step_seconds
(every step, comma-separated), first_loss, load_lm_seconds, load_st_seconds, encode_corpus_seconds.
"""

import argparse
import json
import os
import time


def passage_text(title, text):
    title = (title or "").strip()
    return text if not title else f"{title}. {text}"


def score(args, torch):
    from transformers import AutoModelForCausalLM

    rows = []
    with open(args.triples, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        raise SystemExit(f"{args.triples} holds no triples")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.lm_dir, dtype=torch.float32)
    model.eval()
    load_seconds = time.perf_counter() - t0
    pad = model.config.pad_token_id
    if pad is None:
        pad = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0

    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    scores = [None] * len(rows)
    tokens = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), args.score_batch_size):
            chunk = order[start : start + args.score_batch_size]
            width = max(len(rows[i]["input_ids"]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            answer = torch.zeros((len(chunk), width), dtype=torch.bool)
            for j, i in enumerate(chunk):
                seq = rows[i]["input_ids"]
                n = len(seq)
                ids[j, :n] = torch.tensor(seq, dtype=torch.long)
                attention[j, :n] = 1
                answer[j, rows[i]["prompt_len"] : n] = True
                tokens += n
            logits = model(input_ids=ids, attention_mask=attention).logits
            logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logps = logps.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            mask = answer[:, 1:]
            sums = (token_logps * mask).double().sum(-1)
            counts = mask.sum(-1).double()
            if (counts < 1).any():
                raise SystemExit("a triple has no answer tokens")
            for j, i in enumerate(chunk):
                scores[i] = (sums[j] / counts[j]).item()
    seconds = time.perf_counter() - t0
    diffs = [abs(s - r["mean_logp"]) for s, r in zip(scores, rows)]
    print(f"triples {len(rows)}")
    print(f"tokens {tokens}")
    print(f"score_seconds {seconds:.3f}")
    print(f"load_lm_seconds {load_seconds:.3f}")
    print(f"max_abs_diff {max(diffs):.3e}")
    print(f"mean_abs_diff {sum(diffs) / len(diffs):.3e}")
    worst = max(range(len(rows)), key=lambda i: diffs[i])
    print(
        f"worst_triple {rows[worst]['question_id']}/{rows[worst]['doc_id']} "
        f"python {scores[worst]:.6f} ragtune {rows[worst]['mean_logp']:.6f} "
        f"tokens {len(rows[worst]['input_ids'])} answer {len(rows[worst]['input_ids']) - rows[worst]['prompt_len']}"
    )
    return model


def lsr(args, torch):
    import pyarrow.parquet as pq
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    with open(args.targets, encoding="utf-8") as f:
        targets = json.load(f)
    table = pq.read_table(args.corpus, columns=["doc_id", "title", "text"]).to_pylist()
    position = {}
    for i, d in enumerate(table):
        position.setdefault(d["doc_id"], i)
    for t in targets:
        found = [position.get(d) for d in t["doc_ids"]]
        if found != t["doc_indices"]:
            raise SystemExit(
                f"question {t['question_id']}: doc ids {t['doc_ids']} sit at {found} in "
                f"{args.corpus}, not at ragtune's positions {t['doc_indices']}"
            )
    k = len(targets[0]["doc_indices"])
    if any(len(t["doc_indices"]) != k or len(t["lm_scores"]) != k for t in targets):
        raise SystemExit("every question needs the same number of candidates and scores")

    t0 = time.perf_counter()
    st = SentenceTransformer(args.st_dir, device="cpu")
    if args.max_length:
        st.max_seq_length = args.max_length
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    st.eval()
    with torch.no_grad():
        passages = st.encode(
            [passage_text(d["title"], d["text"]) for d in table],
            batch_size=64,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    passages = passages.detach().clone()
    encode_seconds = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    st.train()
    params = [p for p in st.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True
    )
    total = args.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, (total - step) / max(1, total))
    )
    # sentence-transformers 6 renamed `tokenize` to `preprocess`.
    preprocess = getattr(st, "preprocess", None) or st.tokenize
    per_step = []
    losses = []
    n = len(targets)
    cursor = 0
    for _ in range(args.steps):
        if cursor >= n:
            cursor = 0
        rows = targets[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        t0 = time.perf_counter()
        features = preprocess([r["question"] for r in rows])
        queries = st(features)["sentence_embedding"]
        queries = F.normalize(queries.float(), dim=-1)
        index = torch.tensor([i for r in rows for i in r["doc_indices"]], dtype=torch.long)
        cand = passages.index_select(0, index).view(len(rows), k, -1)
        scores = torch.bmm(cand, queries.unsqueeze(2)).squeeze(2)
        lm = torch.tensor([r["lm_scores"] for r in rows], dtype=torch.float32)
        log_p = F.log_softmax(scores / args.retriever_temperature, dim=-1)
        log_q = F.log_softmax(lm / args.lm_temperature, dim=-1)
        loss = (log_q.exp() * (log_q - log_p)).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        per_step.append(time.perf_counter() - t0)
        losses.append(loss.item())
    later = per_step[1:] if len(per_step) > 1 else per_step
    print(f"steps {len(per_step)}")
    print(f"step_seconds_mean {sum(later) / len(later):.4f}")
    print("step_seconds " + ",".join(f"{s:.4f}" for s in per_step))
    print(f"first_loss {losses[0]:.6f}")
    print("losses " + ",".join(f"{v:.6f}" for v in losses))
    print(f"load_st_seconds {load_seconds:.3f}")
    print(f"encode_corpus_seconds {encode_seconds:.3f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("lm_dir")
    p.add_argument("triples")
    p.add_argument("st_dir")
    p.add_argument("targets")
    p.add_argument("corpus")
    p.add_argument("--score-batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--max-grad-norm", type=float, required=True)
    p.add_argument("--retriever-temperature", type=float, required=True)
    p.add_argument("--lm-temperature", type=float, required=True)
    p.add_argument("--max-length", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    # The generator stays loaded through the retriever step, as it does in ragtune's process.
    model = score(args, torch)
    lsr(args, torch)
    del model


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
