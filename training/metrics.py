"""Accuracy metrics for OCR: character and word error rates, box matching for detection."""

from __future__ import annotations

from collections.abc import Sequence

from services.common import geometry


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance between two sequences (characters or words)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_item in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_item != hyp_item))
        previous = current
    return previous[-1]


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, float]:
    """Corpus CER and WER: total edits over total reference characters / words."""
    char_edits = char_total = word_edits = word_total = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        char_edits += edit_distance(reference, hypothesis)
        char_total += len(reference)
        word_edits += edit_distance(reference.split(), hypothesis.split())
        word_total += len(reference.split())
    return char_edits / max(1, char_total), word_edits / max(1, word_total)


def match_boxes(truth: Sequence, predicted: Sequence, threshold: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU; returns the number of true positives."""
    pairs = sorted(
        ((geometry.iou(t, p), ti, pi) for ti, t in enumerate(truth) for pi, p in enumerate(predicted)), reverse=True
    )
    used_truth, used_pred, matched = set(), set(), 0
    for iou, ti, pi in pairs:
        if iou < threshold:
            break
        if ti in used_truth or pi in used_pred:
            continue
        used_truth.add(ti)
        used_pred.add(pi)
        matched += 1
    return matched
