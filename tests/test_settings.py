"""Settings come from HW_* variables into frozen objects; bad or missing values stop start-up."""

from __future__ import annotations

import dataclasses

import pytest

from services.common import settings
from services.common.settings import OrchestratorSettings, RecognizerSettings, SettingsError


def test_reads_typed_values_from_the_environment():
    loaded = settings.load(RecognizerSettings, {"HW_PORT": "6000", "HW_BEAM_SIZE": "4", "HW_DEVICE": "cuda"})
    assert (loaded.port, loaded.beam_size, loaded.device) == (6000, 4, "cuda")
    assert loaded.max_image_pixels == 40_000_000  # default kept
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.port = 1


def test_bad_values_name_the_variable():
    with pytest.raises(SettingsError, match="HW_PORT='eighty'"):
        settings.load(OrchestratorSettings, {"HW_PORT": "eighty"})
    with pytest.raises(SettingsError, match="HW_TRACING"):
        settings.load(OrchestratorSettings, {"HW_TRACING": "yes"})


def test_required_fields_fail_with_a_clear_message():
    @dataclasses.dataclass(frozen=True)
    class Needs:
        detector_address: str

    with pytest.raises(SettingsError, match="HW_DETECTOR_ADDRESS is required"):
        settings.load(Needs, {})


def test_recognizer_lexicon_setting(tmp_path):
    from services.common.settings import RecognizerSettings
    from services.recognizer.lexicon import DEFAULT_WEIGHT, find_lexicon
    from services.recognizer.model import DESLANT_BELOW, ENCODER_BATCH_SIZE

    assert RecognizerSettings().lexicon_weight == DEFAULT_WEIGHT  # the service and the library agree
    assert RecognizerSettings().deslant_below == DESLANT_BELOW
    assert RecognizerSettings().encoder_batch_size == ENCODER_BATCH_SIZE

    assert find_lexicon(tmp_path) is None  # auto, and the model has none
    (tmp_path / "lexicon.tsv").write_text("word\t5.0\n")
    assert find_lexicon(tmp_path).zipf == {"word": 5.0}
    assert find_lexicon(tmp_path, "off") is None
    other = tmp_path / "other.tsv"
    other.write_text("line\t4.0\n")
    assert find_lexicon(tmp_path, str(other), weight=0.5) == find_lexicon(tmp_path, str(other), weight=0.5)
    assert find_lexicon(tmp_path, str(other), weight=0.5).weight == 0.5
    with pytest.raises(FileNotFoundError):
        find_lexicon(tmp_path, str(tmp_path / "missing.tsv"))


def test_the_orchestrators_defaults_are_the_libraries():
    from handwriting.formats import REVIEW_BELOW
    from services.common.settings import OrchestratorSettings
    from services.orchestrator.ink import GAP_RATIO
    from services.orchestrator.pipeline import PipelineOptions

    assert OrchestratorSettings().review_below == REVIEW_BELOW  # the flags in responses and in exports agree
    assert OrchestratorSettings().missed_words is PipelineOptions().missed_words
    assert PipelineOptions().missed_word_gap == GAP_RATIO


def test_detector_settings_agree_with_the_library():
    from services.common.settings import DetectorSettings
    from services.detector.model import EXTEND_SCORE

    assert DetectorSettings().detector_extend_score == EXTEND_SCORE


def test_the_model_queues_hold_what_the_orchestrator_sends():
    from services.common.settings import DetectorSettings, OrchestratorSettings, RecognizerSettings
    from services.detector.server import DetectorServicer
    from services.recognizer.server import RecognizerServicer

    pages, calls = OrchestratorSettings().max_pages_in_flight, OrchestratorSettings().recognizer_concurrency
    # at the defaults, a full orchestrator's calls wait in the model services' queues instead of being refused
    assert RecognizerSettings().batch_max_queue >= pages * calls
    assert DetectorSettings().batch_max_queue >= pages
    # HW_BATCH_MAX_QUEUE reaches each service's queue
    assert RecognizerServicer(RecognizerSettings(batch_max_queue=3)).runner.max_queue == 3
    assert DetectorServicer(DetectorSettings(batch_max_queue=5)).runner.max_queue == 5
    # two recognizer calls at once by default (benchmarks/README.md, "Under load"), as HW_BATCH_CONCURRENCY says
    assert RecognizerServicer(RecognizerSettings()).runner.concurrency == 2
    assert RecognizerServicer(RecognizerSettings(batch_concurrency=1)).runner.concurrency == 1


def test_grpc_refuses_calls_only_past_what_each_service_admits():
    from services.common.settings import DetectorSettings

    # derived: twice the service's own admission, at least 64
    assert DetectorSettings().rpc_limit == OrchestratorSettings().rpc_limit == 64
    assert RecognizerSettings().rpc_limit == 128  # its queue of 64 calls: 16 pages in flight x 4 calls
    assert RecognizerSettings(batch_max_queue=256).rpc_limit == 512  # the AWS template's recognizer queue
    assert DetectorSettings(batch_max_queue=40).rpc_limit == 80
    assert OrchestratorSettings(max_pages_in_flight=48).rpc_limit == 96
    environ = {"HW_BATCH_MAX_QUEUE": "128", "HW_MAX_CONCURRENT_RPCS": "300"}
    assert settings.load(RecognizerSettings, environ).rpc_limit == 300
    # a set limit that gRPC would reach before the service's own admission is a clear error at start
    environ["HW_MAX_CONCURRENT_RPCS"] = "64"
    with pytest.raises(SettingsError, match="HW_MAX_CONCURRENT_RPCS=64 leaves no room past the 128 requests"):
        settings.load(RecognizerSettings, environ)
    with pytest.raises(SettingsError, match="HW_MAX_CONCURRENT_RPCS=8 leaves no room past the 16"):
        settings.load(OrchestratorSettings, {"HW_MAX_CONCURRENT_RPCS": "8"})


def test_the_recognizers_batches_default_by_device_and_reach_the_model_runner():
    from services.recognizer.server import RecognizerServicer

    cpu, gpu = RecognizerSettings(), settings.load(RecognizerSettings, {"HW_DEVICE": "cuda"})
    # measured on an H200 (benchmarks/README.md, "Measured on a GPU")
    assert (cpu.model_batch, gpu.model_batch) == (32, 128)
    assert RecognizerServicer(gpu).runner.max_items == RecognizerServicer(cpu).runner.max_items == 512
    chosen = settings.load(
        RecognizerSettings, {"HW_DEVICE": "cuda", "HW_MODEL_BATCH_SIZE": "64", "HW_BATCH_MAX_CROPS": "96"}
    )
    assert chosen.model_batch == 64 and RecognizerServicer(chosen).runner.max_items == 96
