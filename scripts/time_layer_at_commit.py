#!/usr/bin/env python
"""Time one mixer layer (forward, forward+backward; ViT-Ti width, batch 1) with the `modeling/` code of any
checkout, to measure a change before and after it:

    git worktree add /tmp/before <commit>
    python scripts/time_layer_at_commit.py /tmp/before ttt_mlp 3136
    python scripts/time_layer_at_commit.py . ttt_mlp 3136
    python scripts/time_layer_at_commit.py . ttt_mlp 196 384 6 8    # ViT-S width, 6 heads, batch 8
"""

import importlib
import importlib.util
import os
import statistics
import sys
import time

import torch


def median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def main(root: str, mixer: str, tokens: int, width: int = 192, heads: int = 3, batch: int = 1) -> None:
    spec = importlib.util.spec_from_file_location(  # that checkout's modeling/, without touching sys.path
        "modeling",
        os.path.join(root, "modeling", "__init__.py"),
        submodule_search_locations=[os.path.join(root, "modeling")],
    )
    modeling = importlib.util.module_from_spec(spec)
    sys.modules["modeling"] = modeling
    spec.loader.exec_module(modeling)
    layers = importlib.import_module("modeling.ttt_layers")
    config = modeling.TTTViTConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=4 * width,
                                   mixer=mixer)  # fmt: skip
    classes = getattr(layers, "MIXER_CLASSES", None) or layers.MIXERS  # MIXERS before the rename
    layer = classes[mixer](config)
    x = torch.randn(batch, tokens, width, requires_grad=True)

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        layer(x)[0].square().mean().backward()

    print(
        f"{root:24s} {mixer:18s} N={tokens:6d} d={width} B={batch} fwd {median_ms(forward):8.1f} ms  "
        f"fwd+bwd {median_ms(forward_backward):8.1f} ms"
    )


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: {sys.argv[0]} CHECKOUT MIXER TOKENS [WIDTH HEADS BATCH]\n{__doc__}")
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
