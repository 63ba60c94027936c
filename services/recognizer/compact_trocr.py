"""A compact TrOCR for CPUs: a convolutional encoder registered with transformers, a TrOCR decoder.

The encoder is a `PreTrainedModel` with its own config registered with `AutoConfig`/`AutoModel`,
so the whole model saves and loads as a plain `VisionEncoderDecoderModel` (importing this module
registers it). A small CNN turns a 32xW grayscale crop into W/4 feature columns, two transformer
layers add context, and an auxiliary CTC head on those columns (used only in training) makes the
encoder hold character information early, which is what lets it converge in CPU-hours.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    TrOCRConfig,
    TrOCRForCausalLM,
    VisionEncoderDecoderModel,
)
from transformers.modeling_outputs import BaseModelOutput

from services.recognizer.characters import CHARACTERS, CTC_INDEX  # noqa: F401 (re-exported)

MODEL_TYPE = "handwriting-cnn-encoder"
SPECIAL_TOKENS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


class CompactEncoderConfig(PreTrainedConfig):
    model_type = MODEL_TYPE

    def __init__(
        self,
        image_height: int = 32,
        image_width: int = 192,
        num_channels: int = 1,
        conv_channels: tuple[int, ...] = (32, 64, 128, 192, 256),
        hidden_size: int = 256,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        intermediate_size: int = 768,
        dropout: float = 0.1,
        ctc_vocab_size: int = len(CHARACTERS) + 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_height = image_height
        self.image_width = image_width
        self.num_channels = num_channels
        self.conv_channels = list(conv_channels)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.ctc_vocab_size = ctc_vocab_size


def _conv_block(in_channels: int, out_channels: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.GELU(),
        nn.MaxPool2d(pool),
    )


class CompactEncoderModel(PreTrainedModel):
    config_class = CompactEncoderConfig
    main_input_name = "pixel_values"
    base_model_prefix = "compact_encoder"

    def __init__(self, config: CompactEncoderConfig):
        super().__init__(config)
        # 32xW -> 16xW/2 -> 8xW/4 -> 4xW/4 -> 2xW/4 -> 1xW/4
        pools = [(2, 2), (2, 2), (2, 1), (2, 1), (2, 1)]
        channels = [config.num_channels, *config.conv_channels]
        self.stem = nn.Sequential(*[_conv_block(channels[i], channels[i + 1], pools[i]) for i in range(len(pools))])
        self.project = nn.Linear(channels[-1] * (config.image_height // 32), config.hidden_size)
        self.position = nn.Parameter(torch.zeros(1, config.image_width // 4, config.hidden_size))
        layer = nn.TransformerEncoderLayer(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.context = nn.TransformerEncoder(layer, config.num_hidden_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden_size)
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
        features = self.stem(pixel_values)  # (B, C, H', W/4)
        batch, channels, height, width = features.shape
        columns = features.permute(0, 3, 1, 2).reshape(batch, width, channels * height)
        hidden = self.project(columns) + self.position[:, :width]
        hidden = self.norm(self.context(hidden))
        if return_dict is False:
            return (hidden,)
        return BaseModelOutput(last_hidden_state=hidden)

    def ctc_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.ctc_head(hidden)


AutoConfig.register(MODEL_TYPE, CompactEncoderConfig)
AutoModel.register(CompactEncoderConfig, CompactEncoderModel)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer built locally: specials, then one token per printable ASCII char."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS.values())}
    for char in CHARACTERS:
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    encoder: dict | None = None,
    decoder: dict | None = None,
    max_length: int = 32,
) -> VisionEncoderDecoderModel:
    """A fresh compact TrOCR; `encoder`/`decoder` override the config defaults (tests use tiny ones)."""
    encoder_config = CompactEncoderConfig(**(encoder or {}))
    decoder_args = {
        "d_model": 256,
        "decoder_layers": 3,
        "decoder_attention_heads": 4,
        "decoder_ffn_dim": 1024,
        "max_position_embeddings": max_length + 8,
        "use_learned_position_embeddings": True,
        "layernorm_embedding": True,
        "dropout": 0.1,
        "activation_function": "gelu",
        **(decoder or {}),
    }
    return assemble(CompactEncoderModel(encoder_config), char_decoder_config(tokenizer, **decoder_args), tokenizer)


def char_decoder_config(tokenizer: PreTrainedTokenizerFast, **options) -> TrOCRConfig:
    """A TrOCR decoder's config for the character tokenizer; `options`: sizes and the like."""
    return TrOCRConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        is_decoder=True,
        add_cross_attention=True,
        **options,
    )


def assemble(encoder: PreTrainedModel, decoder_config: TrOCRConfig, tokenizer) -> VisionEncoderDecoderModel:
    """`encoder` and a fresh decoder as one VisionEncoderDecoderModel, its special tokens set for generation."""
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=TrOCRForCausalLM(decoder_config))
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.bos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
    return model


def prepare_pixels(crops: list[Image.Image], height: int, width: int) -> torch.Tensor:
    """Grayscale crops -> (B, 1, height, width): aspect kept, right-padded with the background.

    Each crop is contrast-stretched between its 2nd and 98th percentiles, so pencil and ink
    look alike; text wider than the canvas is squeezed to fit.
    """
    batch = np.zeros((len(crops), 1, height, width), dtype=np.float32)
    for index, crop in enumerate(crops):
        gray = crop if crop.mode == "L" else crop.convert("L")
        new_width = max(1, min(width, round(gray.width * height / max(1, gray.height))))
        array = np.asarray(gray.resize((new_width, height), resample=Image.BILINEAR), dtype=np.float32)
        low, high = np.percentile(array, (2, 98))
        array = np.clip((array - low) / max(high - low, 1.0), 0.0, 1.0)
        batch[index, 0, :, :] = 1.0  # background (paper) after stretching
        batch[index, 0, :, :new_width] = array
    return torch.from_numpy(1.0 - batch)  # ink high, paper 0
