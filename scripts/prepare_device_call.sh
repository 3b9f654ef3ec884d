#!/usr/bin/env bash
# Prepare what scripts/train_zoo_gpu.sh needs on the device machine, which has PyTorch, Triton and torchvision but
# older Hugging Face packages, no `datasets` or `evaluate`, no Fashion-MNIST and no network:
#   .whl/     wheels of this environment's versions of the packages the device image lacks or has too old
#   .fmnist/  Fashion-MNIST, xz-compressed (15 % smaller than Debian's gzip files)
# Both are ignored by git. A call carries at most 64 MiB: the tracked files, the wheels and the data together. The
# zoo's own weights (model_cards/, docs/) are not needed there, so `slim` takes them out of what travels (untracked
# and ignored, nothing deleted) and `restore` puts them back: run the call between the two.
# usage: bash scripts/prepare_device_call.sh [prepare|slim|restore]      (then carry [".whl", ".fmnist"])
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" && touch "$exclude"
travels() { echo "$(( ($(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -cb .whl .fmnist 2>/dev/null | tail -1 | cut -f1)) / 1048576 )) MiB"; }
case ${1:-prepare} in
  prepare)
    for folder in /.whl/ /.fmnist/; do grep -qxF "$folder" "$exclude" || echo "$folder" >> "$exclude"; done
    python=${PYTHON:-.venv/bin/python}
    packages="transformers huggingface_hub httpx2 httpcore2 truststore accelerate datasets evaluate dill multiprocess fsspec mlxtend"
    pins=$($python -c "import importlib.metadata as m, sys; print(' '.join(f'{p}=={m.version(p)}' for p in sys.argv[1:]))" $packages)
    rm -rf .whl && mkdir .whl
    $python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl $pins
    mkdir -p .fmnist
    source_dir=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
    for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
      [ -s ".fmnist/$stem.xz" ] || zcat "$source_dir/$stem.gz" | xz -9e > ".fmnist/$stem.xz"
    done
    du -sh .whl .fmnist
    echo "what travels: $(travels) (at most 64 MiB; 'slim' leaves the zoo's weights and plots behind)" ;;
  slim)
    if ! git diff --cached --quiet; then echo "staged changes: commit or unstage them first (slim stages nothing)"; exit 1; fi
    if git ls-files --error-unmatch model_cards >/dev/null 2>&1; then :; else echo "slim already"; exit 0; fi
    echo "until 'restore', do not commit: the index holds model_cards/ and docs/ as removed"
    for path in model_cards docs; do
      grep -qxF "/$path/" "$exclude" || echo "/$path/" >> "$exclude"
      git rm -r -q --cached "$path"
    done
    echo "model_cards/ and docs/ stay here but do not travel; what travels: $(travels). Afterwards: $0 restore" ;;
  restore)
    sed -i '\#^/model_cards/$#d; \#^/docs/$#d' "$exclude"
    git reset -q -- model_cards docs
    git status --short model_cards docs | head -5
    echo "model_cards/ and docs/ are tracked again" ;;
  *) echo "usage: $0 [prepare|slim|restore]"; exit 2 ;;
esac
