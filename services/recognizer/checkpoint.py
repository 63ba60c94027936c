"""A TrOCR checkpoint (`VisionEncoderDecoderModel`) loaded in torch from a local dir, and `TorchModel`: the torch
calls the recognizer makes (encoding, `generate`, teacher forcing), numpy in and out.

Works with the shipped model (PP-OCRv6's encoder, services.recognizer.ppocr_encoder), the compact model
(services.recognizer.compact_trocr) and Microsoft's `trocr-*-handwritten` checkpoints copied into a directory
alike. A recognizer serving exported graphs (services.recognizer.onnx_bundle) does not import this module.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

# compact_trocr and ppocr_encoder register their encoders with AutoModel when imported
from services.recognizer import compact_trocr, ppocr_encoder, ppocr_pixels
from services.recognizer.model import DTYPE_NAMES

# the types the model may run in where torch runs it (HW_DTYPE; `Recognizer` resolves auto): half precision is for GPUs
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES if name != "auto"}


# each thread's encoder mask while `own_columns` is open: the recognizer reads batches on several threads at once
_MASKS = threading.local()


@contextlib.contextmanager
def own_columns(model: VisionEncoderDecoderModel, columns: list[int] | None, width: int) -> Iterator[None]:
    """While open, `model`'s decoder, called on this thread, attends to each crop's first `columns[i]` of the
    encoder's `width` columns only, not to the padding its batch gave it (None: all of them). Serving and training
    both decode so. `VisionEncoderDecoderModel` passes its decoder no encoder mask: a pre-hook adds it."""
    if columns is None or min(columns) >= width:
        yield
        return
    if not getattr(model.decoder, "_own_columns_hook", False):
        model.decoder.register_forward_pre_hook(_add_mask, with_kwargs=True)
        model.decoder._own_columns_hook = True
    _MASKS.own = (torch.arange(width)[None, :] < torch.tensor(columns)[:, None]).to(model.device, torch.long)
    try:
        yield
    finally:
        _MASKS.own = None


def _add_mask(module, args, kwargs):
    """The decoder's pre-hook: this thread's encoder mask (`own_columns`), repeated for beam search's rows."""
    own = getattr(_MASKS, "own", None)
    if own is None:
        return None
    rows = kwargs["encoder_hidden_states"].shape[0]
    return args, {**kwargs, "encoder_attention_mask": own.repeat_interleave(rows // own.shape[0], dim=0)}


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

        def preprocess(crops: list[Image.Image], lines: bool | list[bool] = False) -> torch.Tensor:
            return compact_trocr.prepare_pixels(crops, height, width)

        image_processor = None
    elif encoder_config.model_type == ppocr_encoder.MODEL_TYPE:
        height, max_width = encoder_config.image_height, encoder_config.max_width
        width_scale = encoder_config.width_scale

        def preprocess(crops: list[Image.Image], lines: bool | list[bool] = False) -> torch.Tensor:
            """`lines`: which crops are whole lines (read at their full width, as the service reads them)."""
            return ppocr_encoder.prepare_pixels(
                crops, height, max_width, ppocr_pixels.crop_scales(width_scale, lines, len(crops))
            )

        image_processor = None
    else:  # a stock TrOCR: its own image processor (resize to 384x384, normalise)
        image_processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)

        def preprocess(crops: list[Image.Image], lines: bool | list[bool] = False) -> torch.Tensor:
            rgb = [crop.convert("RGB") for crop in crops]
            return image_processor(images=rgb, return_tensors="pt").pixel_values

    return LoadedCheckpoint(model, tokenizer, preprocess, image_processor)


class TorchModel:
    """A loaded checkpoint in `dtype` on `device`, with the calls the recognizer makes of it; each runs in
    inference mode on the calling thread. Pixels and encoder states may come as numpy arrays or tensors;
    scores come back as float32 numpy arrays whatever the model runs in."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str = "float32"):
        checkpoint = load_checkpoint(model_dir, device)
        self.device, self.dtype = device, DTYPES[dtype]
        self.model = checkpoint.model.eval().to(self.dtype)
        self.tokenizer = checkpoint.tokenizer
        self.preprocess = checkpoint.preprocess

    def _tensor(self, values) -> torch.Tensor:
        tensor = torch.from_numpy(values) if isinstance(values, np.ndarray) else values
        return tensor.to(self.device, self.dtype)

    def encode(self, pixels, ctc: bool) -> tuple[torch.Tensor, np.ndarray | None]:
        """The encoder's hidden states (on the device) and, with `ctc`, its CTC head's logits."""
        with torch.inference_mode():
            hidden = self.model.encoder(pixel_values=self._tensor(pixels)).last_hidden_state
            logits = self.model.encoder.ctc_logits(hidden).float().cpu().numpy() if ctc else None
        return hidden, logits

    def generate(
        self, pixels, states, max_new_tokens: int, beams: int, n_best: int, columns: list[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """`generate` from the encoder's states: sequences (B x n_best, L) and either each generated token's
        log-probability (greedy: B, steps) or each sequence's length-normalised score (beam search).
        `columns`: each crop's own columns of `states` (the rest is its batch's padding), None: all."""
        beam_options = dict(num_beams=beams, num_return_sequences=n_best, length_penalty=1.0, early_stopping=True)
        with torch.inference_mode(), own_columns(self.model, columns, states.shape[1]):
            output = self.model.generate(
                self._tensor(pixels),
                encoder_outputs=BaseModelOutput(last_hidden_state=self._tensor(states)),
                max_new_tokens=max_new_tokens,
                output_scores=True,
                return_dict_in_generate=True,
                **(beam_options if beams > 1 else {}),
            )
            sequences = output.sequences.cpu().numpy()
            if beams > 1:
                return sequences, None, output.sequences_scores.float().cpu().numpy()
            scores = self.model.compute_transition_scores(
                output.sequences, [step.float() for step in output.scores], normalize_logits=True
            )
        return sequences, scores.float().cpu().numpy(), None

    def logits(self, states, inputs: np.ndarray, attention: np.ndarray, columns: list[int] | None = None) -> np.ndarray:
        """Teacher forcing: the decoder's logits (B, L, vocab) for `inputs`, `attention` masking their padding,
        `columns` the encoder's (as for `generate`)."""
        with torch.inference_mode(), own_columns(self.model, columns, states.shape[1]):
            return (
                self.model(
                    encoder_outputs=BaseModelOutput(last_hidden_state=self._tensor(states)),
                    decoder_input_ids=torch.from_numpy(inputs).to(self.device),
                    decoder_attention_mask=torch.from_numpy(attention).to(self.device),
                )
                .logits.float()
                .cpu()
                .numpy()
            )
