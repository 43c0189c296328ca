"""Reference values for ragtune-eval's classification metrics, from scikit-learn.

stdin: {"cases": [{"y_true": [str], "y_pred": [str], "zero_division": float}]}
stdout: per case labels, confusion matrix, accuracy, per-label and micro/macro/weighted P/R/F1, support.
"""
import json
import sys

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.utils.multiclass import unique_labels


def main():
    data = json.load(sys.stdin)
    out = []
    for case in data["cases"]:
        y_true, y_pred, zd = case["y_true"], case["y_pred"], case["zero_division"]
        labels = [str(l) for l in unique_labels(y_true, y_pred)]
        row = {
            "labels": labels,
            "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
            "accuracy": accuracy_score(y_true, y_pred),
        }
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=zd)
        row["per_label"] = [[float(a), float(b), float(c)] for a, b, c in zip(p, r, f)]
        row["support"] = [int(x) for x in s]
        for average in ["micro", "macro", "weighted"]:
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=zd)
            row[average] = [float(p), float(r), float(f)]
        out.append(row)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
