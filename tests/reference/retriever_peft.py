"""Reference for retrievers trained with a PEFT adapter: the exported adapter loaded by Python
PEFT on transformers' BertModel, and the exported merged folder loaded by sentence-transformers.

JSON on stdin, JSON on stdout:
  {"base": DIR, "adapter": DIR, "merged": DIR, "texts": [str], "max_length": n,
   "pooling": "mean" | "cls", "normalize": bool}
      -> {"peft": [[float]], "merged": [[float]]}: embeddings of the texts from
         PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter) with the given
         pooling, and from SentenceTransformer(merged).encode.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from peft import PeftModel
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging

logging.set_verbosity_error()
torch.set_num_threads(2)


def main():
    req = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(req["merged"])
    model = PeftModel.from_pretrained(
        AutoModel.from_pretrained(req["base"], dtype=torch.float32), req["adapter"]
    )
    model.eval()
    enc = tokenizer(
        req["texts"],
        padding=True,
        truncation=True,
        max_length=req["max_length"],
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    if req["pooling"] == "cls":
        pooled = hidden[:, 0]
    else:
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if req["normalize"]:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    merged = SentenceTransformer(req["merged"], device="cpu").encode(
        req["texts"], convert_to_numpy=True
    )
    json.dump({"peft": pooled.tolist(), "merged": merged.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
