"""Handwriting OCR: the Python client for the OcrService (`from handwriting import OcrClient`)."""

from handwriting.client import OcrClient, OcrError

__all__ = ["OcrClient", "OcrError"]
