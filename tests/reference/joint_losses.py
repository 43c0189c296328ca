"""Reference values for crates/rag-joint losses (crates/rag-joint/tests/lsr_parity.rs): torch's own
KL divergence (F.kl_div) and logsumexp in float64, with gradients.

stdin: {"queries": [B][dim], "passages": [B][k][dim], "lm_scores": [B][k], "answer_logps": [B][k],
        "lm_temperature": t, "cases": [{"similarity": "cosine"|"dot", "temperature": t}]}
stdout: per similarity {"scores": [B][k],
        "kl_q_p": {"loss", "grad_q"}, "kl_p_q": {"loss", "grad_q"},
        "marginal": {"loss", "grad_q", "grad_answer_logps"}}
  KL(Q||P) = kl_div(input=log P, target=Q, reduction="sum"), KL(P||Q) = kl_div(input=log Q, target=P),
  Q = softmax(lm / t_lm) (a constant), P = softmax(s / t_r); s = <q, p> (cosine: both F.normalize'd);
  RAG-sequence = -sum_b logsumexp_d(log P_bd + answer_logp_bd).
"""
import json
import sys

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def scores(x, q, similarity):
    p = torch.tensor(x["passages"], dtype=torch.float64)
    if similarity == "cosine":
        q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    return torch.einsum("bd,bkd->bk", q, p)


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def case(x, similarity, t):
    out = {}
    lm = torch.tensor(x["lm_scores"], dtype=torch.float64)
    t_lm = x["lm_temperature"]
    for name in ["kl_q_p", "kl_p_q"]:
        q = leaf(x["queries"])
        s = scores(x, q, similarity)
        if name == "kl_q_p":
            loss = F.kl_div(input=F.log_softmax(s / t, -1), target=F.softmax(lm / t_lm, -1), reduction="sum")
        else:
            loss = F.kl_div(input=F.log_softmax(lm / t_lm, -1), target=F.softmax(s / t, -1), reduction="sum")
        loss.backward()
        out[name] = {"loss": loss.item(), "grad_q": q.grad.tolist()}
        out["scores"] = s.detach().tolist()

    q, ell = leaf(x["queries"]), leaf(x["answer_logps"])
    s = scores(x, q, similarity)
    loss = -torch.logsumexp(F.log_softmax(s / t, -1) + ell, dim=-1).sum()
    loss.backward()
    out["marginal"] = {"loss": loss.item(), "grad_q": q.grad.tolist(), "grad_answer_logps": ell.grad.tolist()}
    return out


def main():
    x = json.load(sys.stdin)
    out = {c["similarity"]: case(x, c["similarity"], c["temperature"]) for c in x["cases"]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
