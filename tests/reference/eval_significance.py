"""Reference values for ragtune-eval's paired significance tests, from scipy.stats.

stdin: {"permutation": [{"a": [float], "b": [float], "n_resamples": int, "alternative": str}],
        "bootstrap": [{"a": [float], "b": [float], "n_resamples": int, "confidence": float}]}
stdout: permutation p-values (exact when 2^n <= n_resamples) and percentile bootstrap CIs of mean(b - a).
"""
import json
import sys

import numpy as np
from scipy import stats


def mean_difference(x, y, axis=-1):
    return np.mean(y - x, axis=axis)


def main():
    data = json.load(sys.stdin)
    permutation = []
    for case in data["permutation"]:
        a, b = np.array(case["a"]), np.array(case["b"])
        res = stats.permutation_test(
            (a, b), mean_difference, permutation_type="samples", vectorized=True,
            n_resamples=case["n_resamples"], alternative=case["alternative"], rng=np.random.default_rng(0),
        )
        permutation.append({"statistic": float(res.statistic), "p_value": float(res.pvalue)})
    bootstrap = []
    for case in data["bootstrap"]:
        d = np.array(case["b"]) - np.array(case["a"])
        res = stats.bootstrap(
            (d,), np.mean, n_resamples=case["n_resamples"], confidence_level=case["confidence"],
            method="percentile", rng=np.random.default_rng(0),
        )
        bootstrap.append({"low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high),
                          "standard_error": float(res.standard_error)})
    json.dump({"permutation": permutation, "bootstrap": bootstrap}, sys.stdout)


if __name__ == "__main__":
    main()
