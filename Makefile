# One entry point for people and CI. `make demo` and `make test` set themselves up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# no copy in ~/.cache/pip of the wheels pip downloads: torch's CUDA build and its nvidia libraries are about 3 GB of
# wheels, beside the 7.5 GB venv (a CI run failed for the disk: "No space left on device" while installing the extras)
export PIP_NO_CACHE_DIR := 1

.PHONY: setup demo serve test containers protos check-protos lint data train-detector train-recognizer evaluate models

setup: $(VENV)/.installed

# torch and torchvision first, pinned to the pair that works with ultralytics on these machines
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e '.[models,dev,training,aws]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, torchvision, ultralytics, transformers, grpc"
	touch $@

## Run: start the stack on the shipped models and OCR the sample page through it.
demo: setup
	scripts/demo.sh

## Run the stack in the foreground (gRPC :50051, Envoy REST+gRPC :8080) until Ctrl-C.
serve: setup
	$(VENV)/bin/handwriting serve

## Test: lint, proto checks, the whole suite.
test: setup
	scripts/test.sh

protos: setup
	scripts/gen_protos.sh

# --- training (see training/README.md) ---
data: setup
	PYTHONPATH=. $(PY) -m training.make_data --out data/synth --train-pages 1200 --val-pages 60

train-detector: setup
	PYTHONPATH=. $(PY) -m training.train_detector --data data/synth/detector/data.yaml --out runs/detector

train-recognizer: setup
	PYTHONPATH=. $(PY) -m training.train_recognizer --data data/synth/recognizer --out runs/recognizer

evaluate: setup
	PYTHONPATH=. $(PY) -m training.evaluate --pages data/synth/pages/val

## Containers: build every image on a local base, run the compose stack on the CPU, OCR through it, stop it.
containers: setup
	PYTHONPATH=. $(PY) -m deploy.containers
