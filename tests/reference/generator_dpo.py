"""Reference for ragtune's DPO losses: the per-sequence losses and rewards of TRL 1.16's
DPOTrainer._compute_loss (standard DPO, f_divergence_type "reverse_kl"), on given log-probs.
The formulas are those of trl/trainer/dpo_trainer.py (sigmoid, hinge, ipo with per-token averages).

JSON on stdin: {"beta", "policy_chosen", "policy_rejected", "reference_chosen",
"reference_rejected", "chosen_len", "rejected_len"} (lists of floats)
JSON on stdout: {"sigmoid": [...], "hinge": [...], "ipo": [...], "chosen_rewards", "rejected_rewards"}
"""

import json
import sys

import torch
import torch.nn.functional as F
import trl

assert trl.__version__.startswith("1.16"), trl.__version__


def main():
    req = json.load(sys.stdin)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in req.items() if k != "beta"}
    beta = req["beta"]
    chosen_scores = t["policy_chosen"] - t["reference_chosen"]
    rejected_scores = t["policy_rejected"] - t["reference_rejected"]
    delta_score = chosen_scores - rejected_scores
    sigmoid = -F.logsigmoid(beta * delta_score)
    hinge = torch.relu(1 - beta * delta_score)
    ipo_delta = chosen_scores / t["chosen_len"].clamp(min=1.0) - rejected_scores / t["rejected_len"].clamp(min=1.0)
    ipo = (ipo_delta - 1 / (2 * beta)) ** 2
    json.dump(
        {
            "sigmoid": sigmoid.tolist(),
            "hinge": hinge.tolist(),
            "ipo": ipo.tolist(),
            "chosen_rewards": (beta * chosen_scores).tolist(),
            "rejected_rewards": (beta * rejected_scores).tolist(),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
