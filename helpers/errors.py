"""The errors this package raises: each names the problem and the fix."""


class EdithurtError(Exception):
    """Base class of every error raised on purpose by :mod:`helpers`."""


class DataNotFoundError(EdithurtError, FileNotFoundError):
    """The paper's data folder (or a file inside it) is missing."""


class DataFormatError(EdithurtError, ValueError):
    """A data file has a row that cannot be read; the message names file and line."""

    def __init__(self, path, line, problem):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class UnknownNameError(EdithurtError, KeyError):
    """A name (task, protocol, method, ...) that is not one of the known ones."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class ModelNotFoundError(EdithurtError, OSError):
    """A model name that is neither the embedded model, a local folder, nor reachable."""


class CacheError(EdithurtError, ValueError):
    """A cache file (statistics, MEND network, stored edit state) that cannot be read."""


class RegistryError(EdithurtError, ValueError):
    """A method or task registered with impossible settings, or twice under one name."""


class EditError(EdithurtError, ValueError):
    """An edit request or setting that cannot be carried out."""


class EditHealthError(EditError, ArithmeticError):
    """An edit whose update is not finite or would blow a weight's norm up; it was not applied."""


def unknown(kind, name, known):
    """An :class:`UnknownNameError` that lists the valid names and the closest one."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Valid: {', '.join(map(repr, known))}.")
