"""Train the recognizer: a compact TrOCR from scratch, or fine-tune any local TrOCR checkpoint.

    python -m training.train_recognizer --data data/synth/recognizer --out runs/recognizer \
        --config training/configs/recognizer_cpu.json --minutes 60
    python -m training.train_recognizer --init-from models/recognizer ...   # resume / fine-tune

The best checkpoint by validation CER is saved as a plain VisionEncoderDecoderModel directory
(model, tokenizer, training_state.json with the cumulative recipe and history).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from services.recognizer import compact_trocr
from services.recognizer.checkpoint import LoadedCheckpoint, load_checkpoint, own_columns
from services.recognizer.model import DESLANT_BELOW, Recognizer
from training.metrics import error_rates

LINE_CROPS = "recognizer-lines"  # make_data's folder of whole-line crops
# Training crops are drawn this many batches at a time, sorted by width and cut into batches (`batches`; a config's
# `bucket_batches`, 1: each batch drawn on its own).
BUCKET_BATCHES = 8


def is_line(path: Path) -> bool:
    """Whether a crop file is a whole line (DATA/recognizer-lines/SPLIT/name.png): the service reads lines at their
    full width and word crops at the model's width scale, and so do training and evaluation."""
    return path.parent.parent.name == LINE_CROPS


def read_split(folder: Path, limit: int | None = None) -> list[tuple[Path, str]]:
    rows = []
    for line in (folder / "labels.tsv").read_text().splitlines():
        if "\t" in line:
            name, text = line.split("\t", 1)
            rows.append((folder / name, text))
    return rows[:limit] if limit else rows


def batches(train_sets: list[list[tuple[Path, str]]], batch_size: int, rng: random.Random, pool: int = BUCKET_BATCHES):
    """Endless training batches of (path, text). `pool` batches' crops are drawn at once, each from a dataset chosen
    at random (every dataset alike, whatever its size: words and lines, say), sorted by their aspect and cut into
    batches, which come out in random order: a batch is padded to its widest crop, so crops of like widths go
    together (transformers' Trainer does the same with `group_by_length`). `pool` 1 draws each batch on its own, as
    before 2026-12-05 (measured against it: models/recognizer/README.md, "Training batches of like widths")."""
    while True:
        rows = [rng.choice(rng.choice(train_sets)) for _ in range(pool * batch_size)]
        rows.sort(key=lambda row: _aspect(row[0]))
        cut = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
        rng.shuffle(cut)
        yield from cut


def _aspect(path: Path) -> float:
    width, height = Image.open(path).size  # (the header only)
    return width / max(1, height)


def jitter_crop(crop: Image.Image, rng: random.Random, amount: float) -> Image.Image:
    """Move each edge of a word crop in or out by up to `amount` x its height, as a detector's box
    would: training crops are cut from exact boxes, the service cuts them from detected ones.
    Space added outside is filled with the crop's paper colour (the median of its border)."""
    if amount <= 0:
        return crop
    h = crop.height
    left, top, right, bottom = (round(rng.uniform(-amount, amount) * h) for _ in range(4))
    cut = (max(0, -left), max(0, -top), crop.width - max(0, -right), crop.height - max(0, -bottom))
    if cut[2] - cut[0] < 4 or cut[3] - cut[1] < 4:
        return crop
    pixels = np.asarray(crop)
    border = np.sort(np.concatenate([pixels[0], pixels[-1]]))
    paper = int(border[len(border) // 2])
    return ImageOps.expand(crop.crop(cut), (max(0, left), max(0, top), max(0, right), max(0, bottom)), fill=paper)


def label_ids(tokenizer, texts: list[str], decoder_start: int, eos: int, max_length: int) -> torch.Tensor:
    """Token ids for teacher forcing: no start token (the model shifts it in), one end token, -100 padding."""
    sequences = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True).input_ids
        if ids and ids[0] == decoder_start:
            ids = ids[1:]
        if not ids or ids[-1] != eos:
            ids = ids + [eos]
        sequences.append(ids[:max_length])
    longest = max(len(ids) for ids in sequences)
    labels = torch.full((len(sequences), longest), -100, dtype=torch.long)
    for row, ids in enumerate(sequences):
        labels[row, : len(ids)] = torch.tensor(ids)
    return labels


def ctc_targets(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    index = compact_trocr.CTC_INDEX
    targets = [[index[c] for c in text if c in index] for text in texts]
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
    return flat, lengths


def evaluate(
    model_dir: Path,
    rows: list[tuple[Path, str]],
    batch_size: int = 64,
    lexicon=None,
    greedy: bool = False,
    n_best: int = 1,
    deslant_below: float = DESLANT_BELOW,
    **options,
) -> dict:
    """CER, WER, word accuracy and time per crop; decoded as the service decodes (`greedy`: the decoder alone,
    one reading per crop; `options`: the Recognizer's, such as backend, encoder_onnx, device and dtype)."""
    recognizer = Recognizer(
        model_dir,
        batch_size=batch_size,
        lexicon=lexicon,
        ctc_weight=0.0 if greedy else None,
        n_best=n_best,
        deslant_below=0.0 if greedy else deslant_below,
        **options,
    )
    started = time.perf_counter()
    crops = [Image.open(path).convert("L") for path, _ in rows]
    predictions = recognizer.predict(crops, [is_line(path) for path, _ in rows])
    seconds = time.perf_counter() - started
    references = [text for _, text in rows]
    hypotheses = [p.text for p in predictions]
    cer, wer = error_rates(references, hypotheses)
    exact = sum(r == h for r, h in zip(references, hypotheses, strict=True)) / max(1, len(rows))
    return {
        "cer": cer,
        "wer": wer,
        "word_accuracy": exact,
        "crops": len(rows),
        "ms_per_crop": 1000 * seconds / max(1, len(rows)),
    }


def load_model(args: argparse.Namespace, config: dict) -> tuple[LoadedCheckpoint, dict]:
    """The checkpoint to train (a fresh compact TrOCR, or `--init-from`) and the training state it carries."""
    state = {"recipe": [], "history": [], "steps": 0, "seconds": 0.0, "best_cer": math.inf}
    if args.init_from:
        previous = args.init_from / "training_state.json"
        if previous.exists():
            state.update(json.loads(previous.read_text()))
            state["best_cer"] = math.inf  # re-measured on this run's validation set
        return load_checkpoint(args.init_from, args.device), state
    tokenizer = compact_trocr.build_char_tokenizer()
    model = compact_trocr.build_model(tokenizer, config.get("encoder"), config.get("decoder"), config["max_length"])
    encoder_config = model.config.encoder

    def preprocess(crops, lines=False):
        return compact_trocr.prepare_pixels(crops, encoder_config.image_height, encoder_config.image_width)

    return LoadedCheckpoint(model, tokenizer, preprocess), state


class Trainer:
    """One optimisation step at a time: teacher-forced cross-entropy, plus the encoder's CTC loss when it
    has a CTC head and is trained. With `freeze_encoder` the encoder (weights and batch norms) stays as loaded."""

    def __init__(self, checkpoint: LoadedCheckpoint, config: dict, device: str):
        self.checkpoint, self.config, self.device = checkpoint, config, device
        model = checkpoint.model.to(device).train()
        self.frozen = bool(config.get("freeze_encoder"))
        has_ctc = hasattr(model.encoder, "ctc_logits")
        # a frozen encoder may keep some parts learning (`train_encoder_parts`, such as its neck and CTC head: the
        # fine-tuning on corrections); its batch norms stay as loaded either way
        parts = config.get("train_encoder_parts", []) if self.frozen else []
        if self.frozen:
            model.encoder.requires_grad_(False)
            model.encoder.eval()
            for part in parts:
                getattr(model.encoder, part).requires_grad_(True)
        self.encoder_learns = not self.frozen or bool(parts)
        # `freeze_decoder`: the decoder stays as loaded (and in eval mode), its loss still teaching the encoder: a
        # cheaper input (training.encoder_input) learning to give the states the shipped decoder reads
        self.decoder_frozen = bool(config.get("freeze_decoder"))
        if self.decoder_frozen:
            model.decoder.requires_grad_(False)
        ctc_learns = has_ctc and (not self.frozen or "ctc_head" in parts)
        self.ctc_weight = config.get("ctc_weight", 0) if ctc_learns else 0
        self.ctc_loss = torch.nn.CTCLoss(blank=0, zero_infinity=True)
        self.decoder_start = model.config.decoder_start_token_id
        self.eos = model.generation_config.eos_token_id
        trainable = [p for p in model.parameters() if p.requires_grad]
        # an encoder that learns may learn more slowly than the decoder (`encoder_learning_rate`): it keeps more of
        # what it knew (PP-OCR's real text) while it adapts, say to another input height (training.encoder_input)
        encoder_ids = {id(p) for p in model.encoder.parameters()}
        groups = [
            {"params": [p for p in trainable if id(p) not in encoder_ids]},
            {
                "params": [p for p in trainable if id(p) in encoder_ids],
                "lr": config.get("encoder_learning_rate", config["learning_rate"]),
            },
        ]
        groups = [group for group in groups if group["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=config["learning_rate"], weight_decay=0.01)
        self.trainable = trainable
        # `freeze_batch_norm`: the batch norms keep the statistics they were loaded with while the weights learn
        self.batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.freeze_batch_norm = bool(config.get("freeze_batch_norm"))
        # `distill_from`: a teacher recognizer (the shipped one) whose encoder states the encoder learns to give as
        # well (`distill_weight` x their mean squared distance over each crop's own columns), each crop read by the
        # teacher at its own input height and its columns resampled to the student's: what the teacher learnt from
        # real text stays in the student while it learns, say, a cheaper input height from synthetic crops
        self.teacher = None
        if config.get("distill_from"):
            self.teacher = load_checkpoint(config["distill_from"], device)
            self.teacher.model.encoder.requires_grad_(False)
            self.teacher.model.encoder.eval()
        self.distill_weight = config.get("distill_weight", 1.0)
        self.train(True)

    def train(self, on: bool) -> None:
        self.checkpoint.model.train(on)
        if self.frozen:
            self.checkpoint.model.encoder.eval()
        if self.decoder_frozen:
            self.checkpoint.model.decoder.eval()
        if self.freeze_batch_norm:
            for module in self.batch_norms:
                module.eval()

    def step(self, crops: list[Image.Image], texts: list[str], lines: bool | list[bool] = False) -> float:
        """One optimiser step; `lines`: which crops are whole lines (read at their full width)."""
        model = self.checkpoint.model
        pixel_values = self.checkpoint.preprocess(crops, lines).to(self.device)
        labels = label_ids(self.checkpoint.tokenizer, texts, self.decoder_start, self.eos, self.config["max_length"])
        with torch.set_grad_enabled(self.encoder_learns):
            encoder_outputs = model.encoder(pixel_values=pixel_values)
        # each crop's own columns, as the service decodes them (not the batch's padding beside it): the decoder
        # attends to them only and the CTC head reads them only
        width = encoder_outputs.last_hidden_state.shape[1]
        owned = getattr(model.encoder, "owned_columns", None)
        columns = owned(pixel_values, width) if owned else [width] * len(texts)
        with own_columns(model, columns, width):
            loss = model(encoder_outputs=encoder_outputs, labels=labels.to(self.device)).loss
        if self.teacher is not None:
            loss = loss + self.distill_weight * self._distance_to_teacher(crops, encoder_outputs, columns, lines)
        if self.ctc_weight:
            log_probs = model.encoder.ctc_logits(encoder_outputs.last_hidden_state).log_softmax(-1)
            targets, target_lengths = ctc_targets(texts)
            input_lengths = torch.tensor(columns, dtype=torch.long)
            loss = loss + self.ctc_weight * self.ctc_loss(
                log_probs.transpose(0, 1), targets.to(log_probs.device), input_lengths, target_lengths
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        return loss.item()

    def _distance_to_teacher(
        self, crops: list[Image.Image], outputs, columns: list[int], lines: bool | list[bool] = False
    ) -> torch.Tensor:
        """Mean squared distance between the student's encoder states and the teacher's, resampled (linearly) to the
        student's columns, over each crop's own columns. Both read the same crops, so a crop spans about the same
        share of its batch's width in both (each pads to its widest crop)."""
        with torch.no_grad():
            pixels = self.teacher.preprocess(crops, lines).to(self.device)
            target = self.teacher.model.encoder(pixel_values=pixels).last_hidden_state
        states = outputs.last_hidden_state
        target = F.interpolate(target.transpose(1, 2), size=states.shape[1], mode="linear", align_corners=False)
        own = (
            torch.arange(states.shape[1], device=states.device)[None, :]
            < torch.tensor(columns, device=states.device)[:, None]
        )
        squared = ((states - target.transpose(1, 2)) ** 2).mean(dim=-1)
        return (squared * own).sum() / own.sum().clamp(min=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[Path("data/synth/recognizer")],
        help="dataset folders, each with train/ (and val/); their crops are mixed",
    )
    parser.add_argument(
        "--val", type=Path, nargs="+", help="validation crops that pick the best checkpoint (default: each DATA/val)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/recognizer"))
    parser.add_argument("--config", type=Path, default=Path("training/configs/recognizer_cpu.json"))
    parser.add_argument("--init-from", type=Path, help="a local TrOCR checkpoint to resume or fine-tune")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget")
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())
    config.setdefault("bucket_batches", BUCKET_BATCHES)  # (in the recipe: how its batches were drawn)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    checkpoint, state = load_model(args, config)
    trainer = Trainer(checkpoint, config, args.device)
    train_sets = [
        [(p, t) for p, t in read_split(data / "train") if 0 < len(t) <= config["max_length"] - 1] for data in args.data
    ]
    for data, rows in zip(args.data, train_sets, strict=True):
        if not rows:
            raise SystemExit(f"{data}/train has no crop with a text of 1 to {config['max_length'] - 1} characters")
    train_rows = [row for rows in train_sets for row in rows]
    val_folders = args.val or [data / "val" for data in args.data]
    val_rows = [row for folder in val_folders for row in read_split(folder)]
    rng.shuffle(val_rows)
    val_rows = val_rows[: config["eval_samples"]]
    parameters = sum(p.numel() for p in checkpoint.model.parameters()) / 1e6
    trained = sum(p.numel() for p in trainer.trainable) / 1e6
    print(
        f"train crops {len(train_rows)}, val crops {len(val_rows)}, params {parameters:.2f}M ({trained:.2f}M trained)"
    )

    budget = args.minutes * 60
    started = time.perf_counter()

    def lr_at(step: int) -> float:
        """Linear warm-up, then cosine decay over the time budget (or the step budget, if it ends first)."""
        if step < config["warmup_steps"]:
            return (step + 1) / config["warmup_steps"]
        progress = min(1.0, max((time.perf_counter() - started) / budget, step / args.max_steps))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lr_at)
    args.out.mkdir(parents=True, exist_ok=True)
    state["recipe"].append(
        {
            "config": config,
            "init_from": str(args.init_from) if args.init_from else None,
            "data": [str(d) for d in args.data],
            "val": [str(v) for v in val_folders],
            "minutes": args.minutes,
            "device": args.device,
        }
    )
    step = 0
    running = None
    draws = batches(train_sets, config["batch_size"], rng, config["bucket_batches"])

    def save_if_best() -> None:
        trainer.train(False)
        tmp = args.out / "last"
        checkpoint.save(tmp)
        metrics = evaluate(tmp, val_rows)
        trainer.train(True)
        entry = {"step": state["steps"] + step, "minutes": round((time.perf_counter() - started) / 60, 1), **metrics}
        state["history"].append(entry)
        print(json.dumps(entry), flush=True)
        if metrics["cer"] < state["best_cer"]:
            state["best_cer"] = metrics["cer"]
            checkpoint.save(args.out)
        (args.out / "training_state.json").write_text(json.dumps({**state, "steps_this_run": step}, indent=1))

    while step < args.max_steps and time.perf_counter() - started < budget:
        batch = next(draws)
        crops = [jitter_crop(Image.open(p).convert("L"), rng, config.get("box_jitter", 0.0)) for p, _ in batch]
        loss = trainer.step(crops, [t for _, t in batch], [is_line(p) for p, _ in batch])
        scheduler.step()
        step += 1
        running = loss if running is None else 0.98 * running + 0.02 * loss
        if step % 50 == 0:
            elapsed = time.perf_counter() - started
            print(
                f"step {step} loss {running:.3f} lr {scheduler.get_last_lr()[0]:.2e} {elapsed / step:.2f}s/step",
                flush=True,
            )
        if step % config["eval_every"] == 0:
            save_if_best()
    state["seconds"] = state.get("seconds", 0.0) + (time.perf_counter() - started)
    save_if_best()
    state["steps"] = state.get("steps", 0) + step
    (args.out / "training_state.json").write_text(json.dumps(state, indent=1))
    print(f"done: {step} steps, best val CER {state['best_cer']:.4f}, saved to {args.out}")


if __name__ == "__main__":
    main()
