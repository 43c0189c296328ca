#!/usr/bin/env bash
# The "Classification on the FAQ's categories" table: configs/classify-faq.toml once per row, each
# row changing only [peft] (and its run name), then one Markdown table from the runs' report.json.
#
#   cargo build --release -p ragtune-cli && scripts/classify-faq-table.sh
#
# Extra arguments go to every run (e.g. --set trainer.epochs=3).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RAGTUNE:-target/release/ragtune}
config=configs/classify-faq.toml

rows=(
  "full|"
  'lora|peft={method="lora", r=8, lora_alpha=16, target_modules=["query","key","value","dense"], lr=1e-3}'
  'ia3|peft={method="ia3", lr=5e-3}'
  'houlsby|peft={method="bottleneck", placement="houlsby", reduction_factor=16, lr=1e-3}'
  'pfeiffer|peft={method="bottleneck", placement="pfeiffer", reduction_factor=16, lr=1e-3}'
  'prompt_tuning|peft={method="prompt_tuning", num_virtual_tokens=16, lr=3e-2}'
  'prefix_tuning|peft={method="prefix_tuning", num_virtual_tokens=16, lr=5e-3}'
)

for row in "${rows[@]}"; do
  name=${row%%|*}
  peft=${row#*|}
  args=(classify train --device cpu --config "$config" --set "trainer.run_name=classify-faq-$name")
  [[ -n $peft ]] && args+=(--set "$peft")
  echo "== $bin ${args[*]} $*"
  "$bin" "${args[@]}" "$@"
done

python3 - <<'PY'
import json
names = ["full", "lora", "ia3", "houlsby", "pfeiffer", "prompt_tuning", "prefix_tuning"]
print("| method | accuracy (95% CI) | macro-F1 (95% CI) | trainable params | mean step | peak RSS | steps (best) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for n in names:
    r = json.load(open(f"runs/classify-faq-{n}/report.json"))
    t = r["test"]
    a, f = t["accuracy_ci"], t["macro_f1_ci"]
    print(f"| {n} | {t['accuracy']:.3f} [{a['low']:.3f}, {a['high']:.3f}] | {t['macro_f1']:.3f} [{f['low']:.3f}, {f['high']:.3f}] "
          f"| {r['trainable_parameters']:,} ({100*r['trainable_parameters']/r['total_parameters']:.2f}%) "
          f"| {1e3*r['mean_step_seconds']:.0f} ms | {r['peak_rss_bytes']/2**20:.0f} MiB | {r['steps']} ({r['best_step']}) |")
PY
