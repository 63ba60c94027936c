"""A page's result in the formats other OCR tools read: hOCR (1.2), PAGE-XML (2019-07-15) and plain text.

    from handwriting.formats import to_hocr, to_page_xml
    xml = to_page_xml(response.page, image_name="page.png")

All come from the one `handwriting.v1.Page` message (lines in reading order, words with boxes and
confidences). Words read with a confidence under `review_below` are flagged for review in each format:
hOCR `x_wconf` and the class `ocrx_word review`, PAGE-XML `TextEquiv/@conf` and `custom="review {true}"`.
`tests/test_formats.py` validates the PAGE-XML against the official schema (`handwriting/schemas/`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree

from handwriting.v1 import geometry_pb2, page_pb2

REVIEW_BELOW = 0.5  # a word read with less confidence than this is flagged for a person to check
PAGE_NAMESPACE = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_SCHEMA_LOCATION = f"{PAGE_NAMESPACE} {PAGE_NAMESPACE}/pagecontent.xsd"


def _box(poly) -> tuple[int, int, int, int]:
    xs = [v.x for v in poly.vertices] or [0]
    ys = [v.y for v in poly.vertices] or [0]
    return min(xs), min(ys), max(xs), max(ys)


def to_text(page: page_pb2.Page) -> str:
    return "\n".join(line.text for line in page.lines)


def to_hocr(page: page_pb2.Page, image_name: str = "page.png", review_below: float = REVIEW_BELOW) -> str:
    """hOCR 1.2: ocr_page > ocr_line > ocrx_word, each with `bbox`; words with `x_wconf` (0-100)."""
    html = ElementTree.Element("html", {"xmlns": "http://www.w3.org/1999/xhtml", "xml:lang": "en", "lang": "en"})
    head = ElementTree.SubElement(html, "head")
    ElementTree.SubElement(head, "title").text = image_name
    ElementTree.SubElement(head, "meta", {"http-equiv": "Content-Type", "content": "text/html;charset=utf-8"})
    ElementTree.SubElement(head, "meta", {"name": "ocr-system", "content": "handwriting-ocr"})
    capabilities = "ocr_page ocr_line ocrx_word"
    ElementTree.SubElement(head, "meta", {"name": "ocr-capabilities", "content": capabilities})
    body = ElementTree.SubElement(html, "body")
    title = f'image "{image_name}"; bbox 0 0 {page.width} {page.height}'
    page_div = ElementTree.SubElement(body, "div", {"class": "ocr_page", "id": "page_1", "title": title})
    for line_number, line in enumerate(page.lines, 1):
        left, top, right, bottom = _box(line.bounding_poly)
        line_span = ElementTree.SubElement(
            page_div,
            "span",
            {"class": "ocr_line", "id": f"line_1_{line_number}", "title": f"bbox {left} {top} {right} {bottom}"},
        )
        for word_number, word in enumerate(line.words, 1):
            left, top, right, bottom = _box(word.bounding_poly)
            span = ElementTree.SubElement(
                line_span,
                "span",
                {
                    "class": "ocrx_word review" if word.confidence < review_below else "ocrx_word",
                    "id": f"word_1_{line_number}_{word_number}",
                    "title": f"bbox {left} {top} {right} {bottom}; x_wconf {round(100 * word.confidence)}",
                },
            )
            span.text = word.text
            span.tail = " "
    ElementTree.indent(html)
    return '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n' + ElementTree.tostring(html, "unicode") + "\n"


def _points(poly) -> str:
    left, top, right, bottom = _box(poly)
    return f"{left},{top} {right},{top} {right},{bottom} {left},{bottom}"


def to_page_xml(
    page: page_pb2.Page,
    image_name: str = "page.png",
    review_below: float = REVIEW_BELOW,
    created: datetime | None = None,
) -> str:
    """PAGE-XML 2019-07-15: one TextRegion holding the lines in reading order, each line's words with their
    coordinates and text; TextEquiv `conf` is the recognizer's confidence."""
    ElementTree.register_namespace("", PAGE_NAMESPACE)
    ns = f"{{{PAGE_NAMESPACE}}}"
    when = (created or datetime.now(UTC)).replace(microsecond=0).isoformat()
    root = ElementTree.Element(
        f"{ns}PcGts",
        {"{http://www.w3.org/2001/XMLSchema-instance}schemaLocation": PAGE_SCHEMA_LOCATION},
    )
    metadata = ElementTree.SubElement(root, f"{ns}Metadata")
    ElementTree.SubElement(metadata, f"{ns}Creator").text = "handwriting-ocr"
    ElementTree.SubElement(metadata, f"{ns}Created").text = when
    ElementTree.SubElement(metadata, f"{ns}LastChange").text = when
    page_element = ElementTree.SubElement(
        root, f"{ns}Page", {"imageFilename": image_name, "imageWidth": str(page.width), "imageHeight": str(page.height)}
    )
    if page.lines:
        order = ElementTree.SubElement(page_element, f"{ns}ReadingOrder")
        ElementTree.SubElement(
            ElementTree.SubElement(order, f"{ns}OrderedGroup", {"id": "ro_1"}),
            f"{ns}RegionRefIndexed",
            {"index": "0", "regionRef": "region_1"},
        )
        region = ElementTree.SubElement(page_element, f"{ns}TextRegion", {"id": "region_1"})
        everything = geometry_pb2.BoundingPoly(vertices=[v for line in page.lines for v in line.bounding_poly.vertices])
        ElementTree.SubElement(region, f"{ns}Coords", {"points": _points(everything)})
        for line_number, line in enumerate(page.lines, 1):
            line_element = ElementTree.SubElement(region, f"{ns}TextLine", {"id": f"line_{line_number}"})
            ElementTree.SubElement(line_element, f"{ns}Coords", {"points": _points(line.bounding_poly)})
            for word_number, word in enumerate(line.words, 1):
                attributes = {"id": f"word_{line_number}_{word_number}"}
                if word.confidence < review_below:
                    attributes["custom"] = "review {true}"
                word_element = ElementTree.SubElement(line_element, f"{ns}Word", attributes)
                ElementTree.SubElement(word_element, f"{ns}Coords", {"points": _points(word.bounding_poly)})
                _text_equiv(word_element, word.text, word.confidence, ns)
            _text_equiv(line_element, line.text, line.confidence, ns)
        _text_equiv(region, "\n".join(line.text for line in page.lines), page.confidence, ns)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, "unicode") + "\n"


def _text_equiv(parent: ElementTree.Element, text: str, confidence: float, ns: str) -> None:
    equiv = ElementTree.SubElement(parent, f"{ns}TextEquiv", {"conf": f"{min(1.0, max(0.0, confidence)):.3f}"})
    ElementTree.SubElement(equiv, f"{ns}Unicode").text = text


WRITERS = {"hocr": to_hocr, "page": to_page_xml}
