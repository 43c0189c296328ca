"""The Python side of `cargo xtask bench encode`.

  encode_bench.py generate FAQ_JSONL OUT_JSONL COUNT
      Writes COUNT passages of 5..300 words, deterministically re-combined from the FAQ answers
      (a fixed linear congruential generator, so every run and machine gets the same passages).
  encode_bench.py encode MODEL_DIR INPUT_JSONL BATCH_SIZE [OURS_PARQUET ...]
      Times sentence-transformers' encode() (fp32, default settings) on the passages and prints
      `key value` lines (passages, load_seconds, encode_seconds); for the i-th OURS_PARQUET, also
      min_cosine_i and mean_cosine_i between ragtune's embeddings and sentence-transformers' (untimed).
"""

import json
import sys
import time


def lcg(seed):
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        yield state >> 33


def generate(faq_path, out_path, count):
    words = []
    with open(faq_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                words.extend(json.loads(line)["a"].split())
    rng = lcg(20261128)
    with open(out_path, "w", encoding="utf-8") as out:
        for i in range(count):
            length = 5 + next(rng) % 296
            start = next(rng) % len(words)
            text = " ".join(words[(start + k) % len(words)] for k in range(length))
            out.write(json.dumps({"id": f"p{i:05d}", "text": text}, ensure_ascii=False) + "\n")


def encode(model_dir, input_path, batch_size, ours_paths):
    import torch

    torch.set_num_threads(2)
    from sentence_transformers import SentenceTransformer

    with open(input_path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    start = time.perf_counter()
    model = SentenceTransformer(model_dir, device="cpu")
    loaded = time.perf_counter()
    embeddings = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    done = time.perf_counter()
    result = {
        "passages": len(texts),
        "load_seconds": loaded - start,
        "encode_seconds": done - loaded,
    }
    if ours_paths:
        import numpy as np
        import pyarrow.parquet as pq

        theirs = embeddings.astype(np.float64)
        for index, path in enumerate(ours_paths):
            ours = np.array(pq.read_table(path)["embedding"].to_pylist(), dtype=np.float64)
            cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
            result[f"min_cosine_{index}"] = float(cos.min())
            result[f"mean_cosine_{index}"] = float(cos.mean())
    for key, value in result.items():
        print(key, value)


def main():
    mode = sys.argv[1]
    if mode == "generate":
        generate(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "encode":
        encode(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
