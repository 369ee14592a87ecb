"""Typed errors of the engine, so callers recognise a failure by its class, never by its message text."""


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class DataError(EngineError, ValueError):
    """The training or evaluation data cannot be used (names the file, row or field)."""


class SplitError(DataError):
    """Too few cases of a class for the case-grouped stratified hold-out split."""


class ArtefactError(EngineError, ValueError):
    """A model artefact is missing, incomplete or incompatible."""


class TrainingCancelled(EngineError, RuntimeError):
    """Raised inside training when the caller's should_stop() returns True."""
