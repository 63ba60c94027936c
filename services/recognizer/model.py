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

A word crop read as several words (a box the detector drew around more than one) is read a second time at its
full width, as lines are, and the reading that scores better is kept: at the model's width scale (0.9 for the
shipped model) the spaces between words shrink.

A crop read with a confidence under `deslant_below` whose ink leans is read a second time sheared upright
(services.recognizer.slant), and the reading that scores better of the two is kept: real cursive leans more
than the text the encoder learnt from.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoTokenizer

from services.common import onnx_sessions
from services.recognizer import onnx_bundle, onnx_decoder, ppocr_pixels, slant
from services.recognizer.characters import CHARACTERS, CTC_INDEX
from services.recognizer.lexicon import Lexicon
from services.recognizer.onnx_decoder import Cross, log_softmax
from services.recognizer.onnx_encoder import native_bfloat16

logger = logging.getLogger("handwriting.recognizer")
# With a CTC head, the decoder generates at most this many tokens beyond the longest CTC reading of the batch.
CTC_LENGTH_SLACK = 8
# A crop read with a decoder confidence under DESLANT_BELOW whose ink leans by a shear of MIN_SLANT (8.5 degrees)
# or more is read a second time sheared upright (services.recognizer.slant); the better-scored reading stays.
DESLANT_BELOW = 0.6
MIN_SLANT = 0.15
# With the decoder on ONNX Runtime (greedy), crops go through the encoder this many at a time (of similar widths:
# little padding to compute) and through the decoder `batch_size` at a time (fewer sequential steps).
ENCODER_BATCH_SIZE = 8
# the types the model may run in where torch runs it (HW_DTYPE; services.recognizer.checkpoint.DTYPES), and auto:
# the encoder in bfloat16 where the CPU computes it (`onnx_encoder.native_bfloat16`), float32 elsewhere
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Recognition:
    text: str
    confidence: float
    # x of each character's centre as a fraction of the crop's width (from the CTC head's alignment); () if unknown
    char_positions: tuple[float, ...] = ()


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
        decoder_dtype: str = "float32",
    ):
        """`encoder_onnx`: with the onnx backend, a file holding the encoder graph to run instead of the one
        exported from the weights at start (an int8 one from `training.quantize_encoder`).
        `workers`: batches read at once on a CPU, each on one thread (0: one per core).
        `dtype`: the weights' and activations' type where torch runs the model (float16 or bfloat16 on a GPU);
        with the onnx backend on a CPU, bfloat16 runs the PP-OCR encoder on OpenVINO in bfloat16 (where the CPU
        has it; the decoder stays float32). Scores are computed in float32 whatever it is. auto (the service's
        default): bfloat16 where the onnx backend runs a PP-OCR encoder on a CPU that computes bfloat16 natively
        (AVX-512 BF16, AMX), float32 elsewhere (models/recognizer/README.md: how the two read).
        `decoder_dtype`: int8 runs the decoder's graphs with their products of a weight in int8
        (`onnx_decoder.quantized`) where the decoder runs on ONNX Runtime (a CPU; the service's default), float32 as
        exported; where torch runs the decoder it runs in `dtype` whatever this is.

        With the onnx backend on a CPU, the graphs come from the model's folder when it holds them (onnx/, see
        services.recognizer.onnx_bundle: torch is then not imported at all) or are exported from its weights."""
        if beam_size < 1 or n_best < 1:
            raise ValueError("beam_size and n_best must be >= 1")
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be onnx or torch, not {backend!r}")
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, not {dtype!r}")
        if decoder_dtype not in onnx_decoder.DECODER_DTYPES:
            names = ", ".join(onnx_decoder.DECODER_DTYPES)
            raise ValueError(f"decoder_dtype must be one of {names}, not {decoder_dtype!r}")
        onnx = onnx_sessions.serves(backend, device)
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(f"no TrOCR checkpoint in {model_dir} (config.json missing)")
        config = json.loads((model_dir / "config.json").read_text())
        encoder_config = config["encoder"]
        # PP-OCR's encoder (the shipped model's): its pixels and columns are computed here, in numpy
        self.ppocr = encoder_config.get("model_type") == ppocr_pixels.MODEL_TYPE
        if dtype == "auto":
            dtype = "bfloat16" if onnx and self.ppocr and not encoder_onnx and native_bfloat16() else "float32"
        self.dtype = dtype
        # on a CPU the onnx backend runs its graphs in float32, but for bfloat16: the encoder on OpenVINO in it
        if onnx and dtype == "float16":
            raise ValueError("dtype float16 is for GPUs (torch backend); on a CPU, bfloat16 runs the encoder in it")
        if onnx and dtype == "bfloat16" and encoder_onnx:
            raise ValueError("bfloat16 runs the float32 encoder in bfloat16: without an encoder graph")
        self.device = device
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.lexicon = lexicon
        self.n_best = n_best
        self.deslant_below = deslant_below
        bundle = onnx_bundle.load(model_dir) if onnx and self.ppocr else None
        # torch runs what the graphs do not: everything without them
        self.torch = None
        if bundle is None:
            try:
                from services.recognizer.checkpoint import TorchModel
            except ImportError as error:  # an image without torch
                raise RuntimeError(
                    f"{model_dir} holds no exported graphs (onnx/), and torch is not installed here: export them where"
                    f" it is, with python -m services.recognizer.onnx_export --model-dir {model_dir} --out {model_dir}"
                ) from error
            self.torch = TorchModel(model_dir, device, "float32" if onnx else dtype)
        self.model = self.torch.model if self.torch is not None else None
        self.tokenizer = (
            self.torch.tokenizer if self.torch else AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        )
        if self.ppocr:
            height, max_width = encoder_config["image_height"], encoder_config["max_width"]
            # word crops at the model's width scale; whole lines at their full width, where the spaces are
            width_scale = encoder_config.get("width_scale", ppocr_pixels.WIDTH_SCALE)
            self.width_scale = width_scale
            self.preprocess = lambda crops, lines=False: ppocr_pixels.prepare_pixels(
                crops, height, max_width, ppocr_pixels.crop_scales(width_scale, lines, len(crops))
            )
            self._content_fraction = lambda crop, line: ppocr_pixels.content_fraction(
                crop, height, max_width, 1.0 if line else width_scale
            )
        else:
            self.preprocess = lambda crops, lines=False: self.torch.preprocess(crops)
            self.width_scale = 1.0  # (the checkpoint's own processor: lines and words alike)
            self._content_fraction = lambda crop, lines: 1.0
        # 0: as many tokens as the decoder was built for (its positions, less the 8 that build_model adds)
        self.max_new_tokens = max_new_tokens or max(1, config["decoder"]["max_position_embeddings"] - 8)
        # the encoder's CTC head as a second reader: its weight in each reading's score (see `CtcScores.rescore`)
        default_weight = encoder_config.get("decode_ctc_weight", 0.0)
        self.ctc_weight = default_weight if ctc_weight is None or ctc_weight < 0 else ctc_weight
        if self.ctc_weight and "ctc_vocab_size" not in encoder_config:
            raise ValueError("ctc_weight needs an encoder with a CTC head")
        # on a CPU, batches side by side on one core each: the Python work between the decoder's short steps
        # leaves a core idle when both serve one batch (the sample page's call: 406 -> 349 ms, benchmarks/backends.py)
        self.workers = (workers or onnx_sessions.cpu_threads()) if device == "cpu" else 1
        session_threads = 1 if self.workers > 1 else 0
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="recognizer") if self.workers > 1 else None
        graphs = bundle
        if graphs is None:  # exported from the weights, in memory (those ONNX Runtime will run)
            from services.recognizer import onnx_export

            graphs = onnx_export.graphs(self.model, encoder=onnx and not encoder_onnx, decoder=onnx)
        self.tokens = graphs.decoder  # the decoder's special tokens
        # PP-OCR's encoder on ONNX Runtime (faster from the services' worker thread), on a CPU
        self.onnx_encoder = None
        if onnx and self.ppocr:
            from services.recognizer.onnx_encoder import OnnxEncoder, OpenVinoEncoder

            graph = Path(encoder_onnx).read_bytes() if encoder_onnx else graphs.encoder
            if dtype == "bfloat16":
                self.onnx_encoder = OpenVinoEncoder(graph, streams=self.workers)
            else:
                self.onnx_encoder = OnnxEncoder(graph, threads=session_threads)
        elif encoder_onnx:
            raise ValueError("an encoder graph needs the onnx backend on a CPU and a PP-OCR encoder")
        elif onnx and dtype != "float32":
            raise ValueError("bfloat16 with the onnx backend needs a PP-OCR encoder (others: the torch backend)")
        # its TrOCR decoder too (greedy and beam search, scoring)
        self.onnx_decoder = None
        if graphs.cross is not None:
            self.onnx_decoder = onnx_decoder.OnnxDecoder(
                graphs.cross, graphs.step, graphs.decoder, session_threads, int8=decoder_dtype == "int8"
            )
        # what the decoder runs in: int8 or float32 on ONNX Runtime; in torch, the model's type
        self.decoder_dtype = decoder_dtype if self.onnx_decoder is not None else ("float32" if onnx else dtype)
        self.backend = "onnx" if self.onnx_encoder is not None or self.onnx_decoder is not None else "torch"
        # with the decoder in torch, each call's crops go through the encoder and the decoder together
        self.encoder_batch_size = max(1, min(encoder_batch_size, batch_size)) if self.onnx_decoder else batch_size
        self.model_name = os.path.basename(os.path.normpath(str(model_dir)))
        logger.info(
            "recognizer loaded",
            extra={
                "model_dir": str(model_dir),
                "device": device,
                "dtype": dtype,
                "decoder_dtype": self.decoder_dtype,
                "graphs": "folder" if bundle else "exported",
            },
        )

    def predict(self, crops: list[Image.Image], lines: bool | Sequence[bool] = False) -> list[Recognition]:
        """One reading per crop, in order. `lines`: which crops are whole lines of words (one flag for all, or one
        per crop), read at their full width where word crops are read at the model's width scale."""
        if not crops:
            return []
        flags = [lines] * len(crops) if isinstance(lines, bool) else list(lines)
        readings = self._read(crops, flags)
        self._read_again(crops, readings, flags)
        return [recognition for recognition, _ in readings]

    def _read(self, crops: list[Image.Image], lines: list[bool]) -> list[tuple[Recognition, float]]:
        """Each crop's reading and its score (what chose it among the candidates)."""
        # batches of similar widths: less padding to compute
        order = sorted(range(len(crops)), key=lambda i: crops[i].width / max(1, crops[i].height))
        # (a call of fewer crops than the workers' encoder batches is shared among the workers)
        size = max(1, min(self.encoder_batch_size, math.ceil(len(order) / self.workers)))
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        # decoding batches of whole encoder batches: up to batch_size crops each, as many as a multiple of the
        # workers while there are encoder batches to share
        count = math.ceil(len(chunks) / max(1, self.batch_size // size))
        count = min(len(chunks), math.ceil(count / self.workers) * self.workers)
        batches = [[i for c in group for i in chunks[c]] for group in np.array_split(np.arange(len(chunks)), count)]
        run = self._pool.map if self._pool is not None and len(batches) > 1 else map
        results: list[tuple[Recognition, float] | None] = [None] * len(crops)
        reads = run(lambda batch: self._predict_batch([crops[i] for i in batch], [lines[i] for i in batch]), batches)
        for batch, read in zip(batches, reads, strict=True):
            for index, result in zip(batch, read, strict=True):
                results[index] = result
        return results

    def _read_again(
        self, crops: list[Image.Image], readings: list[tuple[Recognition, float]], lines: list[bool]
    ) -> None:
        """Read some crops a second time, in one call, and keep each crop's best-scored reading:
        - word crops read as several words (boxes the detector drew around more than one word), at their full width,
          as lines are: at the model's width scale the spaces between words shrink and words run together;
        - crops read with a confidence under `deslant_below` whose ink leans by MIN_SLANT or more, sheared upright
          (at the width they were read at; those read as several words at their full width too), their character
          positions mapped back onto the crop as it was.
        One call for both (until 2026-12-05 one after the other): its crops share the workers, and a page waits for
        one second reading, not two."""
        spaced = set()
        if self.width_scale != 1.0:
            spaced = {i for i, (recognition, _) in enumerate(readings) if not lines[i] and " " in recognition.text}
        slanted = []
        if self.deslant_below > 0:
            unsure = [i for i, (recognition, _) in enumerate(readings) if recognition.confidence < self.deslant_below]
            slanted = [(i, shear) for i in unsure if abs(shear := slant.estimate_shear(crops[i])) >= MIN_SLANT]
        again = [(i, crops[i], 0, True) for i in sorted(spaced)]  # crop, image, width added, read as a line
        for i, shear in slanted:
            image, added = slant.shear_crop(crops[i], shear)
            again += [(i, image, added, line) for line in ([lines[i], True] if i in spaced else [lines[i]])]
        if not again:
            return
        second = self._read([image for _, image, _, _ in again], [line for _, _, _, line in again])
        for (i, image, added, _), (recognition, score) in zip(again, second, strict=True):
            if score <= readings[i][1]:
                continue
            if image is not crops[i]:  # sheared: its characters' places on the crop as it was
                width = crops[i].width
                positions = tuple(
                    min(1.0, max(0.0, (x * image.width - added / 2) / width)) for x in recognition.char_positions
                )
                recognition = Recognition(recognition.text, recognition.confidence, positions)
            readings[i] = (recognition, score)

    def _predict_batch(self, crops: list[Image.Image], lines: list[bool]) -> list[tuple[Recognition, float]]:
        rescored = self.lexicon is not None or self.ctc_weight > 0  # readings are chosen among candidates
        n_best = self.n_best if rescored else 1
        beams = max(self.beam_size, n_best)
        # the decoder on ONNX Runtime: the encoder reads the crops a few at a time (less padding to compute), the
        # decoder all of them at once (fewer sequential steps), each crop attending to its own columns only (as in
        # torch): a crop reads the same whatever else is read with it
        onnx_decoding = self.onnx_decoder is not None
        size = self.encoder_batch_size if onnx_decoding else len(crops)
        encoded, ctc_log_probs = [], []
        for start in range(0, len(crops), size):
            pixels = self.preprocess(crops[start : start + size], lines[start : start + size])
            encoder_states, ctc_logits = self._encode(pixels)
            encoded.append(self._encoded(encoder_states, pixels))  # once: decoding and near-word scoring share it
            if self.ctc_weight:
                ctc_log_probs += self._ctc(ctc_logits, encoded[-1].columns)
        encoded = encoded[0] if len(encoded) == 1 else Encoded(None, Cross.join([e.cross for e in encoded]))
        ctc = CtcScores(ctc_log_probs) if self.ctc_weight else None
        max_new_tokens = self.max_new_tokens
        if ctc is not None:  # the CTC head says how long the readings are: the decoder need not go much further
            max_new_tokens = min(max_new_tokens, max(len(text) for text in ctc.best_paths) + CTC_LENGTH_SLACK)
        scored: dict[tuple[int, str], tuple[float, int]] = {}  # CTC readings the decoder's check scored
        if onnx_decoding and beams == 1:  # the same search as generate's, checked first against the CTC head's readings
            drafts = self.tokenizer(ctc.best_paths, add_special_tokens=False).input_ids if ctc is not None else None
            sequences, token_log_probs, draft_log_probs = self.onnx_decoder.greedy(
                encoded.cross, max_new_tokens, drafts
            )
            for crop, log_prob in enumerate(draft_log_probs):
                if log_prob is not None:  # (tokens and the end token)
                    scored[(crop, ctc.best_paths[crop])] = (log_prob, len(drafts[crop]) + 1)
            beam_scores = None
        elif onnx_decoding:  # the same beam search as generate's
            sequences, beam_scores = self.onnx_decoder.beam(encoded.cross, max_new_tokens, beams, n_best)
        else:  # (one encoder batch: `pixels` and `encoder_states` are the whole call's)
            sequences, token_log_probs, beam_scores = self.torch.generate(
                pixels, encoder_states, max_new_tokens, beams, n_best, encoded.columns
            )
        texts = [text.strip() for text in self.tokenizer.batch_decode(sequences.tolist(), skip_special_tokens=True)]
        if beam_scores is not None:  # beam scores are length-normalised: the mean log-probability of each reading
            mean_log_probs = beam_scores.astype(np.float32)
        else:
            scores = token_log_probs.astype(np.float32)
            emitted = self._emitted(sequences[:, sequences.shape[1] - scores.shape[1] :])
            mean_log_probs = np.where(emitted, scores, 0.0).sum(axis=1) / np.maximum(emitted.sum(axis=1), 1)
        confidences = np.clip(np.exp(mean_log_probs), 0.0, 1.0).tolist()
        if not rescored:  # the score is the reading's mean log-probability
            return [
                (Recognition(text, confidence), mean_log_prob)
                for text, confidence, mean_log_prob in zip(texts, confidences, mean_log_probs.tolist(), strict=True)
            ]
        lengths = self._emitted(sequences[:, 1:]).sum(axis=1).tolist()  # after the decoder start token
        log_probs = [m * n for m, n in zip(mean_log_probs.tolist(), lengths, strict=True)]
        groups = [
            [(texts[i], log_probs[i], confidences[i]) for i in range(start, start + n_best)]
            for start in range(0, len(texts), n_best)
        ]
        if ctc is not None:  # the CTC head's best path joins the candidates
            self._add(encoded, groups, [(crop, text) for crop, text in enumerate(ctc.best_paths) if text], scored)
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
            fraction = self._content_fraction(crops[crop], lines[crop])
            positions = ctc.positions(crop, text, fraction) if ctc is not None else ()
            results.append((Recognition(text, confidence, positions), self._score_of(text, log_prob)))
        return results

    def _encoded(self, encoder_states, pixels) -> Encoded:
        # the decoder attends to each crop's own columns only, not to its batch's padding: a crop reads the same
        # whatever else is read with it (other pages' crops, under load)
        own = ppocr_pixels.owned_columns(pixels, encoder_states.shape[1]) if self.ppocr else None
        cross = self.onnx_decoder.cross(np.asarray(encoder_states), own) if self.onnx_decoder is not None else None
        return Encoded(encoder_states, cross, own)

    def _best(self, readings: list[tuple[str, float, float]]) -> int:
        candidates = [(text, log_prob) for text, log_prob, _ in readings]
        if self.lexicon is not None:
            return self.lexicon.choose(candidates)
        return max(range(len(candidates)), key=lambda i: candidates[i][1])

    def _add(
        self,
        encoded: Encoded,
        groups: list,
        wanted: list[tuple[int, str]],
        scored: dict[tuple[int, str], tuple[float, int]] | None = None,
    ) -> list[int]:
        """Add (crop, text) candidates not already there, scored by the decoder (unless `scored` holds their summed
        log-probability and token count already); returns the crops that got one."""
        new, seen = [], {(crop, text) for crop, readings in enumerate(groups) for text, _, _ in readings}
        for crop, text in wanted:
            if (crop, text) not in seen:
                seen.add((crop, text))
                new.append((crop, text))
        scored = scored or {}
        unscored = [candidate for candidate in new if candidate not in scored]
        if unscored:
            log_probs, lengths = self._score(encoded.rows([crop for crop, _ in unscored]), [t for _, t in unscored])
            scored = {**scored, **dict(zip(unscored, zip(log_probs, lengths, strict=True), strict=True))}
        for crop, text in new:
            log_prob, length = scored[(crop, text)]
            groups[crop].append((text, log_prob, min(1.0, math.exp(log_prob / max(1, length)))))
        return [crop for crop, _ in new]

    def _encode(self, pixels) -> tuple[object, np.ndarray | None]:
        """The encoder's hidden states (numpy from ONNX Runtime, a tensor from torch) and, where it has a CTC head
        and it is used, the head's logits (numpy)."""
        if self.onnx_encoder is not None:
            return self.onnx_encoder(pixels)
        return self.torch.encode(pixels, ctc=bool(self.ctc_weight))

    @staticmethod
    def _ctc(logits: np.ndarray, columns: list[int] | None) -> list[np.ndarray]:
        """Each crop's CTC log-probabilities over its own `columns` (all of them: None), from the head's logits (N, T,
        C): the CTC scores, alignments and best paths are small, sequential numpy work."""
        log_probs = log_softmax(logits.astype(np.float32))
        lengths = columns or [log_probs.shape[1]] * len(log_probs)
        return [log_probs[i, : lengths[i]] for i in range(len(lengths))]

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
        eos, start = self.tokens["eos"][0], self.tokens["start"]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        token_ids = self.tokenizer(texts, add_special_tokens=False).input_ids
        targets = [ids[: self.max_new_tokens - 1] + [eos] for ids in token_ids]
        width = max(len(t) for t in targets)
        labels = np.full((len(texts), width), -100, dtype=np.int64)
        inputs = np.full((len(texts), width), pad, dtype=np.int64)
        for row, target in enumerate(targets):
            labels[row, : len(target)] = target
            inputs[row, 0] = start
            inputs[row, 1 : len(target)] = target[:-1]
        if encoded.cross is not None:  # causal attention: no row's text sees the padding after it
            logits = self.onnx_decoder.logits(encoded.cross, inputs)
        else:
            logits = self.torch.logits(encoded.states, inputs, (labels != -100).astype(np.int64), encoded.columns)
        log_probs = log_softmax(logits.astype(np.float32))
        token_log_probs = np.take_along_axis(log_probs, np.maximum(labels, 0)[..., None], axis=-1)[..., 0]
        token_log_probs = np.where(labels == -100, 0.0, token_log_probs)
        return token_log_probs.sum(axis=1).tolist(), [len(t) for t in targets]

    def _emitted(self, generated: np.ndarray) -> np.ndarray:
        """Mask of the tokens the decoder emitted: up to and including the first end-of-sequence."""
        is_eos = np.isin(generated, self.tokens["eos"])
        return (is_eos.cumsum(axis=1) - is_eos) == 0


@dataclass
class Encoded:
    """A batch's encoder states (N, T, D) (None when joined from encoder batches of different widths) and, with
    the decoder on ONNX Runtime, each decoder layer's cross-attention keys and values made from them (computed
    once: every reading of the batch uses them)."""

    states: object | None  # numpy (ONNX Runtime) or a tensor (torch)
    cross: Cross | None = None
    columns: list[int] | None = None  # each crop's own columns of the states (the rest is padding); None: all

    def rows(self, rows: list[int]) -> Encoded:
        states = None if self.states is None else self.states[rows]
        columns = None if self.columns is None else [self.columns[row] for row in rows]
        return Encoded(states, None if self.cross is None else self.cross.rows(rows), columns)


class CtcScores:
    """The CTC head's log-probabilities of each crop (its own columns only): best paths, and scores of texts."""

    def __init__(self, log_probs: list[np.ndarray]):
        self.log_probs = log_probs
        # each best path's characters and the frames where it emits them
        self._emitted = [_best_path(lp.argmax(-1).tolist()) for lp in log_probs]
        self.best_paths = [text.strip() for text, _ in self._emitted]

    def positions(self, crop: int, text: str, content_fraction: float) -> tuple[float, ...]:
        """x of each character of `text` as a fraction of the crop's width: its frame in the best CTC alignment."""
        # most readings are the best path itself: the best alignment of a text is then that path (the best of
        # all), and its characters' frames are where the path emits them; the others are aligned (Viterbi)
        path, frames = self._emitted[crop]
        if not text or path != text:
            frames = _ctc_align(self.log_probs[crop], text)
        if frames is None:
            return ()
        columns = self.log_probs[crop].shape[0] * content_fraction
        return tuple(min(1.0, (frame + 0.5) / columns) for frame in frames)

    def rescore(self, groups: list, crops, weight: float, start: list[int] | None = None) -> None:
        """Make each candidate's log-probability (1 - weight) x the decoder's + weight x the CTC head's, for the
        candidates of `crops` from index `start[crop]` on (all of them by default)."""
        crops = sorted(set(crops))
        firsts = [start[crop] if start else 0 for crop in crops]
        owners = [crop for crop, first in zip(crops, firsts, strict=True) for _ in groups[crop][first:]]
        texts = [text for crop, first in zip(crops, firsts, strict=True) for text, _, _ in groups[crop][first:]]
        ctc = iter(_ctc_log_likelihoods([self.log_probs[crop] for crop in owners], texts))
        for crop, first in zip(crops, firsts, strict=True):
            groups[crop][first:] = [
                (text, (1 - weight) * log_prob + weight * next(ctc), confidence)
                for text, log_prob, confidence in groups[crop][first:]
            ]


def _best_path(ids: list[int]) -> tuple[str, list[int]]:
    """What a path of frames reads (repeats collapsed, blanks dropped; unstripped) and the frame where it emits
    each of those characters."""
    out, frames, previous = [], [], 0
    for frame, index in enumerate(ids):
        if index != previous and index != 0:
            out.append(CHARACTERS[index - 1])
            frames.append(frame)
        previous = index
    return "".join(out), frames


def _ctc_log_likelihoods(log_probs: list[np.ndarray], texts: list[str]) -> list[float]:
    """log P_ctc(texts[i] | log_probs[i]) for each i, log_probs[i] one crop's (T, C) log-probabilities; -1e4 where
    impossible. The forward algorithm over all of them at once, in probabilities rescaled at every frame
    (Rabiner's scaling): as exact as in log space while no probability underflows float64 (below e^-700)."""
    if not texts:
        return []
    targets = [[CTC_INDEX[c] for c in text if c in CTC_INDEX] or [CTC_INDEX[" "]] for text in texts]
    rows, states = len(texts), 2 * max(len(t) for t in targets) + 1
    labels = np.zeros((rows, states), dtype=np.int64)  # blank, c1, blank, c2, ..., blank, then unused states
    for row, target in enumerate(targets):
        labels[row, 1 : 2 * len(target) : 2] = target
    last = np.array([2 * len(t) for t in targets])  # each row's final blank
    # a state may come from itself, the one before, or (a character unlike the one two before) skip a blank
    can_skip = np.zeros((rows, states), dtype=bool)
    can_skip[:, 2:] = (labels[:, 2:] != 0) & (labels[:, 2:] != labels[:, :-2])
    frames = np.array([len(lp) for lp in log_probs])
    emit = np.zeros((rows, int(frames.max()), states))  # each state's label's probability at each frame
    for row, lp in enumerate(log_probs):
        emit[row, : len(lp)] = np.exp(lp[:, labels[row]].astype(np.float64))
    emit *= (np.arange(states)[None, :] <= last[:, None])[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # an impossible text ends in 0 (or 0/0): -1e4 below
        alpha = np.zeros((rows, states))
        alpha[:, :2] = emit[:, 0, :2]
        total = alpha.sum(axis=1)
        alpha, log_scale = alpha / total[:, None], np.log(total)
        for t in range(1, emit.shape[1]):
            moved = alpha.copy()
            moved[:, 1:] += alpha[:, :-1]
            moved[:, 2:] += np.where(can_skip[:, 2:], alpha[:, :-2], 0.0)
            moved *= emit[:, t]
            total = moved.sum(axis=1)
            active = t < frames
            alpha = np.where(active[:, None], moved / total[:, None], alpha)
            log_scale += np.where(active, np.log(total), 0.0)
        index = np.arange(rows)
        result = log_scale + np.log(alpha[index, last] + alpha[index, last - 1])
    return [float(value) if np.isfinite(value) else -1e4 for value in result]


def _ctc_align(log_probs: np.ndarray, text: str) -> list[int] | None:
    """The frame of each character of `text` in its most likely CTC alignment (Viterbi), or None when `text`
    cannot be aligned (an unknown character, or fewer frames than characters)."""
    if not text or any(c not in CTC_INDEX for c in text) or log_probs.shape[0] < len(text):
        return None
    labels = np.zeros(2 * len(text) + 1, dtype=np.int64)  # blank, c1, blank, c2, ..., blank
    labels[1::2] = [CTC_INDEX[c] for c in text]
    scores = log_probs[:, labels].astype(np.float64)  # (T, S)
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
