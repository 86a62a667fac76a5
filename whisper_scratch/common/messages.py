"""Error messages as one line each, the way every command reports a problem."""
from __future__ import annotations


def one_line(error: BaseException | str) -> str:
    """An exception's message (or any text) with its whitespace runs made single spaces; an
    exception without a message gives its type's name."""
    text = " ".join(str(error).split())
    return text or (type(error).__name__ if isinstance(error, BaseException) else "")
