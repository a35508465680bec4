from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG8: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG16: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_FLOAT32: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_EXR: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_TIFF16: _ClassVar[OutputFormat]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_INPUT: _ClassVar[ErrorCode]
    ERROR_CODE_EXPIRED: _ClassVar[ErrorCode]
    ERROR_CODE_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_WORKER_LOST: _ClassVar[ErrorCode]
    ERROR_CODE_OUT_OF_MEMORY: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_PNG8: OutputFormat
OUTPUT_FORMAT_PNG16: OutputFormat
OUTPUT_FORMAT_FLOAT32: OutputFormat
OUTPUT_FORMAT_EXR: OutputFormat
OUTPUT_FORMAT_TIFF16: OutputFormat
PRIORITY_UNSPECIFIED: Priority
PRIORITY_HIGH: Priority
PRIORITY_NORMAL: Priority
PRIORITY_LOW: Priority
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INVALID_INPUT: ErrorCode
ERROR_CODE_EXPIRED: ErrorCode
ERROR_CODE_TIMEOUT: ErrorCode
ERROR_CODE_WORKER_LOST: ErrorCode
ERROR_CODE_OUT_OF_MEMORY: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode

class Frame(_message.Message):
    __slots__ = ("data", "name", "path")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    name: str
    path: str
    def __init__(self, data: _Optional[bytes] = ..., name: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class MaskParams(_message.Message):
    __slots__ = ("threshold", "smooth", "dilate", "blur", "soft", "invert", "union_mask")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SMOOTH_FIELD_NUMBER: _ClassVar[int]
    DILATE_FIELD_NUMBER: _ClassVar[int]
    BLUR_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    UNION_MASK_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    smooth: int
    dilate: int
    blur: int
    soft: bool
    invert: bool
    union_mask: bool
    def __init__(self, threshold: _Optional[float] = ..., smooth: _Optional[int] = ..., dilate: _Optional[int] = ..., blur: _Optional[int] = ..., soft: bool = ..., invert: bool = ..., union_mask: bool = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("text", "negatives", "params", "image")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    negatives: _containers.RepeatedScalarFieldContainer[str]
    params: MaskParams
    image: Frame
    def __init__(self, text: _Optional[str] = ..., negatives: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[MaskParams, _Mapping]] = ..., image: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class ExrOptions(_message.Message):
    __slots__ = ("layer", "exposure")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    layer: str
    exposure: float
    def __init__(self, layer: _Optional[str] = ..., exposure: _Optional[float] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("frames", "prompts", "params", "format", "priority", "labels", "request_id", "keep_going", "output_dir", "exr", "prompt_specs")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_GOING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    EXR_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SPECS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    params: MaskParams
    format: OutputFormat
    priority: Priority
    labels: _containers.ScalarMap[str, str]
    request_id: str
    keep_going: bool
    output_dir: str
    exr: ExrOptions
    prompt_specs: _containers.RepeatedCompositeFieldContainer[Prompt]
    def __init__(self, frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., prompts: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[MaskParams, _Mapping]] = ..., format: _Optional[_Union[OutputFormat, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., keep_going: bool = ..., output_dir: _Optional[str] = ..., exr: _Optional[_Union[ExrOptions, _Mapping]] = ..., prompt_specs: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done_frames", "total_frames", "failed_frames")
    DONE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FAILED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    done_frames: int
    total_frames: int
    failed_frames: int
    def __init__(self, done_frames: _Optional[int] = ..., total_frames: _Optional[int] = ..., failed_frames: _Optional[int] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("model", "revision", "dtype", "device", "maskfarm_version", "worker")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MASKFARM_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    model: str
    revision: str
    dtype: str
    device: str
    maskfarm_version: str
    worker: str
    def __init__(self, model: _Optional[str] = ..., revision: _Optional[str] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., maskfarm_version: _Optional[str] = ..., worker: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "progress", "error", "create_time", "start_time", "finish_time", "labels", "provenance", "prompts", "frame_names", "params", "format", "priority", "request_id", "cancel_requested", "keep_going", "output_dir", "exr", "prompt_specs")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    FRAME_NAMES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    KEEP_GOING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    EXR_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SPECS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    progress: Progress
    error: JobError
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    provenance: Provenance
    prompts: _containers.RepeatedScalarFieldContainer[str]
    frame_names: _containers.RepeatedScalarFieldContainer[str]
    params: MaskParams
    format: OutputFormat
    priority: Priority
    request_id: str
    cancel_requested: bool
    keep_going: bool
    output_dir: str
    exr: ExrOptions
    prompt_specs: _containers.RepeatedCompositeFieldContainer[Prompt]
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., prompts: _Optional[_Iterable[str]] = ..., frame_names: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[MaskParams, _Mapping]] = ..., format: _Optional[_Union[OutputFormat, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., request_id: _Optional[str] = ..., cancel_requested: bool = ..., keep_going: bool = ..., output_dir: _Optional[str] = ..., exr: _Optional[_Union[ExrOptions, _Mapping]] = ..., prompt_specs: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("prompt_index", "prompt", "is_union", "format", "data", "width", "height", "path")
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    IS_UNION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    prompt_index: int
    prompt: str
    is_union: bool
    format: OutputFormat
    data: bytes
    width: int
    height: int
    path: str
    def __init__(self, prompt_index: _Optional[int] = ..., prompt: _Optional[str] = ..., is_union: bool = ..., format: _Optional[_Union[OutputFormat, str]] = ..., data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("frame_index", "frame_name", "masks", "error")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAME_NAME_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    frame_name: str
    masks: _containers.RepeatedCompositeFieldContainer[Mask]
    error: str
    def __init__(self, frame_index: _Optional[int] = ..., frame_name: _Optional[str] = ..., masks: _Optional[_Iterable[_Union[Mask, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "include_masks", "first_frame", "max_frames")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MASKS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    include_masks: bool
    first_frame: int
    max_frames: int
    def __init__(self, job_id: _Optional[str] = ..., include_masks: bool = ..., first_frame: _Optional[int] = ..., max_frames: _Optional[int] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job", "frames", "next_frame")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    NEXT_FRAME_FIELD_NUMBER: _ClassVar[int]
    job: Job
    frames: _containers.RepeatedCompositeFieldContainer[FrameResult]
    next_frame: int
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[FrameResult, _Mapping]]] = ..., next_frame: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "from_frame")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FRAME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    from_frame: int
    def __init__(self, job_id: _Optional[str] = ..., from_frame: _Optional[int] = ...) -> None: ...

class WatchJobEvent(_message.Message):
    __slots__ = ("job", "frame")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    job: Job
    frame: FrameResult
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., frame: _Optional[_Union[FrameResult, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "labels", "page_size", "page_token")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    labels: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Worker(_message.Message):
    __slots__ = ("name", "hostname", "pid", "state", "device", "model", "revision", "dtype", "queues", "current_job_id", "start_time", "last_heartbeat", "maskfarm_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MASKFARM_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    hostname: str
    pid: int
    state: str
    device: str
    model: str
    revision: str
    dtype: str
    queues: _containers.RepeatedScalarFieldContainer[Priority]
    current_job_id: str
    start_time: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    maskfarm_version: str
    def __init__(self, name: _Optional[str] = ..., hostname: _Optional[str] = ..., pid: _Optional[int] = ..., state: _Optional[str] = ..., device: _Optional[str] = ..., model: _Optional[str] = ..., revision: _Optional[str] = ..., dtype: _Optional[str] = ..., queues: _Optional[_Iterable[_Union[Priority, str]]] = ..., current_job_id: _Optional[str] = ..., start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., maskfarm_version: _Optional[str] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...
