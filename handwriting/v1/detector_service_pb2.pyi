from handwriting.v1 import image_pb2 as _image_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectionClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DETECTION_CLASS_UNSPECIFIED: _ClassVar[DetectionClass]
    DETECTION_CLASS_WORD: _ClassVar[DetectionClass]
    DETECTION_CLASS_LINE: _ClassVar[DetectionClass]
DETECTION_CLASS_UNSPECIFIED: DetectionClass
DETECTION_CLASS_WORD: DetectionClass
DETECTION_CLASS_LINE: DetectionClass

class DetectRequest(_message.Message):
    __slots__ = ("image", "min_score", "classes")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    image: _image_pb2.Image
    min_score: float
    classes: _containers.RepeatedScalarFieldContainer[DetectionClass]
    def __init__(self, image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., min_score: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[DetectionClass, str]]] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("detections", "image_width", "image_height")
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    image_width: int
    image_height: int
    def __init__(self, detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("detection_class", "box", "score")
    DETECTION_CLASS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    detection_class: DetectionClass
    box: Box
    score: float
    def __init__(self, detection_class: _Optional[_Union[DetectionClass, str]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("left", "top", "right", "bottom")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    left: float
    top: float
    right: float
    bottom: float
    def __init__(self, left: _Optional[float] = ..., top: _Optional[float] = ..., right: _Optional[float] = ..., bottom: _Optional[float] = ...) -> None: ...
