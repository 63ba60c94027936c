from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from handwriting.v1 import image_pb2 as _image_pb2
from handwriting.v1 import page_pb2 as _page_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadDocumentRequest(_message.Message):
    __slots__ = ("file", "min_detection_score", "dpi")
    FILE_FIELD_NUMBER: _ClassVar[int]
    MIN_DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    DPI_FIELD_NUMBER: _ClassVar[int]
    file: _httpbody_pb2.HttpBody
    min_detection_score: float
    dpi: int
    def __init__(self, file: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., min_detection_score: _Optional[float] = ..., dpi: _Optional[int] = ...) -> None: ...

class ProcessDocumentRequest(_message.Message):
    __slots__ = ("content", "min_detection_score", "dpi")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MIN_DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    DPI_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    min_detection_score: float
    dpi: int
    def __init__(self, content: _Optional[bytes] = ..., min_detection_score: _Optional[float] = ..., dpi: _Optional[int] = ...) -> None: ...

class UploadDocumentResponse(_message.Message):
    __slots__ = ("page_number", "page_count", "page", "timings")
    PAGE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    page_number: int
    page_count: int
    page: _page_pb2.Page
    timings: Timings
    def __init__(self, page_number: _Optional[int] = ..., page_count: _Optional[int] = ..., page: _Optional[_Union[_page_pb2.Page, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ProcessDocumentResponse(_message.Message):
    __slots__ = ("page_number", "page_count", "page", "timings")
    PAGE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    page_number: int
    page_count: int
    page: _page_pb2.Page
    timings: Timings
    def __init__(self, page_number: _Optional[int] = ..., page_count: _Optional[int] = ..., page: _Optional[_Union[_page_pb2.Page, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ProcessPageRequest(_message.Message):
    __slots__ = ("image", "min_detection_score")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIN_DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    image: _image_pb2.Image
    min_detection_score: float
    def __init__(self, image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., min_detection_score: _Optional[float] = ...) -> None: ...

class ProcessPageResponse(_message.Message):
    __slots__ = ("page", "timings")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    page: _page_pb2.Page
    timings: Timings
    def __init__(self, page: _Optional[_Union[_page_pb2.Page, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "detect_ms", "recognize_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    DETECT_MS_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    detect_ms: float
    recognize_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., detect_ms: _Optional[float] = ..., recognize_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...
