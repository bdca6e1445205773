"""Text from the broker's users (record keys, values and headers, member ids) made
safe to read: every character that changes how the text around it shows without
showing itself (Unicode's control and format characters, categories Cc and Cf,
which hold the bidi overrides and isolates, zero-width characters and the tag
characters, and the line and paragraph separators) is shown as its escape,
``\\u202e``, marked, with its name on hover. A value "abc\\u202eRTL" otherwise
shows as "abcLTR": the override reverses what follows it, on the page and in
what a reader copies from it.

Newline and tab stay as they are: they lay out a multi-line value (and a JSON
value the console pretty-prints) in its ``<pre>``, and neither can reorder or hide
text. Everything else is HTML-escaped as the templates' autoescape would.

Pure functions: any thread (the templates' filter ``visible``, context.py).
"""

from __future__ import annotations

import re
import unicodedata

from markupsafe import Markup, escape

# Control (Cc) and format (Cf) characters, and the line and paragraph separators
# (Zl, Zp), but newline and tab. One pass of a regex: values are up to 256 KiB.
_HIDDEN = re.compile("[" + "".join(
    re.escape(chr(code)) for code in range(0x110000)
    if chr(code) not in "\n\t" and unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp")
) + "]")


def escape_of(char: str) -> str:
    """``\\u202e`` (``\\U000e0041`` past the BMP): how the page shows ``char``."""
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def hidden_count(text: str) -> int:
    """How many characters of ``text`` would be shown as escapes."""
    return len(_HIDDEN.findall(text))


def visible(text) -> Markup:
    """``text`` HTML-escaped, each hidden character as ``<span class="ctl"
    title="U+202E RIGHT-TO-LEFT OVERRIDE">\\u202e</span>``. None and other values
    as the templates show them (their ``str``)."""
    text = "" if text is None else str(text)
    out, at = [], 0
    for match in _HIDDEN.finditer(text):
        out.append(escape(text[at:match.start()]))
        out.append(_marked(match.group()))
        at = match.end()
    out.append(escape(text[at:]))
    return Markup("").join(out)


def _marked(char: str) -> Markup:
    name = unicodedata.name(char, "")
    title = f"U+{ord(char):04X} {name}".rstrip()
    return Markup('<span class="ctl" title="{}">{}</span>').format(title, escape_of(char))


__all__ = ["visible", "hidden_count", "escape_of"]
