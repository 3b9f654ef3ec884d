#!/usr/bin/env bash
# The GPU half of docs/performance.md: precision, layer and model benchmarks, profiles.
# usage: bash scripts/gpu_benchmarks.sh OUTPUT_DIR STAGE...  (stages: cuda_test precision layers compiled_layers
#        models reference compiled_models profile_models mlp_layers mlp_models sdpa_profile triton)
# Every stage appends its table to OUTPUT_DIR/log.txt and writes CSV/PNG/profile files next to it.
set -uo pipefail
out=${1:?output directory}; shift
mkdir -p "$out"
bench() { python3 -m ttt_hf.cli benchmark --verbose --output_dir "$out" "$@" 2>&1 | tee -a "$out/log.txt"; }
for stage in "$@"; do
  echo "## stage $stage ($(date -u +%T))" | tee -a "$out/log.txt"
  case $stage in
    cuda_test)  # the fused kernels compiled for this GPU against the PyTorch ops (float64, float32, bf16, compile)
      python3 -m pytest -q -x tests/test_fused_mlp.py -k cuda 2>&1 | tee -a "$out/log.txt" ;;
    precision)
      python3 -m ttt_hf.cli precision --tokens 12544 --batch 2 2>&1 | tee -a "$out/log.txt" ;;
    layers)
      bench --level layer --dtype bfloat16 --repeats 20 --warmup 5 --profile 'ttt_mlp@50176' --tag layers
      bench --level layer --dtype float32 --repeats 20 --warmup 5 --tag layers ;;
    compiled_layers)
      bench --level layer --dtype bfloat16 --compile --tokens 12544,50176 --repeats 20 --warmup 5 \
        --max_attention_tokens 0 --profile "ttt_mlp@50176" --tag layers ;;
    profile_models)
      bench --level model --dtype bfloat16 --compile --model_batch 128 --repeats 10 --warmup 10 --only small16-mlp \
        --profile small16-mlp --tag profile_mlp ;;
    models)
      bench --level model --dtype bfloat16 --model_batch 128 --pixel_batch 8 --repeats 10 --warmup 6 --only 'small16|ViT-S' --tag vit_s16
      bench --level model --dtype bfloat16 --pixel_batch 8 --repeats 4 --warmup 2 --only pixel --tag pixel ;;
    reference)
      bench --level model --dtype bfloat16 --model_batch 128 --repeats 10 --warmup 6 --only ViT-S --tag reference ;;
    compiled_models)
      bench --level model --dtype bfloat16 --compile --model_batch 128 --repeats 10 --warmup 10 --only 'small16|ViT-S' --tag vit_s16 ;;
    mlp_layers)  # MTTT-MLP against SDPA (fused attention), eager and compiled, in one run
      bench --level layer --dtype bfloat16 --only 'ttt_mlp$|SDPA' --tokens 3136,12544,50176 --repeats 20 --warmup 5 \
        --tag mlp_layers
      bench --level layer --dtype bfloat16 --compile --only 'ttt_mlp$' --tokens 12544,50176 --repeats 20 --warmup 5 \
        --profile 'ttt_mlp@50176' --tag mlp_layers ;;
    mlp_models)  # ViT-S/16 MTTT-MLP against transformers' ViT-S/16, eager and compiled, and the 224² pixel model
      bench --level model --dtype bfloat16 --model_batch 128 --repeats 10 --warmup 6 --only 'ViT-S|small16-mlp' --tag mlp_models
      bench --level model --dtype bfloat16 --pixel_batch 8 --pixel_sizes 224 --repeats 4 --warmup 2 --only pixel --tag pixel224
      bench --level model --dtype bfloat16 --compile --model_batch 128 --repeats 10 --warmup 10 --only 'ViT-S|small16-mlp' \
        --profile small16-mlp --tag mlp_models ;;
    sdpa_profile)  # which kernel SDPA runs at 50,176 tokens in bfloat16
      bench --level layer --dtype bfloat16 --only SDPA --tokens 50176 --repeats 20 --warmup 5 --profile 'SDPA\)@50176' \
        --tag sdpa ;;
    triton)  # the fused Triton kernels (inner_kernel="triton") against the PyTorch ops, SDPA and transformers' ViT-S/16
      bench --level layer --dtype bfloat16 --only 'ttt_mlp|SDPA' --tokens 3136,12544,50176 --repeats 20 --warmup 5 \
        --max_autograd_tokens 0 --profile 'triton\)@50176' --tag triton_layers
      bench --level layer --dtype bfloat16 --compile --only 'ttt_mlp$|triton' --tokens 12544,50176 --repeats 20 \
        --warmup 5 --profile 'triton\)@50176' --tag triton_layers
      bench --level model --dtype bfloat16 --model_batch 128 --repeats 10 --warmup 6 --only 'ViT-S|small16-mlp' \
        --profile 'triton' --tag triton_models
      bench --level model --dtype bfloat16 --compile --model_batch 128 --repeats 10 --warmup 10 \
        --only 'ViT-S|small16-mlp' --profile 'triton' --tag triton_models ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
