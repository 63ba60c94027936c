"""The recognizer's graphs for ONNX Runtime, exported from its torch weights (torch is needed here, and only here):

- `encoder.onnx`: a PP-OCR encoder (the shipped model's) and its CTC head, pixel_values (N, 3, H, W) -> hidden
  (N, T, D), ctc (N, T, C), batch and width dynamic;
- `cross.onnx` and `step.onnx`: the TrOCR decoder, run by `onnx_decoder` (its docstring says what each does);
- `onnx.json`: what running them needs besides (the decoder's shape and special tokens, `decoder_meta`) and the
  sha256 of the weights they came from (services.common.onnx_sessions.write_graphs).

A recognizer that starts from weights exports them in memory (a few seconds). `python -m
services.recognizer.onnx_export --model-dir models/recognizer --out DIR` copies the model's folder to DIR and
writes the graphs into DIR/onnx: a recognizer reads them from there, and then needs neither torch nor the
export (the CPU images, `services/recognizer/Dockerfile`). `tests/test_recognizer_model.py` checks that the
backends read the same.
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import torch
from PIL import Image

from services.common import onnx_sessions
from services.recognizer import onnx_bundle, onnx_decoder, ppocr_encoder


class _EncoderWithCtc(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(pixel_values=pixel_values).last_hidden_state
        return hidden, self.encoder.ctc_logits(hidden)


def encoder_graph(encoder: torch.nn.Module) -> bytes:
    """The encoder and its CTC head as ONNX bytes: pixel_values (N, 3, H, W) -> hidden (N, T, D), ctc (N, T, C)."""
    config = encoder.config
    example = ppocr_encoder.prepare_pixels(
        [Image.new("L", (60, 32), 255), Image.new("L", (200, 40), 255)], config.image_height, config.max_width
    ).to(next(encoder.parameters()).dtype)
    return _export(
        _EncoderWithCtc(encoder),
        (example,),
        ["pixel_values"],
        ["hidden", "ctc"],
        {
            "pixel_values": {0: "batch", 3: "width"},
            "hidden": {0: "batch", 1: "columns"},
            "ctc": {0: "batch", 1: "columns"},
        },
    )


class _Cross(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.projection = getattr(model, "enc_to_dec_proj", None)
        self.layers = model.decoder.model.decoder.layers

    def forward(self, encoder_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.projection is not None:
            encoder_states = self.projection(encoder_states)
        out = []
        for layer in self.layers:
            attention = layer.encoder_attn
            out += [_heads(attention.k_proj(encoder_states), attention)]
            out += [_heads(attention.v_proj(encoder_states), attention)]
        return tuple(out)


class _Step(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        decoder = model.decoder.model.decoder
        self.decoder = decoder
        self.output_projection = model.decoder.output_projection

    def forward(
        self, input_ids: torch.Tensor, cross_mask: torch.Tensor, *caches: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        decoder = self.decoder
        layers = len(decoder.layers)
        past, cross = caches[: 2 * layers], caches[2 * layers :]
        cross_mask = cross_mask[:, None, None, :]  # (B, T) -> added to every head's and position's weights
        length, before = input_ids.shape[1], past[0].shape[2]
        positions = torch.arange(length, device=input_ids.device) + before
        embed_positions = decoder.embed_positions
        hidden = decoder.embed_tokens(input_ids) + embed_positions.weight[positions + embed_positions.offset]
        if decoder.layernorm_embedding is not None:
            hidden = decoder.layernorm_embedding(hidden)
        # query i (position before + i) sees keys 0 .. before + i
        keys = torch.arange(before + length, device=input_ids.device)
        blocked = keys[None, :] > positions[:, None]
        mask = torch.zeros(blocked.shape, dtype=hidden.dtype).masked_fill(blocked, torch.finfo(hidden.dtype).min)
        present = []
        for index, layer in enumerate(decoder.layers):
            self_attention = layer.self_attn
            k = torch.cat([past[2 * index], _heads(self_attention.k_proj(hidden), self_attention)], dim=2)
            v = torch.cat([past[2 * index + 1], _heads(self_attention.v_proj(hidden), self_attention)], dim=2)
            present += [k, v]
            hidden = layer.self_attn_layer_norm(hidden + _attend(self_attention, hidden, k, v, mask))
            cross_attention = layer.encoder_attn
            hidden = layer.encoder_attn_layer_norm(
                hidden + _attend(cross_attention, hidden, cross[2 * index], cross[2 * index + 1], cross_mask)
            )
            hidden = layer.final_layer_norm(hidden + layer.fc2(layer.activation_fn(layer.fc1(hidden))))
        return (self.output_projection(hidden), *present)


def _heads(x: torch.Tensor, attention) -> torch.Tensor:
    """(B, L, d) -> (B, heads, L, head_dim)"""
    return x.view(x.shape[0], x.shape[1], attention.num_heads, attention.head_dim).transpose(1, 2)


def _attend(attention, hidden: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None):
    query = _heads(attention.q_proj(hidden) * attention.scaling, attention)
    weights = query @ k.transpose(2, 3)
    if mask is not None:
        weights = weights + mask
    out = weights.softmax(-1) @ v  # (B, heads, L, head_dim)
    return attention.out_proj(out.transpose(1, 2).reshape(hidden.shape))


def _export(module: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str], dynamic: dict) -> bytes:
    buffer = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(
            module.eval(),
            args,
            buffer,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,  # the TorchScript exporter handles the padding masks with dynamic widths
        )
    return buffer.getvalue()


def decoder_meta(model) -> dict:
    """What running the decoder's graphs needs besides them: its shape and special tokens."""
    decoder = model.decoder.model.decoder
    attention = decoder.layers[0].self_attn
    generation = model.generation_config
    start = generation.decoder_start_token_id
    if start is None:
        start = model.config.decoder_start_token_id
    eos = generation.eos_token_id
    eos = list(eos) if isinstance(eos, list | tuple) else [eos]
    return {
        "layers": len(decoder.layers),
        "heads": attention.num_heads,
        "head_dim": attention.head_dim,
        "start": start,
        "eos": eos,
        "pad": generation.pad_token_id if generation.pad_token_id is not None else eos[0],
        "max_positions": decoder.embed_positions.num_embeddings - decoder.embed_positions.offset,
    }


def decoder_graphs(model) -> tuple[bytes, bytes]:
    """The `cross` and `step` graphs of the decoder of `model` (a VisionEncoderDecoderModel)."""
    meta = decoder_meta(model)
    layers, heads, head_dim = meta["layers"], meta["heads"], meta["head_dim"]
    states = torch.zeros(2, 5, model.config.encoder.hidden_size)
    cross_names = onnx_decoder.names("cross", layers)
    past_names = onnx_decoder.names("past", layers)
    present_names = onnx_decoder.names("present", layers)
    cross_module = _Cross(model)
    with torch.inference_mode():
        cross = cross_module(states)
    cross_graph = _export(
        cross_module,
        (states,),
        ["encoder_states"],
        cross_names,
        {"encoder_states": {0: "batch", 1: "columns"}, **{n: {0: "batch", 2: "columns"} for n in cross_names}},
    )
    past = tuple(torch.zeros(2, heads, 3, head_dim) for _ in past_names)
    ids = torch.zeros(2, 2, dtype=torch.long)
    step_graph = _export(
        _Step(model),
        (ids, torch.zeros(2, 5), *past, *cross),
        ["input_ids", "cross_mask", *past_names, *cross_names],
        ["logits", *present_names],
        {
            "input_ids": {0: "batch", 1: "length"},
            "cross_mask": {0: "batch", 1: "columns"},
            "logits": {0: "batch", 1: "length"},
            **{n: {0: "batch", 2: "past"} for n in past_names},
            **{n: {0: "batch", 2: "total"} for n in present_names},
            **{n: {0: "batch", 2: "columns"} for n in cross_names},
        },
    )
    return cross_graph, step_graph


def graphs(model, encoder: bool = True, decoder: bool = True) -> onnx_bundle.Bundle:
    """The graphs of `model` in memory: with `encoder`, the encoder's where it is PP-OCR's; with `decoder`, the
    decoder's where `onnx_decoder.supported`; the decoder's meta always (what is not exported is None)."""
    encoder = encoder and model.config.encoder.model_type == ppocr_encoder.MODEL_TYPE
    decoder = decoder and onnx_decoder.supported(model.config.decoder.to_dict())
    cross, step = decoder_graphs(model) if decoder else (None, None)
    return onnx_bundle.Bundle(encoder_graph(model.encoder) if encoder else None, cross, step, decoder_meta(model))


def write_serving_folder(model_dir: str | Path, out: str | Path) -> Path:
    """Copy the model's folder to `out` and write its graphs into `out`/onnx (see the module's docstring)."""
    from services.recognizer.checkpoint import load_checkpoint

    model_dir, out = Path(model_dir), Path(out)
    model = load_checkpoint(model_dir).model.eval()
    if model.config.encoder.model_type != ppocr_encoder.MODEL_TYPE or not onnx_decoder.supported(
        model.config.decoder.to_dict()
    ):
        raise ValueError(f"{model_dir}: only PP-OCR encoders with TrOCR decoders are exported")
    if out.resolve() != model_dir.resolve():
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
    exported = graphs(model)
    return onnx_sessions.write_graphs(
        out / onnx_bundle.WEIGHTS,
        {name: getattr(exported, name) for name in onnx_bundle.NAMES},
        {"decoder": exported.decoder},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out", required=True, help="serving folder: the model files, onnx/ (may be --model-dir)")
    args = parser.parse_args()
    print(write_serving_folder(args.model_dir, args.out))


if __name__ == "__main__":
    main()
