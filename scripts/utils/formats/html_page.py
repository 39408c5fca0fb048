"""The pieces of our self-contained HTML pages: the style, escaping, tables, sections, inline
figures.

    from scripts.utils.formats.html_page import page, section, table
    html = page("compare: a · b", [section("Config", table(["key", "a", "b"], rows))])

Every value is escaped; figures are inline SVG or PNG (no network, no script).
"""

from __future__ import annotations

import base64
import html

import orjson

from scripts.utils.formats.plotting import figure_bytes, pyplot

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2433;
background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px}
@media(max-width:600px){main{padding:6px}section{padding:4px 8px 8px}}
h1{font-size:1.5em;margin:.3em 0;overflow-wrap:anywhere}
h2{font-size:1.2em;margin:1.4em 0 .5em;border-bottom:1px solid #d8dce3}
section{background:#fff;border:1px solid #e2e5ea;border-radius:6px;padding:8px 14px 14px;
margin:12px 0}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
td.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
tr.set td{background:#fff6d6}
.pass{color:#17703a;font-weight:600}.fail{color:#b3261e;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;background:#e8ebf0;font-size:.85em}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;flex:1 1 260px;max-width:100%}
figure img,figure svg{width:100%;height:auto;image-rendering:pixelated;border:1px solid #e2e5ea}
figcaption{font-size:.85em;color:#555}
.plot svg{width:100%;max-width:760px;height:auto;display:block}
.box{position:relative;display:block}.box span{position:absolute;border:2px solid #e0245e}
details summary{cursor:pointer}
"""


def esc(value) -> str:
    if not isinstance(value, str):
        value = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS).decode()
    return html.escape(value, quote=True)


def table(headers: list, rows: list, classes: list | None = None, mono: tuple = ()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        cls = f' class="{classes[index]}"' if classes and classes[index] else ""
        cells = "".join(
            f'<td class="mono">{esc(c)}</td>' if i in mono else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    rows = "".join(body)
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def svg_inline(figure) -> str:
    text = figure_bytes(figure, ".svg").decode()
    pyplot().close(figure)
    return text[text.index("<svg") :]


def png_img(data: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def section(title: str, body: str, anchor: str | None = None) -> str:
    opening = f'<section id="{anchor}">' if anchor else "<section>"
    return f"{opening}<h2>{esc(title)}</h2>{body}</section>"


def page(title: str, sections: list) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{esc(title)}</h1>{''.join(sections)}</main></body></html>\n"
    )


def aggregate_rows(aggregates) -> list:
    """[overrides, metric, mean, std, min, max, n] per configuration and metric of a sweep's seed
    aggregates."""
    rows = []
    for aggregate in aggregates if isinstance(aggregates, list) else []:
        aggregate = mapping(aggregate)
        for metric, values in sorted(mapping(aggregate.get("metrics")).items()):
            values = mapping(values)
            rows.append(
                [
                    " ".join(map(str, aggregate.get("overrides") or [])) or "(as configured)",
                    metric,
                    *[values.get(k) for k in ("mean", "std", "min", "max", "n")],
                ]
            )
    return rows


def mapping(value) -> dict:
    """``value`` if it is a JSON object (free-form report sections may hold anything), else an
    empty one."""
    return value if isinstance(value, dict) else {}
