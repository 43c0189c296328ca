"""Reference values for crates/retriever-train losses: the same formulas in torch (float64), with gradients.

stdin: {"queries": [[..]], "passages": [[..]], "cases": [{"similarity": "cosine"|"dot", "temperature": t}],
        "student": [[..]], "teacher": [[..]], "kl_temperature": t, "sp": [..], "sn": [..], "tp": [..], "tn": [..]}
stdout: per similarity, InfoNCE and symmetric InfoNCE with gradients w.r.t. queries and passages;
        Margin-MSE and KL distillation with gradients w.r.t. the student scores.
"""
import json
import sys

import torch
import torch.nn.functional as F


def contrastive(x, similarity, t):
    out = {}
    for name in ["info_nce", "symmetric"]:
        q = torch.tensor(x["queries"], dtype=torch.float64, requires_grad=True)
        p = torch.tensor(x["passages"], dtype=torch.float64, requires_grad=True)
        if similarity == "cosine":
            scores = F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T
        else:
            scores = q @ p.T
        b = q.shape[0]
        labels = torch.arange(b)
        loss = F.cross_entropy(scores / t, labels)
        if name == "symmetric":
            # As sentence-transformers' MultipleNegativesSymmetricRankingLoss: each positive picks its query.
            loss = (loss + F.cross_entropy(scores[:, :b].T / t, labels)) / 2
        loss.backward()
        out[name] = {"loss": loss.item(), "grad_q": q.grad.tolist(), "grad_p": p.grad.tolist()}
    return out


def main():
    x = json.load(sys.stdin)
    out = {}
    for case in x["cases"]:
        out[case["similarity"]] = contrastive(x, case["similarity"], case["temperature"])

    sp, sn = (torch.tensor(x[k], dtype=torch.float64, requires_grad=True) for k in ["sp", "sn"])
    tp, tn = (torch.tensor(x[k], dtype=torch.float64) for k in ["tp", "tn"])
    loss = F.mse_loss(sp - sn, tp - tn)
    loss.backward()
    out["margin_mse"] = {"loss": loss.item(), "grad_sp": sp.grad.tolist(), "grad_sn": sn.grad.tolist()}

    s = torch.tensor(x["student"], dtype=torch.float64, requires_grad=True)
    te = torch.tensor(x["teacher"], dtype=torch.float64)
    kt = x["kl_temperature"]
    loss = F.kl_div(F.log_softmax(s / kt, -1), F.log_softmax(te / kt, -1),
                    reduction="batchmean", log_target=True) * kt * kt
    loss.backward()
    out["kl"] = {"loss": loss.item(), "grad_student": s.grad.tolist()}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
