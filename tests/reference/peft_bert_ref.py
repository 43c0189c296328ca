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
         Prompt and prefix tuning (task_type FEATURE_EXTRACTION) load as PeftModelForFeatureExtraction,
         whose last hidden state starts with the virtual tokens under prompt tuning. Also writes
         <name>.mean [batch, hidden]: mean pooling over the output with the attention mask extended
         by ones for prompt tuning's virtual tokens, as sentence-transformers pooled such models.
  {"op": "make", "model_dir", "adapters": {name: {"method": "prompt"|"prefix", "dir", "num_virtual_tokens",
   "init_text"?, "prefix_projection"?}}, "seed", "input_ids", "attention_mask", "out": FILE}
      -> builds each adapter with get_peft_model (PEFT's own initialization: TEXT from the model's
         tokenizer when init_text is given, random otherwise, moved off its start by seeded noise
         when "perturb" is true), saves it with save_pretrained and writes FILE with <name>
         [batch, seq', hidden], PEFT's last hidden state; <name>.init holds a prompt's embeddings
         before the noise.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from peft import PeftModel, PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model
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
            out[f"{name}.mean"] = mean_pool(model, result.last_hidden_state, mask)
    save_file({k: v.contiguous() for k, v in out.items()}, req["out"])
    return {"out": req["out"], "missing": missing_by_name}


def mean_pool(model, hidden, mask):
    config = model.active_peft_config
    if config.is_prompt_learning and hidden.shape[1] > mask.shape[1]:
        ones = torch.ones(mask.shape[0], config.num_virtual_tokens, dtype=mask.dtype)
        mask = torch.cat((ones, mask), dim=1)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def make_op(req):
    ids = torch.tensor(req["input_ids"])
    mask = torch.tensor(req["attention_mask"])
    out = {}
    for name, spec in req["adapters"].items():
        torch.manual_seed(req["seed"])
        n = spec["num_virtual_tokens"]
        if spec["method"] == "prompt":
            if spec.get("init_text"):
                config = PromptTuningConfig(
                    task_type=TaskType.FEATURE_EXTRACTION,
                    num_virtual_tokens=n,
                    prompt_tuning_init="TEXT",
                    prompt_tuning_init_text=spec["init_text"],
                    tokenizer_name_or_path=req["model_dir"],
                )
            else:
                config = PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=n)
        else:
            config = PrefixTuningConfig(
                task_type=TaskType.FEATURE_EXTRACTION,
                num_virtual_tokens=n,
                prefix_projection=spec.get("prefix_projection", False),
            )
        model = get_peft_model(load_base(req["model_dir"]), config)
        encoder = model.prompt_encoder["default"]
        if spec["method"] == "prompt":
            out[f"{name}.init"] = encoder.embedding.weight.detach().clone()
        if spec.get("perturb"):
            with torch.no_grad():
                for p in encoder.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
        model.eval()
        with torch.no_grad():
            out[name] = model(input_ids=ids, attention_mask=mask).last_hidden_state
        model.save_pretrained(spec["dir"])
    save_file({k: v.contiguous() for k, v in out.items()}, req["out"])
    return {"out": req["out"]}


def main():
    req = json.load(sys.stdin)
    op = {"hidden": hidden_op, "make": make_op}[req["op"]]
    json.dump(op(req), sys.stdout)


if __name__ == "__main__":
    main()
