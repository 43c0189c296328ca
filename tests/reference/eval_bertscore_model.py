"""Reference BERTScore from the bert-score package on a local model folder.

stdin: {"model": path, "num_layers": int, "candidates": [str], "references": [str]}
stdout: {"plain": [[P, R, F]], "idf": [[P, R, F]]} (no baseline rescaling, fast tokenizer).
"""
import json
import sys

import torch
from bert_score import score


def main():
    data = json.load(sys.stdin)
    torch.manual_seed(0)
    out = {}
    for name, idf in [("plain", False), ("idf", True)]:
        P, R, F = score(
            data["candidates"], data["references"], model_type=data["model"], num_layers=data["num_layers"],
            idf=idf, device="cpu", batch_size=64, nthreads=0, use_fast_tokenizer=True,
        )
        out[name] = [[float(p), float(r), float(f)] for p, r, f in zip(P, R, F)]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
