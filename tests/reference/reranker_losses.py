"""Reference values for the reranker losses (crates/retriever-train/src/reranker/losses.rs), in
torch float64 with gradients w.r.t. the logits.

stdin: {"logits": [[..]], "valid": [[bool]], "teacher": [[..]], "temperature": t, "teacher_scale": s}
       (row i: the positive in column 0, then its negatives; `valid` false on padding)
stdout: {"bce" | "listwise" | "margin_mse": {"loss": v, "grad": [[..]]}}
"""
import json
import sys

import torch
import torch.nn.functional as F


def main():
    x = json.load(sys.stdin)
    valid = torch.tensor(x["valid"], dtype=torch.bool)
    out = {}

    # Pointwise: every valid pair on its own, positives labelled 1 (BCEWithLogitsLoss, mean).
    s = torch.tensor(x["logits"], dtype=torch.float64, requires_grad=True)
    labels = torch.zeros_like(s)
    labels[:, 0] = 1.0
    loss = F.binary_cross_entropy_with_logits(s[valid], labels[valid])
    loss.backward()
    out["bce"] = {"loss": loss.item(), "grad": s.grad.tolist()}

    # Listwise: one softmax per row over its own valid candidates, the positive the target.
    s = torch.tensor(x["logits"], dtype=torch.float64, requires_grad=True)
    t = x["temperature"]
    losses = []
    for i in range(s.shape[0]):
        row = s[i][valid[i]] / t
        losses.append(F.cross_entropy(row.unsqueeze(0), torch.tensor([0])))
    loss = torch.stack(losses).mean()
    loss.backward()
    out["listwise"] = {"loss": loss.item(), "grad": s.grad.tolist()}

    # Margin-MSE over each valid (positive, negative) pair of a row.
    s = torch.tensor(x["logits"], dtype=torch.float64, requires_grad=True)
    te = torch.tensor(x["teacher"], dtype=torch.float64) * x["teacher_scale"]
    student_margins, teacher_margins = [], []
    for i in range(s.shape[0]):
        for j in range(1, s.shape[1]):
            if valid[i, j]:
                student_margins.append(s[i, 0] - s[i, j])
                teacher_margins.append(te[i, 0] - te[i, j])
    loss = F.mse_loss(torch.stack(student_margins), torch.stack(teacher_margins))
    loss.backward()
    out["margin_mse"] = {"loss": loss.item(), "grad": s.grad.tolist()}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
