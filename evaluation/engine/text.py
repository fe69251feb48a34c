"""Which strings are text: valid Unicode, the only strings the engine hands to C code.

JSON can carry a lone UTF-16 surrogate (`"\\ud800"`), and Python keeps it in a `str`, but it is
not a Unicode character and has no UTF-8 form. C extensions that take a `str` as UTF-8 (the
hash, the regular expression engine) fail on it, and one of them crashed the process. The
engine therefore refuses such strings: in a document at compile time (`PARSE_ERROR`), in a
context when evaluation reads one (`INVALID_CONTEXT`, signalled by `UnicodeEncodeError`).
"""

from __future__ import annotations

from .errors import DocumentError

INVALID_TEXT = "is not valid Unicode (it holds a lone surrogate)"


def is_text(value: str) -> bool:
    """Whether `value` is valid Unicode, i.e. has a UTF-8 form."""
    if value.isascii():  # the common case, answered from a flag on the string object
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def require_text(value: str, field: str, what: str = "") -> str:
    """`value`, or a DocumentError naming `field` when it is not valid Unicode."""
    if not is_text(value):
        raise DocumentError(field, f"{what or 'a string'} {INVALID_TEXT}: {value!r}")
    return value
