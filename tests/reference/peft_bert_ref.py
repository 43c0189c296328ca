"""Reference for ragtune's encoder adapters: Python PEFT's PeftModel.from_pretrained on top of
transformers' BertModel (AutoModel), the model sentence-transformers wraps.

JSON on stdin, JSON on stdout:
  {"op": "hidden", "model_dir", "adapters": {name: DIR}, "input_ids": [[ids]],
   "attention_mask": [[0/1]], "out": FILE}
      -> writes FILE (safetensors: base [batch, seq, hidden] and <name> [batch, seq, hidden], the
         last hidden states; <name>.pooler [batch, hidden] for adapters that wrap the pooler);
         answers {"out": FILE, "missing": {name: [keys]}}. Loading is strict: a key the file has
         that PEFT has no place for is an error, and so is a missing key other than the pooler's
         (transformers always builds a pooler; a checkpoint without one gives ragtune none to wrap).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import AutoModel
from transformers.utils import logging

logging.set_verbosity_error()
torch.set_num_threads(2)


def load_base(model_dir):
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


def hidden_op(req):
    ids = torch.tensor(req["input_ids"])
    mask = torch.tensor(req["attention_mask"])
    out = {}
    missing_by_name = {}
    with torch.no_grad():
        out["base"] = load_base(req["model_dir"])(input_ids=ids, attention_mask=mask).last_hidden_state
        for name, adapter_dir in req["adapters"].items():
            model = PeftModel.from_pretrained(load_base(req["model_dir"]), adapter_dir)
            model.eval()
            saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
            expected = get_peft_model_state_dict(model)
            missing = sorted(set(expected) - set(saved))
            unexpected = sorted(set(saved) - set(expected))
            if unexpected or any(".pooler." not in k for k in missing):
                raise SystemExit(f"{name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
            missing_by_name[name] = missing
            result = model(input_ids=ids, attention_mask=mask)
            out[name] = result.last_hidden_state
            wraps_pooler = any(".pooler." in k for k in expected)
            if wraps_pooler and not missing:
                out[f"{name}.pooler"] = result.pooler_output
    save_file({k: v.contiguous() for k, v in out.items()}, req["out"])
    return {"out": req["out"], "missing": missing_by_name}


def main():
    req = json.load(sys.stdin)
    op = {"hidden": hidden_op}[req["op"]]
    json.dump(op(req), sys.stdout)


if __name__ == "__main__":
    main()
