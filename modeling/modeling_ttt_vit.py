"""TTT-ViT: the paper's pre-LN ViT (no class token, mean pooling, tanh pre-logits, zero-init head) whose
token mixer is chosen by `config.mixer` (see ttt_layers.py)."""

import glob
import json
import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils.generic import can_return_tuple

from .configuration_ttt_vit import TTTViTConfig
from .image_processing_ttt_vit import TTTViTImageProcessor
from .pipeline_ttt_vit import TTTViTImageClassificationPipeline  # noqa: F401  (copied as remote code)
from .ttt_layers import MIXER_CLASSES, TTTMixer

AUTO_MAP = {
    "AutoConfig": "configuration_ttt_vit.TTTViTConfig",
    "AutoModel": "modeling_ttt_vit.TTTViTModel",
    "AutoModelForImageClassification": "modeling_ttt_vit.TTTViTForImageClassification",
    "AutoImageProcessor": "image_processing_ttt_vit.TTTViTImageProcessor",
}


@dataclass
class TTTViTModelOutput(BaseModelOutputWithPooling):
    r"""
    inner_losses (`tuple(torch.FloatTensor)`, one per TTT layer, *optional*):
        Returned with `output_inner_losses=True`: each `[batch_size, num_heads, inner_steps + 1]`, the inner
        reconstruction loss on all tokens at W_0, W_1, ..., W_T (before and after every inner step).
    """

    inner_losses: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class TTTViTImageClassifierOutput(ImageClassifierOutput):
    r"""
    inner_losses (`tuple(torch.FloatTensor)`, *optional*): as in [`TTTViTModelOutput`].
    """

    inner_losses: tuple[torch.FloatTensor, ...] | None = None


def soft_target_cross_entropy(logits, targets, num_items_in_batch=None):
    """Cross-entropy against class-probability targets [B, C], averaged over images.

    Under gradient accumulation Trainer passes `num_items_in_batch`, the number of label *entries* in the
    whole accumulated batch (`labels.ne(-100).sum()`): C per soft-labelled image, so images = entries / C.
    """
    loss = -(targets.to(logits.dtype) * torch.log_softmax(logits, dim=-1)).sum()
    if num_items_in_batch is None:
        return loss / logits.shape[0]
    num_images = torch.as_tensor(num_items_in_batch, device=loss.device, dtype=loss.dtype) / logits.shape[-1]
    return loss / num_images


def flax_lecun_normal_(tensor: torch.Tensor) -> torch.Tensor:
    """flax's default kernel init, variance_scaling(1, "fan_in", "truncated_normal"): a normal truncated at
    +-2 sigma with sigma = sqrt(1 / fan_in) / 0.8796 (the std of a standard normal cut there), so the result
    has std sqrt(1 / fan_in). `transformers.initialization.lecun_normal_` cuts at +-2 absolute instead, which
    leaves the std 1.14x too large."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(tensor)
    std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978
    return init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def _unreadable_safetensors(name_or_path, subfolder="", cache_dir=None, revision=None) -> list[str]:
    """The *.safetensors files of a local folder, or of a Hub repo's cached snapshot, that cannot be opened."""
    if name_or_path is None:
        return []
    if os.path.isdir(name_or_path):
        candidates = sorted(glob.glob(os.path.join(name_or_path, subfolder, "*.safetensors")))
    else:
        from huggingface_hub import try_to_load_from_cache

        def cached(filename):
            try:
                path = try_to_load_from_cache(
                    str(name_or_path), "/".join(filter(None, [subfolder, filename])), cache_dir, revision
                )
            except ValueError:  # not a valid repo id (HFValidationError)
                return None
            return path if isinstance(path, str) else None

        names = ["model.safetensors"]
        index = cached("model.safetensors.index.json")
        if index is not None:
            with open(index, encoding="utf-8") as f:
                names += sorted(set(json.load(f).get("weight_map", {}).values()))
        candidates = [path for path in map(cached, names) if path is not None]
    unreadable = []
    for path in candidates:
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError):
            unreadable.append(path)
    return unreadable


def sincos_2d_position_embedding(grid: int, width: int, temperature: float = 10_000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding of a grid x grid token map, [grid * grid, width] (big_vision's layout)."""
    if width % 4:
        raise ValueError(f"`hidden_size` must be divisible by 4 for sincos2d position embeddings, got {width}.")
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(width // 4) / (width // 4 - 1 if width > 4 else 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


class TTTViTEmbeddings(nn.Module):
    """Patchify with a strided convolution and add position embeddings; checks the pixels it is given."""

    def __init__(self, config: TTTViTConfig):
        super().__init__()
        self.config = config
        d, grid = config.hidden_size, config.image_size // config.patch_size
        self.patch_embeddings = nn.Conv2d(config.num_channels, d, config.patch_size, stride=config.patch_size)
        if config.position_embedding == "learned":
            self.position_embeddings = nn.Parameter(torch.zeros(1, grid * grid, d))
        else:
            self.register_buffer("position_embeddings", sincos_2d_position_embedding(grid, d)[None], persistent=False)

    def _check(self, pixel_values, interpolate_pos_encoding):
        config = self.config
        if pixel_values.ndim != 4:
            raise ValueError(
                f"`pixel_values` must be [batch, {config.num_channels}, height, width], got shape "
                f"{tuple(pixel_values.shape)}."
            )
        _, channels, height, width = pixel_values.shape
        if channels != config.num_channels:
            raise ValueError(
                f"Expected {config.num_channels} channels (`config.num_channels`), got pixel_values of shape "
                f"{tuple(pixel_values.shape)}."
            )
        if not interpolate_pos_encoding and (height, width) != (config.image_size, config.image_size):
            raise ValueError(
                f"Expected images of {config.image_size}x{config.image_size} (`config.image_size`), got "
                f"{height}x{width}. Resize them (the model's image processor does), or pass "
                "`interpolate_pos_encoding=True`."
            )
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by `config.patch_size` ({config.patch_size})."
            )
        if not torch.compiler.is_compiling() and not torch.isfinite(pixel_values).all():
            raise ValueError("`pixel_values` contains NaN or infinite values.")

    def position_embedding_for(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embeddings [1, grid_h * grid_w, d] for a token grid other than the configured one."""
        d, grid = self.config.hidden_size, self.config.image_size // self.config.patch_size
        if (grid_h, grid_w) == (grid, grid):
            return self.position_embeddings
        if self.config.position_embedding == "sincos2d" and grid_h == grid_w:
            return sincos_2d_position_embedding(grid_h, d)[None].to(self.position_embeddings)
        pos = self.position_embeddings.reshape(1, grid, grid, d).permute(0, 3, 1, 2)  # [1, d, g, g]
        pos = nn.functional.interpolate(pos, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, d)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        self._check(pixel_values, interpolate_pos_encoding)
        x = self.patch_embeddings(pixel_values.to(self.patch_embeddings.weight.dtype))  # [B, d, h, w]
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [B, N, d]
        return x + self.position_embedding_for(grid_h, grid_w).to(x.dtype)


class TTTViTMLP(nn.Module):
    def __init__(self, config: TTTViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class TTTViTLayer(GradientCheckpointingLayer):
    """Pre-LN block: x + Mixer(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: TTTViTConfig, layer_idx: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mixer = MIXER_CLASSES[config.mixer](config, layer_idx)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = TTTViTMLP(config)

    def forward(self, hidden_states, output_inner_losses: bool = False, output_attentions: bool = False):
        """Returns (hidden_states, inner losses or None, attention weights or None)."""
        inner_losses = attentions = None
        if output_attentions:  # only the self-attention mixer has weights (the model checks the mixer)
            mixed, attentions = self.mixer(self.norm1(hidden_states), return_attentions=True)
        else:
            mixed, inner_losses = self.mixer(self.norm1(hidden_states), output_inner_losses)
        hidden_states = hidden_states + mixed
        hidden_states = hidden_states + self.mlp(self.norm2(hidden_states))
        return hidden_states, inner_losses, attentions


class TTTViTPreTrainedModel(PreTrainedModel):
    config_class = TTTViTConfig
    config: TTTViTConfig
    base_model_prefix = "ttt_vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["TTTViTEmbeddings", "TTTViTLayer"]
    _supports_sdpa = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual, plus an `auto_map` for every Auto class (so `trust_remote_code=True` loads the model
        without ttt_hf installed) and, unless one is there already, the image processor the pipeline needs."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True) and not os.path.exists(
            os.path.join(save_directory, "preprocessor_config.json")
        ):
            TTTViTImageProcessor.for_image_size(self.config.image_size, self.config.num_channels).save_pretrained(
                save_directory
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, except that a truncated or corrupt weights file raises an `OSError`
        naming the file and the remedy (safetensors' own error, kept as `__cause__`, says neither)."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except SafetensorError as err:
            files = _unreadable_safetensors(
                pretrained_model_name_or_path,
                kwargs.get("subfolder") or "",
                kwargs.get("cache_dir"),
                kwargs.get("revision"),
            )
            where = ", ".join(files) if files else f"the *.safetensors weights of {pretrained_model_name_or_path}"
            raise OSError(
                f"Cannot load TTT-ViT weights: {where} is truncated or corrupt ({err}). Delete the file and "
                "download it again (from the Hub: `from_pretrained(..., force_download=True)`), or save the model "
                "again with `save_pretrained`."
            ) from err

    def decay_parameter_names(self) -> list[str]:
        """Names (as in `named_parameters()`) of the parameters the official optimizer decays.

        tools/build_optax.py decays the parameters whose path matches `.*/kernel$` (config `wd_mults`): every
        Dense/Conv kernel (patch embedding, projections, block MLP, pre-logits, head), phi/psi/g/h and the inner
        learner's matrices W_0 (`inner_Dense_*/kernel`). Not decayed: biases (g_bias, h_bias, W_0's biases), LN
        scales (the decoder LN's too) and the learned position embeddings (`pos_embedding`). Frozen W_0 buffers
        are not parameters. Trainer's default (everything but LayerNorm modules and biases) would also decay
        `decoder_norm_weight`, `inner_init_1`/`inner_init_3` and `position_embeddings`."""
        kernels = set()
        for prefix, module in self.named_modules():
            prefix = f"{prefix}." if prefix else ""
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                kernels.add(f"{prefix}weight")
            elif isinstance(module, TTTMixer):
                kernels.update(prefix + name for name in module.kernel_names())
        return [name for name, _ in self.named_parameters() if name in kernels]

    def _init_weights(self, module):
        """The official init (model.py, inner_loop.py, and flax's defaults where they name none).

        Kernels are xavier-uniform, biases zero, LN scale one, the head zero; except: the patch embedding and
        the pre-logits (flax `nn.Conv` / `nn.Dense` defaults) are lecun-normal; the block MLP's biases are
        normal(1e-6) (model.py MlpBlock); g is variance_scaling(1, fan_out, uniform), bound sqrt(3 / d)
        (inner_loop.py). phi/psi (vs_fan_in on [H, d, k]) and h (vs_fan_out on [H, k, d]) have bound
        sqrt(3 / d) too, which is xavier-uniform's sqrt(6 / (d + d)) on our d x d `key`/`query`/`output`.
        """
        if isinstance(module, nn.Linear) and module is getattr(self, "classifier", None):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d) or module is getattr(self, "pooler", None):
            flax_lecun_normal_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            mlp = [m for layer in getattr(self.base_model, "layers", ()) for m in (layer.mlp.fc1, layer.mlp.fc2)]
            if any(module is m for m in mlp):
                init.normal_(module.bias, std=1e-6)
            elif module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, TTTViTEmbeddings):
            if isinstance(module.position_embeddings, nn.Parameter):
                init.normal_(module.position_embeddings, std=module.config.hidden_size**-0.5)
            else:  # the fixed sin-cos table is a non-persistent buffer: rebuild it after loading too
                grid = self.config.image_size // self.config.patch_size
                init.copy_(
                    module.position_embeddings, sincos_2d_position_embedding(grid, self.config.hidden_size)[None]
                )
        elif isinstance(module, TTTMixer):
            module.init_inner_weights()


class TTTViTModel(TTTViTPreTrainedModel):
    """Embeddings, blocks, final LayerNorm; `pooler_output` is tanh(Linear(mean over tokens))."""

    def __init__(self, config: TTTViTConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = TTTViTEmbeddings(config)
        self.layers = nn.ModuleList([TTTViTLayer(config, i) for i in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def _hidden_state_selection(self, output_hidden_states) -> set[int] | None:
        """The indices into (embeddings, block 1, ..., block L) that `output_hidden_states` asks for, as
        transformers' ViT reads it: a bool (all or none), or an index or list of indices (negative ones count
        from the end). Unlike ViT, an index out of range raises instead of selecting nothing."""
        if output_hidden_states is None or isinstance(output_hidden_states, bool):
            return set(range(len(self.layers) + 1)) if output_hidden_states else None
        indices = [output_hidden_states] if isinstance(output_hidden_states, int) else output_hidden_states
        count = len(self.layers) + 1
        if not isinstance(indices, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in indices
        ):
            raise ValueError(
                "`output_hidden_states` must be a bool, or an index or list of indices into the "
                f"{count} hidden states (embeddings and every block's output); got {output_hidden_states!r}."
            )
        if any(not -count <= i < count for i in indices):
            raise ValueError(
                f"`output_hidden_states` indices must be in [{-count}, {count - 1}] (the embeddings and "
                f"{count - 1} blocks); got {output_hidden_states!r}."
            )
        return {i % count for i in indices} or None

    def _check_output_attentions(self, output_attentions) -> bool:
        if output_attentions is None or output_attentions is False:
            return False
        if output_attentions is not True:
            raise ValueError(f"`output_attentions` must be a bool, got {output_attentions!r}.")
        if self.config.mixer != "self_attention":
            why = (
                "linear attention never forms the N x N attention matrix (it sums keys x values first)"
                if self.config.mixer == "linear_attention"
                else "its TTT layers have no attention matrix: each image trains an inner learner instead "
                "(`output_inner_losses=True` returns its losses)"
            )
            raise ValueError(
                f"`output_attentions=True` needs mixer='self_attention'; this model has mixer="
                f"{self.config.mixer!r}, and {why}."
            )
        return True

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        output_inner_losses: bool | None = None,
        **kwargs,
    ) -> TTTViTModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            Images in [-1, 1], as the model's image processor makes them.
        interpolate_pos_encoding (`bool`, *optional*): accept other image sizes by resampling the position
            embeddings (sin-cos embeddings are recomputed exactly for square grids).
        output_hidden_states (`bool`, `int` or `list[int]`, *optional*): also return the embeddings and every
            block's output (before the final LayerNorm), as transformers' ViT does: `True` all of them, an index
            or list of indices only those (the others are `None` in the tuple).
        output_attentions (`bool`, *optional*): also return every block's softmax attention weights
            `[batch_size, num_heads, N, N]`; only the `self_attention` mixer has them (computed explicitly,
            under SDPA too). The TTT and linear-attention mixers raise a `ValueError`: they form no attention
            matrix.
        output_inner_losses (`bool`, *optional*): also return every TTT layer's inner loss before and after
            each inner step (computed only when asked).
        """
        if pixel_values is None:
            raise ValueError("You have to specify `pixel_values`.")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        keep = self._hidden_state_selection(output_hidden_states)
        output_attentions = self._check_output_attentions(output_attentions)
        hidden_states = self.embeddings(pixel_values, bool(interpolate_pos_encoding))  # [B, N, d]
        all_hidden = [hidden_states if 0 in keep else None] if keep is not None else None
        inner_losses = [] if output_inner_losses else None
        attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layers, start=1):
            hidden_states, losses, weights = layer(hidden_states, bool(output_inner_losses), output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden_states if i in keep else None)
            if inner_losses is not None and losses is not None:
                inner_losses.append(losses)
            if attentions is not None:
                attentions.append(weights)
        sequence_output = self.layernorm(hidden_states)
        pooled = torch.tanh(self.pooler(sequence_output.mean(1))) if self.pooler is not None else None  # [B, d]
        return TTTViTModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
            inner_losses=tuple(inner_losses) if inner_losses is not None else None,
        )


class TTTViTForImageClassification(TTTViTPreTrainedModel):
    """TTT-ViT with a (zero-initialised) linear head on the tanh pre-logits."""

    def __init__(self, config: TTTViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ttt_vit = TTTViTModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def _is_soft_target(self, labels, logits) -> bool:
        """Float labels shaped like the logits are class probabilities (mixup, label smoothing), unless the
        config says the task is multi-label."""
        return (
            labels.is_floating_point()
            and labels.shape == logits.shape
            and self.config.num_labels > 1
            and self.config.problem_type != "multi_label_classification"
        )

    def _check_labels(self, labels):
        if torch.compiler.is_compiling() or labels.is_floating_point() or self.config.num_labels <= 1:
            return
        valid = labels[labels != -100]
        if valid.numel() and (valid.min() < 0 or valid.max() >= self.config.num_labels):
            raise ValueError(
                f"`labels` must be in [0, {self.config.num_labels - 1}] (`config.num_labels` = "
                f"{self.config.num_labels}) or -100 (ignored); got values from {int(valid.min())} to "
                f"{int(valid.max())}."
            )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        output_inner_losses: bool | None = None,
        **kwargs,
    ) -> TTTViTImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices in
            `[0, config.num_labels)`; the loss is cross-entropy (or as `config.problem_type` says). Float labels
            of shape `(batch_size, num_labels)` are class probabilities (mixup), with soft-target cross-entropy,
            unless `problem_type="multi_label_classification"`. Trainer's `num_items_in_batch` is honoured, so
            gradient accumulation matches a larger batch.
        output_hidden_states, output_attentions, output_inner_losses: as in [`TTTViTModel`].
        """
        if labels is not None:
            self._check_labels(labels)
        outputs = self.ttt_vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            output_inner_losses=output_inner_losses,
        )
        logits = self.classifier(outputs.pooler_output)  # [B, num_labels]
        loss = None
        if labels is not None and self._is_soft_target(labels, logits):
            loss = soft_target_cross_entropy(logits, labels, kwargs.get("num_items_in_batch"))
        elif labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return TTTViTImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            inner_losses=outputs.inner_losses,
        )


# save_pretrained copies these classes' files (and their `from .x` imports, the image processor's among them)
# next to the weights as remote code. The image processor is found through config.json's auto_map only: an
# `AutoImageProcessor` entry in preprocessor_config.json makes transformers' pipeline look for a matching
# remote *video* processor and ask whether to run custom code, even with ttt_hf installed.
# pipeline_ttt_vit.py is imported above so that it travels too: the remote config's `custom_pipelines` names it.
TTTViTConfig.register_for_auto_class()
TTTViTModel.register_for_auto_class("AutoModel")
TTTViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "TTTViTForImageClassification",
    "TTTViTImageClassifierOutput",
    "TTTViTModel",
    "TTTViTModelOutput",
    "TTTViTPreTrainedModel",
]
