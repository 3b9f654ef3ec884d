"""General-purpose in-context learners (GPICL; Kirsch et al., arXiv 2212.04458) as transformers models.

`GPICLForInContextClassification(inputs=[B, T, N_x], labels=[B, T])` builds the tokens (x_t, one_hot(y_{t-1}))
(zeros for the label part at t = 1, and wherever the previous label is -100: an unlabelled query), runs a causal
sequence model and predicts y_t at every position; the prediction at t sees x_1..x_t and y_1..y_{t-1} only.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput

from .attention_layers import _merge_heads, _split_heads
from .causal_ttt_layers import CausalConv, CausalTTTMixer, conv_history
from .configuration_gpicl import GPICLConfig
from .configuration_ttt_vit import copy_pipeline_code
from .ttt_layers import TTTMixer

AUTO_MAP = {
    "AutoConfig": "configuration_gpicl.GPICLConfig",
    "AutoModel": "modeling_gpicl.GPICLModel",
    "AutoModelForTokenClassification": "modeling_gpicl.GPICLForInContextClassification",
}


@dataclass
class GPICLModelOutput(ModelOutput):
    """last_hidden_state [B, T, hidden_size]: the sequence model's output at every position."""

    last_hidden_state: torch.FloatTensor | None = None


@dataclass
class GPICLOutput(ModelOutput):
    """loss: mean cross-entropy over the labelled positions; logits [B, T, num_classes]: the prediction of y_t."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class CausalSelfAttention(nn.Module):
    """Softmax attention over positions <= t (SDPA with a causal mask). With `ttt_conv_size` c > 0, the queries and
    the keys read their own causal convolution of the sequence, as the causal TTT layer's do (a control: the same
    access to earlier tokens, without a learner as the state)."""

    def __init__(self, config: GPICLConfig):
        super().__init__()
        d, size = config.hidden_size, config.ttt_conv_size
        self.num_heads = config.num_attention_heads
        self.qkv, self.output = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.query_conv = CausalConv(d, size) if size else None
        self.key_conv = CausalConv(d, size) if size else None

    def forward(self, x):
        if self.key_conv is None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:  # the q, k and v parts of qkv, each on its own input
            inputs = (self.query_conv(x), self.key_conv(x), x)
            q, k, v = map(F.linear, inputs, self.qkv.weight.chunk(3), self.qkv.bias.chunk(3))
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))  # [B, H, T, k] each
        return self.output(_merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True))), None


class GPICLBlock(GradientCheckpointingLayer):
    """Pre-LN block: x + mixer(LN(x)), then x + MLP(LN(x)); the mixer is causal attention or a causal TTT layer."""

    def __init__(self, config: GPICLConfig, layer_idx: int):
        super().__init__()
        d = config.hidden_size
        self.norm1, self.norm2 = (nn.LayerNorm(d, eps=config.layer_norm_eps) for _ in range(2))
        self.mixer = (
            CausalSelfAttention(config) if config.backbone == "transformer" else CausalTTTMixer(config, layer_idx)
        )
        self.mlp = nn.Sequential(
            nn.Linear(d, config.intermediate_size), nn.GELU(), nn.Linear(config.intermediate_size, d)
        )

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))[0]
        return x + self.mlp(self.norm2(x))


class GPICLPreTrainedModel(PreTrainedModel):
    config_class = GPICLConfig
    config: GPICLConfig
    base_model_prefix = "gpicl"
    main_input_name = "inputs"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPICLBlock"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual, plus an `auto_map` for every Auto class (`trust_remote_code=True` loads without ttt_hf) and
        the pipeline's code (its own files: the model's do not import it, so the model loads without PIL)."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        super().save_pretrained(save_directory, *args, **kwargs)
        copy_pipeline_code(self.config, save_directory)

    def _init_weights(self, module):
        """GPT-style: normal(0, initializer_range) linear and embedding weights, zero biases, LayerNorm 1 and 0; the
        TTT layers' own tensors as in TTT-ViT (the official MTTT init); causal convolutions uniform ±1/sqrt(c); LSTMs
        keep PyTorch's uniform init."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GPICLModel) and module.position_embeddings is not None:
            init.normal_(module.position_embeddings, std=std)
        elif isinstance(module, TTTMixer):
            module.init_inner_weights()
        elif isinstance(module, CausalConv):  # PyTorch's default range for a depthwise kernel of c taps, zero bias
            bound = module.conv.kernel_size[0] ** -0.5
            init.uniform_(module.conv.weight, -bound, bound)
            init.zeros_(module.conv.bias)


class GPICLModel(GPICLPreTrainedModel):
    """Token embedding (x_t, one_hot(y_{t-1})) -> causal backbone -> final LayerNorm, [B, T, hidden_size]."""

    def __init__(self, config: GPICLConfig):
        super().__init__(config)
        d = config.hidden_size
        self.embed = nn.Linear(config.token_dim, d)
        uses_positions = config.position_embedding_type == "learned" and config.backbone != "lstm"
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, config.max_position_embeddings, d)) if uses_positions else None
        )
        if config.backbone == "lstm":
            self.lstm = nn.LSTM(d, d, num_layers=config.num_hidden_layers, batch_first=True)
        else:
            self.layers = nn.ModuleList(GPICLBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.post_init()

    def tokens(self, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """[B, T, N_x + C]: x_t next to one_hot(y_{t-1}); the label part is 0 at t = 1 and after a label -100."""
        batch, length, _ = inputs.shape
        previous = inputs.new_zeros(batch, length, self.config.num_classes)
        if labels is not None and length > 1:
            shown = labels[:, :-1]  # y_1 .. y_{T-1}, shown at positions 2 .. T
            known = shown >= 0
            one_hot = F.one_hot(shown.clamp_min(0), self.config.num_classes).to(inputs.dtype) * known.unsqueeze(-1)
            previous[:, 1:] = one_hot
        return torch.cat([inputs, previous], dim=-1)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> GPICLModelOutput:
        labels = _check_inputs(self.config, inputs, labels)
        x = self.embed(self.tokens(inputs, labels))  # [B, T, d]
        if self.position_embeddings is not None:
            x = x + self.position_embeddings[:, : x.shape[1]]
        if self.config.backbone == "lstm":
            x, _ = self.lstm(x)
        else:
            for layer in self.layers:
                x = layer(x)
        return GPICLModelOutput(last_hidden_state=self.norm(x))

    def state_size(self, num_examples: int) -> int:
        """Floats one sequence carries from one position to the next after `num_examples` examples, as a
        token-by-token implementation must: a Transformer's key/value cache (2 x layers x T x width), the LSTM's h and
        c (2 x layers x width), the TTT layers' learner weights (`CausalTTTMixer.state_size`: independent of T), and
        with `ttt_conv_size` c every layer's last c - 1 convolution inputs."""
        if self.config.backbone == "transformer":
            cache = 2 * self.config.num_hidden_layers * num_examples * self.config.hidden_size
            return cache + sum(conv_history(layer.mixer.key_conv) for layer in self.layers)
        if self.config.backbone == "lstm":
            return 2 * self.config.num_hidden_layers * self.config.hidden_size
        return sum(layer.mixer.state_size() for layer in self.layers)


class GPICLForInContextClassification(GPICLPreTrainedModel):
    """A GPICL backbone and a linear head: logits for y_t at every position t, and the mean cross-entropy."""

    def __init__(self, config: GPICLConfig):
        super().__init__(config)
        self.gpicl = GPICLModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_classes)
        self.post_init()

    def state_size(self, num_examples: int) -> int:
        return self.gpicl.state_size(num_examples)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> GPICLOutput:
        r"""
        inputs (`torch.FloatTensor` of shape `(batch_size, sequence_length, input_dim)`): one task's examples.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): their labels in
            `[0, num_classes)`, or -100 where unknown (queries): shown to the model one position late and the
            targets of the loss (positions with -100 are left out of both).
        """
        hidden = self.gpicl(inputs, labels).last_hidden_state
        logits = self.classifier(hidden)  # [B, T, C]
        loss = None
        if labels is not None and (labels >= 0).any():
            labels = labels.long()
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return GPICLOutput(loss=loss, logits=logits)


def _check_inputs(config: GPICLConfig, inputs, labels):
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3 or inputs.shape[-1] != config.input_dim:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(
            f"`inputs` must be a float tensor [batch, sequence_length, input_dim={config.input_dim}], got {shape}. "
            "Flatten (and project) each example to input_dim values first."
        )
    if config.position_embedding_type == "learned" and config.backbone != "lstm":
        if inputs.shape[1] > config.max_position_embeddings:
            raise ValueError(
                f"The sequence has {inputs.shape[1]} examples, more than `max_position_embeddings` "
                f"({config.max_position_embeddings}) of this model."
            )
    if labels is None:
        return None
    if labels.shape != inputs.shape[:2] or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"`labels` must be an integer tensor [batch, sequence_length] = {tuple(inputs.shape[:2])}, got "
            f"{labels.dtype} {tuple(labels.shape)}."
        )
    bad = (labels >= config.num_classes) | ((labels < 0) & (labels != -100))
    if bad.any():
        raise ValueError(
            f"`labels` must be class indices in [0, {config.num_classes}) or -100 (unknown), got "
            f"{labels[bad][0].item()}."
        )
    return labels.long()


GPICLConfig.register_for_auto_class()
GPICLModel.register_for_auto_class("AutoModel")
GPICLForInContextClassification.register_for_auto_class("AutoModelForTokenClassification")

__all__ = [
    "GPICLForInContextClassification",
    "GPICLModel",
    "GPICLModelOutput",
    "GPICLOutput",
    "GPICLPreTrainedModel",
]
