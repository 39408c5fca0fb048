"""The HTML page of a run or a verify report: the library behind html_report.py (and the preview
of a proof crate).

    from scripts.visualization.pages import build_page
    html = build_page(workspace, report)      # report: a run report, read back and checked

What the page holds, and how it reads, is said in html_report.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from scripts.utils.config.loading import flatten
from scripts.utils.errors import InputError
from scripts.utils.formats.colour import rgb_to_hsl
from scripts.utils.formats.html_page import (
    aggregate_rows,
    esc,
    mapping,
    page,
    png_img,
    section,
    svg_inline,
    table,
)
from scripts.utils.formats.run_metrics import plot_series
from scripts.utils.formats.run_metrics import read_metrics as read_run_metrics
from scripts.utils.formats.tensors import read_cten, read_sten
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.run_reports import command_path
from scripts.utils.workspace import RESULTS, inside, path_inside
from scripts.visualization.curves import METRICS, SHOWN_METRICS, plot_curves, read_metrics
from scripts.visualization.renders import png_bytes, spectrum_figure

ENVIRONMENT_ID = "environment"  # the sections that describe the machine (verify sets them aside)
COMMAND_ENVIRONMENT_ID = "command-environment"
SHOWN_TENSORS = 4
SHOWN_IMAGES, MAX_SHOWN_IMAGE_BYTES = 12, 8 << 20
ARTIFACT_ROWS = 500


# --------------------------------------------------------------------------
# Finding what to show
# --------------------------------------------------------------------------


def overridden_keys(argv: list) -> set:
    """The config keys a run set with ``--set key=value``."""
    keys = set()
    for index, arg in enumerate(argv or []):
        if arg == "--set" and index + 1 < len(argv):
            keys.add(argv[index + 1].split("=", 1)[0].strip())
        elif arg.startswith("--set="):
            keys.add(arg[6:].split("=", 1)[0].strip())
    return keys


# --------------------------------------------------------------------------
# HTML pieces
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------


def script_path(script) -> str:
    """How a page names the command of a run: ``scripts/<category>/<script>.py``."""
    try:
        return command_path(script).relative_to(command_path(script).parents[2]).as_posix()
    except InputError:
        return f"{script}.py"


def run_sections(workspace: Path, report: dict, registry: dict) -> list:
    rows = [
        ["run id", report["run_id"]],
        ["script", report.get("script")],
        ["status", report.get("status")],
        [
            "command",
            " ".join(["python", script_path(report.get("script")), *report.get("argv", [])]),
        ],
        ["config sha256", report.get("config_sha256")],
        ["git", report.get("git")],
        ["backend", report.get("backend")],
    ]
    sections = [
        section(
            "Run", table(["field", "value"], [row for row in rows if row[1] is not None], mono=(1,))
        )
    ]
    folder = _run_folder(workspace, report)
    if folder is not None and isinstance(
        report.get("external"), dict
    ):  # a script of its own: its files
        sections += script_metric_sections(folder, report.get("results") or {}) + image_sections(
            folder
        )
    elif folder is not None:
        sections += metric_sections(folder) + tensor_sections(folder)
    config = report.get("config")
    if isinstance(config, dict) and config:
        overridden = overridden_keys(report.get("argv"))
        flat = flatten(config)
        marks = [
            "set" if key in overridden or any(key.startswith(o + ".") for o in overridden) else ""
            for key in flat
        ]
        note = (
            f"<p>Highlighted: set with --set ({esc(', '.join(sorted(overridden)))}).</p>"
            if overridden
            else ""
        )
        sections.append(
            section(
                "Config",
                note + table(["key", "value"], [[k, v] for k, v in flat.items()], marks, mono=(0,)),
            )
        )
    seed = report.get("seed")
    if seed:
        rows = [
            ["base seed", seed.get("base_seed")],
            ["seeds file sha256", seed.get("seeds_file_sha256")],
        ]
        rows += [
            [f"stream {name}", value] for name, value in sorted((seed.get("streams") or {}).items())
        ]
        sections.append(section("Seeds", table(["seed", "value"], rows, mono=(1,))))
    external = mapping(report.get("external"))
    if external:  # the command's own code and Python come first: they are what made its outputs
        sections += external_sections(external)
    environment = mapping(report.get("environment"))
    if environment or report.get("env_hash"):
        python = mapping(environment.get("python"))
        blas = environment.get("blas") if isinstance(environment.get("blas"), list) else []
        rows = [
            ["env_hash", report.get("env_hash")],
            ["os", environment.get("os")],
            ["python", f"{python.get('implementation', '')} {python.get('version', '')}".strip()],
            [
                "blas",
                [
                    f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')}"
                    for b in blas
                    if isinstance(b, dict)
                ],
            ],
        ]
        rows += [
            [name, version]
            for name, version in sorted(mapping(environment.get("byte_relevant")).items())
        ]
        title = (
            "Launcher environment (run_experiment's Python, not the command's)"
            if isinstance(report.get("external"), dict)
            else "Environment"
        )
        sections.append(
            section(
                title,
                f"<p>env_hash <code>{esc(report.get('env_hash'))}</code></p>"
                "<details><summary>the fields it covers</summary>"
                + table(["field", "value"], rows, mono=(1,))
                + "</details>",
                ENVIRONMENT_ID,
            )
        )
    sections += result_sections(report)
    sections.append(artifact_section(report, registry))
    return sections


def external_sections(external: dict) -> list:
    """An external command's own code (files and their SHA-256, git), then its interpreter's
    environment (a section of its own, set aside by verify as ours is)."""
    code, environment = mapping(external.get("code")), mapping(external.get("environment"))
    files = mapping(code.get("files"))
    rows = [["file", name, digest] for name, digest in sorted(files.items())]
    rows += [
        [
            "git",
            mapping(state).get("root"),
            f"{mapping(state).get('commit')}"
            + (" (uncommitted changes)" if mapping(state).get("dirty") else ""),
        ]
        for state in (code.get("git") if isinstance(code.get("git"), list) else [])
    ]
    facts = [
        ["command", " ".join(map(str, external.get("command") or []))],
        [
            "code folder",
            external.get("code_dir", "outside the workspace (files named relative to it)"),
        ],
    ]
    torch = mapping(environment.get("torch"))
    python = [
        [
            "python",
            f"{environment.get('implementation', '')} {environment.get('python', '')}".strip(),
        ]
    ]
    python += [[f"torch {name}", value] for name, value in sorted(torch.items())]
    python += [
        [name, value] for name, value in sorted(mapping(environment.get("variables")).items())
    ]
    packages = (
        environment.get("distributions")
        if isinstance(environment.get("distributions"), list)
        else []
    )
    return [
        section(
            "The command and its code",
            table(["field", "value"], facts, mono=(1,))
            + table(["kind", "path", "sha256 / commit"], rows, mono=(1, 2)),
        ),
        section(
            "The command's Python",
            table(["field", "value"], python, mono=(1,))
            + f"<details><summary>{len(packages)} installed distributions</summary>"
            + table(["distribution"], [[p] for p in packages], mono=(0,))
            + "</details>",
            COMMAND_ENVIRONMENT_ID,
        ),
    ]


def _run_folder(workspace: Path, report: dict) -> Path | None:
    logdir = (report.get("results") or {}).get(
        "logdir"
    )  # a checked name (run_reports.REPORT_SCHEMA)
    for candidate in ([workspace / logdir] if isinstance(logdir, str) else []) + [
        workspace / RESULTS / report["run_id"]
    ]:
        if candidate.is_dir() and inside(workspace, candidate):
            return candidate
    return None


def metric_sections(folder: Path) -> list:
    series, summary = read_metrics(folder)
    if series is None:
        return []
    figure, _ = plot_curves({folder.name: series}, METRICS, log_scale=False)
    rows = [
        [
            name,
            f"{values['final']:.6g}",
            None if values["best"] is None else f"{values['best']:.6g}",
        ]
        for name, values in summary.items()
    ]
    return [
        section(
            "Metrics",
            table(["metric", "final", "best"], rows)
            + f'<div class="plot">{svg_inline(figure)}</div>',
        )
    ]


def script_metric_sections(folder: Path, results: dict) -> list:
    """An external script's own metrics file (run_metrics.py): final and best values, and every
    column plotted."""
    name = results.get("metrics_file")
    if (
        not isinstance(name, str)
        or not (folder / name).is_file()
        or not inside(folder, folder / name)
    ):
        return []
    try:
        metrics = read_run_metrics(folder / name)
    except (ValueError, OSError, InputError):
        return []
    x_name = metrics["x"]
    names = [n for n in metrics["columns"] if n != x_name][:SHOWN_METRICS]
    if not names:
        return []
    figure, _ = plot_curves({folder.name: plot_series(metrics, names)}, names, log_scale=False)
    figure.axes[-1].set_xlabel(x_name or "row")
    best, final = mapping(results.get("best")), mapping(results.get("final"))
    rows = [
        [
            n,
            final.get(n),
            mapping(best.get(n)).get("value"),
            mapping(best.get(n)).get("goal"),
            mapping(best.get(n)).get("at"),
        ]
        for n in names
    ]
    return [
        section(
            f"Metrics ({name})",
            table(["metric", "final", "best", "goal", f"at {x_name or 'row'}"], rows)
            + f'<div class="plot">{svg_inline(figure)}</div>',
        )
    ]


def image_sections(folder: Path) -> list:
    """The images a script wrote (PNG, SVG, GIF, JPEG), shown as images: never as markup, so an
    SVG runs nothing."""
    kinds = {
        ".png": "image/png",
        ".svg": "image/svg+xml",
        ".gif": "image/gif",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
    }
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in kinds
        and p.is_file()
        and not p.is_symlink()
        and p.stat().st_size <= MAX_SHOWN_IMAGE_BYTES
    )[:SHOWN_IMAGES]
    if not paths:
        return []
    figures = [
        f'<figure><img alt="{esc(p.name)}" src="data:{kinds[p.suffix.lower()]};base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{esc(p.relative_to(folder).as_posix())}'
        "</figcaption></figure>"
        for p in paths
    ]
    return [section("Images the run wrote", f'<div class="grid">{"".join(figures)}</div>')]


def tensor_sections(folder: Path) -> list:
    sections = []
    dreams = sorted((folder / "dreams").glob("*.cten"))[-SHOWN_TENSORS:]
    if dreams:
        figures = []
        for path in dreams:
            tensor = read_cten(path)
            rgb = np.clip(tensor.rgb.astype(np.float64), 0, 1)
            scale = max(1, 160 // max(rgb.shape[:2]))
            big = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
            hue, saturation, lightness = rgb_to_hsl(rgb)
            figures.append(
                f"<figure>{png_img(png_bytes(big, 8), path.name)}<figcaption>{esc(path.name)}: "
                f"mean "
                f"lightness {float(lightness.mean()):.3f}, saturation "
                f"{float(saturation.mean()):.3f}"
                "</figcaption></figure>"
            )
        sections.append(section("Dreams (newest)", f'<div class="grid">{"".join(figures)}</div>'))
    spectra = sorted((folder / "bridge").glob("*.sten"))[-2:]
    if spectra:
        figures = [
            f'<figure class="plot">{svg_inline(spectrum_figure(read_sten(p), False))}'
            f"<figcaption>{esc(p.name)}</figcaption></figure>"
            for p in spectra
        ]
        sections.append(
            section("Bridge spectra (newest)", f'<div class="grid">{"".join(figures)}</div>')
        )
    return sections


def result_sections(report: dict) -> list:
    results = report.get("results") or {}
    rows = [
        [key, value]
        for key, value in sorted(results.items())
        if key
        not in (
            "differences",
            "causes",
            "spec_table",
            "skipped",
            "warnings",
            "settings",
            "aggregates",
        )
    ]
    sections = [section("Results", table(["result", "value"], rows, mono=(1,)))] if rows else []
    if results.get("aggregates"):
        sections.append(
            section(
                "Across seeds",
                table(
                    ["configuration", "metric", "mean", "std (n-1)", "min", "max", "n"],
                    aggregate_rows(results["aggregates"]),
                    mono=(0,),
                ),
            )
        )
    problems = [
        [kind, item] for kind in ("warnings", "skipped") for item in (results.get(kind) or [])
    ]
    if problems:
        sections.append(
            section("Warnings and skipped files", table(["kind", "what"], problems[:ARTIFACT_ROWS]))
        )
    return sections


def artifact_section(report: dict, registry: dict) -> str:
    outputs = report.get("outputs") or {}
    rows = [
        [
            path,
            entry.get("size"),
            entry.get("sha256"),
            (registry.get(path) or {}).get("run", report["run_id"]),
        ]
        for path, entry in sorted(outputs.items())[:ARTIFACT_ROWS]
    ]
    more = (
        f"<p>and {len(outputs) - ARTIFACT_ROWS} more (see the run report)</p>"
        if len(outputs) > ARTIFACT_ROWS
        else ""
    )
    return section(
        f"Artifacts ({len(outputs)})",
        table(["path", "bytes", "sha256", "produced by"], rows, mono=(0, 2)) + more,
    )


# --------------------------------------------------------------------------
# A verify report
# --------------------------------------------------------------------------


def verify_sections(workspace: Path, report: dict) -> list:
    results = report.get("results") or {}
    verdict = "identical" if results.get("identical") else "different"
    rows = [
        [name, "pass" if row.get("pass") else "FAIL", {k: v for k, v in row.items() if k != "pass"}]
        for name, row in (results.get("spec_table") or {}).items()
    ]
    sections = [
        section(
            "Verdict",
            f'<p class="{"pass" if results.get("identical") else "fail"}">'
            f"{esc(verdict)}: {esc(results.get('artifacts'))} artifacts, "
            f"{esc(results.get('differing'))} "
            f"differ ({esc(results.get('runs', 2))} runs)</p><p>varied: "
            f"{esc(', '.join(results.get('varied', [])))}</p>"
            + table(["check", "verdict", "details"], rows),
        )
    ]
    causes = results.get("causes") or []
    if causes:
        items = []
        for cause in causes:
            label = " + ".join(cause["variations"]) + (
                " (together)" if cause.get("interaction") else ""
            )
            rows = [
                [
                    a["artifact"],
                    d["where"],
                    d.get("first"),
                    d.get("second"),
                    {k: v for k, v in d.items() if k not in ("where", "first", "second")} or "",
                ]
                for a in cause["artifacts"]
                for d in a["differences"]
            ]
            said = [
                ("changed", "; ".join(cause.get("changed") or [])),
                ("likely sources", "; ".join(cause.get("likely_sources") or [])),
                ("fix", cause.get("fix")),
            ]
            notes = "".join(f"<p><b>{name}:</b> {esc(text)}</p>" for name, text in said if text)
            items.append(
                f'<h3><span class="badge">{esc(label)}</span></h3>{notes}'
                + table(["artifact", "where", "first run", "second run", "more"], rows, mono=(0, 1))
            )
        sections.append(section("Causes", "".join(items)))
    kept = workspace / RESULTS / report["run_id"] / "differences"
    blocks = []
    for item in results.get("differences") or []:
        rows = [
            [
                d["where"],
                d.get("first"),
                d.get("second"),
                {k: v for k, v in d.items() if k not in ("where", "first", "second")},
            ]
            for d in item["differences"]
        ]
        images = side_by_side(kept, item) if item.get("type") == "image" else ""
        blocks.append(
            f"<h3><code>{esc(item['artifact'])}</code> <span "
            f'class="badge">{esc(item.get("type"))}</span>'
            f"</h3>{images}" + table(["where", "first run", "second run", "more"], rows, mono=(0,))
        )
    if blocks:
        sections.append(section("Every difference", "".join(blocks)))
    return sections


def side_by_side(kept: Path, item: dict) -> str:
    """Both versions of a differing image, each with the differing boxes drawn over it."""
    import imageio.v3 as iio

    figures = []
    for run in ("first", "second"):
        path = path_inside(kept / run, item["artifact"])
        if not path.is_file():
            return ""
        data = path.read_bytes()
        try:
            height, width = iio.imread(data, index=0 if path.suffix == ".gif" else None).shape[:2]
        except (
            Exception
        ):  # a kept copy that is no image (damaged, or put there): the table still shows it
            return ""
        boxes = []
        for difference in item["differences"]:
            rows_cols = _box(difference["where"])
            if rows_cols:
                top, bottom, left, right = rows_cols
                boxes.append(
                    f'<span style="top:{100 * top / height:.3f}%;left:{100 * left / width:.3f}%;'
                    f"height:{100 * (bottom - top + 1) / height:.3f}%;"
                    f'width:{100 * (right - left + 1) / width:.3f}%"></span>'
                )
        mime = "image/gif" if path.suffix == ".gif" else "image/png"
        figures.append(
            f'<figure><div class="box"><img alt="{run} run" src="data:{mime};base64,'
            f'{base64.b64encode(data).decode()}">{"".join(boxes)}</div>'
            f"<figcaption>{run} run</figcaption></figure>"
        )
    return f'<div class="grid">{"".join(figures)}</div>'


def _box(where: str):
    """(top, bottom, left, right) from ``rows a-b, columns c-d`` (artifact_diff's image places)."""
    try:
        rows, columns = where.split(": ")[-1].split(", ")
        top, bottom = (int(v) for v in rows.split()[1].split("-"))
        left, right = (int(v) for v in columns.split()[1].split("-"))
    except (ValueError, IndexError):
        return None
    return top, bottom, left, right


# --------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------


def build_page(workspace: Path, report: dict, undeclared_reads: dict | None = None) -> str:
    """The page of ``report``; ``undeclared_reads`` ({run id: [file]}, a proof crate's preview)
    adds the files runs opened for reading without declaring them."""
    registry = WorkspaceRecords(workspace).registry()
    title = f"{report.get('script')} — {report['run_id']}"
    sections = verify_sections(workspace, report) if report.get("script") == "verify" else []
    if undeclared_reads is not None:
        sections.append(reads_section(undeclared_reads))
    return page(title, sections + run_sections(workspace, report, registry))


def reads_section(undeclared_reads: dict) -> str:
    """The files each run read (traced through Python's audit hooks) but did not declare."""
    rows = [[run_id, name] for run_id, names in sorted(undeclared_reads.items()) for name in names]
    if not rows:
        body = "<p>Every workspace file the runs opened for reading was declared.</p>"
    else:
        body = (
            "<p>Opened for reading (Python's audit hooks) but not declared as an input: "
            f"{len(rows)} files.</p>" + table(["run", "file"], rows[:ARTIFACT_ROWS], mono=(1,))
        )
    return section("Files read but not declared", body, "undeclared-reads")
