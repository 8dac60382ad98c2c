#!/usr/bin/env bash
# The GPU checks of issue #6, as one script for a lent H200 (see eval/README.md). Writes JSON lines to $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 LRFR_LOAD_PLUGINS=
OUT=${OUT:-/tmp/gpu-checks}; mkdir -p "$OUT"
B="python3 eval/bench_train.py --device cuda --backbone iresnet50 --steps 20 --warmup 5"
for flags in "" "--amp bf16" "--amp bf16 --channels-last"; do $B $flags | tee -a "$OUT/bench_train.jsonl"; done
timeout 120 $B --amp bf16 --channels-last --compile | tee -a "$OUT/bench_train.jsonl"
cat > /tmp/ddp.yaml <<'YAML'
lrfr: 1
name: ddp-one-gpu
data: {name: synthetic, params: {num_identities: 500, images_per_identity: 10}}
backbone: {name: iresnet50}
head: {name: approach2, params: {mapping: bounded}}
degradations: [{name: cross-resolution}]
train: {epochs: 1, batch_size: 128, amp: bf16, channels_last: true, num_workers: 4, device: cuda,
        optimizer: {name: sgd, lr: 0.1}, warmup_steps: 10}
eval: [{name: synthetic, params: {num_identities: 50, num_pairs: 500, sizes: [112, 14]}}]
export: {onnx: true}
YAML
python3 -m torch.distributed.run --nproc_per_node 1 -m lrfr_plugins.cli run /tmp/ddp.yaml --out /tmp/ddprun \
  --no-progress > "$OUT/ddp.log" 2>&1; echo "ddp rc=$?" | tee -a "$OUT/ddp.log"
cp /tmp/ddprun/metrics.json "$OUT/ddp_metrics.json" 2>/dev/null
for i in 1 2 3; do taskset -c 0,1 python3 eval/bench_laplacian.py --repeats 11 | tr -d '\n ' >> "$OUT/laplacian.jsonl"; echo >> "$OUT/laplacian.jsonl"; done
tail -3 "$OUT/ddp.log"; cat "$OUT/laplacian.jsonl"
