from handwriting.v1 import image_pb2 as _image_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecognizeRequest(_message.Message):
    __slots__ = ("crops", "lines")
    CROPS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    crops: _containers.RepeatedCompositeFieldContainer[_image_pb2.Image]
    lines: bool
    def __init__(self, crops: _Optional[_Iterable[_Union[_image_pb2.Image, _Mapping]]] = ..., lines: _Optional[bool] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("recognitions", "model")
    RECOGNITIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    recognitions: _containers.RepeatedCompositeFieldContainer[Recognition]
    model: str
    def __init__(self, recognitions: _Optional[_Iterable[_Union[Recognition, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class Recognition(_message.Message):
    __slots__ = ("text", "confidence", "char_positions")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CHAR_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    char_positions: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., char_positions: _Optional[_Iterable[float]] = ...) -> None: ...
