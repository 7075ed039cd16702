"""Text safe to print on a terminal: unprintable characters and undecodable file names written as escapes."""

from __future__ import annotations

import os


def escape_text(text: str) -> str:
    """Write every unprintable character as a Python-style escape, so the text prints as one harmless line.

    Controls, escape sequences, line breaks, bidi overrides and lone surrogates become ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``; printable characters stay as they are.
    """
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def display_name(path: str | os.PathLike[str]) -> str:
    """A file name safe to print: a newline or terminal escape in it can neither forge a result line nor recolour the terminal.

    Bytes that are not UTF-8 (lone surrogates in ``path`` as Python holds it) become ``\\xNN``, so printing never fails;
    unprintable characters are escaped (:func:`escape_text`).
    """
    try:
        raw = os.fsencode(path)  # the bytes on disk (undoes Python's surrogateescape decoding)
    except UnicodeEncodeError:  # a string no file system name decodes to: escape what is there
        return escape_text(str(os.fspath(path)))
    return escape_text(raw.decode("utf-8", errors="backslashreplace"))
