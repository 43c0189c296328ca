"""Reference values for ragtune-classify's test scores, from scikit-learn.

stdin: {"y_true": [str], "y_pred": [str]}
stdout: {"labels": [str], "accuracy": float, "macro_f1": float,
         "per_label": [[precision, recall, f1, support], ...]} (labels as sklearn's unique_labels)
"""
import json
import sys

from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.utils.multiclass import unique_labels


def main():
    data = json.load(sys.stdin)
    y_true, y_pred = data["y_true"], data["y_pred"]
    labels = [str(l) for l in unique_labels(y_true, y_pred)]
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    json.dump(
        {
            "labels": labels,
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "per_label": [[float(a), float(b), float(c), int(d)] for a, b, c, d in zip(p, r, f, s)],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
