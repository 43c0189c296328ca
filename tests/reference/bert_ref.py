"""Reference values for the BERT encoder parity tests (crates/models/tests/bert_*.rs).

JSON on stdin, JSON on stdout. Tasks:
  {"task": "sentence_transformers", "model": DIR, "texts": [...], "saved": DIR?}
      -> {"embeddings": [[...]], "saved_embeddings": [[...]]?}
     sentence-transformers' own encode() (fp32, its default settings); "saved" is a folder that
     ragtune wrote, loaded by sentence-transformers the same way.
  {"task": "bert", "model": DIR, "texts": [...], "saved": DIR?}
      -> {"input_ids": [[...]], "hidden_states": [layer][text][token][hidden],
          "logits": [text][token][vocab], "splade": [text][vocab], "saved_max_abs_diff": float?}
     transformers' BertModel (all hidden states, unpadded per text) and BertForMaskedLM.
  {"task": "pooling", "token_embeddings": [b][s][h], "attention_mask": [b][s], "modes": [...]}
      -> {"pooled": {mode: [b][h]}, "normalized": {mode: [b][h]}}
     sentence-transformers' Pooling module for each mode, and its Normalize module after it.
"""

import json
import sys

import torch

torch.set_num_threads(2)


def sentence_transformers_task(req):
    from sentence_transformers import SentenceTransformer

    out = {}
    model = SentenceTransformer(req["model"], device="cpu")
    out["embeddings"] = model.encode(req["texts"], convert_to_numpy=True).tolist()
    if req.get("saved"):
        saved = SentenceTransformer(req["saved"], device="cpu")
        out["saved_embeddings"] = saved.encode(req["texts"], convert_to_numpy=True).tolist()
    return out


def bert_outputs(model_dir, texts):
    from transformers import AutoTokenizer, BertForMaskedLM, BertModel

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    encoder = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    mlm = BertForMaskedLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        hidden = encoder(**batch, output_hidden_states=True).hidden_states
        logits = mlm(**batch).logits
    mask = batch["attention_mask"].unsqueeze(-1).to(logits.dtype)
    splade = (torch.log1p(torch.relu(logits)) * mask).amax(dim=1)
    return batch, lengths, hidden, logits, splade


def bert_task(req):
    texts = req["texts"]
    batch, lengths, hidden, logits, splade = bert_outputs(req["model"], texts)
    out = {
        "input_ids": [batch["input_ids"][i, :n].tolist() for i, n in enumerate(lengths)],
        "hidden_states": [[h[i, :n].tolist() for i, n in enumerate(lengths)] for h in hidden],
        "logits": [logits[i, :n].tolist() for i, n in enumerate(lengths)],
        "splade": splade.tolist(),
    }
    if req.get("saved"):
        _, _, saved_hidden, saved_logits, _ = bert_outputs(req["saved"], texts)
        diffs = [(a - b).abs().max().item() for a, b in zip(hidden, saved_hidden)]
        diffs.append((logits - saved_logits).abs().max().item())
        out["saved_max_abs_diff"] = max(diffs)
    return out


def pooling_task(req):
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    tokens = torch.tensor(req["token_embeddings"], dtype=torch.float32)
    mask = torch.tensor(req["attention_mask"], dtype=torch.int64)
    pooled, normalized = {}, {}
    for mode in req["modes"]:
        module = Pooling(tokens.shape[-1], pooling_mode=mode)
        features = module({"token_embeddings": tokens, "attention_mask": mask})
        pooled[mode] = features["sentence_embedding"].tolist()
        normalized[mode] = Normalize()(features)["sentence_embedding"].tolist()
    return {"pooled": pooled, "normalized": normalized}


def main():
    req = json.load(sys.stdin)
    task = req["task"]
    if task == "sentence_transformers":
        out = sentence_transformers_task(req)
    elif task == "bert":
        out = bert_task(req)
    elif task == "pooling":
        out = pooling_task(req)
    else:
        raise SystemExit(f"unknown task {task!r}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
