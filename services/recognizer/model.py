"""Text recognition on word or line crops with any TrOCR checkpoint (`VisionEncoderDecoderModel`) from a local dir.

No gRPC here: `Recognizer.predict(crops)` takes PIL images and returns text with a confidence (and, where
the encoder has a CTC head, each character's position). Works with the shipped model (PP-OCRv6's encoder,
services.recognizer.ppocr_encoder), the compact model (services.recognizer.compact_trocr) and
Microsoft's `trocr-*-handwritten` checkpoints copied into a directory alike.

Confidence is the geometric mean of the probabilities the decoder gave to the tokens it emitted
(end-of-sequence included): exp(mean log p). With beam search it is exp of the beam's
length-normalised log-probability, which is the same quantity for the chosen beam. It is in
[0, 1]; 1 means every character was read with certainty. It is a model score, not a calibrated
probability that the word is right, but it ranks words well for review.

With a lexicon (services.recognizer.lexicon) or a CTC weight, the decoder proposes its `n_best`
readings (greedy for 1, beam search above), joined by the CTC head's best path and the lexicon words
near each of them (near the best one alone when its confidence is at least `Lexicon.sure`; for a
line, its readings with one unknown word replaced), all scored by teacher forcing, mixed with the CTC
head's log-likelihood (`ctc_weight`), and the lexicon picks among them; the confidence stays the
decoder's, of the chosen reading.

A crop read with a confidence under `deslant_below` whose ink leans is read a second time sheared upright
(services.recognizer.slant), and the reading that scores better of the two is kept: real cursive leans more
than the text the encoder learnt from.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

# compact_trocr and ppocr_encoder register their encoders with AutoModel when imported
from services.common import onnx_sessions
from services.recognizer import compact_trocr, onnx_decoder, ppocr_encoder, slant
from services.recognizer.lexicon import Lexicon
from services.recognizer.onnx_decoder import Cross

logger = logging.getLogger("handwriting.recognizer")
# With a CTC head, the decoder generates at most this many tokens beyond the longest CTC reading of the batch.
CTC_LENGTH_SLACK = 8
# A crop read with a decoder confidence under DESLANT_BELOW whose ink leans by a shear of MIN_SLANT (8.5 degrees)
# or more is read a second time sheared upright (services.recognizer.slant); the better-scored reading stays.
DESLANT_BELOW = 0.6
MIN_SLANT = 0.15
# With the decoder on ONNX Runtime (greedy), crops go through the encoder this many at a time (of similar widths:
# little padding to compute) and through the decoder `batch_size` at a time (fewer sequential steps).
ENCODER_BATCH_SIZE = 16
# the types the model may run in where torch runs it (HW_DTYPE): half precision is for GPUs
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Recognition:
    text: str
    confidence: float
    # x of each character's centre as a fraction of the crop's width (from the CTC head's alignment); () if unknown
    char_positions: tuple[float, ...] = ()


@dataclass
class LoadedCheckpoint:
    model: VisionEncoderDecoderModel
    tokenizer: object
    preprocess: Callable[[list[Image.Image]], torch.Tensor]
    image_processor: object | None = None  # a stock checkpoint's processor; saved with fine-tuned copies

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(directory)


def load_checkpoint(model_dir: str | Path, device: str = "cpu") -> LoadedCheckpoint:
    """Load model, tokenizer and the matching pixel preprocessing from a local directory, offline."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"no TrOCR checkpoint in {model_dir} (config.json missing)")
    model = VisionEncoderDecoderModel.from_pretrained(model_dir, local_files_only=True).to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    encoder_config = model.config.encoder
    if encoder_config.model_type == compact_trocr.MODEL_TYPE:
        height, width = encoder_config.image_height, encoder_config.image_width

        def preprocess(crops: list[Image.Image]) -> torch.Tensor:
            return compact_trocr.prepare_pixels(crops, height, width)

        image_processor = None
    elif encoder_config.model_type == ppocr_encoder.MODEL_TYPE:
        height, max_width = encoder_config.image_height, encoder_config.max_width

        def preprocess(crops: list[Image.Image]) -> torch.Tensor:
            return ppocr_encoder.prepare_pixels(crops, height, max_width)

        image_processor = None
    else:  # a stock TrOCR: its own image processor (resize to 384x384, normalise)
        image_processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)

        def preprocess(crops: list[Image.Image]) -> torch.Tensor:
            rgb = [crop.convert("RGB") for crop in crops]
            return image_processor(images=rgb, return_tensors="pt").pixel_values

    return LoadedCheckpoint(model, tokenizer, preprocess, image_processor)


class Recognizer:
    """Reads word (or line) crops. Load once at start-up; call `predict` from one thread at a time (it reads its
    batches on `workers` threads of its own)."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        beam_size: int = 1,
        max_new_tokens: int = 0,
        batch_size: int = 32,
        lexicon: Lexicon | None = None,
        n_best: int = 1,
        ctc_weight: float | None = None,
        backend: str = "onnx",
        deslant_below: float = DESLANT_BELOW,
        encoder_onnx: str | Path | None = None,
        encoder_batch_size: int = ENCODER_BATCH_SIZE,
        workers: int = 0,
        dtype: str = "float32",
    ):
        """`encoder_onnx`: with the onnx backend, a file holding the encoder graph to run instead of the one
        exported from the weights at start (an int8 one from `training.quantize_encoder`).
        `workers`: batches read at once on a CPU, each on one thread (0: one per core, torch's thread count).
        `dtype`: the weights' and activations' type where torch runs the model (float16 or bfloat16 on a GPU);
        scores are computed in float32 whatever it is."""
        if beam_size < 1 or n_best < 1:
            raise ValueError("beam_size and n_best must be >= 1")
        self.device = device
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.lexicon = lexicon
        self.n_best = n_best
        self.deslant_below = deslant_below
        checkpoint = load_checkpoint(model_dir, device)
        self.model = checkpoint.model.eval()
        # 0: as many tokens as the decoder was built for (its positions, less the 8 that build_model adds)
        self.max_new_tokens = max_new_tokens or max(1, self.model.config.decoder.max_position_embeddings - 8)
        self.tokenizer = checkpoint.tokenizer
        self.preprocess = checkpoint.preprocess
        # the encoder's CTC head as a second reader: its weight in each reading's score (see `CtcScores.rescore`)
        default_weight = getattr(self.model.config.encoder, "decode_ctc_weight", 0.0)
        self.ctc_weight = default_weight if ctc_weight is None or ctc_weight < 0 else ctc_weight
        if self.ctc_weight and not hasattr(self.model.encoder, "ctc_logits"):
            raise ValueError("ctc_weight needs an encoder with a CTC head")
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be onnx or torch, not {backend!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        onnx = onnx_sessions.serves(backend, device)
        if onnx and dtype != "float32":
            raise ValueError(f"dtype {dtype} is for torch: on a CPU it needs the torch backend")
        self.dtype = DTYPES[dtype]
        self.model.to(self.dtype)
        # on a CPU, batches side by side on one core each: the Python work between the decoder's short steps
        # leaves a core idle when both serve one batch (the sample page's call: 406 -> 349 ms, benchmarks/backends.py)
        self.workers = (workers or torch.get_num_threads() or 1) if device == "cpu" else 1
        session_threads = 1 if self.workers > 1 else 0
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="recognizer") if self.workers > 1 else None
        # PP-OCR's encoder (the shipped model's) on ONNX Runtime (faster from the services' worker thread), on a CPU
        self.onnx_encoder = None
        if onnx and self.model.config.encoder.model_type == ppocr_encoder.MODEL_TYPE:
            from services.recognizer.onnx_encoder import OnnxEncoder

            example = self.preprocess([Image.new("L", (60, 32), 255), Image.new("L", (200, 40), 255)])
            graph = Path(encoder_onnx).read_bytes() if encoder_onnx else None
            self.onnx_encoder = OnnxEncoder(self.model.encoder, example, threads=session_threads, graph=graph)
        elif encoder_onnx:
            raise ValueError("an encoder graph needs the onnx backend on a CPU and a PP-OCR encoder")
        # its TrOCR decoder too (greedy reading and scoring; beam search stays in torch)
        self.onnx_decoder = None
        if onnx and onnx_decoder.supported(self.model):
            self.onnx_decoder = onnx_decoder.OnnxDecoder(self.model, threads=session_threads)
        self.backend = "onnx" if self.onnx_encoder is not None or self.onnx_decoder is not None else "torch"
        # with the decoder in torch, each call's crops go through the encoder and the decoder together
        self.encoder_batch_size = max(1, min(encoder_batch_size, batch_size)) if self.onnx_decoder else batch_size
        self.model_name = os.path.basename(os.path.normpath(str(model_dir)))
        logger.info("recognizer loaded", extra={"model_dir": str(model_dir), "device": device})

    @torch.inference_mode()
    def predict(self, crops: list[Image.Image]) -> list[Recognition]:
        if not crops:
            return []
        readings = self._read(crops)
        if self.deslant_below > 0:
            self._read_deslanted(crops, readings)
        return [recognition for recognition, _ in readings]

    def _read(self, crops: list[Image.Image]) -> list[tuple[Recognition, float]]:
        """Each crop's reading and its score (what chose it among the candidates)."""
        # batches of similar widths: less padding to compute, and a crop reads (nearly) the same whatever
        # else was sent with it
        order = sorted(range(len(crops)), key=lambda i: crops[i].width / max(1, crops[i].height))
        size = self.encoder_batch_size
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        # decoding batches of whole encoder batches (so a crop reads the same however they are grouped): up to
        # batch_size crops each, as many as a multiple of the workers while there are encoder batches to share
        count = math.ceil(len(chunks) / max(1, self.batch_size // size))
        count = min(len(chunks), math.ceil(count / self.workers) * self.workers)
        batches = [[i for c in group for i in chunks[c]] for group in np.array_split(np.arange(len(chunks)), count)]
        run = self._pool.map if self._pool is not None and len(batches) > 1 else map
        results: list[tuple[Recognition, float] | None] = [None] * len(crops)
        reads = run(lambda batch: self._predict_batch([crops[i] for i in batch]), batches)
        for batch, read in zip(batches, reads, strict=True):
            for index, result in zip(batch, read, strict=True):
                results[index] = result
        return results

    def _read_deslanted(self, crops: list[Image.Image], readings: list[tuple[Recognition, float]]) -> None:
        """Read again, sheared upright, the crops read with a confidence under `deslant_below` whose ink leans by
        MIN_SLANT or more; keep whichever of the two readings scores better. Character positions are mapped
        back to the crop as it was."""
        unsure = [i for i, (recognition, _) in enumerate(readings) if recognition.confidence < self.deslant_below]
        shears = [(i, slant.estimate_shear(crops[i])) for i in unsure]
        slanted = [(i, shear) for i, shear in shears if abs(shear) >= MIN_SLANT]
        if not slanted:
            return
        sheared = [slant.shear_crop(crops[i], shear) for i, shear in slanted]
        second = self._read([image for image, _ in sheared])
        for (i, _), (image, added), (recognition, score) in zip(slanted, sheared, second, strict=True):
            if score > readings[i][1]:
                width = crops[i].width
                positions = tuple(
                    min(1.0, max(0.0, (x * image.width - added / 2) / width)) for x in recognition.char_positions
                )
                readings[i] = (Recognition(recognition.text, recognition.confidence, positions), score)

    @torch.inference_mode()  # (it runs on the workers' threads, and the mode is per thread)
    def _predict_batch(self, crops: list[Image.Image]) -> list[tuple[Recognition, float]]:
        rescored = self.lexicon is not None or self.ctc_weight > 0  # readings are chosen among candidates
        n_best = self.n_best if rescored else 1
        beams = max(self.beam_size, n_best)
        beam_options = dict(num_beams=beams, num_return_sequences=n_best, length_penalty=1.0, early_stopping=True)
        # greedy on ONNX Runtime: the encoder reads the crops a few at a time (less padding to compute), the
        # decoder all of them at once (fewer sequential steps), each crop attending to its own encoder batch's
        # columns only; so a crop reads as it does in torch with batch_size = encoder_batch_size
        greedy_onnx = self.onnx_decoder is not None and beams == 1
        size = self.encoder_batch_size if greedy_onnx else len(crops)
        encoded, ctc_log_probs = [], []
        for start in range(0, len(crops), size):
            pixel_values = self.preprocess(crops[start : start + size]).to(self.device, self.dtype)
            encoder_states, ctc_logits = self._encode(pixel_values)
            encoded.append(self._encoded(encoder_states))  # once: decoding and near-word scoring share it
            if self.ctc_weight:
                ctc_log_probs += self._ctc(pixel_values, ctc_logits).log_probs
        encoded = encoded[0] if len(encoded) == 1 else Encoded(None, Cross.join([e.cross for e in encoded]))
        ctc = CtcScores(ctc_log_probs) if self.ctc_weight else None
        max_new_tokens = self.max_new_tokens
        if ctc is not None:  # the CTC head says how long the readings are: the decoder need not go much further
            max_new_tokens = min(max_new_tokens, max(len(text) for text in ctc.best_paths) + CTC_LENGTH_SLACK)
        if greedy_onnx:  # the same search as generate's
            sequences, token_log_probs = self.onnx_decoder.greedy(encoded.cross, max_new_tokens)
            sequences, scores = torch.from_numpy(sequences), torch.from_numpy(token_log_probs).float()
        else:
            output = self.model.generate(
                pixel_values,
                encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states),
                max_new_tokens=max_new_tokens,
                output_scores=True,
                return_dict_in_generate=True,
                **(beam_options if beams > 1 else {}),
            )
            sequences = output.sequences
            if beams == 1:
                scores = self.model.compute_transition_scores(
                    sequences, [step.float() for step in output.scores], normalize_logits=True
                )
        texts = [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]
        if beams > 1:  # beam scores are length-normalised: the mean log-probability of each reading
            mean_log_probs = output.sequences_scores.float()
        else:
            emitted = self._emitted(sequences[:, -scores.shape[1] :])
            mean_log_probs = scores.masked_fill(~emitted, 0.0).sum(dim=1) / emitted.sum(dim=1).clamp(min=1)
        confidences = mean_log_probs.exp().clamp(0.0, 1.0).tolist()
        if not rescored:  # the score is the reading's mean log-probability
            return [
                (Recognition(text, confidence), mean_log_prob)
                for text, confidence, mean_log_prob in zip(texts, confidences, mean_log_probs.tolist(), strict=True)
            ]
        lengths = self._emitted(sequences[:, 1:]).sum(dim=1).tolist()  # after the decoder start token
        log_probs = [m * n for m, n in zip(mean_log_probs.tolist(), lengths, strict=True)]
        groups = [
            [(texts[i], log_probs[i], confidences[i]) for i in range(start, start + n_best)]
            for start in range(0, len(texts), n_best)
        ]
        if ctc is not None:  # the CTC head's best path joins the candidates
            self._add(encoded, groups, [(crop, text) for crop, text in enumerate(ctc.best_paths) if text])
        substitutions: dict[tuple[int, str], tuple[str, int, str]] = {}
        if self.lexicon is not None:
            substitutions = self._add_near_words(encoded, groups)
        if ctc is not None:
            ctc.rescore(groups, range(len(groups)), self.ctc_weight)
        if substitutions:  # lines with several unknown words: every improving substitution at once
            self._combine_substitutions(encoded, groups, substitutions, ctc)
        results = []
        for crop, readings in enumerate(groups):
            text, log_prob, confidence = readings[self._best(readings)]
            positions = ctc.positions(crop, text, self._content_fraction(crops[crop])) if ctc is not None else ()
            results.append((Recognition(text, confidence, positions), self._score_of(text, log_prob)))
        return results

    def _encoded(self, encoder_states: torch.Tensor) -> Encoded:
        cross = self.onnx_decoder.cross(encoder_states.cpu().numpy()) if self.onnx_decoder is not None else None
        return Encoded(encoder_states, cross)

    def _content_fraction(self, crop: Image.Image) -> float:
        """How much of the encoder's columns for `crop` its own pixels span (the rest is the added margin)."""
        fraction = getattr(self.model.encoder, "content_fraction", None)
        return fraction(crop) if fraction else 1.0

    def _best(self, readings: list[tuple[str, float, float]]) -> int:
        candidates = [(text, log_prob) for text, log_prob, _ in readings]
        if self.lexicon is not None:
            return self.lexicon.choose(candidates)
        return max(range(len(candidates)), key=lambda i: candidates[i][1])

    def _add(self, encoded: Encoded, groups: list, wanted: list[tuple[int, str]]) -> list[int]:
        """Add (crop, text) candidates not already there, scored by the decoder; returns the crops that got one."""
        new, seen = [], {(crop, text) for crop, readings in enumerate(groups) for text, _, _ in readings}
        for crop, text in wanted:
            if (crop, text) not in seen:
                seen.add((crop, text))
                new.append((crop, text))
        if not new:
            return []
        log_probs, lengths = self._score(encoded.rows([crop for crop, _ in new]), [text for _, text in new])
        for (crop, text), log_prob, length in zip(new, log_probs, lengths, strict=True):
            groups[crop].append((text, log_prob, min(1.0, math.exp(log_prob / max(1, length)))))
        return [crop for crop, _ in new]

    def _encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's hidden states and, where it has a CTC head and it is used, the head's logits."""
        if self.onnx_encoder is not None:
            hidden, logits = self.onnx_encoder(pixel_values)
            return hidden.to(self.device), logits.to(self.device)
        hidden = self.model.encoder(pixel_values=pixel_values).last_hidden_state
        return hidden, self.model.encoder.ctc_logits(hidden) if self.ctc_weight else None

    def _ctc(self, pixel_values: torch.Tensor, logits: torch.Tensor) -> CtcScores:
        # (N, T, C), on the CPU: the CTC scores, alignments and best paths are small, sequential, partly numpy work
        log_probs = logits.float().log_softmax(-1).cpu()
        owned = getattr(self.model.encoder, "owned_columns", None)
        lengths = owned(pixel_values, log_probs.shape[1]) if owned else [log_probs.shape[1]] * len(log_probs)
        return CtcScores([log_probs[i, : lengths[i]] for i in range(len(lengths))])

    def _add_near_words(self, encoded: Encoded, groups: list) -> dict[tuple[int, str], tuple[str, int, str]]:
        """Add to each crop's readings the lexicon words near any of its readings, scored by the model; for a
        reading of several words (a line), the readings with one unknown word replaced by a near word.
        Returns, for each such line variant (crop, text), the reading it came from, the word's index and the word.
        `encoded`: the encoder's output for the crops, one row per group."""
        # every reading's near words when the best reading is uncertain; the best one's alone otherwise
        sources = [readings if readings[0][2] < self.lexicon.sure else readings[:1] for readings in groups]
        words_of = [[text.split() for text, _, _ in readings] for readings in sources]
        whole_count = sum(len(readings) for readings in sources)
        queries = [text for readings in sources for text, _, _ in readings]
        queries += [word for crop in words_of for words in crop if len(words) > 1 for word in words]
        near = self.lexicon.near_many(queries)
        whole, per_word = iter(near[:whole_count]), iter(near[whole_count:])
        wanted, substitutions = [], {}
        for crop, readings in enumerate(sources):
            for (text, _, _), words in zip(readings, words_of[crop], strict=True):
                wanted += [(crop, word) for word in next(whole)]
                if len(words) < 2:
                    continue
                for index in range(len(words)):
                    for word in next(per_word):
                        variant = " ".join([*words[:index], word, *words[index + 1 :]])
                        wanted.append((crop, variant))
                        substitutions.setdefault((crop, variant), (text, index, word))
        self._add(encoded, groups, wanted)
        return substitutions

    def _combine_substitutions(self, encoded: Encoded, groups, substitutions, ctc: CtcScores | None) -> None:
        """For each line whose best reading several single-word substitutions improve, add the reading with all
        of them (the best one for each word), scored like the others."""
        wanted = []
        for crop, readings in enumerate(groups):
            best = readings[self._best(readings)][0]
            score = {text: self._score_of(text, log_prob) for text, log_prob, _ in readings}
            chosen: dict[int, tuple[float, str]] = {}
            for text, _, _ in readings:
                source = substitutions.get((crop, text))
                improves = source and source[0] == best and score[text] > score[best]
                if improves and (source[1] not in chosen or score[text] > chosen[source[1]][0]):
                    chosen[source[1]] = (score[text], source[2])
            if len(chosen) > 1:
                words = best.split()
                for index, (_, word) in chosen.items():
                    words[index] = word
                wanted.append((crop, " ".join(words)))
        before = [len(readings) for readings in groups]
        crops = self._add(encoded, groups, wanted)
        if ctc is not None and crops:
            ctc.rescore(groups, crops, self.ctc_weight, start=before)

    def _score_of(self, text: str, log_prob: float) -> float:
        return log_prob + (self.lexicon.weight * self.lexicon.prior(text) if self.lexicon is not None else 0.0)

    def _score(self, encoded: Encoded, texts: list[str]) -> tuple[list[float], list[int]]:
        """Summed log-probability of each text (end token included) under the decoder, by teacher forcing."""
        config = self.model.generation_config
        eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
        start = config.decoder_start_token_id
        if start is None:
            start = self.model.config.decoder_start_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        token_ids = self.tokenizer(texts, add_special_tokens=False).input_ids
        targets = [ids[: self.max_new_tokens - 1] + [eos] for ids in token_ids]
        width = max(len(t) for t in targets)
        labels = torch.full((len(texts), width), -100, dtype=torch.long)
        inputs = torch.full((len(texts), width), pad, dtype=torch.long)
        for row, target in enumerate(targets):
            labels[row, : len(target)] = torch.tensor(target)
            inputs[row, 0] = start
            inputs[row, 1 : len(target)] = torch.tensor(target[:-1])
        labels, inputs = labels.to(self.device), inputs.to(self.device)
        if encoded.cross is not None:  # causal attention: no row's text sees the padding after it
            logits = torch.from_numpy(self.onnx_decoder.logits(encoded.cross, inputs.numpy()))
        else:
            logits = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoded.states),
                decoder_input_ids=inputs,
                decoder_attention_mask=(labels != -100).long(),
            ).logits
        token_log_probs = logits.float().log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        token_log_probs = token_log_probs.masked_fill(labels == -100, 0.0)
        return token_log_probs.sum(dim=1).tolist(), [len(t) for t in targets]

    def _emitted(self, generated: torch.Tensor) -> torch.Tensor:
        """Mask of the tokens the decoder emitted: up to and including the first end-of-sequence."""
        eos = self.model.generation_config.eos_token_id
        is_eos = torch.isin(generated, torch.tensor(eos if isinstance(eos, list) else [eos], device=generated.device))
        return (is_eos.cumsum(dim=1) - is_eos.long()) == 0


@dataclass
class Encoded:
    """A batch's encoder states (N, T, D) (None when joined from encoder batches of different widths) and, with
    the decoder on ONNX Runtime, each decoder layer's cross-attention keys and values made from them (computed
    once: every reading of the batch uses them)."""

    states: torch.Tensor | None
    cross: Cross | None = None

    def rows(self, rows: list[int]) -> Encoded:
        states = None if self.states is None else self.states[rows]
        return Encoded(states, None if self.cross is None else self.cross.rows(rows))


class CtcScores:
    """The CTC head's log-probabilities of each crop (its own columns only): best paths, and scores of texts."""

    def __init__(self, log_probs: list[torch.Tensor]):
        self.log_probs = log_probs
        self.best_paths = [_ctc_greedy(lp.argmax(-1).tolist()) for lp in log_probs]

    def positions(self, crop: int, text: str, content_fraction: float) -> tuple[float, ...]:
        """x of each character of `text` as a fraction of the crop's width: its frame in the best CTC alignment."""
        frames = _ctc_align(self.log_probs[crop], text)
        if frames is None:
            return ()
        columns = self.log_probs[crop].shape[0] * content_fraction
        return tuple(min(1.0, (frame + 0.5) / columns) for frame in frames)

    def rescore(self, groups: list, crops, weight: float, start: list[int] | None = None) -> None:
        """Make each candidate's log-probability (1 - weight) x the decoder's + weight x the CTC head's, for the
        candidates of `crops` from index `start[crop]` on (all of them by default)."""
        for crop in sorted(set(crops)):
            first = start[crop] if start else 0
            readings = groups[crop][first:]
            ctc = _ctc_log_likelihood(self.log_probs[crop], [text for text, _, _ in readings])
            groups[crop][first:] = [
                (text, (1 - weight) * log_prob + weight * ctc_log_prob, confidence)
                for (text, log_prob, confidence), ctc_log_prob in zip(readings, ctc, strict=True)
            ]


def _ctc_greedy(ids: list[int]) -> str:
    """Best path: repeats collapsed, blanks dropped."""
    out, previous = [], 0
    for index in ids:
        if index != previous and index != 0:
            out.append(compact_trocr.CHARACTERS[index - 1])
        previous = index
    return "".join(out).strip()


def _ctc_log_likelihood(log_probs: torch.Tensor, texts: list[str]) -> list[float]:
    """log P_ctc(text | one crop's (T, C) log-probabilities) for each text; -1e4 where impossible."""
    index = compact_trocr.CTC_INDEX
    targets = [[index[c] for c in text if c in index] or [index[" "]] for text in texts]
    expanded = log_probs.unsqueeze(1).expand(-1, len(texts), -1)
    losses = torch.nn.functional.ctc_loss(
        expanded,
        torch.tensor([i for t in targets for i in t], dtype=torch.long),
        torch.full((len(texts),), log_probs.shape[0], dtype=torch.long),
        torch.tensor([len(t) for t in targets], dtype=torch.long),
        blank=0,
        reduction="none",
        zero_infinity=False,
    )
    return [-loss if math.isfinite(loss) else -1e4 for loss in losses.tolist()]


def _ctc_align(log_probs: torch.Tensor, text: str) -> list[int] | None:
    """The frame of each character of `text` in its most likely CTC alignment (Viterbi), or None when `text`
    cannot be aligned (an unknown character, or fewer frames than characters)."""
    if not text or any(c not in compact_trocr.CTC_INDEX for c in text) or log_probs.shape[0] < len(text):
        return None
    labels = np.zeros(2 * len(text) + 1, dtype=np.int64)  # blank, c1, blank, c2, ..., blank
    labels[1::2] = [compact_trocr.CTC_INDEX[c] for c in text]
    scores = log_probs[:, torch.from_numpy(labels)].double().numpy()  # (T, S)
    frames, states = scores.shape
    # a state may come from itself, the one before, or (a character unlike the one two before) skip a blank
    can_skip = np.zeros(states, dtype=bool)
    can_skip[2:] = (labels[2:] != 0) & (labels[2:] != labels[:-2])
    best = np.full(states, -np.inf)
    best[:2] = scores[0, :2]
    back = np.zeros((frames, states), dtype=np.int64)
    steps = np.arange(states)
    for t in range(1, frames):
        stay = best
        step = np.concatenate(([-np.inf], best[:-1]))
        skip = np.where(can_skip, np.concatenate(([-np.inf, -np.inf], best[:-2])), -np.inf)
        choice = np.argmax(np.stack([stay, step, skip]), axis=0)
        best = np.choose(choice, [stay, step, skip]) + scores[t]
        back[t] = steps - choice
    state = states - 1 if best[-1] >= best[-2] else states - 2
    path = [state]
    for t in range(frames - 1, 0, -1):
        state = back[t, state]
        path.append(state)
    path.reverse()
    positions = [t for t, s in enumerate(path) if s % 2 == 1 and (t == 0 or path[t - 1] != s)]
    return positions if len(positions) == len(text) else None
