"""Reference values for ragtune-eval's retrieval metrics, from pytrec_eval (trec_eval).

stdin: {"qrels": {qid: {docid: int}}, "run": {qid: {docid: float}}, "cutoffs": [int]}
stdout: {qid: {measure: value}} with ragtune's measure names. MRR@k comes from trec_eval's
recip_rank (which has no cutoff): 1/rank of the first relevant document, kept when rank <= k.
"""
import json
import sys

import pytrec_eval


def main():
    data = json.load(sys.stdin)
    cutoffs = data["cutoffs"]
    ks = ",".join(str(k) for k in cutoffs)
    measures = {f"recall.{ks}", f"P.{ks}", f"ndcg_cut.{ks}", f"success.{ks}", f"map_cut.{ks}", "map", "recip_rank"}
    evaluator = pytrec_eval.RelevanceEvaluator(data["qrels"], measures)
    results = evaluator.evaluate(data["run"])
    out = {}
    for qid, values in results.items():
        row = {"map": values["map"]}
        rr = values["recip_rank"]
        for k in cutoffs:
            row[f"recall@{k}"] = values[f"recall_{k}"]
            row[f"p@{k}"] = values[f"P_{k}"]
            row[f"ndcg@{k}"] = values[f"ndcg_cut_{k}"]
            row[f"hit@{k}"] = values[f"success_{k}"]
            row[f"map@{k}"] = values[f"map_cut_{k}"]
            row[f"mrr@{k}"] = rr if rr > 0 and round(1 / rr) <= k else 0.0
        out[qid] = row
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
