"""Reference BM25 scores from bm25s (method="lucene": Lucene's idf ln(1 + (N - df + 0.5)/(df + 0.5))
and tf / (tf + k1 (1 - b + b |d|/avgdl)), as ragtune's bm25.rs), on tokens ragtune's analyzer made,
so the comparison is of the scoring and ranking alone.

stdin: {"corpus": [[term]], "queries": [[term]], "k1": float, "b": float, "k": int}
stdout: {"top": [[[doc, score], ...] per query], "version": bm25s version}. Scores are float64
(bm25s dtype="float64"); the top k is ordered by score descending, then doc position ascending.
"""
import json
import sys

import bm25s
import numpy as np


def main():
    data = json.load(sys.stdin)
    model = bm25s.BM25(k1=data["k1"], b=data["b"], method="lucene", dtype="float64")
    model.index(data["corpus"], show_progress=False)
    k = data["k"]
    top = []
    for query in data["queries"]:
        known = [t for t in query if t in model.vocab_dict]
        if not known:
            scores = np.zeros(len(data["corpus"]))
        else:
            scores = model.get_scores(known)
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        top.append([[int(i), float(scores[i])] for i in order])
    json.dump({"top": top, "version": bm25s.__version__}, sys.stdout)


if __name__ == "__main__":
    main()
