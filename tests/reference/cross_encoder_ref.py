"""Reference cross-encoder scores from sentence-transformers' CrossEncoder (float32, CPU).

stdin: {"mode": "score", "model": dir, "pairs": [[q, p], ...], "batch_size": n}
   or  {"mode": "save", "base": dir, "out": dir, "seed": s, "max_length": n, "pairs": [...]}
       (start a CrossEncoder from an encoder folder, as sentence-transformers does, and save it)
stdout: {"logits": [...]        raw logits (activation_fn = Identity),
         "predict": [...]       what predict() returns by default (its configured activation),
         "activation": name,    the activation predict() applies,
         "input_ids": [[...]],  the tokenizer's ids of each pair,
         "token_type_ids": [[...]], "max_length": n}
"""
import json
import sys

import torch
from sentence_transformers import CrossEncoder


def describe(model, pairs):
    logits = model.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=4,
                           convert_to_numpy=True, show_progress_bar=False)
    default = model.predict(pairs, batch_size=4, convert_to_numpy=True, show_progress_bar=False)
    tokenizer = model.tokenizer
    encoded = [tokenizer(q, p, truncation="longest_first", max_length=model.max_seq_length)
               for q, p in pairs]
    return {
        "logits": [float(x) for x in logits.reshape(-1)],
        "predict": [float(x) for x in default.reshape(-1)],
        "activation": type(model.activation_fn).__name__,
        "input_ids": [e["input_ids"] for e in encoded],
        "token_type_ids": [e["token_type_ids"] for e in encoded],
        "max_length": model.max_seq_length,
        "num_labels": model.num_labels,
    }


def main():
    x = json.load(sys.stdin)
    torch.set_num_threads(1)
    pairs = [tuple(p) for p in x["pairs"]]
    if x["mode"] == "save":
        torch.manual_seed(x["seed"])
        model = CrossEncoder(x["base"], num_labels=1, max_length=x["max_length"], device="cpu")
        model.save(x["out"])
    else:
        model = CrossEncoder(x["model"], device="cpu")
    model.eval()
    json.dump(describe(model, pairs), sys.stdout)


if __name__ == "__main__":
    main()
