"""Errors that the CLI reports as one line with exit code 2 (this module imports nothing)."""


class IsasegError(Exception):
    """Base class: a problem the user can fix; its message is shown without a traceback."""


class SpecError(IsasegError):
    """A zoo entry, a spec override or a model description is invalid."""


class ZooLookupError(IsasegError):
    """A model name matches no zoo entry (or several)."""


class CheckpointError(IsasegError):
    """A checkpoint file cannot be read or does not fit the model."""


class DownloadError(IsasegError):
    """A file could not be fetched."""


class ChecksumError(DownloadError):
    """A fetched file's SHA-256 does not match the expected prefix."""


class DatasetNotFoundError(IsasegError):
    """A dataset folder, split file, image or label is missing or malformed."""


class InputError(IsasegError):
    """A user input (image, video, option value) cannot be used."""


class OutputError(IsasegError):
    """An output file or folder cannot be written (read-only, full disk, a file in the way)."""


class MissingExtraError(IsasegError):
    """An optional dependency (a pip extra such as ``isaseg[onnx]``) is not installed."""


class ExportError(IsasegError):
    """A model cannot be exported, or an exported file cannot be used."""
