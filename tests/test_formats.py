"""Output formats from one page: PAGE-XML validated against the official schema, hOCR's properties."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from handwriting.formats import EXPORT_FORMATS, export, flag_for_review, to_alto, to_hocr, to_page_xml, to_text
from handwriting.v1 import geometry_pb2, ocr_service_pb2, page_pb2

SCHEMAS = Path(__file__).resolve().parents[1] / "handwriting" / "schemas"


def poly(left, top, right, bottom) -> geometry_pb2.BoundingPoly:
    corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
    return geometry_pb2.BoundingPoly(vertices=[geometry_pb2.Vertex(x=x, y=y) for x, y in corners])


def sample() -> page_pb2.Page:
    words = [
        [("Dear", (10, 10, 60, 30), 0.98), ("Ann,", (70, 12, 120, 31), 0.91)],
        [("see", (10, 50, 50, 70), 0.95), ("yuo", (60, 50, 100, 72), 0.31), ("soon", (110, 50, 160, 70), 0.88)],
    ]
    lines = []
    for row in words:
        line_words = [page_pb2.Word(text=t, bounding_poly=poly(*b), confidence=c) for t, b, c in row]
        left, top = min(b[0] for _, b, _ in row), min(b[1] for _, b, _ in row)
        right, bottom = max(b[2] for _, b, _ in row), max(b[3] for _, b, _ in row)
        text = " ".join(t for t, _, _ in row)
        box = poly(left, top, right, bottom)
        lines.append(page_pb2.Line(text=text, bounding_poly=box, confidence=0.8, words=line_words))
    page = page_pb2.Page(width=200, height=100, text="Dear Ann,\nsee yuo soon", lines=lines, confidence=0.8)
    return flag_for_review(page, below=0.5)


@pytest.mark.parametrize("page", [sample(), page_pb2.Page(width=50, height=40)])
def test_page_xml_is_valid_against_the_2019_schema(page):
    import xmlschema

    schema = xmlschema.XMLSchema(str(SCHEMAS / "page-2019-07-15.xsd"))
    xml = to_page_xml(page, "scan.png", created=datetime(2026, 11, 29, tzinfo=UTC))
    schema.validate(xml)  # raises with the offending element when invalid
    if page.lines:
        root = ElementTree.fromstring(xml)
        ns = {"pc": "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"}
        words = root.findall(".//pc:Word", ns)
        assert [w.find("pc:TextEquiv/pc:Unicode", ns).text for w in words] == ["Dear", "Ann,", "see", "yuo", "soon"]
        assert [w.get("custom") for w in words] == [None, None, None, "review {needed:true;}", None]
        assert words[1].find("pc:Coords", ns).get("points") == "70,12 120,12 120,31 70,31"


def test_a_schema_violation_is_caught():
    import xmlschema

    schema = xmlschema.XMLSchema(str(SCHEMAS / "page-2019-07-15.xsd"))
    broken = to_page_xml(sample(), "scan.png").replace('imageWidth="200"', 'imageWidth="wide"')
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(broken)


def test_hocr_has_page_lines_and_words_with_boxes_and_confidence():
    root = ElementTree.fromstring(to_hocr(sample(), "scan.png").split("<!DOCTYPE html>\n", 1)[1])
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    page = root.find(".//h:div[@class='ocr_page']", ns)
    assert page.get("title") == 'image "scan.png"; bbox 0 0 200 100'
    lines = page.findall("h:span[@class='ocr_line']", ns)
    assert [line.get("title") for line in lines] == ["bbox 10 10 120 31", "bbox 10 50 160 72"]
    words = [w for line in lines for w in line.findall("h:span", ns)]
    assert [w.text for w in words] == ["Dear", "Ann,", "see", "yuo", "soon"]
    assert re.fullmatch(r"bbox 60 50 100 72; x_wconf 31", words[3].get("title"))
    assert words[3].get("class") == "ocrx_word review" and words[2].get("class") == "ocrx_word"


def test_text_is_the_lines_in_reading_order():
    assert to_text(sample()) == "Dear Ann,\nsee yuo soon\n"
    assert to_text(page_pb2.Page(width=5, height=5)) == ""


def test_review_flags_follow_the_threshold():
    page = flag_for_review(sample(), below=0.9)
    assert [w.needs_review for line in page.lines for w in line.words] == [False, False, False, True, True]


def test_alto_has_the_v4_structure_boxes_confidences_and_review_tags():
    """ALTO 4's official schema is not reachable from these machines (no package on PyPI, npm or Debian ships
    it), so this checks the structure the schema prescribes: the element order under alto, Page's required
    attributes, one String per word with CONTENT, HPOS/VPOS/WIDTH/HEIGHT and WC, SP between words, and
    TAGREFS to a declared OtherTag."""
    xml = to_alto(sample(), "scan.png", created=datetime(2026, 11, 29, tzinfo=UTC))
    ns = {"a": "http://www.loc.gov/standards/alto/ns-v4#"}
    root = ElementTree.fromstring(xml)
    assert root.tag == "{http://www.loc.gov/standards/alto/ns-v4#}alto"
    assert [child.tag.split("}")[1] for child in root] == ["Description", "Tags", "Layout"]
    assert root.find("a:Description/a:MeasurementUnit", ns).text == "pixel"
    assert root.find("a:Description/a:sourceImageInformation/a:fileName", ns).text == "scan.png"
    page = root.find("a:Layout/a:Page", ns)
    assert (page.get("ID"), page.get("PHYSICAL_IMG_NR"), page.get("WIDTH"), page.get("HEIGHT")) == (
        "page_1",
        "1",
        "200",
        "100",
    )
    lines = page.findall("a:PrintSpace/a:TextBlock/a:TextLine", ns)
    assert [(line.get("HPOS"), line.get("VPOS"), line.get("WIDTH"), line.get("HEIGHT")) for line in lines] == [
        ("10", "10", "110", "21"),
        ("10", "50", "150", "22"),
    ]
    strings = [s for line in lines for s in line.findall("a:String", ns)]
    assert [s.get("CONTENT") for s in strings] == ["Dear", "Ann,", "see", "yuo", "soon"]
    assert [s.get("WC") for s in strings] == ["0.980", "0.910", "0.950", "0.310", "0.880"]
    assert (strings[1].get("HPOS"), strings[1].get("VPOS"), strings[1].get("WIDTH"), strings[1].get("HEIGHT")) == (
        "70",
        "12",
        "50",
        "19",
    )
    assert [s.get("TAGREFS") for s in strings] == [None, None, None, "review", None]
    assert root.find("a:Tags/a:OtherTag", ns).get("ID") == "review"
    assert [len(line.findall("a:SP", ns)) for line in lines] == [1, 2]
    assert lines[0].find("a:SP", ns).attrib == {"WIDTH": "10", "HPOS": "60", "VPOS": "12"}
    empty = ElementTree.fromstring(to_alto(page_pb2.Page(width=50, height=40)))
    assert empty.find("a:Layout/a:Page/a:PrintSpace", ns) is not None


@pytest.mark.parametrize("export_format", sorted(EXPORT_FORMATS))
def test_export_names_each_format_with_its_type(export_format):
    result = export(sample(), export_format, "scan.png")
    assert result.format == export_format and "yuo" in result.content
    assert result.mime_type and result.file_extension.startswith(".")
    with pytest.raises(ValueError, match="unknown export format"):
        export(sample(), ocr_service_pb2.EXPORT_FORMAT_UNSPECIFIED)
