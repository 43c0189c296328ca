"""Reference for ragtune's DPO, from TRL 1.16.

Two operations (JSON on stdin, JSON on stdout):

- default (no "op"): the per-sequence losses and rewards of DPOTrainer._compute_loss (standard DPO,
  f_divergence_type "reverse_kl") on given log-probs, with the formulas of trl/trainer/dpo_trainer.py
  (sigmoid, hinge, ipo with per-token averages).
  In: {"beta", "policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected",
  "chosen_len", "rejected_len"} (lists of floats).
  Out: {"sigmoid": [...], "hinge": [...], "ipo": [...], "chosen_rewards", "rejected_rewards"}.

- "op": "trainer": a real DPOTrainer on a Hugging Face Llama folder with a LoRA (the base model plus
  a `peft_config`, so the reference is the base with the adapter disabled, as in ragtune), the
  adapter weights then loaded from ragtune's saved adapter folder. Each pair goes through
  DataCollatorForPreference and DPOTrainer.compute_loss alone (a batch of one), in eval mode, and
  the logged metrics give its policy log-probs, rewards and loss; compute_ref_log_probs gives the
  reference log-probs.
  In: {"op": "trainer", "model_dir", "adapter_dir", "beta", "loss_type", "pad_token_id",
  "pairs": [{"prompt_ids", "chosen_ids", "rejected_ids"}]}.
  Out: {"pairs": [{"loss", "logps_chosen", "logps_rejected", "ref_chosen", "ref_rejected",
  "rewards_chosen", "rewards_rejected"}]}.
"""

import json
import sys
import tempfile

import torch
import torch.nn.functional as F
import trl

assert trl.__version__.startswith("1.16"), trl.__version__


def formulas(req):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in req.items() if k != "beta"}
    beta = req["beta"]
    chosen_scores = t["policy_chosen"] - t["reference_chosen"]
    rejected_scores = t["policy_rejected"] - t["reference_rejected"]
    delta_score = chosen_scores - rejected_scores
    sigmoid = -F.logsigmoid(beta * delta_score)
    hinge = torch.relu(1 - beta * delta_score)
    ipo_delta = chosen_scores / t["chosen_len"].clamp(min=1.0) - rejected_scores / t["rejected_len"].clamp(min=1.0)
    ipo = (ipo_delta - 1 / (2 * beta)) ** 2
    return {
        "sigmoid": sigmoid.tolist(),
        "hinge": hinge.tolist(),
        "ipo": ipo.tolist(),
        "chosen_rewards": (beta * chosen_scores).tolist(),
        "rejected_rewards": (beta * rejected_scores).tolist(),
    }


def trainer_logps(req):
    import os

    from datasets import Dataset
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(req["model_dir"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(req["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_config = LoraConfig.from_pretrained(req["adapter_dir"])
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            beta=req["beta"],
            loss_type=[req["loss_type"]],
            per_device_train_batch_size=1,
            per_device_eval_batch_size=1,
            report_to="none",
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            precompute_ref_log_probs=False,
            max_length=None,
        )
        # The text dataset only lets the trainer initialize; the pairs below come as token ids.
        dataset = Dataset.from_list([{"prompt": "Question?", "chosen": " Yes.", "rejected": " No."}])
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        weights = load_file(os.path.join(req["adapter_dir"], "adapter_model.safetensors"))
        result = set_peft_model_state_dict(trainer.model, weights)
        unexpected = getattr(result, "unexpected_keys", [])
        assert not unexpected, f"adapter keys PEFT does not know: {unexpected[:5]}"
        trainer.model.eval()
        collator = DataCollatorForPreference(pad_token_id=req["pad_token_id"])
        out_pairs = []
        for pair in req["pairs"]:
            batch = collator([pair])
            with torch.no_grad():
                loss = trainer.compute_loss(trainer.model, batch)
                ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
            m = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
            out_pairs.append(
                {
                    "loss": loss.item(),
                    "logps_chosen": m["logps/chosen"],
                    "logps_rejected": m["logps/rejected"],
                    "ref_chosen": ref_chosen.item(),
                    "ref_rejected": ref_rejected.item(),
                    "rewards_chosen": m["rewards/chosen"],
                    "rewards_rejected": m["rewards/rejected"],
                }
            )
    return {"pairs": out_pairs}


def main():
    req = json.load(sys.stdin)
    if req.get("op") == "trainer":
        out = trainer_logps(req)
    else:
        out = formulas(req)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
