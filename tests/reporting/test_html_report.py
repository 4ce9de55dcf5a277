"""Self-contained HTML reports: every text escaped, images embedded as data URIs."""

from __future__ import annotations

import base64

import pandas as pd
import pytest

from so8t_kedro.reporting import html_report

MARKUP = '<script>alert("x")</script>'


def test_every_text_is_escaped():
    frame = pd.DataFrame({"request": [MARKUP], "score": [0.123456]})
    document = html_report.page(MARKUP, [
        html_report.section(MARKUP, html_report.paragraph(MARKUP), html_report.table(frame)),
        html_report.warnings_block([MARKUP]),
    ])
    assert "<script>" not in document
    assert document.count("&lt;script&gt;") == 6  # title, h1, h2, p, table cell, warning
    assert "0.1235" in document  # floats to 4 decimals


def test_an_image_is_embedded_with_its_caption_and_an_empty_one_is_an_error():
    png = b"\x89PNG\r\n\x1a\nfake"
    figure = html_report.image(png, "F1 <per class>")
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"' in figure
    assert "<figcaption>F1 &lt;per class&gt;</figcaption>" in figure
    with pytest.raises(ValueError, match="empty"):
        html_report.image(b"", "nothing")


def test_no_warnings_render_nothing():
    assert html_report.warnings_block([]) == ""
