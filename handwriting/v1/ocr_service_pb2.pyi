from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from handwriting.v1 import geometry_pb2 as _geometry_pb2
from handwriting.v1 import image_pb2 as _image_pb2
from handwriting.v1 import page_pb2 as _page_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_TEXT: _ClassVar[ExportFormat]
    EXPORT_FORMAT_HOCR: _ClassVar[ExportFormat]
    EXPORT_FORMAT_ALTO: _ClassVar[ExportFormat]
    EXPORT_FORMAT_PAGE_XML: _ClassVar[ExportFormat]
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_TEXT: ExportFormat
EXPORT_FORMAT_HOCR: ExportFormat
EXPORT_FORMAT_ALTO: ExportFormat
EXPORT_FORMAT_PAGE_XML: ExportFormat

class Export(_message.Message):
    __slots__ = ("format", "content", "mime_type", "file_extension")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILE_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    format: ExportFormat
    content: str
    mime_type: str
    file_extension: str
    def __init__(self, format: _Optional[_Union[ExportFormat, str]] = ..., content: _Optional[str] = ..., mime_type: _Optional[str] = ..., file_extension: _Optional[str] = ...) -> None: ...

class ExportPageRequest(_message.Message):
    __slots__ = ("page", "format", "image_name")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    page: _page_pb2.Page
    format: ExportFormat
    image_name: str
    def __init__(self, page: _Optional[_Union[_page_pb2.Page, _Mapping]] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., image_name: _Optional[str] = ...) -> None: ...

class ExportPageResponse(_message.Message):
    __slots__ = ("export",)
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    export: Export
    def __init__(self, export: _Optional[_Union[Export, _Mapping]] = ...) -> None: ...

class SubmitCorrectionRequest(_message.Message):
    __slots__ = ("image", "bounding_poly", "text", "recognized_text", "confidence", "source")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_POLY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZED_TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    image: _image_pb2.Image
    bounding_poly: _geometry_pb2.BoundingPoly
    text: str
    recognized_text: str
    confidence: float
    source: str
    def __init__(self, image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., bounding_poly: _Optional[_Union[_geometry_pb2.BoundingPoly, _Mapping]] = ..., text: _Optional[str] = ..., recognized_text: _Optional[str] = ..., confidence: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class SubmitCorrectionResponse(_message.Message):
    __slots__ = ("correction_id",)
    CORRECTION_ID_FIELD_NUMBER: _ClassVar[int]
    correction_id: str
    def __init__(self, correction_id: _Optional[str] = ...) -> None: ...

class UploadDocumentRequest(_message.Message):
    __slots__ = ("file", "min_detection_score", "dpi", "formats", "include_page_image")
    FILE_FIELD_NUMBER: _ClassVar[int]
    MIN_DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    DPI_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAGE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    file: _httpbody_pb2.HttpBody
    min_detection_score: float
    dpi: int
    formats: _containers.RepeatedScalarFieldContainer[ExportFormat]
    include_page_image: bool
    def __init__(self, file: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., min_detection_score: _Optional[float] = ..., dpi: _Optional[int] = ..., formats: _Optional[_Iterable[_Union[ExportFormat, str]]] = ..., include_page_image: _Optional[bool] = ...) -> None: ...

class ProcessDocumentRequest(_message.Message):
    __slots__ = ("content", "min_detection_score", "dpi", "formats", "include_page_image")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MIN_DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    DPI_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAGE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    min_detection_score: float
    dpi: int
    formats: _containers.RepeatedScalarFieldContainer[ExportFormat]
    include_page_image: bool
    def __init__(self, content: _Optional[bytes] = ..., min_detection_score: _Optional[float] = ..., dpi: _Optional[int] = ..., formats: _Optional[_Iterable[_Union[ExportFormat, str]]] = ..., include_page_image: _Optional[bool] = ...) -> None: ...

class UploadDocumentResponse(_message.Message):
    __slots__ = ("page_number", "page_count", "page", "timings", "exports", "page_image")
    PAGE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    page_number: int
    page_count: int
    page: _page_pb2.Page
    timings: Timings
    exports: _containers.RepeatedCompositeFieldContainer[Export]
    page_image: _image_pb2.Image
    def __init__(self, page_number: _Optional[int] = ..., page_count: _Optional[int] = ..., page: _Optional[_Union[_page_pb2.Page, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., exports: _Optional[_Iterable[_Union[Export, _Mapping]]] = ..., page_image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ...) -> None: ...

class ProcessDocumentResponse(_message.Message):
    __slots__ = ("page_number", "page_count", "page", "timings", "exports", "page_image")
    PAGE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    page_number: int
    page_count: int
    page: _page_pb2.Page
    timings: Timings
    exports: _containers.RepeatedCompositeFieldContainer[Export]
    page_image: _image_pb2.Image
    def __init__(self, page_number: _Optional[int] = ..., page_count: _Optional[int] = ..., page: _Optional[_Union[_page_pb2.Page, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., exports: _Optional[_Iterable[_Union[Export, _Mapping]]] = ..., page_image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ...) -> None: ...

class ProcessPageRequest(_message.Message):
    __slots__ = ("image", "min_detection_score", "formats")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIN_DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    image: _image_pb2.Image
    min_detection_score: float
    formats: _containers.RepeatedScalarFieldContainer[ExportFormat]
    def __init__(self, image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., min_detection_score: _Optional[float] = ..., formats: _Optional[_Iterable[_Union[ExportFormat, str]]] = ...) -> None: ...

class ProcessPageResponse(_message.Message):
    __slots__ = ("page", "timings", "exports")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    page: _page_pb2.Page
    timings: Timings
    exports: _containers.RepeatedCompositeFieldContainer[Export]
    def __init__(self, page: _Optional[_Union[_page_pb2.Page, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., exports: _Optional[_Iterable[_Union[Export, _Mapping]]] = ...) -> None: ...

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
