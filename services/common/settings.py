"""Settings from environment variables, parsed once into frozen dataclasses.

Every field `name` of a settings class reads `HW_<NAME>`; a field without a default is required
and its absence stops the service at start with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path

PREFIX = "HW_"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DETECTOR_WEIGHTS = REPO_ROOT / "models" / "detector" / "detector.pt"
DEFAULT_RECOGNIZER_DIR = REPO_ROOT / "models" / "recognizer"


class SettingsError(ValueError):
    pass


def _convert(raw: str, kind: type, variable: str):
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError as error:
        raise SettingsError(f"{variable}={raw!r} is not a valid {kind.__name__}") from error


def load(cls: type, environ: typing.Mapping[str, str] | None = None):
    """Build `cls` from the environment."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        variable = PREFIX + field.name.upper()
        if variable in environ:
            values[field.name] = _convert(environ[variable], hints[field.name], variable)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SettingsError(f"{variable} is required ({cls.__name__}.{field.name})")
    loaded = cls(**values)
    return loaded.validate() if hasattr(loaded, "validate") else loaded


@dataclass(frozen=True)
class ServerSettings:
    """What every service has: where it listens, how it logs, traces and shuts down."""

    host: str = "0.0.0.0"
    port: int = 50051
    log_level: str = "INFO"
    max_message_mb: int = 64
    shutdown_grace_seconds: float = 10.0
    # calls in progress past which gRPC itself refuses more ("Concurrent RPC limit exceeded!", no RetryInfo),
    # health checks included. 0: twice the requests the service admits (`admits`), at least 64, so that its own
    # admission (a queue, pages in flight) answers first and health checks pass under full load
    max_concurrent_rpcs: int = 0
    tracing: str = "off"  # off | w3c | xray
    otlp_endpoint: str = "http://localhost:4317"
    service_name: str = ""
    reflection: bool = False  # gRPC server reflection: for development (grpcurl), it lists the API to any caller
    metrics: str = "off"  # off | emf: CloudWatch Embedded Metric Format records on stdout (services.common.metrics)
    metrics_interval_seconds: float = 10.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def admits(self) -> int:
        """Requests the service holds by its own admission control, past which it refuses them itself."""
        return 0

    @property
    def rpc_limit(self) -> int:
        """gRPC's cap on calls in progress: HW_MAX_CONCURRENT_RPCS, or derived from `admits`."""
        return self.max_concurrent_rpcs or max(64, 2 * self.admits)

    def validate(self) -> ServerSettings:
        """Cross-field checks, run by `load`."""
        if self.max_concurrent_rpcs < 0 or 0 < self.max_concurrent_rpcs <= self.admits:
            raise SettingsError(
                f"HW_MAX_CONCURRENT_RPCS={self.max_concurrent_rpcs} leaves no room past the {self.admits} requests"
                " this service admits: gRPC would refuse them before the service's own admission does (and health"
                " checks under load); raise it, or leave it 0 to derive it"
            )
        if self.tracing.lower() not in ("off", "w3c", "xray"):
            raise SettingsError(f"HW_TRACING must be off, w3c or xray, not {self.tracing!r}")
        if self.metrics.lower() not in ("off", "emf"):
            raise SettingsError(f"HW_METRICS must be off or emf, not {self.metrics!r}")
        if not 0 <= self.port < 65536:
            raise SettingsError(f"HW_PORT={self.port} is not a port")
        return self


@dataclass(frozen=True)
class ImageLimits:
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 20_000
    # what the decoded image may take (its own pixels and the 8-bit RGB copy), estimated from the header
    max_decoded_mb: int = 160
    # documents (ProcessDocument): the whole file, and its pages
    max_document_bytes: int = 32 * 1024 * 1024
    max_document_pages: int = 100


@dataclass(frozen=True)
class DetectorSettings(ServerSettings, ImageLimits):
    port: int = 50052
    detector_weights: str = str(DEFAULT_DETECTOR_WEIGHTS)
    # 640 px with NMS at IoU 0.3: see models/detector/README.md ("Inference settings")
    detector_image_size: int = 640
    detector_min_score: float = 0.25
    detector_iou: float = 0.3
    # word boxes may grow into the detector's weaker boxes scored from this up (services.detector.model); 0: never
    detector_extend_score: float = 0.1  # services.detector.model.EXTEND_SCORE
    # onnx: the network on ONNX Runtime (exported at start; on a CPU), torch: in torch (always on a GPU)
    backend: str = "onnx"
    # requests waiting for the model are found in one call of up to this many pages, waiting this long for more
    batch_max_pages: int = 8
    batch_wait_ms: float = 2.0
    # requests waiting for the model; more are refused at once (RESOURCE_EXHAUSTED)
    batch_max_queue: int = 32
    device: str = "cpu"
    torch_threads: int = 0  # HW_TORCH_THREADS: the models' threads, torch's and ONNX Runtime's (0: every core)
    service_name: str = "detector"

    @property
    def admits(self) -> int:
        return self.batch_max_queue


@dataclass(frozen=True)
class RecognizerSettings(ServerSettings, ImageLimits):
    port: int = 50053
    recognizer_model_dir: str = str(DEFAULT_RECOGNIZER_DIR)
    beam_size: int = 1
    # "auto": the model directory's lexicon.tsv when it has one; "off"; or the path of a lexicon file
    lexicon: str = "auto"
    lexicon_weight: float = 1.0  # services.recognizer.lexicon.DEFAULT_WEIGHT (not imported: no rapidfuzz here)
    lexicon_n_best: int = 1  # readings the decoder proposes (beam search when > 1); the CTC head adds its own
    ctc_weight: float = -1.0  # the CTC head's weight beside the decoder; -1: the model's own (0 for models without)
    max_new_tokens: int = 0  # 0: what the model was built for (32 for word models, 128 for line models)
    # crops the model reads at once (the decoder; torch's encoder too). 0: 32 on a CPU, 128 on a GPU, where the
    # page's 85 crops in one batch take 202 ms against 410 in three (benchmarks/README.md, "Measured on a GPU")
    model_batch_size: int = 0
    # requests waiting for the model are read in one call of up to this many crops (about 6 pages), waiting this
    # long for more: several pages' crops in one call cost less a page (benchmarks/README.md, "Under load": 16
    # clients on 2 cores, 99.5-106.4 pages/min against 82.5-101.9 with 128; an H200: 551 pages/min at 4 pages a
    # call, 934 at 16)
    batch_max_crops: int = 512
    batch_wait_ms: float = 5.0
    # requests waiting for the model; more are refused at once (RESOURCE_EXHAUSTED). The orchestrator's
    # HW_MAX_PAGES_IN_FLIGHT times its HW_RECOGNIZER_CONCURRENCY calls (16 x 4) fit
    batch_max_queue: int = 64
    # model calls at once, each of the requests waiting then: one call's serial parts (the page's last batch,
    # lexicon, deslant) overlap another's work (benchmarks/README.md, "Under load": 2 cores busy under load, not 1.75)
    batch_concurrency: int = 2
    # onnx: the encoder and the (greedy) decoder on ONNX Runtime, exported at start (on a CPU; on a GPU all in
    # torch); torch: all in torch
    backend: str = "onnx"
    # batches read side by side on a CPU, one core each (0: one per core)
    recognizer_workers: int = 0
    # with the decoder on ONNX Runtime: crops per encoder call (the decoder reads model_batch_size at once)
    encoder_batch_size: int = 8  # services.recognizer.model.ENCODER_BATCH_SIZE
    # where torch runs the model (a GPU, or HW_BACKEND=torch): float32, float16 or bfloat16 (half precision: GPUs);
    # with the onnx backend on a CPU, bfloat16 runs the encoder on OpenVINO in bfloat16 (where the CPU has it);
    # auto: bfloat16 there when the CPU computes it natively (AVX-512 BF16, AMX), float32 everywhere else
    dtype: str = "auto"
    # where the decoder runs on ONNX Runtime (a CPU): int8 (its products with a weight in int8, rewritten at start:
    # a third less of its work, reading as float32 does: models/recognizer/README.md, "The decoder in int8 by
    # default") or float32. Where torch runs it (a GPU), it runs in `dtype`
    decoder_dtype: str = "int8"
    # with the onnx backend: an encoder graph to run instead of the weights' own (training.quantize_encoder's int8)
    encoder_onnx: str = ""
    # crops read with a confidence under this whose ink leans are read again sheared upright; 0: never
    deslant_below: float = 0.6  # services.recognizer.model.DESLANT_BELOW
    max_crops_per_request: int = 512
    device: str = "cpu"
    torch_threads: int = 0  # HW_TORCH_THREADS: the models' threads, torch's and ONNX Runtime's (0: every core)
    service_name: str = "recognizer"

    @property
    def admits(self) -> int:
        return self.batch_max_queue

    @property
    def model_batch(self) -> int:
        """HW_MODEL_BATCH_SIZE, or its default for the device."""
        return self.model_batch_size or (128 if self.device.startswith("cuda") else 32)


@dataclass(frozen=True)
class OrchestratorSettings(ServerSettings, ImageLimits):
    port: int = 50051
    detector_address: str = "localhost:50052"
    recognizer_address: str = "localhost:50053"
    recognizer_batch_size: int = 32
    recognizer_concurrency: int = 4
    recognition_unit: str = "word"  # the recognizer reads "word" or "line" crops (services.orchestrator.pipeline)
    missed_words: bool = True  # also read the ink in wide gaps between a line's detected words (orchestrator/ink.py)
    # the page is downscaled to this longest side before it goes to the detector
    detector_max_side: int = 1280
    default_deadline_seconds: float = 60.0
    # admission: pages being processed at once; more are refused at once (RESOURCE_EXHAUSTED with RetryInfo)
    # before their image is decoded. Two cores with bfloat16 read about four pages a second: 16 is 4 s of queued
    # work, and the recognizer's calls, several pages' crops sorted by width together, waste less on padding than
    # with 8 (benchmarks/README.md, "16 pages in flight": 16 clients 243.8 and 234.7 pages/min against 228.0 and
    # 217.6). A page may hold HW_MAX_DECODED_MB (160) while it is read: 16 of them fit the AWS frontend task's 4 GB.
    max_pages_in_flight: int = 16
    max_concurrent_decodes: int = 2  # images decoded at once, in threads off the event loop (memory bound)
    # words read with a confidence under this are flagged needs_review (in the response and every export format)
    review_below: float = 0.5
    # where SubmitCorrection keeps word crops and their corrected text: a directory, or s3://bucket/prefix
    corrections_uri: str = "corrections"
    service_name: str = "orchestrator"

    @property
    def admits(self) -> int:
        return self.max_pages_in_flight
