"""Loads folders written by `ragtune_retriever_train::export` with sentence-transformers and encodes texts.

stdin: {"folders": [path, ...], "texts": [str, ...]}
stdout: {"embeddings": {path: [[float, ...], ...]}, "modules": {path: [module class names]}}
"""
import json
import sys

from sentence_transformers import SentenceTransformer


def main():
    x = json.load(sys.stdin)
    out = {"embeddings": {}, "modules": {}}
    for folder in x["folders"]:
        model = SentenceTransformer(folder, device="cpu")
        out["embeddings"][folder] = model.encode(x["texts"], convert_to_numpy=True).tolist()
        out["modules"][folder] = [type(m).__name__ for m in model]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
