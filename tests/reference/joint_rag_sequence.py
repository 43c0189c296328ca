"""Reference for crates/rag-joint's RAG-sequence backward (crates/rag-joint/tests/rag_sequence_parity.rs):
the whole loss in one plain autograd graph, in float64, on transformers' BertModel (the query tower,
mean pooling as sentence-transformers pools a plain BERT folder) and Python PEFT's LoRA on
transformers' LlamaForCausalLM (the generator).

stdin: {"bert": DIR, "generator": DIR, "adapter": DIR, "out": FILE,
        "batch": {"input_ids": [B][T], "attention_mask": [B][T], "token_type_ids": [B][T]},
        "passages": [B][k][dim], "temperature": t,
        "examples": [B][k] {"input_ids": [..], "prompt_len": n}}
  loss = -sum_b logsumexp_d(log_softmax(cos(q_b, p_bd) / t)_d + l_bd), with l_bd the summed
  log-probability of example bd's answer tokens (input_ids[prompt_len:], each predicted from the
  position before it), one unpadded sequence at a time.
stdout: {"<case>": {"loss", "answer_logps": [B][k], "no_grad": [names]}} for the cases "trains"
  (LoRA trainable) and "frozen" (LoRA loaded for inference); FILE (safetensors, float64) holds
  "<case>/<name>" for every parameter with a gradient: BERT's under its own names, LoRA's under
  the model's names (PEFT's without "base_model.model." and the adapter name "default").
"""
import json
import sys

import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import save_file
from transformers import BertModel, LlamaForCausalLM

torch.set_num_threads(2)


def query_embeddings(x):
    bert = BertModel.from_pretrained(x["bert"], add_pooling_layer=False).double().eval()
    batch = {k: torch.tensor(v) for k, v in x["batch"].items()}
    hidden = bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return bert, pooled


def answer_logp(model, example):
    ids = torch.tensor([example["input_ids"]])
    n = example["prompt_len"]
    logps = F.log_softmax(model(input_ids=ids).logits[0], dim=-1)
    targets = ids[0, n:]
    return logps[n - 1 : -1].gather(1, targets.unsqueeze(1)).sum()


def lora_name(name):
    return name.removeprefix("base_model.model.").replace(".default.", ".")


def run(x, trains):
    bert, q = query_embeddings(x)
    passages = torch.tensor(x["passages"], dtype=torch.float64)
    scores = torch.einsum("bd,bkd->bk", F.normalize(q, dim=-1), F.normalize(passages, dim=-1))
    base = LlamaForCausalLM.from_pretrained(x["generator"], dtype=torch.float32)
    lm = PeftModel.from_pretrained(base, x["adapter"], is_trainable=trains).double().eval()
    ell = torch.stack([torch.stack([answer_logp(lm, e) for e in row]) for row in x["examples"]])
    loss = -torch.logsumexp(F.log_softmax(scores / x["temperature"], -1) + ell, dim=-1).sum()
    loss.backward()
    grads, no_grad = {}, []
    params = [(n, p) for n, p in bert.named_parameters()]
    params += [(lora_name(n), p) for n, p in lm.named_parameters() if "lora_" in n]
    for name, p in params:
        if p.grad is None:
            no_grad.append(name)
        else:
            grads[name] = p.grad.detach().contiguous()
    return {"loss": loss.item(), "answer_logps": ell.tolist(), "no_grad": no_grad}, grads


def main():
    x = json.load(sys.stdin)
    out, tensors = {}, {}
    for case, trains in [("trains", True), ("frozen", False)]:
        out[case], grads = run(x, trains)
        tensors.update({f"{case}/{k}": v for k, v in grads.items()})
    save_file(tensors, x["out"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
