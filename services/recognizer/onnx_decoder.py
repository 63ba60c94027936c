"""The recognizer's TrOCR decoder under ONNX Runtime, with its keys and values cached between steps.

A greedy step of the shipped decoder (3 layers, d 256) on a batch of 32 word crops takes about 3 ms in torch's
`generate` and 1.4 ms here (/tmp measurement on this 2-core machine, `models/recognizer/README.md`), and a page
takes some 40 sequential steps. Two graphs are exported from the loaded weights when the recognizer starts (in
memory, like the encoder's):

- `cross`: the encoder's states -> each layer's cross-attention keys and values, once per encoder batch;
- `step`: token ids (B, L), a cross-attention mask (B, T), each layer's cached self-attention keys and values
  (B, heads, P, head_dim) and the cross keys and values -> logits (B, L, vocab) and the self-attention keys and
  values with the L new positions appended. L = 1 is a greedy step; P = 0 and L = a whole text is teacher
  forcing (scoring).

The mask lets one decoding batch hold crops of several encoder batches (`Cross.join`): each crop attends to
the columns its own encoder batch gave it, as if decoded with that batch alone. `greedy` runs the greedy search
of `generate` (argmax each step until every row has emitted the end token or `max_new_tokens` are made, rows
that ended padded) and gives each row its tokens' log-probabilities, what the recognizer takes from `generate`
and `compute_transition_scores`. `tests/test_recognizer_model.py` checks that both backends read the same.
Only TrOCR decoders with learned positions are exported (the shipped model's and Microsoft's checkpoints);
others, and beam search, stay in torch.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import torch

from services.common.onnx_sessions import PROVIDERS, session_options

logger = logging.getLogger("handwriting.recognizer")


def supported(model) -> bool:
    """Whether the decoder of `model` (a VisionEncoderDecoderModel) can be exported here."""
    config = model.config.decoder
    return config.model_type == "trocr" and bool(getattr(config, "use_learned_position_embeddings", False))


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
            dynamo=False,
        )
    return buffer.getvalue()


@dataclass
class Cross:
    """Each decoder layer's cross-attention keys and values (B, heads, T, head_dim) for a batch of crops, and an
    additive mask (B, T) of the columns each crop's attention skips: 0 over the columns its encoder batch gave
    it, -inf-like over those added to join encoder batches of other widths into one decoding batch."""

    arrays: list[np.ndarray]
    mask: np.ndarray

    def __len__(self) -> int:
        return self.mask.shape[0]

    def rows(self, rows: list[int]) -> Cross:
        return Cross([array[rows] for array in self.arrays], self.mask[rows])

    @staticmethod
    def join(parts: list[Cross]) -> Cross:
        """One batch from several: each part's columns padded to the widest, the padding masked."""
        if len(parts) == 1:
            return parts[0]
        columns = max(part.mask.shape[1] for part in parts)
        blocked = np.finfo(np.float32).min

        def pad(array: np.ndarray, axis: int, value: float) -> np.ndarray:
            widths = [(0, 0)] * array.ndim
            widths[axis] = (0, columns - array.shape[axis])
            return np.pad(array, widths, constant_values=value)

        arrays = [np.concatenate([pad(part.arrays[i], 2, 0.0) for part in parts]) for i in range(len(parts[0].arrays))]
        return Cross(arrays, np.concatenate([pad(part.mask, 1, blocked) for part in parts]))


class OnnxDecoder:
    """The decoder of a loaded VisionEncoderDecoderModel on ONNX Runtime: `cross`, `step`, `greedy`, `logits`."""

    def __init__(self, model, threads: int = 0):
        import onnxruntime

        decoder = model.decoder.model.decoder
        self.layers = len(decoder.layers)
        attention = decoder.layers[0].self_attn
        self.heads, self.head_dim = attention.num_heads, attention.head_dim
        generation = model.generation_config
        self.start = generation.decoder_start_token_id
        if self.start is None:
            self.start = model.config.decoder_start_token_id
        eos = generation.eos_token_id
        self.eos = eos[0] if isinstance(eos, list) else eos
        self.pad = generation.pad_token_id if generation.pad_token_id is not None else self.eos
        self.max_positions = decoder.embed_positions.num_embeddings - decoder.embed_positions.offset

        width = model.config.encoder.hidden_size
        states = torch.zeros(2, 5, width)
        cross_names = [f"cross_{kind}{i}" for i in range(self.layers) for kind in "kv"]
        past_names = [f"past_{kind}{i}" for i in range(self.layers) for kind in "kv"]
        present_names = [f"present_{kind}{i}" for i in range(self.layers) for kind in "kv"]
        cross_module = _Cross(model)
        with torch.inference_mode():
            cross = cross_module(states)
        options = session_options(threads)
        self.cross_session = onnxruntime.InferenceSession(
            _export(
                cross_module,
                (states,),
                ["encoder_states"],
                cross_names,
                {"encoder_states": {0: "batch", 1: "columns"}, **{n: {0: "batch", 2: "columns"} for n in cross_names}},
            ),
            options,
            providers=PROVIDERS,
        )
        past = tuple(torch.zeros(2, self.heads, 3, self.head_dim) for _ in past_names)
        ids = torch.zeros(2, 2, dtype=torch.long)
        self.step_session = onnxruntime.InferenceSession(
            _export(
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
            ),
            options,
            providers=PROVIDERS,
        )
        self.cross_names, self.past_names = cross_names, past_names
        logger.info("decoder on ONNX Runtime", extra={"providers": self.step_session.get_providers()})

    def cross(self, encoder_states: np.ndarray) -> Cross:
        arrays = self.cross_session.run(None, {"encoder_states": np.ascontiguousarray(encoder_states, np.float32)})
        return Cross(arrays, np.zeros(encoder_states.shape[:2], np.float32))

    def step(self, input_ids: np.ndarray, past: list[np.ndarray], cross: Cross):
        """logits (B, L, vocab) and the new self-attention caches."""
        feed = {"input_ids": input_ids.astype(np.int64), "cross_mask": cross.mask}
        feed.update(zip(self.past_names, past, strict=True))
        feed.update(zip(self.cross_names, cross.arrays, strict=True))
        logits, *present = self.step_session.run(None, feed)
        return logits, present

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.heads, 0, self.head_dim), np.float32) for _ in self.past_names]

    def greedy(self, cross: Cross, max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """Greedy search as `generate` does it: sequences (B, 1 + steps) starting with the start token, rows that
        ended padded; and each generated token's log-probability (B, steps)."""
        batch = len(cross)
        tokens = np.full((batch, 1), self.start, np.int64)
        sequences, log_probs = [tokens[:, 0]], []
        finished = np.zeros(batch, dtype=bool)
        past = self.empty_past(batch)
        for _ in range(min(max_new_tokens, self.max_positions - 1)):
            logits, past = self.step(tokens, past, cross)
            logits = logits[:, -1, :].astype(np.float64)
            chosen = logits.argmax(-1)
            chosen = np.where(finished, self.pad, chosen)
            shifted = logits - logits.max(-1, keepdims=True)
            log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            log_probs.append(log_softmax[np.arange(batch), chosen])
            sequences.append(chosen)
            finished |= chosen == self.eos
            tokens = chosen[:, None]
            if finished.all():
                break
        return np.stack(sequences, axis=1), np.stack(log_probs, axis=1) if log_probs else np.zeros((batch, 0))

    def logits(self, cross: Cross, input_ids: np.ndarray) -> np.ndarray:
        """Teacher forcing: logits (B, L, vocab) of every position of `input_ids` at once."""
        logits, _ = self.step(input_ids, self.empty_past(input_ids.shape[0]), cross)
        return logits
