"""The errors ``utils.tb`` raises on purpose, each a subclass of the built-in error it refines, so that
``except FileNotFoundError`` (say) still catches a missing run."""

from __future__ import annotations


class TensorBoardLogError(Exception):
    """Base class of every error this package raises on purpose."""


class LogDirNotWritableError(TensorBoardLogError, OSError):
    """The run directory cannot be created or written."""


class RunInUseError(TensorBoardLogError):
    """Another open writer of this process already writes to the run directory."""


class RunNotFoundError(TensorBoardLogError, FileNotFoundError):
    """The run directory does not exist or holds no event file."""


class CorruptEventFileError(TensorBoardLogError, ValueError):
    """An event file is empty, cut short, or not made of TensorBoard's records."""


class TagNotFoundError(TensorBoardLogError, KeyError):
    """The run holds no series with the requested tag."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class NonFiniteScalarError(TensorBoardLogError, ValueError):
    """A NaN or infinite value was about to be logged (or was found in a run)."""


class TensorBoardXChangedError(TensorBoardLogError, RuntimeError):
    """The installed tensorboardX lacks private state that ``RunWriter.flush`` relies on."""
