"""Average the weights of recognizer checkpoints that share one architecture (a "model soup",
Wortsman et al. 2022; stochastic weight averaging, Izmailov et al. 2018).

    python -m training.average_checkpoints runs/recognizer-r7 runs/recognizer-r7/last models/recognizer \
        --out runs/recognizer-soup

Checkpoints along one fine-tuning path sit in one basin, so their mean is a model too, and often a
better one than any of them: it costs no training and no inference time. The output directory is a
complete checkpoint (config, tokenizer and generation config from the first input); its
`training_state.json` is the first input's, with the averaging appended to the recipe. Compare the
result with its inputs on validation crops before shipping it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
STATE = "training_state.json"


def average(inputs: list[Path], out: Path) -> None:
    if len(inputs) < 2:
        raise ValueError("give at least two checkpoints to average")
    tensors = [load_file(path / WEIGHTS) for path in inputs]
    names = set(tensors[0])
    for path, weights in zip(inputs[1:], tensors[1:], strict=True):
        if set(weights) != names or any(weights[n].shape != tensors[0][n].shape for n in names):
            raise ValueError(f"{path} does not have the architecture of {inputs[0]}")
    averaged = {}
    for name, first in tensors[0].items():
        if first.is_floating_point():
            averaged[name] = (sum(t[name].double() for t in tensors) / len(tensors)).to(first.dtype).contiguous()
        else:  # integer buffers (position ids and the like) are the same in every checkpoint
            averaged[name] = first.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    for source in inputs[0].iterdir():
        if source.is_file() and source.name not in (WEIGHTS, STATE):
            shutil.copy2(source, out / source.name)
    save_file(averaged, out / WEIGHTS, metadata={"format": "pt"})
    state = json.loads((inputs[0] / STATE).read_text()) if (inputs[0] / STATE).exists() else {"recipe": []}
    state.setdefault("recipe", []).append({"average_of": [str(path) for path in inputs]})
    (out / STATE).write_text(json.dumps(state, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint directories of one architecture")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    average(args.checkpoints, args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}")


if __name__ == "__main__":
    main()
