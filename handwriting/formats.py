"""A page's result in the formats other OCR tools read: hOCR (1.2), ALTO (4.4), PAGE-XML (2019-07-15) and
plain text.

    from handwriting.formats import to_alto, to_hocr, to_page_xml
    xml = to_page_xml(response.page, image_name="page.png")

All come from the one `handwriting.v1.Page` message (lines in reading order, words with boxes and
confidences). Every word carries its confidence, and the words the service flagged `needs_review`
(confidence under HW_REVIEW_BELOW, see `flag_for_review`) are marked in each XML format: hOCR with the class
`ocrx_word review` beside `x_wconf`, ALTO with `TAGREFS` to an `OtherTag` "review" beside `WC`, PAGE-XML with
`custom="review {needed:true;}"` beside `TextEquiv/@conf`. Plain text is the text alone.
`tests/test_formats.py` validates the PAGE-XML against the official schema (`handwriting/schemas/`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree

from handwriting.v1 import geometry_pb2, ocr_service_pb2, page_pb2

REVIEW_BELOW = 0.5  # a word read with less confidence than this is flagged for a person to check
ALTO_NAMESPACE = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_SCHEMA_LOCATION = f"{ALTO_NAMESPACE} http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
PAGE_NAMESPACE = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_SCHEMA_LOCATION = f"{PAGE_NAMESPACE} {PAGE_NAMESPACE}/pagecontent.xsd"


def _box(poly) -> tuple[int, int, int, int]:
    xs = [v.x for v in poly.vertices] or [0]
    ys = [v.y for v in poly.vertices] or [0]
    return min(xs), min(ys), max(xs), max(ys)


def flag_for_review(page: page_pb2.Page, below: float = REVIEW_BELOW) -> page_pb2.Page:
    """Sets `needs_review` on each word of `page` read with a confidence under `below` (in place)."""
    for line in page.lines:
        for word in line.words:
            word.needs_review = word.confidence < below
    return page


def to_text(page: page_pb2.Page, image_name: str = "page.png") -> str:
    return "\n".join(line.text for line in page.lines) + ("\n" if page.lines else "")


def to_hocr(page: page_pb2.Page, image_name: str = "page.png") -> str:
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
                    "class": "ocrx_word review" if word.needs_review else "ocrx_word",
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
                if word.needs_review:
                    attributes["custom"] = "review {needed:true;}"
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


def to_alto(page: page_pb2.Page, image_name: str = "page.png", created: datetime | None = None) -> str:
    """ALTO 4.4: Page > PrintSpace > one TextBlock > TextLine > String (CONTENT, box, WC) with SP between the
    words, in pixels; words to review point at the OtherTag "review" (TAGREFS)."""
    ElementTree.register_namespace("", ALTO_NAMESPACE)
    ns = f"{{{ALTO_NAMESPACE}}}"
    when = (created or datetime.now(UTC)).replace(microsecond=0).isoformat()
    root = ElementTree.Element(
        f"{ns}alto", {"{http://www.w3.org/2001/XMLSchema-instance}schemaLocation": ALTO_SCHEMA_LOCATION}
    )
    description = ElementTree.SubElement(root, f"{ns}Description")
    ElementTree.SubElement(description, f"{ns}MeasurementUnit").text = "pixel"
    source = ElementTree.SubElement(description, f"{ns}sourceImageInformation")
    ElementTree.SubElement(source, f"{ns}fileName").text = image_name
    processing = ElementTree.SubElement(description, f"{ns}Processing", {"ID": "processing_1"})
    ElementTree.SubElement(processing, f"{ns}processingDateTime").text = when
    software = ElementTree.SubElement(processing, f"{ns}processingSoftware")
    ElementTree.SubElement(software, f"{ns}softwareName").text = "handwriting-ocr"
    tags = ElementTree.SubElement(root, f"{ns}Tags")
    ElementTree.SubElement(
        tags,
        f"{ns}OtherTag",
        {"ID": "review", "LABEL": "review", "DESCRIPTION": "read with low confidence: a person should check it"},
    )
    layout = ElementTree.SubElement(root, f"{ns}Layout")
    page_element = ElementTree.SubElement(
        layout,
        f"{ns}Page",
        {"ID": "page_1", "PHYSICAL_IMG_NR": "1", "WIDTH": str(page.width), "HEIGHT": str(page.height)},
    )
    space = ElementTree.SubElement(
        page_element,
        f"{ns}PrintSpace",
        {"HPOS": "0", "VPOS": "0", "WIDTH": str(page.width), "HEIGHT": str(page.height)},
    )
    if page.lines:
        everything = geometry_pb2.BoundingPoly(vertices=[v for line in page.lines for v in line.bounding_poly.vertices])
        block = ElementTree.SubElement(space, f"{ns}TextBlock", {"ID": "block_1", **_alto_box(everything)})
        for line_number, line in enumerate(page.lines, 1):
            line_element = ElementTree.SubElement(
                block, f"{ns}TextLine", {"ID": f"line_{line_number}", **_alto_box(line.bounding_poly)}
            )
            for word_number, word in enumerate(line.words, 1):
                if word_number > 1:
                    previous = _box(line.words[word_number - 2].bounding_poly)
                    left, top, _, _ = _box(word.bounding_poly)
                    gap = {"WIDTH": str(max(0, left - previous[2])), "HPOS": str(previous[2]), "VPOS": str(top)}
                    ElementTree.SubElement(line_element, f"{ns}SP", gap)
                attributes = {
                    "ID": f"word_{line_number}_{word_number}",
                    "CONTENT": word.text,
                    **_alto_box(word.bounding_poly),
                    "WC": f"{min(1.0, max(0.0, word.confidence)):.3f}",
                }
                if word.needs_review:
                    attributes["TAGREFS"] = "review"
                ElementTree.SubElement(line_element, f"{ns}String", attributes)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, "unicode") + "\n"


def _alto_box(poly) -> dict[str, str]:
    left, top, right, bottom = _box(poly)
    return {"HPOS": str(left), "VPOS": str(top), "WIDTH": str(right - left), "HEIGHT": str(bottom - top)}


# name -> (writer, MIME type, file extension); the CLI's --format and the API's ExportFormat use the same table
WRITERS = {
    "text": (to_text, "text/plain; charset=utf-8", ".txt"),
    "hocr": (to_hocr, "text/html; charset=utf-8", ".hocr"),
    "alto": (to_alto, "application/xml", ".alto.xml"),
    "page": (to_page_xml, "application/xml", ".page.xml"),
}
EXPORT_FORMATS = {  # handwriting.v1.ExportFormat -> name in WRITERS
    ocr_service_pb2.EXPORT_FORMAT_TEXT: "text",
    ocr_service_pb2.EXPORT_FORMAT_HOCR: "hocr",
    ocr_service_pb2.EXPORT_FORMAT_ALTO: "alto",
    ocr_service_pb2.EXPORT_FORMAT_PAGE_XML: "page",
}


def export(page: page_pb2.Page, export_format: int, image_name: str = "page.png") -> ocr_service_pb2.Export:
    """`page` written in `export_format` (a handwriting.v1.ExportFormat value); ValueError for an unknown one."""
    name = EXPORT_FORMATS.get(export_format)
    if name is None:
        raise ValueError(f"unknown export format {export_format}; use one of {sorted(EXPORT_FORMATS)}")
    writer, mime_type, extension = WRITERS[name]
    return ocr_service_pb2.Export(
        format=export_format, content=writer(page, image_name), mime_type=mime_type, file_extension=extension
    )
