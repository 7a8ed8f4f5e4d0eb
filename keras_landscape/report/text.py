"""Text from a store, made safe to print on a terminal.

A store is a file anyone can write: its names (models, runs, probes), attributes (the
command, the data spec), error messages and results are text that `klandscape show` and
`plot` print. A terminal obeys escape sequences in what it prints (ESC [2J clears the
screen; others retitle the window, move the cursor, or write to the clipboard), so every
piece of store-provided text goes through `printable` (one string) or `printable_data` (a
whole document) before it is printed: control characters are shown as Python escapes
(``\\x1b``, ``\\x07``), never sent. JSON output (`--json`) needs none of this: the JSON
encoder writes control characters as ``\\u001b``.
"""

from __future__ import annotations

import unicodedata

# Shown as escapes besides the C0/C1 controls: the invisible characters that reorder or
# break displayed text (bidirectional overrides and isolates, line and paragraph separators).
_INVISIBLE = frozenset("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e") | {
    chr(c) for c in range(0x2066, 0x206A)
}


def _shown(character: str) -> str:
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text, *, newlines: bool = True) -> str:
    """`text` (any value, as str) with every control character written as an escape:
    ``"\\x1b[2J"`` -> ``"\\\\x1b[2J"``. Tabs stay, and so do newlines unless `newlines` is
    False (one table cell, one line)."""
    text = str(text)
    keep = "\t\n" if newlines else "\t"
    if text.isprintable() and "\n" not in text:
        return text
    return "".join(
        _shown(c)
        if c not in keep and (c in _INVISIBLE or unicodedata.category(c) in ("Cc", "Zl", "Zp"))
        else c
        for c in text
    )


def printable_data(value):
    """A JSON-like document (dicts, lists, strings, numbers) with every string, keys
    included, passed through `printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {
            printable(k) if isinstance(k, str) else k: printable_data(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [printable_data(v) for v in value]
    return value


__all__ = ["printable", "printable_data"]
