"""One ultralytics data yaml over several datasets written by make_data / prepare_iam.

python -m training.combine_datasets data/synth data/synth-strips --out data/detector-all.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from services.common.geometry import CLASS_NAMES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = {"train": [], "val": [], "names": CLASS_NAMES}
    for dataset in args.datasets:
        for split in ("train", "val"):
            folder = (dataset / "detector" / "images" / split).resolve()
            if folder.exists() and any(folder.iterdir()):
                config[split].append(str(folder))
    args.out.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {args.out}: {len(config['train'])} train and {len(config['val'])} val folders")


if __name__ == "__main__":
    main()
