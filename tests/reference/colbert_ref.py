"""ColBERT scoring with transformers and torch, following colbert-ai's (v2) tokenization and MaxSim.

stdin: {"model_dir": a folder with a BERT (config.json, model.safetensors, tokenizer) and
        colbert_linear.safetensors ("linear.weight"), "queries": [...], "docs": [...],
        "query_length": 32, "doc_length": 180, "query_marker": "[unused0]", "doc_marker": "[unused1]",
        "attend_to_mask_tokens": false, "skip_punctuation": true}
stdout: {"query_ids": [[...]], "doc_ids": [[...]] (unpadded), "scores": [[query x doc MaxSim]]}

As colbert-ai does: texts get a ". " prefix whose "." is then overwritten by the marker; queries are
padded to query_length and their padding turned into [MASK] (attended only with
attend_to_mask_tokens); documents drop punctuation (string.punctuation) and padding from scoring;
the projection has no bias; embeddings are L2-normalized; masked document tokens score -9999.
"""
import json
import string
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel


def main():
    req = json.load(sys.stdin)
    model_dir = req["model_dir"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    bert = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    weight = load_file(f"{model_dir}/colbert_linear.safetensors")["linear.weight"]
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data = weight.float()
    pad_id, mask_id = tok.pad_token_id, tok.mask_token_id

    def tensorize(texts, marker, max_length, pad_to_max):
        enc = tok(
            [". " + t for t in texts],
            padding="max_length" if pad_to_max else "longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        ids[:, 1] = tok.convert_tokens_to_ids(marker)
        return ids, mask

    with torch.no_grad():
        q_ids, q_mask = tensorize(req["queries"], req["query_marker"], req["query_length"], True)
        q_ids[q_ids == pad_id] = mask_id
        if req["attend_to_mask_tokens"]:
            q_mask[q_ids == mask_id] = 1
        Q = linear(bert(q_ids, attention_mask=q_mask).last_hidden_state)
        Q = torch.nn.functional.normalize(Q, p=2, dim=2)

        d_ids, d_mask = tensorize(req["docs"], req["doc_marker"], req["doc_length"], False)
        skiplist = set()
        if req["skip_punctuation"]:
            for symbol in string.punctuation:
                skiplist.add(tok.encode(symbol, add_special_tokens=False)[0])
        keep = torch.tensor(
            [[(x not in skiplist) and (x != pad_id) for x in row] for row in d_ids.tolist()]
        )
        D = linear(bert(d_ids, attention_mask=d_mask).last_hidden_state)
        D = torch.nn.functional.normalize(D, p=2, dim=2)

        token_scores = torch.einsum("qid,pjd->qpij", Q, D)
        token_scores = token_scores.masked_fill(~keep[None, :, None, :], -9999.0)
        scores = token_scores.max(dim=3).values.sum(dim=2)

    print(
        json.dumps(
            {
                "query_ids": q_ids.tolist(),
                "doc_ids": [row[: int(m.sum())] for row, m in zip(d_ids.tolist(), d_mask)],
                "scores": scores.tolist(),
            }
        )
    )


main()
