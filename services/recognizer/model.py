"""Text recognition on word crops with any TrOCR checkpoint (`VisionEncoderDecoderModel`) from a local dir.

No gRPC here: `Recognizer.predict(crops)` takes PIL images and returns text with a confidence.
Works with the repository's compact model (services.recognizer.compact_trocr) and with Microsoft's
`trocr-*-handwritten` checkpoints copied into a directory alike.

Confidence is the geometric mean of the probabilities the decoder gave to the tokens it emitted
(end-of-sequence included): exp(mean log p). With beam search it is exp of the beam's
length-normalised log-probability, which is the same quantity for the chosen beam. It is in
[0, 1]; 1 means every character was read with certainty. It is a model score, not a calibrated
probability that the word is right, but it ranks words well for review.

With a lexicon (services.recognizer.lexicon), the decoder proposes its `n_best` readings by beam
search, joined by the lexicon words near each of them (near the best one alone when its confidence is
at least `Lexicon.sure`), scored by teacher forcing, and the lexicon
picks among them; the confidence stays the model's, of the chosen reading.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

from services.recognizer import compact_trocr  # registers the compact encoder with AutoModel
from services.recognizer.lexicon import Lexicon

logger = logging.getLogger("handwriting.recognizer")


@dataclass(frozen=True)
class Recognition:
    text: str
    confidence: float


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
    else:  # a stock TrOCR: its own image processor (resize to 384x384, normalise)
        image_processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)

        def preprocess(crops: list[Image.Image]) -> torch.Tensor:
            rgb = [crop.convert("RGB") for crop in crops]
            return image_processor(images=rgb, return_tensors="pt").pixel_values

    return LoadedCheckpoint(model, tokenizer, preprocess, image_processor)


class Recognizer:
    """Reads word (or line) crops. Load once at start-up; `predict` is thread-compatible, not re-entrant."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        beam_size: int = 1,
        max_new_tokens: int = 32,
        batch_size: int = 32,
        lexicon: Lexicon | None = None,
        n_best: int = 5,
    ):
        if beam_size < 1 or n_best < 1:
            raise ValueError("beam_size and n_best must be >= 1")
        self.device = device
        self.beam_size = beam_size
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.lexicon = lexicon
        self.n_best = n_best
        checkpoint = load_checkpoint(model_dir, device)
        self.model = checkpoint.model.eval()
        self.tokenizer = checkpoint.tokenizer
        self.preprocess = checkpoint.preprocess
        self.model_name = os.path.basename(os.path.normpath(str(model_dir)))
        logger.info("recognizer loaded", extra={"model_dir": str(model_dir), "device": device})

    @torch.inference_mode()
    def predict(self, crops: list[Image.Image]) -> list[Recognition]:
        if not crops:
            return []
        results: list[Recognition] = []
        for start in range(0, len(crops), self.batch_size):
            results.extend(self._predict_batch(crops[start : start + self.batch_size]))
        return results

    def _predict_batch(self, crops: list[Image.Image]) -> list[Recognition]:
        pixel_values = self.preprocess(crops).to(self.device)
        n_best = self.n_best if self.lexicon is not None else 1
        beams = max(self.beam_size, n_best)
        beam_options = dict(num_beams=beams, num_return_sequences=n_best, length_penalty=1.0, early_stopping=True)
        encoded = self.model.encoder(pixel_values=pixel_values)  # once: decoding and near-word scoring share it
        encoder_states = encoded.last_hidden_state
        output = self.model.generate(
            pixel_values,
            encoder_outputs=encoded,
            max_new_tokens=self.max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
            **(beam_options if beams > 1 else {}),
        )
        texts = [text.strip() for text in self.tokenizer.batch_decode(output.sequences, skip_special_tokens=True)]
        if beams > 1:  # beam scores are length-normalised: the mean log-probability of each reading
            mean_log_probs = output.sequences_scores
        else:
            scores = self.model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
            emitted = self._emitted(output.sequences[:, -scores.shape[1] :])
            mean_log_probs = scores.masked_fill(~emitted, 0.0).sum(dim=1) / emitted.sum(dim=1).clamp(min=1)
        confidences = mean_log_probs.exp().clamp(0.0, 1.0).tolist()
        if n_best == 1:
            return [Recognition(text, confidence) for text, confidence in zip(texts, confidences, strict=True)]
        lengths = self._emitted(output.sequences[:, 1:]).sum(dim=1).tolist()  # after the decoder start token
        log_probs = [m * n for m, n in zip(mean_log_probs.tolist(), lengths, strict=True)]
        groups = [
            [(texts[i], log_probs[i], confidences[i]) for i in range(start, start + n_best)]
            for start in range(0, len(texts), n_best)
        ]
        self._add_near_words(encoder_states, groups)
        results = []
        for readings in groups:
            text, _, confidence = readings[self.lexicon.choose([(t, lp) for t, lp, _ in readings])]
            results.append(Recognition(text, confidence))
        return results

    def _add_near_words(self, encoder_states: torch.Tensor, groups: list[list[tuple[str, float, float]]]) -> None:
        """Add to each crop's readings the lexicon words near any of its readings, scored by the model.
        `encoder_states`: the encoder's output for the crops, one row per group."""
        # every reading's near words when the best reading is uncertain; the best one's alone otherwise
        sources = [readings if readings[0][2] < self.lexicon.sure else readings[:1] for readings in groups]
        near = iter(self.lexicon.near_many([text for readings in sources for text, _, _ in readings]))
        wanted = []  # (crop index, candidate)
        for crop, readings in enumerate(groups):
            known = {text for text, _, _ in readings}
            for _ in sources[crop]:
                for word in next(near):
                    if word not in known:
                        known.add(word)
                        wanted.append((crop, word))
        if not wanted:
            return
        crops = [crop for crop, _ in wanted]
        log_probs, lengths = self._score(encoder_states[crops], [text for _, text in wanted])
        for (crop, text), log_prob, length in zip(wanted, log_probs, lengths, strict=True):
            groups[crop].append((text, log_prob, min(1.0, math.exp(log_prob / max(1, length)))))

    def _score(self, encoder_states: torch.Tensor, texts: list[str]) -> tuple[list[float], list[int]]:
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
        logits = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states),
            decoder_input_ids=inputs,
            decoder_attention_mask=(labels != -100).long(),
        ).logits
        token_log_probs = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        token_log_probs = token_log_probs.masked_fill(labels == -100, 0.0)
        return token_log_probs.sum(dim=1).tolist(), [len(t) for t in targets]

    def _emitted(self, generated: torch.Tensor) -> torch.Tensor:
        """Mask of the tokens the decoder emitted: up to and including the first end-of-sequence."""
        eos = self.model.generation_config.eos_token_id
        is_eos = torch.isin(generated, torch.tensor(eos if isinstance(eos, list) else [eos], device=generated.device))
        return (is_eos.cumsum(dim=1) - is_eos.long()) == 0
