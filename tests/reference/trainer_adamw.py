"""Reference for ragtune-trainer's AdamW and gradient clipping: torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_.

stdin: {"params": [{"name", "shape", "data", "lr_scale", "weight_decay"}], "grads": [step][param] -> flat list,
        "lrs": [base lr per step], "betas": [b1, b2], "eps": float, "max_grad_norm": float or null}
stdout: {"params": {name: flat}, "exp_avg": {name: flat}, "exp_avg_sq": {name: flat}, "grad_norms": [per step]}
"""
import json
import sys

import torch


def main():
    spec = json.load(sys.stdin)
    torch.set_num_threads(1)
    params = [
        torch.tensor(p["data"], dtype=torch.float32).reshape(p["shape"]).requires_grad_(True)
        for p in spec["params"]
    ]
    groups = [
        {"params": [t], "lr": spec["lrs"][0] * p["lr_scale"], "weight_decay": p["weight_decay"]}
        for t, p in zip(params, spec["params"])
    ]
    optimizer = torch.optim.AdamW(groups, betas=tuple(spec["betas"]), eps=spec["eps"])
    grad_norms = []
    for step, grads in enumerate(spec["grads"]):
        for t, g in zip(params, grads):
            t.grad = torch.tensor(g, dtype=torch.float32).reshape(t.shape)
        if spec["max_grad_norm"] is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, spec["max_grad_norm"])
            grad_norms.append(float(norm))
        for group, p in zip(optimizer.param_groups, spec["params"]):
            group["lr"] = spec["lrs"][step] * p["lr_scale"]
        optimizer.step()
    out = {"params": {}, "exp_avg": {}, "exp_avg_sq": {}, "grad_norms": grad_norms}
    for t, p in zip(params, spec["params"]):
        state = optimizer.state[t]
        out["params"][p["name"]] = t.detach().flatten().tolist()
        out["exp_avg"][p["name"]] = state["exp_avg"].flatten().tolist()
        out["exp_avg_sq"][p["name"]] = state["exp_avg_sq"].flatten().tolist()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
