"""The recognition network of PP-OCRv6 small (PaddleOCR) in plain PyTorch, as a TrOCR encoder.

The architecture mirrors `PP-OCRv6_rec_small.onnx` (shipped in the rapidocr wheel, Apache-2.0) so
that `training.import_ppocr` can load its weights one to one:

- backbone: an HGNetV2 stem (48xW -> 12xW/4, 96 channels) then RepViT-like blocks, each a 3x3
  depthwise conv (batch norm and its re-parameterised branches folded in, hence the bias), an
  optional squeeze-excitation, a 1x1 expand / GELU / 1x1 project pair and a residual around that
  pair when the shape allows; two blocks halve the height (stride (2, 1)) and double the channels,
  so the backbone ends at 384 channels, height 3, width W/4;
- neck (SVTR-like): an average pool to 1xW/8, a 1x1 conv shortcut, a 1x1 conv plus a (1, 7)
  depthwise conv mixing neighbouring columns, two pre-norm transformer layers over the W/8 columns,
  a final LayerNorm, then the shortcut added back: (N, W/8, 120).

The encoder's output is the neck's; PP-OCR's 18710-way CTC classifier is not part of it. Instead
`ctc_head` reads our own character set (`characters.CHARACTERS`, 0 = CTC blank), initialised
from the matching rows of PP-OCR's classifier by the importer, and serves as the auxiliary CTC loss.
Importing this module registers the encoder with `AutoConfig`/`AutoModel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from services.recognizer import characters, ppocr_pixels
from services.recognizer.ppocr_pixels import PADDING, RIGHT_MARGIN  # noqa: F401 (re-exported)

MODEL_TYPE = ppocr_pixels.MODEL_TYPE
# each crop's own columns in a padded batch and the batch's width, (N,) integers both (`split_padding`)
Owned = tuple[torch.Tensor, torch.Tensor]

# The blocks after the stem: [out_channels, stride along the height, squeeze-excitation].
PPOCRV6_SMALL_BLOCKS = (
    [96, 1, True],
    [96, 1, False],
    [96, 1, False],
    [192, 2, False],
    [192, 1, True],
    [192, 1, False],
    [192, 1, True],
    [192, 1, False],
    [192, 1, True],
    [192, 1, False],
    [384, 2, False],
    [384, 1, True],
    [384, 1, False],
)


class PPOCREncoderConfig(PreTrainedConfig):
    """Defaults are PP-OCRv6 small's; `max_width` is the widest input (wider crops are squeezed), `width_scale` how
    wide a crop is read against its aspect (`ppocr_pixels.prepare_pixels`)."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        image_height: int = 48,
        max_width: int = 1600,
        width_scale: float = ppocr_pixels.WIDTH_SCALE,
        num_channels: int = 3,
        stem_channels: tuple[int, int] = (48, 96),
        blocks: tuple[list, ...] = PPOCRV6_SMALL_BLOCKS,
        block_expansion: int = 2,
        se_reduction: int = 4,
        neck_pool: tuple[int, int] = (3, 2),
        neck_kernel_width: int = 7,
        hidden_size: int = 120,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 8,
        intermediate_size: int = 240,
        layer_norm_eps: float = 1e-5,
        final_layer_norm_eps: float = 1e-6,
        batch_norm_eps: float = 1e-5,
        dropout: float = 0.0,
        ctc_vocab_size: int = len(characters.CHARACTERS) + 1,
        decode_ctc_weight: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_height = image_height
        self.max_width = max_width
        self.width_scale = width_scale
        self.num_channels = num_channels
        self.stem_channels = list(stem_channels)
        self.blocks = [list(block) for block in blocks]
        self.block_expansion = block_expansion
        self.se_reduction = se_reduction
        self.neck_pool = list(neck_pool)
        self.neck_kernel_width = neck_kernel_width
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.layer_norm_eps = layer_norm_eps
        self.final_layer_norm_eps = final_layer_norm_eps
        self.batch_norm_eps = batch_norm_eps
        self.dropout = dropout
        self.ctc_vocab_size = ctc_vocab_size
        # the CTC head's weight beside the decoder when the recognizer scores readings (0: decoder alone)
        self.decode_ctc_weight = decode_ctc_weight


class Stem(nn.Module):
    """HGNetV2 stem: 3x3/2 conv, then a max-pool and a 2x2-conv branch side by side, 3x3/2, 1x1; all ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        self.stem1 = nn.Conv2d(in_channels, mid_channels, 3, stride=2, padding=1)
        self.stem2a = nn.Conv2d(mid_channels, mid_channels // 2, 2)
        self.stem2b = nn.Conv2d(mid_channels // 2, mid_channels, 2)
        self.pool = nn.MaxPool2d(2, stride=1)
        self.stem3 = nn.Conv2d(mid_channels * 2, mid_channels, 3, stride=2, padding=1)
        self.stem4 = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, valid: Owned | None = None) -> torch.Tensor:
        x = F.pad(_mask(F.relu(self.stem1(x)), valid), (0, 1, 0, 1))  # "SAME_UPPER" for the 2x2 kernels; x >= 0
        branch = F.relu(self.stem2a(x))
        branch = F.relu(self.stem2b(F.pad(_mask(branch, valid), (0, 1, 0, 1))))
        x = torch.cat([self.pool(x), branch], dim=1)
        x = F.relu(self.stem3(_mask(x, valid)))
        return F.relu(self.stem4(x))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """`valid`: (N, 1, 1, W) 1.0 over each crop's own columns, 0.0 over the batch's padding."""
        if valid is None:
            scale = x.mean(dim=(2, 3), keepdim=True)
        else:
            scale = (x * valid).sum(dim=(2, 3), keepdim=True) / (valid.sum(dim=3, keepdim=True) * x.shape[2])
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(scale))))


class Block(nn.Module):
    """Depthwise 3x3 (+SE) mixes space; a 1x1 pair with GELU mixes channels, with a residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_se: bool, expansion: int, reduction: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=(stride, 1), padding=1, groups=in_channels)
        self.se = SqueezeExcite(in_channels, reduction) if use_se else None
        self.expand = nn.Conv2d(in_channels, in_channels * expansion, 1)
        self.project = nn.Conv2d(in_channels * expansion, out_channels, 1)
        self.residual = in_channels == out_channels

    def forward(self, x: torch.Tensor, valid: Owned | None = None) -> torch.Tensor:
        x = self.depthwise(_mask(x, valid))
        if self.se is not None:
            x = self.se(x, None if valid is None else _columns(valid, x.shape[3], x.dtype))
        out = self.project(F.gelu(self.expand(x)))
        return x + out if self.residual else out


class ConvBNSwish(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], groups: int, eps: float):
        padding = (kernel[0] // 2, kernel[1] // 2)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=eps),
            nn.SiLU(),
        )


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        """`attend`: (N, 1, 1, L) True for the columns a crop may attend to (its own, not the batch's padding)."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=dropout)  # scale: head_dim**-0.5
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerLayer(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x)) with a swish MLP."""

    def __init__(self, config: PPOCREncoderConfig):
        super().__init__()
        dim = config.hidden_size
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = Attention(dim, config.num_attention_heads, config.dropout)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(dim, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), attend))
        return x + self.dropout(self.fc2(self.dropout(F.silu(self.fc1(self.norm2(x))))))


class Neck(nn.Module):
    """Backbone maps (N, C, H, W) -> columns (N, W', hidden): pool, conv mixing, transformer, shortcut."""

    def __init__(self, config: PPOCREncoderConfig, in_channels: int):
        super().__init__()
        dim, eps = config.hidden_size, config.batch_norm_eps
        self.pool = nn.AvgPool2d(tuple(config.neck_pool), stride=tuple(config.neck_pool))
        self.shortcut = ConvBNSwish(in_channels, dim, (1, 1), 1, eps)
        self.conv_in = ConvBNSwish(in_channels, dim, (1, 1), 1, eps)
        self.local = ConvBNSwish(dim, dim, (1, config.neck_kernel_width), dim, eps)
        self.layers = nn.ModuleList([TransformerLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(dim, eps=config.final_layer_norm_eps)

    def forward(self, x: torch.Tensor, valid: Owned | None = None) -> torch.Tensor:
        x = self.pool(_mask(x, valid))
        attend = None if valid is None else _columns(valid, x.shape[3], torch.bool)
        shortcut = self.shortcut(x)
        x = self.conv_in(x)
        x = x + self.local(_mask(x, valid))
        batch, channels, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)  # (N, H*W, C)
        for layer in self.layers:
            x = layer(x, attend)
        x = self.norm(x).transpose(1, 2).reshape(batch, channels, height, width) + shortcut
        return x.squeeze(2).transpose(1, 2)  # height is 1 here: (N, W', C)


class PPOCREncoderModel(PreTrainedModel):
    config_class = PPOCREncoderConfig
    main_input_name = "pixel_values"
    base_model_prefix = "ppocr_encoder"

    def __init__(self, config: PPOCREncoderConfig):
        super().__init__(config)
        stem_mid, channels = config.stem_channels
        self.stem = Stem(config.num_channels, stem_mid, channels)
        blocks = []
        for out_channels, stride, use_se in config.blocks:
            blocks.append(Block(channels, out_channels, stride, use_se, config.block_expansion, config.se_reduction))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.neck = Neck(config, channels)
        self.ctc_head = nn.Linear(config.hidden_size, config.ctc_vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return None

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        pixel_values, valid = split_padding(pixel_values)
        x = self.stem(pixel_values, valid)
        for block in self.blocks:
            x = block(x, valid)
        hidden = self.neck(x, valid)  # (N, W/8, hidden_size)
        if return_dict is False:
            return (hidden,)
        return BaseModelOutput(last_hidden_state=hidden)

    def ctc_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.ctc_head(hidden)

    def content_fraction(self, crop: Image.Image) -> float:
        """The share of a crop's own encoder columns that its pixels span (`prepare_pixels` adds a margin)."""
        config = self.config
        return ppocr_pixels.content_fraction(crop, config.image_height, config.max_width, config.width_scale)

    @staticmethod
    def owned_columns(pixel_values: torch.Tensor, columns: int) -> list[int]:
        """How many of the `columns` output columns lie over each crop's own pixels (not the batch's padding)."""
        return ppocr_pixels.owned_columns(pixel_values[:, :1, :1, :].float().cpu().numpy(), columns)


def split_padding(pixel_values: torch.Tensor) -> tuple[torch.Tensor, Owned | None]:
    """Pixels with the batch's padding zeroed, and how many of the batch's columns each crop owns ((N,) integers,
    and the batch's width), or None when nothing is padded. The mask travels inside the pixels, so it reaches the
    encoder through any caller (generate, VisionEncoderDecoderModel). Beyond its own columns every feature map of a
    crop is zeroed before each spatial conv (`_mask`), which is what a conv's zero padding gives the crop alone;
    with own widths in multiples of 8, a crop reads the same alone or beside wider crops."""
    padded = pixel_values[:, 0, 0, :] == PADDING  # (N, W): padding fills whole columns
    if not torch.jit.is_tracing() and not torch.compiler.is_compiling() and not bool(padded.any()):
        return pixel_values, None  # (an exported graph always masks: it must serve padded batches)
    # in integers, exact whatever precision the model runs in: computed in bfloat16 (OpenVINO's HW_DTYPE=bfloat16,
    # torch's on a GPU) fractions of the width put crops' last columns off, and the states 11% from float32's
    owned = (~padded).sum(dim=1)
    width = torch.ones_like(owned) * pixel_values.shape[3]  # (a tensor: the exported graph's width is dynamic)
    return pixel_values.masked_fill(pixel_values == PADDING, 0.0), (owned, width)


def _mask(x: torch.Tensor, valid: Owned | None) -> torch.Tensor:
    return x if valid is None else x * _columns(valid, x.shape[3], x.dtype)


def _columns(owned: Owned, width: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, 1, 1, width) 1 over the columns of a feature map that lie over each crop's own pixels, as `dtype`;
    `owned`: `split_padding`'s columns each crop owns and the batch's width (a map's column is a crop's when it
    starts over the crop's pixels: ceil(owned * width / batch width) of them)."""
    columns, total = owned
    limit = (columns * width + total - 1) // total
    return (torch.arange(width, device=columns.device)[None, :] < limit[:, None]).to(dtype)[:, None, None, :]


AutoConfig.register(MODEL_TYPE, PPOCREncoderConfig)
AutoModel.register(PPOCREncoderConfig, PPOCREncoderModel)


def prepare_pixels(
    crops: list[Image.Image], height: int, max_width: int, width_scale: float | list[float] = ppocr_pixels.WIDTH_SCALE
) -> torch.Tensor:
    """`ppocr_pixels.prepare_pixels` as a tensor."""
    return torch.from_numpy(ppocr_pixels.prepare_pixels(crops, height, max_width, width_scale))
