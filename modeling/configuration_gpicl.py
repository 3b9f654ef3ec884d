"""Configuration of a general-purpose in-context learner (GPICL; Kirsch et al., arXiv 2212.04458).

A black-box sequence model reads (x_1, -), (x_2, y_1), ..., (x_T, y_{T-1}) and predicts y_t at every t: meta-trained
on many tasks, its forward pass learns each new task from the examples in its context. `backbone` picks the
black box: a causal Transformer, an LSTM, or causal TTT layers (TTT-Linear, TTT-MLP; Sun et al. 2024), whose
state is a learner trained by gradient steps as the sequence is read.
"""

from transformers import PreTrainedConfig

from .configuration_ttt_vit import _choice, remote_pipeline

BACKBONES = ("transformer", "lstm", "ttt_linear", "ttt_mlp")
POSITION_EMBEDDINGS = ("learned", "none")


class GPICLConfig(PreTrainedConfig):
    r"""
    Args:
        backbone (`str`, defaults to `"transformer"`): the sequence model: `"transformer"` (causal softmax
            attention, pre-LN blocks), `"lstm"` (a stack of `num_hidden_layers` LSTMs), `"ttt_linear"` or
            `"ttt_mlp"` (pre-LN blocks whose mixer is the causal TTT layer of causal_ttt_layers.py).
        input_dim (`int`, defaults to 196): N_x, the size of one flattened, projected input (14 x 14 images).
        num_classes (`int`, defaults to 10): labels per task.
        hidden_size (`int`, defaults to 256): model width (the paper's default Transformer: 256).
        num_hidden_layers (`int`, defaults to 4): blocks (or LSTM layers).
        num_attention_heads (`int`, defaults to 8): heads of the attention and TTT mixers.
        intermediate_size (`int`, *optional*): hidden width of the block MLP; defaults to 4 x `hidden_size`.
        max_position_embeddings (`int`, defaults to 1024): longest sequence with learned position embeddings.
        position_embedding_type (`str`, defaults to `"learned"`): `"learned"` absolute positions added to the
            token embeddings, or `"none"` (the LSTM ignores it). In-context classification is order-free, so
            `"none"` is a sound choice for the causal models too.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm.
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear layers and embeddings.
        ttt_mini_batch_size (`int`, defaults to 16): b, tokens per inner mini-batch of the TTT backbones (Sun et
            al. 2024: 16); the state W carries over between mini-batches.
        ttt_conv_size (`int`, defaults to 0): width of a causal convolution over the sequence before the TTT
            layers' keys and before their queries (Sun et al. 2024's Mamba backbone has one; 0: none). The
            Transformer takes it too, before its attention's keys and queries: a control with the same access to
            earlier tokens. The LSTM has none.
        inner_lr (`float`, defaults to 1.0): the TTT layers' inner step size (on the loss scaled 1 / (b k)).
        inner_hidden_ratio (`int`, defaults to 4): hidden width of the TTT-MLP learner, in units of the head width.
        learn_inner_init (`bool`, defaults to `True`): whether W_0 is trained by the outer loop.
        decoder_layer_norm (`bool`, defaults to `True`): LayerNorm on the TTT layers' decoded reconstruction.
        trained_sequence_length (`int`, *optional*): the examples per sequence of meta-training (set by
            `ttt-hf meta-train`); the in-context pipeline warns on a longer support set, whose positions the learner
            never saw.
    """

    model_type = "gpicl"

    backbone: str = "transformer"
    input_dim: int = 196
    num_classes: int = 10
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    intermediate_size: int | None = None
    max_position_embeddings: int = 1024
    position_embedding_type: str = "learned"
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    ttt_mini_batch_size: int = 16
    ttt_conv_size: int = 0
    inner_lr: float = 1.0
    inner_hidden_ratio: int = 4
    learn_inner_init: bool = True
    decoder_layer_norm: bool = True
    trained_sequence_length: int | None = None

    # As remote code (no ttt_hf), `pipeline("in-context-classification", trust_remote_code=True)` takes the
    # checkpoint's pipeline_gpicl.py, which save_pretrained copies there (the installed ttt_hf registers the task).
    REMOTE_PIPELINES = {
        "in-context-classification": {
            "impl": "pipeline_gpicl.InContextClassificationPipeline",
            "pt": ["AutoModelForTokenClassification"],
        }
    }
    custom_pipelines = remote_pipeline(REMOTE_PIPELINES)

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        super().__post_init__(**kwargs)
        if self.num_labels != self.num_classes:  # the classifier's outputs: one per class of a task
            self.num_labels = self.num_classes
        self.validate_fields()

    def validate_fields(self):
        _choice("backbone", self.backbone, BACKBONES)
        _choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDINGS)
        integers = (
            "input_dim",
            "num_classes",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "ttt_mini_batch_size",
            "inner_hidden_ratio",
        )
        for name in integers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        length = self.trained_sequence_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
            raise ValueError(f"`trained_sequence_length` must be an integer of at least 2, got {length!r}.")
        if self.num_classes < 2:
            raise ValueError(f"`num_classes` must be at least 2, got {self.num_classes}.")
        if self.backbone != "lstm" and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}) for backbone={self.backbone!r}."
            )
        for name in ("learn_inner_init", "decoder_layer_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true or false, got {getattr(self, name)!r}.")
        if isinstance(self.ttt_conv_size, bool) or not isinstance(self.ttt_conv_size, int) or self.ttt_conv_size < 0:
            raise ValueError(
                f"`ttt_conv_size` must be a non-negative integer (0: no convolution), got {self.ttt_conv_size!r}."
            )
        if self.backbone == "lstm" and self.ttt_conv_size:
            raise ValueError("`ttt_conv_size` applies to the attention and TTT backbones; the LSTM takes none (0).")
        if isinstance(self.inner_lr, bool) or not isinstance(self.inner_lr, (int, float)) or not self.inner_lr > 0:
            raise ValueError(f"`inner_lr` must be a positive number, got {self.inner_lr!r}.")

    @property
    def mixer(self) -> str:
        """The TTT mixer's name for ttt_layers.make_learner (`ttt_linear` or `ttt_mlp`)."""
        return self.backbone

    @property
    def token_dim(self) -> int:
        """Width of one input token: the example x_t and the one-hot previous label y_{t-1}."""
        return self.input_dim + self.num_classes


__all__ = ["BACKBONES", "GPICLConfig"]
