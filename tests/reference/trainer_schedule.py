"""Reference for ragtune-trainer's learning-rate schedules: transformers'
get_{constant,linear,cosine}_schedule_with_warmup, stepped as a training loop steps them.

stdin: [{"kind": "constant"|"linear"|"cosine", "warmup_steps", "total_steps", "num_cycles", "steps"}]
stdout: [[lr factor used by optimizer step 0, 1, ...], ...]
"""
import json
import sys

import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)


def factors(case):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    if case["kind"] == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, case["warmup_steps"])
    elif case["kind"] == "linear":
        scheduler = get_linear_schedule_with_warmup(optimizer, case["warmup_steps"], case["total_steps"])
    else:
        scheduler = get_cosine_schedule_with_warmup(
            optimizer, case["warmup_steps"], case["total_steps"], num_cycles=case["num_cycles"]
        )
    out = []
    for _ in range(case["steps"]):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


json.dump([factors(case) for case in json.load(sys.stdin)], sys.stdout)
