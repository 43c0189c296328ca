"""Reference for ragtune's Llama decoder, tokenizer and generation: transformers'
LlamaForCausalLM and AutoTokenizer, loaded from a Hugging Face folder (the one ragtune converted).

JSON on stdin, JSON on stdout. Operations:
  {"op": "tokenize", "model_dir", "texts": [...], "chats": [[{"role", "content"}, ...], ...], "gguf": FILE}
      -> {"ids": [[...]], "decoded": [...], "chat_renders": [...], "special": {...}, "gguf_ids": [[...]]}
         gguf_ids come from transformers' own GGUF tokenizer conversion of FILE, independent of ragtune.
  {"op": "logits", "model_dir", "singles": [[ids]], "batch": [[ids]], "out": FILE}
      -> writes FILE (safetensors: single_<i> [seq, vocab], batch [b, max_len, vocab], left padded)
         and answers {"out": FILE}
  {"op": "generate", "model_dir", "prompts": [[ids]], "max_new_tokens": N}
      -> {"single": [[new ids]], "batched": [[new ids]]}, greedy, EOS and padding removed;
         single runs one prompt at a time, batched runs them all in one left-padded batch.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.manual_seed(0)
torch.set_num_threads(2)


def load_model(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


def left_pad(prompts, pad_id):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def tokenize_op(req):
    tok = AutoTokenizer.from_pretrained(req["model_dir"])
    ids = [tok(text)["input_ids"] for text in req["texts"]]
    decoded = [tok.decode(i) for i in ids]
    renders = [tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in req["chats"]]
    special = {
        "bos": tok.bos_token,
        "eos": tok.eos_token,
        "pad": tok.pad_token,
        "eos_id": tok.eos_token_id,
        "pad_id": tok.pad_token_id,
    }
    result = {"ids": ids, "decoded": decoded, "chat_renders": renders, "special": special}
    if req.get("gguf"):
        gguf_tok = AutoTokenizer.from_pretrained(os.path.dirname(req["gguf"]), gguf_file=os.path.basename(req["gguf"]))
        result["gguf_ids"] = [gguf_tok(text)["input_ids"] for text in req["texts"]]
    return result


@torch.no_grad()
def logits_op(req):
    model = load_model(req["model_dir"])
    out = {}
    for i, prompt in enumerate(req["singles"]):
        out[f"single_{i}"] = model(input_ids=torch.tensor([prompt])).logits[0].contiguous()
    ids, mask = left_pad(req["batch"], model.config.pad_token_id)
    # generate() derives positions from the mask like this; a bare forward() would not.
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    out["batch"] = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits.contiguous()
    save_file(out, req["out"])
    return {"out": req["out"]}


@torch.no_grad()
def generate_op(req):
    model = load_model(req["model_dir"])
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    pad = model.config.pad_token_id
    result = {}
    for mode, groups in (("single", [[p] for p in req["prompts"]]), ("batched", [req["prompts"]])):
        tokens = []
        for group in groups:
            ids, mask = left_pad(group, pad)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=req["max_new_tokens"],
                do_sample=False,
                pad_token_id=pad,
            )
            for row in out[:, ids.shape[1]:].tolist():
                new = []
                for t in row:
                    if t in eos:
                        break
                    new.append(t)
                tokens.append(new)
        result[mode] = tokens
    return result


def main():
    req = json.load(sys.stdin)
    op = {"tokenize": tokenize_op, "logits": logits_op, "generate": generate_op}[req["op"]]
    json.dump(op(req), sys.stdout)


if __name__ == "__main__":
    main()
