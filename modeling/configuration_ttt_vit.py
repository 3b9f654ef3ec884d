"""Configuration of TTT-ViT: a pre-LN ViT whose token mixer is a test-time-training inner loop.

Every choice of "Learning to (Learn at Test Time)" (Sun et al., arXiv 2310.13807) is a field here, with the
paper's default, so that a saved `config.json` says exactly which model it is.
"""

from typing import NamedTuple

from transformers import PreTrainedConfig

MIXER_TYPES = ("ttt_mlp", "ttt_linear", "self_attention", "linear_attention")  # values of the `mixer` field
POSITION_EMBEDDINGS = ("sincos2d", "learned")
INNER_BATCHINGS = ("full", "shuffled")
FEATURE_MAPS = ("identity", "elu_plus_one")
NORMALIZERS = ("constant", "adaptive")
SHUFFLE_EVAL_MODES = ("fixed", "random")
SHUFFLE_SCOPES = ("batch", "image")
INNER_GRADIENTS = ("analytic", "autograd")
INNER_KERNELS = ("torch", "triton")

# name -> (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size)
_SIZES = {"tiny": (192, 12, 3, 768), "small": (384, 12, 6, 1536)}
# name -> (image_size, patch_size, position_embedding)
_TOKENIZERS = {"16": (224, 16, "sincos2d"), "pixel": (224, 1, "learned")}


class MixerPreset(NamedTuple):
    paper_name: str  # the name in the paper's tables (Sun et al. 2023, Tables 1-2)
    fields: dict  # the config fields that make this mixer


# The one table of the paper's token mixers: preset suffix -> paper name and config fields. Presets, the model
# card's names, the results tables, the benchmark, the tests and the Fashion-MNIST grid all derive from it.
MIXER_PRESETS = {
    "mlp": MixerPreset("MTTT-MLP (T=1)", {"mixer": "ttt_mlp"}),
    "mlp-shuffled4": MixerPreset(
        "MTTT-MLP (shuffled, T=4)", {"mixer": "ttt_mlp", "inner_steps": 4, "inner_batching": "shuffled"}
    ),
    "linear": MixerPreset("MTTT-Linear", {"mixer": "ttt_linear"}),
    "linattn": MixerPreset("linear attention (identity map)", {"mixer": "linear_attention"}),
    "linattn-elu": MixerPreset(
        "linear attention (Katharopoulos)",
        {
            "mixer": "linear_attention",
            "linear_attention_feature_map": "elu_plus_one",
            "linear_attention_normalizer": "adaptive",
        },
    ),
    "attn": MixerPreset("self-attention", {"mixer": "self_attention"}),
}
# the fields the presets set; a config is a preset's mixer when these (and only these) match
MIXER_FIELDS = tuple(dict.fromkeys(key for preset in MIXER_PRESETS.values() for key in preset.fields))


def _preset_table():
    table = {}
    for size, (d, depth, heads, mlp) in _SIZES.items():
        for tok, (image_size, patch, pos) in _TOKENIZERS.items():
            for mix, (_, settings) in MIXER_PRESETS.items():
                name = f"ttt-vit-{size}-{tok}-{mix}" if tok == "pixel" else f"ttt-vit-{size}{tok}-{mix}"
                table[name] = dict(
                    hidden_size=d,
                    num_hidden_layers=depth,
                    num_attention_heads=heads,
                    intermediate_size=mlp,
                    image_size=image_size,
                    patch_size=patch,
                    position_embedding=pos,
                    **settings,
                )
    return table


PRESETS = _preset_table()


def remote_pipeline(pipelines: dict) -> property:
    """A config's `custom_pipelines`: `pipelines` ({task: {"impl": "module.Class", "pt": [auto class]}}) when the
    config class runs as remote code (no ttt_hf), so that `pipeline(task, model=..., trust_remote_code=True)` takes
    the checkpoint's own pipeline file (`copy_pipeline_code` puts it there). The installed copy reports none: ttt_hf
    registers its pipelines itself, and a custom pipeline in config.json would make `pipeline()` demand
    `trust_remote_code`."""

    def get(config) -> dict:
        found = dict(config.__dict__.get("custom_pipelines") or {})  # any set by hand or read from config.json
        if __name__.startswith("transformers_modules."):
            for task, entry in pipelines.items():
                found.setdefault(task, entry)
        return found

    def set(config, value):
        config.__dict__["custom_pipelines"] = value

    return property(get, set)


def copy_pipeline_code(config, folder) -> None:
    """Copy the files of the config class's REMOTE_PIPELINES, and every file they import relatively, into `folder`
    (a saved checkpoint), so that the pipeline loads as remote code without the model's own files importing it: the
    model then loads without the pipeline's dependencies (PIL)."""
    import shutil
    from pathlib import Path

    from transformers.dynamic_module_utils import get_relative_import_files

    here = Path(__file__).resolve().parent
    for entry in type(config).REMOTE_PIPELINES.values():
        source = here / f"{entry['impl'].rsplit('.', 1)[0]}.py"
        for path in [source, *map(Path, get_relative_import_files(source))]:
            if not (Path(folder) / path.name).exists():
                shutil.copyfile(path, Path(folder) / path.name)


class TTTViTConfig(PreTrainedConfig):
    r"""
    Configuration of [`TTTViTModel`] and [`TTTViTForImageClassification`]. Defaults give ViT-S/16 with
    MTTT-MLP (T = 1, eta = 1, decoder LayerNorm, learned W_0), the paper's main ImageNet model.

    Args:
        image_size (`int`, defaults to 224): height and width of the (square) input image.
        patch_size (`int`, defaults to 16): side of a patch; 1 gives the paper's pixel models.
        num_channels (`int`, defaults to 3): input channels.
        hidden_size (`int`, defaults to 384): token width d.
        num_hidden_layers (`int`, defaults to 12): number of blocks.
        num_attention_heads (`int`, defaults to 6): heads H; each head's inner learner works at width d/H.
        intermediate_size (`int`, defaults to 1536): hidden width of each block's MLP.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm (the decoder LN's too).
        position_embedding (`str`, defaults to `"sincos2d"`): `"sincos2d"` (fixed, patch models) or `"learned"`
            (normal, std 1/sqrt(d), pixel models).
        mixer (`str`, defaults to `"ttt_mlp"`): token mixer of every block: `"ttt_mlp"` (MTTT-MLP),
            `"ttt_linear"` (MTTT-Linear), `"self_attention"` (softmax, SDPA) or `"linear_attention"`.
        inner_steps (`int`, defaults to 1): inner gradient steps T.
        inner_lr (`float` or `list[float]`, defaults to 1.0): inner step size eta, one value for every step or
            one per step.
        inner_batching (`str`, defaults to `"full"`): `"full"` (every step sees all N tokens) or `"shuffled"`
            (tokens permuted per head and split into T mini-batches of N // T tokens, one per step).
        inner_shuffle_scope (`str`, defaults to `"batch"`): which images share a random token order (training,
            and evaluation with `inner_shuffle_eval="random"`). `"batch"` draws one permutation per layer and head
            for each forward call, shared by every image of the batch and fresh every call: the official JAX code
            (inner_loop.py draws `make_rng("idx")` folded with the head index inside its vmap over the device
            batch), hence the default. Under DDP each process is a device batch: give the processes different
            seeds to draw different orders, as the official code does (it folds in the device index). `"image"`
            draws a fresh permutation per image, layer and head, so orders are independent across a batch: a
            deviation (this model's behaviour before the option existed), kept for comparison; the paper reports
            no result with it.
        inner_shuffle_eval (`str`, defaults to `"fixed"`): how `"shuffled"` batching permutes tokens in eval
            mode. `"fixed"` draws one permutation per layer and head from `inner_shuffle_seed`, shared by all
            images, so predictions are reproducible and a batch equals its images run one by one (a deviation
            from the official code, whose outputs at evaluation are random); `"random"` draws fresh permutations
            as in training, per `inner_shuffle_scope`: with `"batch"` that is the official code's evaluation
            (one order per layer and head for the whole batch, fresh every call).
        inner_shuffle_seed (`int`, defaults to 0): seed of the fixed evaluation permutations.
        inner_hidden_ratio (`int`, defaults to 4): hidden width of the MTTT-MLP learner, in units of d/H.
        inner_gradient (`str`, defaults to `"analytic"`): how inner steps get their gradient: `"analytic"` (written
            out as tensor ops, fast) or `"autograd"` (`torch.autograd.grad(create_graph=True)`, the reference).
        inner_kernel (`str`, defaults to `"torch"`): how MTTT-MLP's learner runs: `"torch"` (tensor ops; the
            [B, H, N, m] hidden activations are stored for the backward) or `"triton"` (fused kernels of
            `fused_mlp.py` that recompute them on chip; eager and under `torch.compile`). Where the kernels cannot
            run (`fused_mlp.fused_mlp_available`: Triton, GPU, head width) it runs `"torch"`'s ops. Analytic
            gradient and `ttt_mlp` only.
        decoder_layer_norm (`bool`, *optional*): LayerNorm on the inner decoder's output. Defaults to `True`
            for `ttt_mlp` and `False` for `ttt_linear` (the paper's settings).
        learn_inner_init (`bool`, *optional*): whether the inner learner's initial weights W_0 are trained by
            the outer loop. Defaults to `True` for `ttt_mlp` (xavier-uniform init) and `False` for
            `ttt_linear` (W_0 = 0, frozen).
        linear_attention_feature_map (`str`, defaults to `"identity"`): `"identity"` or `"elu_plus_one"`
            (Katharopoulos et al.).
        linear_attention_normalizer (`str`, defaults to `"constant"`): `"constant"` (divide by N·d/H, as the
            official code) or `"adaptive"` (divide by q_j · sum_i k_i).
    """

    model_type = "ttt_vit"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    layer_norm_eps: float = 1e-6
    position_embedding: str = "sincos2d"
    mixer: str = "ttt_mlp"
    inner_steps: int = 1
    inner_lr: float | list[float] = 1.0
    inner_batching: str = "full"
    inner_shuffle_scope: str = "batch"
    inner_shuffle_eval: str = "fixed"
    inner_shuffle_seed: int = 0
    inner_hidden_ratio: int = 4
    inner_gradient: str = "analytic"
    inner_kernel: str = "torch"
    decoder_layer_norm: bool | None = None
    learn_inner_init: bool | None = None
    linear_attention_feature_map: str = "identity"
    linear_attention_normalizer: str = "constant"

    def __post_init__(self, **kwargs):
        is_mlp = self.mixer == "ttt_mlp"
        if self.decoder_layer_norm is None:
            self.decoder_layer_norm = is_mlp
        if self.learn_inner_init is None:
            self.learn_inner_init = is_mlp
        if isinstance(self.inner_lr, tuple):
            self.inner_lr = list(self.inner_lr)
        super().__post_init__(**kwargs)
        self.validate_ttt_vit()

    def validate_ttt_vit(self):
        """Raise a `ValueError` naming the first field that cannot describe a working model."""
        _choice("mixer", self.mixer, MIXER_TYPES)
        _choice("position_embedding", self.position_embedding, POSITION_EMBEDDINGS)
        _choice("inner_batching", self.inner_batching, INNER_BATCHINGS)
        _choice("inner_shuffle_scope", self.inner_shuffle_scope, SHUFFLE_SCOPES)
        _choice("inner_shuffle_eval", self.inner_shuffle_eval, SHUFFLE_EVAL_MODES)
        _choice("inner_gradient", self.inner_gradient, INNER_GRADIENTS)
        _choice("inner_kernel", self.inner_kernel, INNER_KERNELS)
        _choice("linear_attention_feature_map", self.linear_attention_feature_map, FEATURE_MAPS)
        _choice("linear_attention_normalizer", self.linear_attention_normalizer, NORMALIZERS)
        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "inner_steps",
            "inner_hidden_ratio",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be divisible by `patch_size` ({self.patch_size})."
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}): each head works at width hidden_size / num_attention_heads."
            )
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            raise ValueError(f"`layer_norm_eps` must be a positive number, got {self.layer_norm_eps!r}.")
        for name in ("decoder_layer_norm", "learn_inner_init"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true, false or null, got {getattr(self, name)!r}.")
        lrs = self.inner_lr if isinstance(self.inner_lr, list) else [self.inner_lr]
        if any(isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr != lr for lr in lrs):
            raise ValueError(f"`inner_lr` must be a number or a list of numbers, got {self.inner_lr!r}.")
        if isinstance(self.inner_lr, list) and len(self.inner_lr) != self.inner_steps:
            raise ValueError(
                f"`inner_lr` has {len(self.inner_lr)} values but `inner_steps` is {self.inner_steps}: "
                "give one value, or one per step."
            )
        if self.mixer not in ("ttt_mlp", "ttt_linear") and self.inner_steps != 1:
            raise ValueError(f"`inner_steps` only applies to the ttt mixers; mixer={self.mixer!r} has no inner loop.")
        if self.inner_kernel == "triton" and (self.mixer != "ttt_mlp" or self.inner_gradient != "analytic"):
            raise ValueError(
                "`inner_kernel='triton'` fuses MTTT-MLP's analytic inner gradient: it needs mixer='ttt_mlp' and "
                f"inner_gradient='analytic', got mixer={self.mixer!r}, inner_gradient={self.inner_gradient!r}."
            )
        if self.inner_batching == "shuffled" and self.inner_steps > self.num_tokens:
            raise ValueError(
                f"`inner_batching='shuffled'` splits the {self.num_tokens} tokens into `inner_steps` "
                f"({self.inner_steps}) mini-batches, so `inner_steps` cannot exceed the number of tokens."
            )

    @property
    def num_tokens(self) -> int:
        """Tokens per image at the configured `image_size`."""
        return (self.image_size // self.patch_size) ** 2

    # As remote code (no ttt_hf), `pipeline("image-classification")` takes the checkpoint's pipeline_ttt_vit.py, which
    # keeps each image's mode for the processor (the installed ttt_hf registers that pipeline itself).
    REMOTE_PIPELINES = {
        "image-classification": {
            "impl": "pipeline_ttt_vit.TTTViTImageClassificationPipeline",
            "pt": ["AutoModelForImageClassification"],
        }
    }
    custom_pipelines = remote_pipeline(REMOTE_PIPELINES)

    def inner_lrs(self) -> list[float]:
        """The step size of every inner step, as a list of length `inner_steps`."""
        if isinstance(self.inner_lr, list):
            return [float(lr) for lr in self.inner_lr]
        return [float(self.inner_lr)] * self.inner_steps

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TTTViTConfig":
        """A paper model by name (see `TTTViTConfig.presets()`), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Known presets: {', '.join(sorted(PRESETS))}.")
        return cls(**{**PRESETS[name], **overrides})

    @staticmethod
    def presets() -> list[str]:
        return sorted(PRESETS)


def mixer_preset_of(config) -> str | None:
    """The suffix of the `MIXER_PRESETS` entry whose mixer `config` (a config or its dict) has, or None."""
    values = config if isinstance(config, dict) else config.to_dict()
    current = {key: values.get(key, getattr(TTTViTConfig, key)) for key in MIXER_FIELDS}
    for suffix, preset in MIXER_PRESETS.items():
        if current == {key: preset.fields.get(key, getattr(TTTViTConfig, key)) for key in MIXER_FIELDS}:
            return suffix
    return None


def _choice(field: str, value, choices):
    if value not in choices:
        raise ValueError(f"`{field}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


__all__ = ["MIXER_PRESETS", "MIXER_TYPES", "PRESETS", "MixerPreset", "TTTViTConfig", "mixer_preset_of"]
