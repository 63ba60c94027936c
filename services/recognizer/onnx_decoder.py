"""The recognizer's TrOCR decoder under ONNX Runtime, with its keys and values cached between steps.

A greedy step of the shipped decoder (3 layers, d 256) on a batch of 32 word crops takes about 3 ms in torch's
`generate` and 1.4 ms here (/tmp measurement on this 2-core machine, `models/recognizer/README.md`), and a page
takes some 40 sequential steps. Two graphs, exported from the weights by `onnx_export.decoder_graphs` (at start,
in memory, or read from a serving folder's onnx/; no torch here):

- `cross`: the encoder's states -> each layer's cross-attention keys and values, once per encoder batch;
- `step`: token ids (B, L), a cross-attention mask (B, T), each layer's cached self-attention keys and values
  (B, heads, P, head_dim) and the cross keys and values -> logits (B, L, vocab) and the self-attention keys and
  values with the L new positions appended. L = 1 is a greedy step; P = 0 and L = a whole text is teacher
  forcing (scoring).

The mask keeps each crop's attention on its own columns, not on the padding its encoder batch gave it, so a crop
reads the same whatever is read with it, and lets one decoding batch hold crops of several encoder batches
(`Cross.join`). `greedy` runs the greedy search of `generate` (argmax each step until every row has emitted the
end token or `max_new_tokens` are made, rows that ended padded) and gives each row its tokens' log-probabilities,
what the recognizer takes from `generate` and `compute_transition_scores`; `beam` runs `generate`'s beam search
(its sequences and sequence scores), so a serving folder without torch reads with beams too.
`tests/test_recognizer_model.py` checks that both backends read the same. Only TrOCR decoders with learned positions
are exported (the shipped model's and Microsoft's checkpoints); others stay in torch.

`int8=True` runs both graphs with their products of a weight in int8, rewritten in memory at start (`quantized`;
no calibration): the decoder's calls of a page take a third less (the sample page's, recorded and replayed on one
thread: 114-127 -> 78-83 ms), a crop reads the same whatever is read with it, and it reads as float32 does within
the noise (models/recognizer/README.md, "The decoder in int8 by default").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from services.common.onnx_sessions import PROVIDERS, session_options

logger = logging.getLogger("handwriting.recognizer")


def supported(decoder_config: dict) -> bool:
    """Whether a decoder (its config as a dict) can be exported: TrOCR's, with learned positions."""
    return decoder_config.get("model_type") == "trocr" and bool(decoder_config.get("use_learned_position_embeddings"))


# where the decoder runs on ONNX Runtime: its graphs in float32, or their weights in int8 (`quantized`)
DECODER_DTYPES = ("int8", "float32")


def quantized(graph: bytes) -> bytes:
    """`graph` with each product of an activation and a weight matrix (MatMul) in int8 (it needs the onnx package,
    not torch). Each weight is quantised once, symmetric, a scale per output column, in 7 bits: on CPUs without VNNI,
    ONNX Runtime's uint8 x int8 kernels add pairs of products in 16 bits, which 8-bit weights can overflow. Each
    activation is quantised as the graph runs, symmetric, a scale per row (each token of each crop), stored in
    uint8 about a zero point of 128: a row's result does not depend on the other rows of its batch, so a crop
    reads the same whatever is read with it, as in float32. (ONNX Runtime's `quantize_dynamic` scales a whole
    batch's activations at once: a crop's reading then moved with the other crops in its call.)"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(graph)
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    constants = {
        "int8_tiny": np.float32(1e-12),  # a row of zeros: any scale
        "int8_127": np.float32(127.0),
        "int8_128": np.float32(128.0),
        "int8_zero_point": np.uint8(128),
    }
    if opset >= 18:  # (ReduceMax takes its axes as an input from opset 18, as an attribute before)
        constants["int8_last_axis"] = np.array([-1], np.int64)
    added = [numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items()]
    nodes, replaced, rows = [], set(), {}  # rows: an activation -> its quantised name
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        name = weight.name
        if name not in replaced:  # (a weight two products share is quantised once)
            replaced.add(name)
            matrix = numpy_helper.to_array(weight).astype(np.float32)
            scale = np.maximum(np.abs(matrix).max(axis=0), 1e-12) / 63.0
            added += [
                numpy_helper.from_array(np.clip(np.round(matrix / scale), -63, 63).astype(np.int8), name + "_int8"),
                numpy_helper.from_array(scale.astype(np.float32), name + "_scale"),
            ]
        x = node.input[0]
        if x not in rows:
            q = rows[x] = f"int8_row{len(rows)}"
            reduce = (
                helper.make_node("ReduceMax", [q + "_abs", "int8_last_axis"], [q + "_max"], keepdims=1)
                if opset >= 18
                else helper.make_node("ReduceMax", [q + "_abs"], [q + "_max"], axes=[-1], keepdims=1)
            )
            nodes += [
                helper.make_node("Abs", [x], [q + "_abs"]),
                reduce,
                helper.make_node("Max", [q + "_max", "int8_tiny"], [q + "_top"]),
                helper.make_node("Div", [q + "_top", "int8_127"], [q + "_scale"]),
                helper.make_node("Div", [x, q + "_scale"], [q + "_scaled"]),
                helper.make_node("Round", [q + "_scaled"], [q + "_rounded"]),
                helper.make_node("Add", [q + "_rounded", "int8_128"], [q + "_shifted"]),
                helper.make_node("Cast", [q + "_shifted"], [q], to=TensorProto.UINT8),
            ]
        q, out = rows[x], node.output[0]
        nodes += [
            helper.make_node("MatMulInteger", [q, name + "_int8", "int8_zero_point"], [out + "_int32"]),
            helper.make_node("Cast", [out + "_int32"], [out + "_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [out + "_float", q + "_scale"], [out + "_rows"]),
            helper.make_node("Mul", [out + "_rows", name + "_scale"], [out]),
        ]
    still_used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name not in replaced or tensor.name in still_used]
    del model.graph.node[:], model.graph.initializer[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(kept + added)
    return model.SerializeToString()


def names(kind: str, layers: int) -> list[str]:
    """The graphs' names of each layer's keys and values: cross_k0, cross_v0, cross_k1, ... for kind "cross"."""
    return [f"{kind}_{letter}{i}" for i in range(layers) for letter in "kv"]


@dataclass
class Cross:
    """Each decoder layer's cross-attention keys and values (B, heads, T, head_dim) for a batch of crops, and an
    additive mask (B, T) of the columns each crop's attention skips: 0 over its own columns, -inf-like over its
    encoder batch's padding and over those added to join encoder batches of other widths into one decoding batch."""

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
    """A TrOCR decoder's exported graphs (`onnx_export.decoder_graphs`) on ONNX Runtime: `cross`, `step`, `greedy`,
    `logits`. `meta`: `onnx_export.decoder_meta` of the model they came from."""

    def __init__(self, cross_graph: bytes, step_graph: bytes, meta: dict, threads: int = 0, int8: bool = False):
        import onnxruntime

        if int8:
            cross_graph, step_graph = quantized(cross_graph), quantized(step_graph)
        self.layers, self.heads, self.head_dim = meta["layers"], meta["heads"], meta["head_dim"]
        self.start, self.eos, self.pad = meta["start"], meta["eos"][0], meta["pad"]
        self.max_positions = meta["max_positions"]
        options = session_options(threads)
        self.cross_session = onnxruntime.InferenceSession(cross_graph, options, providers=PROVIDERS)
        self.step_session = onnxruntime.InferenceSession(step_graph, options, providers=PROVIDERS)
        self.cross_names, self.past_names = names("cross", self.layers), names("past", self.layers)
        logger.info(
            "decoder on ONNX Runtime",
            extra={"providers": self.step_session.get_providers(), "weights": "int8" if int8 else "float32"},
        )

    def cross(self, encoder_states: np.ndarray, columns: list[int] | None = None) -> Cross:
        """`columns`: how many of its first columns each crop attends to (its own; all of them by default)."""
        arrays = self.cross_session.run(None, {"encoder_states": np.ascontiguousarray(encoder_states, np.float32)})
        mask = np.zeros(encoder_states.shape[:2], np.float32)
        if columns is not None:
            mask[np.arange(mask.shape[1])[None, :] >= np.asarray(columns)[:, None]] = np.finfo(np.float32).min
        return Cross(arrays, mask)

    def step(self, input_ids: np.ndarray, past: list[np.ndarray], cross: Cross):
        """logits (B, L, vocab) and the new self-attention caches."""
        feed = {"input_ids": input_ids.astype(np.int64), "cross_mask": cross.mask}
        feed.update(zip(self.past_names, past, strict=True))
        feed.update(zip(self.cross_names, cross.arrays, strict=True))
        logits, *present = self.step_session.run(None, feed)
        return logits, present

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.heads, 0, self.head_dim), np.float32) for _ in self.past_names]

    def greedy(
        self, cross: Cross, max_new_tokens: int, drafts: list[list[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[float | None]]:
        """Greedy search as `generate` does it: sequences (B, 1 + steps) starting with the start token, rows that
        ended padded; each generated token's log-probability (B, steps); and each draft's summed log-probability
        (its tokens and the end token; None where there is no draft or it was not checked).

        `drafts`: a guess of each row's tokens (the CTC head's reading), end token not included. One teacher-forced
        run checks them all: where greedy search would emit a row's draft token by token and then end (or end
        earlier), that is its result (speculative decoding's check, exact); only the other rows are searched step
        by step. The same run scores the drafts (the recognizer's CTC candidates need no second scoring). (A second
        check of the drafts with their first wrong token corrected did not pay: measured.)"""
        batch = len(cross)
        draft_log_probs: list[float | None] = [None] * batch
        if drafts is None:
            return *self._greedy(cross, max_new_tokens), draft_log_probs
        cap = min(max_new_tokens, self.max_positions - 1)
        targets = [[*draft, self.eos] for draft in drafts]
        checked = [row for row in range(batch) if len(targets[row]) <= cap]
        accepted: dict[int, np.ndarray] = {}  # row -> its tokens' log-probabilities
        if checked:
            inputs = np.full((len(checked), max(len(targets[row]) for row in checked)), self.pad, np.int64)
            inputs[:, 0] = self.start
            for i, row in enumerate(checked):
                inputs[i, 1 : len(targets[row])] = targets[row][:-1]
            log_probs = log_softmax(self.logits(cross.rows(checked), inputs).astype(np.float64))
            for i, row in enumerate(checked):
                draft_log_probs[row] = float(log_probs[i, np.arange(len(targets[row])), targets[row]].sum())
                best = log_probs[i, : len(targets[row])].argmax(-1)
                wrong = np.flatnonzero(best != targets[row])
                end = int(wrong[0]) if len(wrong) else len(best) - 1
                if best[end] == self.eos:  # greedy search ends here (or earlier than the draft): its tokens are known
                    targets[row] = [*targets[row][:end], self.eos]
                    accepted[row] = log_probs[i, np.arange(end + 1), targets[row]]
        searched = [row for row in range(batch) if row not in accepted]
        found = self._greedy(cross.rows(searched), max_new_tokens) if searched else None
        steps = max([len(t) for t in accepted.values()] + ([found[1].shape[1]] if found else []))
        # (a searched row that did not end has `steps` tokens: the widest, so no row that did not end is padded)
        sequences = np.full((batch, 1 + steps), self.pad, np.int64)
        sequences[:, 0] = self.start
        token_log_probs = np.zeros((batch, steps))
        for row, row_log_probs in accepted.items():
            sequences[row, 1 : 1 + len(row_log_probs)] = targets[row]
            token_log_probs[row, : len(row_log_probs)] = row_log_probs
        if found is not None:
            sequences[searched, : found[0].shape[1]] = found[0]
            token_log_probs[searched, : found[1].shape[1]] = found[1]
        return sequences, token_log_probs, draft_log_probs

    def _greedy(self, cross: Cross, max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
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
            log_probs.append(log_softmax(logits)[np.arange(batch), chosen])
            sequences.append(chosen)
            finished |= chosen == self.eos
            tokens = chosen[:, None]
            if finished.all():
                break
        return np.stack(sequences, axis=1), np.stack(log_probs, axis=1) if log_probs else np.zeros((batch, 0))

    def beam(self, cross: Cross, max_new_tokens: int, beams: int, n_best: int) -> tuple[np.ndarray, np.ndarray]:
        """Beam search as `generate` does it with `num_beams=beams, num_return_sequences=n_best, length_penalty=1.0,
        early_stopping=True` (transformers' vectorised beam search, step for step): sequences (B x n_best, 1 +
        steps), each crop's n best in order, starting with the start token, padded after their end token; and each
        sequence's score, its summed log-probability over its length (end token included)."""
        batch = len(cross)
        cap = 1 + min(max_new_tokens, self.max_positions - 1)  # generate's max_length
        keep = 2 * beams  # candidates kept each step: enough to go on if the best `beams` all end
        running = np.full((batch, beams, cap), self.pad or self.eos, np.int64)  # generate's fill
        running[:, :, 0] = self.start
        finished_sequences = running.copy()
        # the first step's beams are one start token: only the first counts, or all would pick the same tokens
        running_scores = np.zeros((batch, beams), np.float32)
        running_scores[:, 1:] = -1e9
        finished_scores = np.full((batch, beams), -1e9, np.float32)
        finished = np.zeros((batch, beams), bool)
        improvable = np.ones((batch, 1), bool)
        finished_lengths = np.zeros((batch, beams), np.int64)  # tokens each generated (its end token included)
        rows = np.repeat(np.arange(batch), beams)
        # the first step is the same for every beam of a crop: one row each, then copied
        logits, past = self.step(running[:, 0, :1], self.empty_past(batch), cross)
        logits, past = logits[rows], [array[rows] for array in past]
        cross = cross.rows(rows.tolist())
        length = 1
        while True:
            log_probs = log_softmax(logits[:, -1, :].astype(np.float32)).reshape(batch, beams, -1)
            vocab = log_probs.shape[-1]
            totals = (log_probs + running_scores[:, :, None]).reshape(batch, -1)
            top = np.argsort(-totals, axis=1, kind="stable")[:, :keep]
            top_scores = np.take_along_axis(totals, top, axis=1)
            top_beams, top_tokens = top // vocab, top % vocab
            top_sequences = np.take_along_axis(running, top_beams[:, :, None], axis=1)
            top_sequences[:, :, length] = top_tokens
            ends = (top_tokens == self.eos) | (length + 1 >= cap)
            # the best `beams` candidates that go on
            going = np.where(ends, top_scores - 1e9, top_scores).astype(np.float32)
            chosen = np.argsort(-going, axis=1, kind="stable")[:, :beams]
            running = np.take_along_axis(top_sequences, chosen[:, :, None], axis=1)
            running_scores = np.take_along_axis(going, chosen, axis=1)
            parents = np.take_along_axis(top_beams, chosen, axis=1)
            # the best `beams` finished ones, of those kept and the ones that end now among the first `beams`
            just_ended = ends & (np.arange(keep) < beams)[None, :]
            scores = top_scores / length  # length penalty 1.0: the mean over the tokens generated
            scores = scores - 1e9 * (finished.all(axis=1, keepdims=True) | ~improvable | ~just_ended)
            merged_scores = np.concatenate([finished_scores, scores.astype(np.float32)], axis=1)
            best = np.argsort(-merged_scores, axis=1, kind="stable")[:, :beams]
            finished_sequences = np.take_along_axis(
                np.concatenate([finished_sequences, top_sequences], axis=1), best[:, :, None], axis=1
            )
            finished_scores = np.take_along_axis(merged_scores, best, axis=1)
            finished_lengths = np.take_along_axis(
                np.concatenate([finished_lengths, np.full((batch, keep), length)], axis=1), best, axis=1
            )
            finished = np.take_along_axis(np.concatenate([finished, just_ended], axis=1), best, axis=1)
            length += 1
            # generate's stop: no running beam can beat the worst finished one (early stopping: at its length now),
            # every beam of every crop has finished, or nothing can go on
            worst = np.where(finished, finished_scores.min(axis=1, keepdims=True), -1e9)
            improvable &= (running_scores[:, :1] / (length - 1) > worst).any(axis=1, keepdims=True)
            if not improvable.any() or finished.all() or ends.all():
                break
            # each going beam's cache is its parent's
            parent_rows = (np.arange(batch)[:, None] * beams + parents).reshape(-1)
            tokens = running[:, :, length - 1].reshape(-1, 1)
            logits, past = self.step(tokens, [array[parent_rows] for array in past], cross)
        steps = int(finished_lengths[:, :n_best].max())
        sequences = finished_sequences[:, :n_best, : 1 + steps].reshape(batch * n_best, 1 + steps)
        return sequences, finished_scores[:, :n_best].reshape(-1)

    def logits(self, cross: Cross, input_ids: np.ndarray) -> np.ndarray:
        """Teacher forcing: logits (B, L, vocab) of every position of `input_ids` at once."""
        logits, _ = self.step(input_ids, self.empty_past(input_ids.shape[0]), cross)
        return logits


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
