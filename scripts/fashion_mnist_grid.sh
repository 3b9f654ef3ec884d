#!/usr/bin/env bash
# The README's results table: every mixer, same small model and budget, on Fashion-MNIST, at pixel level
# (14x14 images, 1x1 patches = 196 tokens) and with 4x4 patches (28x28 images = 49 tokens), two seeds.
# Usage: bash scripts/fashion_mnist_grid.sh [output root]   then: python scripts/results_table.py outputs/fmnist
set -euo pipefail
root=${1:-outputs/fmnist}
model="hidden_size=64,num_hidden_layers=4,num_attention_heads=2,intermediate_size=256"
common=(--dataset fashion-mnist --max_train_samples 10000 --per_device_train_batch_size 64 --learning_rate 2e-3
        --warmup_steps 0.05 --rand_augment false --mixup_alpha 0 --crop_min_scale 0.5 --eval_crop_fraction 1.0
        --torch_compile true --dataloader_drop_last true --eval_strategy no --save_strategy no --disable_tqdm true
        --use_cpu true)
# the mixer presets (suffix -> config fields) come from the one registry, modeling/configuration_ttt_vit.py
declare -A mixers=()
while read -r name fields; do mixers[$name]=$fields; done < <(python -m ttt_hf.zoo mixers)
names=$(python -m ttt_hf.zoo mixers | cut -d' ' -f1)
for seed in 0 1; do
  for name in $names; do
    out="$root/pixel/$name-seed$seed"
    [ -f "$out/all_results.json" ] || python -m ttt_hf.training "${common[@]}" --seed "$seed" --output_dir "$out" \
      --config_overrides "$model,patch_size=1,position_embedding=learned,${mixers[$name]}" --image_size 14 \
      --num_train_epochs 3 --horizontal_flip false
  done
  for name in $names; do
    [ "$name" = mlp-shuffled4 ] && continue  # shuffled T = 4 is the paper's pixel setting only
    out="$root/patch4/$name-seed$seed"
    [ -f "$out/all_results.json" ] || python -m ttt_hf.training "${common[@]}" --seed "$seed" --output_dir "$out" \
      --config_overrides "$model,patch_size=4,${mixers[$name]}" --num_train_epochs 5 --horizontal_flip true
  done
done
