"""Reports as one self-contained HTML page: ``RUN/report.html`` and ``jaxsam compare --html``.

A page holds its tables as HTML tables and its figures as base64 PNG ``data:`` URLs, with a
small inline style sheet: no script, no font, no request to any server, so it opens offline,
can be mailed as one file and renders the same anywhere. Every text from a report (run names,
dataset names, recipes) is HTML-escaped.

The tables are the Markdown report's (:func:`jaxsam.report.attack_table`,
:func:`jaxsam.report.operating_table`, :func:`jaxsam.report.compare_rows`), so the two never
disagree.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

import pandas as pd

from jaxsam import report as report_lib

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #e8eef7; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f6f6f6; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; } img { max-width: 100%; }
p.note, li { font-size: 0.9em; }
"""


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]], table_id: str) -> str:
    """An HTML table with id ``table_id``; every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def frame_table(frame: pd.DataFrame, table_id: str, digits: int = 4) -> str:
    """A DataFrame as an HTML table (floats to ``digits`` significant digits, NaN as -)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:.{digits}g}"
        return str(v)

    rows = [[cell(v) for v in r] for r in frame.itertuples(index=False)]
    return html_table(list(frame.columns), rows, table_id)


def figure(png: bytes, caption: str) -> str:
    """A PNG embedded as a base64 ``data:`` URL, with its caption."""
    data = base64.b64encode(png).decode("ascii")
    cap = html.escape(caption)
    return (
        f'<figure><img alt="{cap}" src="data:image/png;base64,{data}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def page(title: str, body: Sequence[str]) -> str:
    """The whole document: ``title`` (plain text, escaped) over the ``body`` HTML parts."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _summary_items(report: dict) -> str:
    """The Markdown report's bullets (run, sizes, accuracy, recipe, ...) as an HTML list."""
    lines = report_lib._run_lines(report, esc=str)  # noqa: SLF001 (same package)
    return (
        "<ul>" + "".join(f"<li>{html.escape(x.removeprefix('- '))}</li>" for x in lines) + "</ul>"
    )


def render_run_html(
    report: dict,
    title: str,
    *,
    by_class: pd.DataFrame | None = None,
    figures: Mapping[str, bytes] | None = None,
    exposed: pd.DataFrame | None = None,
) -> str:
    """One scored run as a self-contained page (``RUN/report.html``).

    Args:
      report: the run's report (``report.json``).
      title: page title (plain text).
      by_class: :func:`jaxsam.examples_table.by_class_frame` (optional).
      figures: caption -> PNG bytes, embedded in order (ROC, exposed examples, classes).
      exposed: a few rows of ``examples.parquet`` to list (e.g. the most exposed).
    """
    body = [_summary_items(report)]
    header, rows = report_lib.attack_table(report)
    if rows:
        body += ["<h2>Attacks (all targets pooled, leave-one-out)</h2>"]
        body += [html_table(header, rows, "attacks")]
        nn = next(iter(report["attacks"].values())).get("num_nonmembers")
        if nn:
            body.append(f'<p class="note">{html.escape(report_lib._support_note(nn))}</p>')
    header, rows = report_lib.operating_table(report)
    if rows:
        body += ["<h2>Operating points</h2>", html_table(header, rows, "operating-points")]
        body.append(f'<p class="note">{html.escape(report_lib._OPERATING_NOTE)}</p>')
    for name, value in report_lib._extras(report):  # noqa: SLF001
        body.append(f"<p>{html.escape(name)}: {html.escape(report_lib._num(value))}</p>")
    if figures:
        body += ["<h2>Figures</h2>"] + [figure(png, cap) for cap, png in figures.items()]
    if exposed is not None and len(exposed):
        body += ["<h2>Most exposed examples</h2>", frame_table(exposed, "exposed")]
    if by_class is not None and len(by_class):
        body += ["<h2>By class</h2>", frame_table(by_class, "by-class")]
    return page(title, body)


def render_compare_html(
    named_reports: Sequence[tuple[str, dict]], title: str, figures: Mapping[str, bytes] | None
) -> str:
    """Several runs side by side (``jaxsam compare --html F``): the comparison table, then
    each run's attack table, then the figures (caption -> PNG bytes)."""
    header, rows, notes = report_lib.compare_rows(named_reports)
    body = ["<h2>Comparison</h2>", html_table(header, rows, "compare")]
    body += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    for i, (name, rep) in enumerate(named_reports):
        h, r = report_lib.attack_table(rep)
        if r:
            body += [
                f"<h2>{html.escape(str(name))}: attacks</h2>",
                html_table(h, r, f"attacks-{i}"),
            ]
    if figures:
        body += ["<h2>Figures</h2>"] + [figure(png, cap) for cap, png in figures.items()]
    return page(title, body)
