"""Reference for ragtune's PEFT adapters: Python PEFT's PeftModel.from_pretrained on top of
transformers' LlamaForCausalLM (loaded from the Hugging Face folder ragtune converted).

JSON on stdin, JSON on stdout:
  {"op": "logits", "model_dir", "adapters": {name: DIR}, "input_ids": [ids], "out": FILE}
      -> writes FILE (safetensors: <name> [seq, vocab], logits of the real tokens only, and
         base [seq, vocab] without any adapter); answers {"out": FILE, "virtual": {name: n}}.
         Loading is strict: a key that PEFT expects but the file lacks, or a key the file has
         that PEFT has no place for, is an error.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

torch.set_num_threads(2)


def load_base(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


def logits_op(req):
    ids = torch.tensor([req["input_ids"]])
    out = {}
    virtual = {}
    with torch.no_grad():
        out["base"] = load_base(req["model_dir"])(input_ids=ids).logits[0].contiguous()
        for name, adapter_dir in req["adapters"].items():
            model = PeftModel.from_pretrained(load_base(req["model_dir"]), adapter_dir)
            model.eval()
            # Strictness: every saved tensor must have been consumed by PEFT's model.
            saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
            from peft.utils import get_peft_model_state_dict

            expected = get_peft_model_state_dict(model)
            missing = sorted(set(expected) - set(saved))
            unexpected = sorted(set(saved) - set(expected))
            if missing or unexpected:
                raise SystemExit(f"{name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            n = logits.shape[0] - ids.shape[1]
            virtual[name] = n
            out[name] = logits[n:].contiguous()
    save_file(out, req["out"])
    return {"out": req["out"], "virtual": virtual}


def main():
    req = json.load(sys.stdin)
    op = {"logits": logits_op}[req["op"]]
    json.dump(op(req), sys.stdout)


if __name__ == "__main__":
    main()
