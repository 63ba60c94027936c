"""Fine-tune the recognizer on the corrections people submitted (SubmitCorrection, the web page's "correct").

    python -m training.finetune_corrections --corrections corrections --out runs/corrected \\
        [--model models/recognizer] [--replay data/synth-s17/recognizer/val] [--steps 300]
    python -m training.finetune_corrections --corrections s3://bucket/corrections ...   # the AWS store

The crops in the store were cut by `cut_crop`, as the service cuts them, so they are trained on as they are
(with the usual box jitter). The encoder stays frozen (it keeps what it knows of real ink); its CTC head and the
decoder learn, from batches drawn half from the corrections and half from `--replay` crops (a dataset folder
with labels.tsv, such as the synthetic training crops) so that the model does not forget the rest. Corrected
words that the lexicon lacks are added to the new model's lexicon, so its prior stops pulling them away.

It prints how the service's decoding reads the corrections (and the replay crops) before and after, and saves
the fine-tuned model to --out with the step recorded in its training_state.json. Serve it with
HW_RECOGNIZER_MODEL_DIR=<out>; commit it as the shipped model only when its card's figures say it is better.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shutil
import time
from pathlib import Path

import torch
from PIL import Image

from services.orchestrator.corrections import open_store
from services.recognizer import compact_trocr
from services.recognizer.checkpoint import load_checkpoint
from services.recognizer.lexicon import LEXICON_FILE, find_lexicon
from services.recognizer.model import Recognizer
from training.metrics import error_rates
from training.train_recognizer import Trainer, jitter_crop, read_split

CONFIG = {
    "freeze_encoder": True,
    "train_encoder_parts": ["ctc_head"],
    "ctc_weight": 1.0,
    "learning_rate": 1e-3,
    "batch_size": 16,
    "box_jitter": 0.05,
    "replay_share": 0.5,  # of each batch, from --replay
}
ADDED_WORD_ZIPF = 4.0  # a corrected word the lexicon lacks is taken as a common word (zipf 4: once in 10,000)


def load_corrections(uri: str) -> list[tuple[Image.Image, str]]:
    """(crop, text) of each stored correction whose text the recognizer's character set can write."""
    rows, skipped = [], 0
    for _, crop, record in open_store(uri).items():
        text = record["text"]
        if all(c in compact_trocr.CTC_INDEX or c == " " for c in text):
            rows.append((text, hashlib.sha256(crop).hexdigest(), crop))
        else:
            skipped += 1
    if skipped:
        print(f"{skipped} corrections skipped: characters outside the recognizer's set")
    # in an order that does not depend on the ids (random), so that a run with the same seed is the same run
    return [(Image.open(io.BytesIO(crop)).convert("L"), text) for text, _, crop in sorted(rows)]


def read(model_dir: Path, *crop_sets: list[Image.Image]) -> list[list[str]]:
    """How the service reads each set of crops with the model in `model_dir` (loaded once)."""
    recognizer = Recognizer(model_dir, lexicon=find_lexicon(model_dir))
    return [[r.text for r in recognizer.predict(crops)] for crops in crop_sets]


def report_all(results: dict, when: str, model_dir: Path, corrections: list, replay: list) -> None:
    """The corrections' (and replay crops') readings by the model in `model_dir`, into `results`."""
    sets = {"corrections": corrections, "replay": replay} if replay else {"corrections": corrections}
    readings = read(model_dir, *[[crop for crop, _ in rows] for rows in sets.values()])
    for (name, rows), texts in zip(sets.items(), readings, strict=True):
        key = when if name == "corrections" else f"replay_{when}"
        results[key] = report(f"{name} {when}", [text for _, text in rows], texts)


def report(name: str, truths: list[str], readings: list[str]) -> dict:
    cer, wer = error_rates(truths, readings)
    right = sum(t == r for t, r in zip(truths, readings, strict=True))
    print(f"{name}: CER {cer:.4f}, WER {wer:.4f}, {right}/{len(truths)} read right")
    return {"cer": round(cer, 4), "wer": round(wer, 4), "right": right, "count": len(truths)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corrections", required=True, help="the store: a directory or s3://bucket/prefix")
    parser.add_argument("--model", type=Path, default=Path("models/recognizer"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--replay", type=Path, help="a crops folder with labels.tsv mixed into every batch")
    parser.add_argument("--replay-limit", type=int, default=2000, help="crops of --replay to use (and measure)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    corrections = load_corrections(args.corrections)
    if not corrections:
        raise SystemExit(f"no usable corrections in {args.corrections}")
    replay = (
        [(Image.open(p).convert("L"), t) for p, t in read_split(args.replay, args.replay_limit)] if args.replay else []
    )
    texts = [t for _, t in corrections]
    results = {"corrections": len(corrections), "replay": len(replay), "steps": args.steps}
    report_all(results, "before", args.model, corrections, replay)

    checkpoint = load_checkpoint(args.model)
    trainer = Trainer(
        checkpoint, {**CONFIG, "max_length": checkpoint.model.config.decoder.max_position_embeddings}, "cpu"
    )
    trainer.train(True)
    size = CONFIG["batch_size"]
    started, half = time.perf_counter(), round(size * (1 - CONFIG["replay_share"])) if replay else size
    for step in range(1, args.steps + 1):
        batch = [rng.choice(corrections) for _ in range(half)]
        batch += [rng.choice(replay) for _ in range(CONFIG["batch_size"] - half)] if replay else []
        crops = [jitter_crop(crop, rng, CONFIG["box_jitter"]) for crop, _ in batch]
        loss = trainer.step(crops, [t for _, t in batch])
        if step % 25 == 0 or step == args.steps:
            print(f"step {step} loss {loss:.3f} {(time.perf_counter() - started) / step:.2f} s/step", flush=True)
    trainer.train(False)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(args.out)
    for extra in ("ATTRIBUTION.md", "licenses", "generation_config.json"):
        source = args.model / extra
        if source.is_dir():
            shutil.copytree(source, args.out / extra, dirs_exist_ok=True)
        elif source.exists() and not (args.out / extra).exists():
            shutil.copy(source, args.out / extra)
    lexicon = args.model / LEXICON_FILE
    if lexicon.exists():
        known = {line.split("\t", 1)[0] for line in lexicon.read_text(encoding="utf-8").splitlines()}
        added = sorted({word for text in texts for word in text.split() if word not in known})
        with open(args.out / LEXICON_FILE, "w", encoding="utf-8") as out:
            out.write(lexicon.read_text(encoding="utf-8"))
            out.writelines(f"{word}\t{ADDED_WORD_ZIPF}\n" for word in added)
        results["lexicon_added"] = added
    report_all(results, "after", args.out, corrections, replay)
    state_path = args.model / "training_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"recipe": []}
    state.setdefault("recipe", []).append(
        {"finetune_corrections": {"store": args.corrections, "model": str(args.model), **CONFIG, **results}}
    )
    (args.out / "training_state.json").write_text(json.dumps(state, indent=1))
    print(f"saved to {args.out}")
    return results


if __name__ == "__main__":
    main()
