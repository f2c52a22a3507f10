#!/usr/bin/env bash
# Regenerates every example report under reports/ (byte-identical for the same planner
# version and presets). Run from anywhere: reports/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
planner=target/release/planner

# The seed's case studies: BERT-large and a GPT (gpt2-xl, 1.5 B) on 4 GPUs of one DGX A100
# node, and on 8 GPUs across 4 nodes of 2 GPUs (hardware/a100-4x2.yaml). The seed claims
# ~3x at 4 GPUs and ~6x at 8; --claim puts those next to the prediction.
# BERT-large: the BERT paper's batch (256 x 512) and budget (1 M steps = 131 B tokens).
$planner report --model bert-large --cluster a100x8 --gpus 1,2,4 \
    --global-batch 256 --tokens 131e9 --claim 4=3 --out reports/bert-large-1node-4gpu
$planner report --model bert-large --cluster a100-4x2 --gpus 1,2,4,8 \
    --global-batch 256 --tokens 131e9 --claim 4=3 --claim 8=6 --out reports/bert-large-4nodes-8gpu
# gpt2-xl: GPT-2's batch (512 x 1024) and ~20 tokens per parameter (30 B tokens).
$planner report --model gpt2-xl --cluster a100x8 --gpus 1,2,4 \
    --global-batch 512 --tokens 30e9 --claim 4=3 --out reports/gpt2-xl-1node-4gpu
$planner report --model gpt2-xl --cluster a100-4x2 --gpus 1,2,4,8 \
    --global-batch 512 --tokens 30e9 --claim 4=3 --claim 8=6 --out reports/gpt2-xl-4nodes-8gpu

# GPT-3 175B on 8 to 4,096 A100s: the GPT-3 paper's 300 B tokens and Megatron-LM's batch of
# 1,536 x 2,048; an illustrative $2 per GPU-hour.
$planner report --model gpt3-175b --cluster a100-80g-x4096 --gpus 8,16,...,4096 \
    --global-batch 1536 --tokens 300e9 --gpu-hour-price 2 --out reports/gpt3-175b-a100
