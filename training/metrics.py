"""Accuracy metrics for OCR: character and word error rates, box matching for detection."""

from __future__ import annotations

from collections.abc import Sequence


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


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def match_boxes(truth: Sequence, predicted: Sequence, threshold: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU; returns the number of true positives."""
    pairs = sorted(
        ((box_iou(t, p), ti, pi) for ti, t in enumerate(truth) for pi, p in enumerate(predicted)), reverse=True
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
