from handwriting.v1 import geometry_pb2 as _geometry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Page(_message.Message):
    __slots__ = ("width", "height", "text", "lines", "confidence")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    text: str
    lines: _containers.RepeatedCompositeFieldContainer[Line]
    confidence: float
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., text: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[Line, _Mapping]]] = ..., confidence: _Optional[float] = ...) -> None: ...

class Line(_message.Message):
    __slots__ = ("text", "bounding_poly", "confidence", "words")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_POLY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    bounding_poly: _geometry_pb2.BoundingPoly
    confidence: float
    words: _containers.RepeatedCompositeFieldContainer[Word]
    def __init__(self, text: _Optional[str] = ..., bounding_poly: _Optional[_Union[_geometry_pb2.BoundingPoly, _Mapping]] = ..., confidence: _Optional[float] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "bounding_poly", "confidence", "detection_confidence", "needs_review")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_POLY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DETECTION_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REVIEW_FIELD_NUMBER: _ClassVar[int]
    text: str
    bounding_poly: _geometry_pb2.BoundingPoly
    confidence: float
    detection_confidence: float
    needs_review: bool
    def __init__(self, text: _Optional[str] = ..., bounding_poly: _Optional[_Union[_geometry_pb2.BoundingPoly, _Mapping]] = ..., confidence: _Optional[float] = ..., detection_confidence: _Optional[float] = ..., needs_review: _Optional[bool] = ...) -> None: ...
