"""A write that fails for want of space, over a file-size limit or a quota names what was being written.

The OS reports these without a file name to Python's own writes, and safetensors and torch report them as
their own exceptions (torch.save's names no reason at all), so the tools wrap their writing in `writing_to`.
"""

import contextlib
import errno
import os

WRITE_FAILURES = {
    errno.ENOSPC: "No space left on device",
    errno.EFBIG: "File too large",
    errno.EDQUOT: "Disk quota exceeded",
}
# torch.save's writer fails with "[enforce fail at inline_container.cc:...] unexpected pos ..." on a short write
TORCH_WRITER_MARKERS = ("inline_container.cc", "PytorchStreamWriter")
UNNAMED_FAILURE = "write failed (a full disk or a file-size limit)"


def write_failure(error: BaseException | None, depth: int = 4) -> tuple[int, str] | None:
    """(errno, reason) when `error`, or an error it was raised from (a data set's generation error, say), is a
    write that failed for space or size and names no file, else None."""
    if error is None or depth == 0:
        return None
    if isinstance(error, OSError) and error.filename:
        return None
    cause = write_failure(error.__cause__ or error.__context__, depth - 1)
    if cause is not None:
        return cause
    if isinstance(error, OSError):
        if error.errno in WRITE_FAILURES and not error.filename:
            return error.errno, WRITE_FAILURES[error.errno]
        return None
    text = str(error)
    for code, reason in WRITE_FAILURES.items():
        if reason in text:
            return code, reason
    if any(marker in text for marker in TORCH_WRITER_MARKERS):
        return errno.EIO, UNNAMED_FAILURE
    return None


@contextlib.contextmanager
def writing_to(path: str | os.PathLike):
    """Inside, such a failure is raised again as OSError(errno, reason, path), chained to the original; `path` is
    the file or folder being written."""
    try:
        yield
    except Exception as error:
        failure = write_failure(error)
        if failure is None:
            raise
        raise OSError(*failure, os.fspath(path)) from error
