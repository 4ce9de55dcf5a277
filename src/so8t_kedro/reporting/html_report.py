"""Self-contained HTML reports: tables and PNG images embedded as data URIs.

One file that opens anywhere (a browser, kedro-viz's file link, an e-mail attachment)
without the images beside it. Every text is escaped; tables come from pandas.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence

import pandas as pd

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: .3em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eee; }
.warning { background: #fff3cd; border: 2px solid #d39e00; padding: .8em 1em; margin: 1em 0;
           font-weight: bold; }
.verdict { background: #e8f4ea; border: 2px solid #2e7d32; padding: .8em 1em; font-size: 1.2em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def escape(value: object) -> str:
    """``value`` as HTML-escaped text."""
    return html.escape(str(value))


def table(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table (cells escaped, floats to 4 decimals, — for missing)."""
    return frame.to_html(float_format="{:.4f}".format, border=0, na_rep="—", escape=True)


def image(png: bytes, caption: str) -> str:
    """A PNG embedded as a base64 data URI, with its caption."""
    if not png:
        raise ValueError(f"report image {caption!r} is empty")
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def warnings_block(warnings: Iterable[str]) -> str:
    """A loud box per warning (nothing when there are none)."""
    return "".join(f'<div class="warning">⚠ {escape(w)}</div>' for w in warnings)


def section(heading: str, *parts: str) -> str:
    """An ``<h2>`` section made of already-rendered ``parts``."""
    return f"<section><h2>{escape(heading)}</h2>{''.join(parts)}</section>"


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def page(title: str, parts: Sequence[str]) -> str:
    """A complete UTF-8 HTML document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1>{''.join(parts)}</body></html>\n")
