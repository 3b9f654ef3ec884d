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
declare -A mixers=(
  [mlp]="mixer=ttt_mlp" [linear]="mixer=ttt_linear" [linattn]="mixer=linear_attention"
  [linattn-elu]="mixer=linear_attention,linear_attention_feature_map=elu_plus_one,linear_attention_normalizer=adaptive"
  [attn]="mixer=self_attention" [mlp-shuffled4]="mixer=ttt_mlp,inner_steps=4,inner_batching=shuffled"
)
for seed in 0 1; do
  for name in mlp linear linattn linattn-elu attn mlp-shuffled4; do
    out="$root/pixel/$name-seed$seed"
    [ -f "$out/all_results.json" ] || python -m ttt_hf.training "${common[@]}" --seed "$seed" --output_dir "$out" \
      --config_overrides "$model,patch_size=1,position_embedding=learned,${mixers[$name]}" --image_size 14 \
      --num_train_epochs 3 --horizontal_flip false
  done
  for name in mlp linear linattn linattn-elu attn; do
    out="$root/patch4/$name-seed$seed"
    [ -f "$out/all_results.json" ] || python -m ttt_hf.training "${common[@]}" --seed "$seed" --output_dir "$out" \
      --config_overrides "$model,patch_size=4,${mixers[$name]}" --num_train_epochs 5 --horizontal_flip true
  done
done
