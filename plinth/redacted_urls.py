"""URLs fit to show: their secrets masked, for log lines, messages and files.

A URL may carry secrets (``s3://KEY:SECRET@bucket/prefix``, or a query such as an
Azure SAS token ``?sig=...``). ``redacted_url`` masks them; ``redacted_command_line``
masks every URL in a command line, for the data dir's lock file (data_dir_lock.py),
which quotes the command of the server holding it. Any process, any thread; imports
nothing heavy, so that shared ground may use it (the tier's store, which sees the URL
as given, imports obstore).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redacted_command_line", "redacted_url"]


def redacted_url(url: str) -> str:
    """``url`` fit for a message or a log line: a user and password become ``***@``,
    a query ``?***``, and a fragment is dropped (any thread). A malformed URL
    (``s3:/user:pw@bucket``) has its user and password masked too."""
    try:
        parts = urlsplit(url)
    except ValueError:   # e.g. an unbalanced "[" in the host: show nothing of it
        return "<unparseable URL>"
    shown = url
    if parts.query or parts.fragment:
        shown = urlunsplit((parts.scheme, parts.netloc, parts.path,
                            "***" if parts.query else "", ""))
    return _USER_INFO.sub(r"\1***@", shown)


def redacted_command_line(argv: list[str]) -> str:
    """``argv`` joined by spaces, each argument that holds a URL (``s3://...``, or an
    option's ``--name=s3://...``) masked by ``redacted_url``. Every URL, not one
    option's value: argparse and click take abbreviations (``--tier-u``), and a URL
    option added later is covered without a change here."""
    return " ".join(_redacted_argument(argument) for argument in argv)


def _redacted_argument(argument: str) -> str:
    name, equals, value = argument.partition("=")
    if equals and name.startswith("-") and _URL_START.match(value):
        return f"{name}={redacted_url(value)}"
    return redacted_url(argument) if _URL_START.match(argument) else argument


# The scheme and slashes, then a user (and password) ending in "@" before any "/".
_USER_INFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:/*)[^/?#]*@")
# What makes an argument a URL here: a scheme, then ":" (malformed "s3:/u:p@b" too).
_URL_START = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
