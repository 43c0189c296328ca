"""Reference values for ragtune-eval's BERTScore math, from bert-score's own functions.

stdin: {"pairs": [{"cand_ids": [int], "cand_vecs": [[float]], "ref_ids": [int], "ref_vecs": [[float]]}],
        "cls": int, "sep": int}
Token vectors are given (no model): idf weights come from bert_score.utils.get_idf_dict over the
reference ids (with [CLS]/[SEP] set to 0, as bert_score.score does), the scores from
bert_score.utils.greedy_cos_idf on padded batches, exactly as bert_score.score runs it.
stdout: {"plain": [[P, R, F]] per pair, "idf": [[P, R, F]] per pair}.
"""
import json
import sys
from collections import defaultdict

import torch
from bert_score.utils import get_idf_dict, greedy_cos_idf


def pad(rows, width, dim):
    # Padding rows are masked out; ones (not zeros) keep their normalization finite, as real
    # model outputs at padded positions are.
    out = torch.ones(len(rows), width, dim, dtype=torch.float64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
    return out


def scores(data, use_idf):
    pairs = data["pairs"]
    if use_idf:
        idf_dict = get_idf_dict([p["ref_ids"] for p in pairs], None, nthreads=0)
    else:
        idf_dict = defaultdict(lambda: 1.0)
    idf_dict[data["sep"]] = 0
    idf_dict[data["cls"]] = 0
    dim = len(pairs[0]["cand_vecs"][0])
    out = []
    for p in pairs:
        width = max(len(p["cand_ids"]), len(p["ref_ids"]))
        hyp = pad([p["cand_vecs"]], width, dim)
        ref = pad([p["ref_vecs"]], width, dim)
        hyp_mask = torch.zeros(1, width, dtype=torch.long)
        hyp_mask[0, : len(p["cand_ids"])] = 1
        ref_mask = torch.zeros(1, width, dtype=torch.long)
        ref_mask[0, : len(p["ref_ids"])] = 1
        hyp_idf = torch.zeros(1, width, dtype=torch.float64)
        hyp_idf[0, : len(p["cand_ids"])] = torch.tensor([float(idf_dict[i]) for i in p["cand_ids"]], dtype=torch.float64)
        ref_idf = torch.zeros(1, width, dtype=torch.float64)
        ref_idf[0, : len(p["ref_ids"])] = torch.tensor([float(idf_dict[i]) for i in p["ref_ids"]], dtype=torch.float64)
        P, R, F = greedy_cos_idf(ref, ref_mask, ref_idf, hyp, hyp_mask, hyp_idf)
        out.append([float(P[0]), float(R[0]), float(F[0])])
    return out


def main():
    data = json.load(sys.stdin)
    json.dump({"plain": scores(data, False), "idf": scores(data, True)}, sys.stdout)


if __name__ == "__main__":
    main()
