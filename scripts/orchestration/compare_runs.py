"""Compare recorded runs: config, metrics, environment and artifacts, side by side.

    python scripts/orchestration/compare_runs.py \\
        experiments/results/phase5 experiments/results/phase6
    python scripts/orchestration/compare_runs.py \\
        run_experiment_20251031T120000Z.json other.json --html

Each RUN is a run report, a run folder or a log folder (as html_report takes
them); a report file may lie in another workspace (a colleague's copy), and
its run is read there. The comparison (JSON on stdout) holds:

* ``config``: every config key whose value differs, with each run's value;
* ``arguments``: for external commands, each argument whose value differs
  (``--lr 1.0 -> 0.5``);
* ``metrics``: final and best values per run (the reference experiment's
  loss, val_loss and coherence; an external script's every metric from its
  own metrics file), and ``--html`` overlays their curves;
* ``code``: for external commands, what differs in the command's own code
  and Python between the first run and each other one (a changed or missing
  code file, other packages, another Python or torch), as ``rerun`` names it;
* ``environment``: whether ``env_hash`` differs, and which fields;
* ``artifacts``: each output, named relative to its run's folder, as
  ``same``, ``different`` or present only in some runs.

With ``--html`` the same is written as one self-contained page (a recorded
output; its path is in the JSON). Exit 0 when the runs are identical in
their results (every artifact the same), 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.orchestration.external_runs import changed_since
from scripts.utils import cli
from scripts.utils.compute.environment import differences as environment_differences
from scripts.utils.config.loading import flatten
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.formats.html_page import aggregate_rows, esc, page, section, svg_inline, table
from scripts.utils.formats.run_metrics import plot_series
from scripts.utils.formats.run_metrics import read_metrics as read_run_metrics
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import RESULTS, path_inside, resolve_workspace
from scripts.visualization.curves import METRICS, SHOWN_METRICS, plot_curves, read_metrics


def run_folder_of(report: dict) -> str:
    """The folder a run's outputs are named relative to: its log folder, else its run folder."""
    logdir = (report.get("results") or {}).get("logdir")
    return logdir if isinstance(logdir, str) else f"{RESULTS}/{report['run_id']}"


def relative_outputs(report: dict) -> dict:
    """{output path relative to the run's folder: sha256}."""
    folder = run_folder_of(report).rstrip("/") + "/"
    return {
        (path[len(folder) :] if path.startswith(folder) else path): entry.get("sha256")
        for path, entry in (report.get("outputs") or {}).items()
    }


def compare_configs(reports: list) -> list:
    flats = [flatten(report.get("config") or {}) for report in reports]
    keys = sorted(set().union(*flats))
    return [
        {"key": key, "values": [flat.get(key, "<absent>") for flat in flats]}
        for key in keys
        if len({repr(flat.get(key, "<absent>")) for flat in flats}) > 1
    ]


def compare_environments(reports: list) -> dict:
    first = reports[0].get("environment") or {}
    fields = sorted(
        {
            item["field"]
            for report in reports[1:]
            for item in environment_differences(first, report.get("environment") or {})
        }
    )
    hashes = [report.get("env_hash") for report in reports]
    return {
        "env_hash_differs": len(set(hashes)) > 1,
        "env_hashes": hashes,
        "differing_fields": fields,
    }


def compare_artifacts(reports: list) -> dict:
    outputs = [relative_outputs(report) for report in reports]
    rows = {}
    for name in sorted(set().union(*outputs)):
        hashes = [found.get(name) for found in outputs]
        if None in hashes:
            rows[name] = "only in " + ", ".join(
                r["run_id"] for r, h in zip(reports, hashes) if h is not None
            )
        else:
            rows[name] = "same" if len(set(hashes)) == 1 else "different"
    counts = {
        "same": sum(v == "same" for v in rows.values()),
        "different": sum(v == "different" for v in rows.values()),
        "only_in_some": sum(v.startswith("only") for v in rows.values()),
    }
    return {"counts": counts, "files": rows}


def locate(workspace: Path, target: str, force: bool = False) -> tuple[dict, Path]:
    """The run report a target names and the workspace it lives in (a report file names its own)."""
    path = Path(target)
    if (
        path.suffix == ".json"
        and path.is_file()
        and path.resolve().parent.name == "results"
        and path.resolve().parents[1].name == "experiments"
    ):
        home = path.resolve().parents[2]
        return WorkspaceRecords(home).resolve(str(path.resolve()), force), home
    return WorkspaceRecords(workspace).resolve(target, force), workspace


def command_arguments(command: list) -> dict:
    """{option: value} of an argv: ``--lr 0.5`` and ``--lr=0.5`` alike; a flag alone is ``true``."""
    found, index = {}, 0
    while index < len(command):
        part = str(command[index])
        if part.startswith("-") and len(part) > 1 and not part[1:2].isdigit():
            if "=" in part:
                name, value = part.split("=", 1)
            elif index + 1 < len(command) and not str(command[index + 1]).startswith("-"):
                name, value = part, str(command[index + 1])
                index += 1
            else:
                name, value = part, "true"
            found[name] = value
        index += 1
    return found


def compare_arguments(reports: list) -> list:
    """The external commands' arguments that differ, as ``--lr 1.0 -> 0.5`` (every run's value in
    order)."""
    parsed = [
        command_arguments(((report.get("external") or {}).get("command") or [])[1:])
        for report in reports
    ]
    names = list(dict.fromkeys(name for found in parsed for name in found))
    return [
        {
            "argument": name,
            "values": [found.get(name, "<absent>") for found in parsed],
            "change": f"{name} " + " -> ".join(found.get(name, "<absent>") for found in parsed),
        }
        for name in names
        if len({found.get(name, "<absent>") for found in parsed}) > 1
    ]


def compare_code(reports: list) -> dict:
    """{run id: changes} of each external run's code and Python against the first run's (none:
    left out)."""
    first = reports[0].get("external")
    if not isinstance(first, dict):
        return {}
    found = {}
    for report in reports[1:]:
        if isinstance(report.get("external"), dict):
            changes = changed_since(first, report["external"])
            if changes:
                found[report["run_id"]] = changes
    return found


def script_metrics(report: dict, folder: Path):
    """(series for plotting, {metric: {"final", "best"}}) of an external run's own metrics file."""
    results = report.get("results") or {}
    name = results.get("metrics_file")
    if not isinstance(name, str) or not (folder / name).is_file():
        return None, {}
    metrics = read_run_metrics(path_inside(folder, name))
    names = [metric for metric in metrics["columns"] if metric != metrics["x"]]
    summary = {
        metric: {
            "final": (results.get("final") or {}).get(metric),
            "best": ((results.get("best") or {}).get(metric) or {}).get("value"),
        }
        for metric in names
    }
    return plot_series(metrics, names), summary


def comparison(located: list) -> tuple[dict, dict]:
    reports = [report for report, _ in located]
    series, metrics = {}, {}
    for report, home in located:
        folder = path_inside(home, run_folder_of(report))
        if isinstance(report.get("external"), dict):
            found, summary = script_metrics(report, folder)
        else:
            found, summary = read_metrics(folder)
        if found is not None:
            series[report["run_id"]], metrics[report["run_id"]] = found, summary
    artifacts = compare_artifacts(reports)
    result = {
        "runs": [report["run_id"] for report in reports],
        "config": compare_configs(reports),
        "arguments": compare_arguments(reports),
        "code": compare_code(reports),
        "metrics": metrics,
        "environment": compare_environments(reports),
        "artifacts": artifacts,
        "aggregates": {
            report["run_id"]: report["results"]["aggregates"]
            for report in reports
            if (report.get("results") or {}).get("aggregates")
        },
        "identical_results": artifacts["counts"]["different"] == 0
        and artifacts["counts"]["only_in_some"] == 0,
    }
    return result, series


def comparison_page(result: dict, series: dict) -> str:
    runs = result["runs"]
    sections = [
        section(
            "Verdict",
            f'<p class="{"pass" if result["identical_results"] else "fail"}">'
            + ("identical results" if result["identical_results"] else "the results differ")
            + f"</p><p>{esc(result['artifacts']['counts'])}</p>",
        )
    ]
    sections.append(
        section(
            "Config: keys that differ",
            table(
                ["key", *runs],
                [[row["key"], *row["values"]] for row in result["config"]],
                mono=(0,),
            )
            if result["config"]
            else "<p>none</p>",
        )
    )
    if result.get("arguments"):
        sections.append(
            section(
                "Arguments that differ",
                table(
                    ["argument", *runs],
                    [[row["argument"], *row["values"]] for row in result["arguments"]],
                    mono=(0,),
                ),
            )
        )
    if result["metrics"]:
        names = list(dict.fromkeys(m for run in runs for m in result["metrics"].get(run, {})))[
            :SHOWN_METRICS
        ]
        rows = [
            [
                metric,
                kind,
                *[result["metrics"].get(run, {}).get(metric, {}).get(kind) for run in runs],
            ]
            for metric in names
            for kind in ("final", "best")
        ]
        plotted = [m for m in names if all(m in found for found in series.values())]
        figure, _ = plot_curves(series, plotted or METRICS, log_scale=False)
        sections.append(
            section(
                "Metrics",
                table(["metric", "", *runs], rows)
                + f'<div class="plot">{svg_inline(figure)}</div>',
            )
        )
    for run, aggregates in result.get("aggregates", {}).items():
        sections.append(
            section(
                f"Across seeds: {run}",
                table(
                    ["configuration", "metric", "mean", "std (n-1)", "min", "max", "n"],
                    aggregate_rows(aggregates),
                    mono=(0,),
                ),
            )
        )
    for run, changes in result.get("code", {}).items():
        sections.append(
            section(
                f"The command's code and Python: {run} against {runs[0]}",
                table(
                    ["what", "detail"],
                    [
                        [
                            change["what"],
                            "; ".join(
                                f"{key}: {value}" for key, value in change.items() if key != "what"
                            ),
                        ]
                        for change in changes
                    ],
                    mono=(1,),
                ),
            )
        )
    environment = result["environment"]
    sections.append(
        section(
            "Environment",
            table(["", *runs], [["env_hash", *environment["env_hashes"]]], mono=(1,))
            + f"<p>differing fields: "
            f"{esc(', '.join(environment['differing_fields']) or 'none')}</p>",
        )
    )
    files = [[name, state] for name, state in result["artifacts"]["files"].items()]
    files.sort(key=lambda row: (row[1] == "same", row[0]))
    sections.append(
        section(
            "Artifacts",
            table(
                ["artifact (relative to its run folder)", "state"],
                files[:1000],
                ["" if state == "same" else "set" for _, state in files[:1000]],
                mono=(0,),
            ),
        )
    )
    return page("compare: " + " · ".join(runs), sections)


def compare_command(args, log) -> int:
    if len(args.runs) < 2:
        raise InputError("give two or more runs to compare", runs=args.runs)
    workspace = resolve_workspace(args.workspace)
    result, series = comparison([locate(workspace, target, args.force) for target in args.runs])
    if args.html:
        with RunRecorder(
            "compare_runs", workspace=workspace, log=log, config={"runs": result["runs"]}
        ) as record:
            record.output_path("compare.html").write_text(
                comparison_page(result, series), encoding="utf-8"
            )
            record.results.update(
                identical_results=result["identical_results"], runs=result["runs"]
            )
        result["html"] = str(workspace / record.folder / "compare.html")
    cli.print_json(result)
    if not result["identical_results"]:
        raise CheckFailed("the runs' results differ", **result["artifacts"]["counts"])
    log.info("identical_results", runs=result["runs"])
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "compare_runs",
        doc=__doc__,
        description="Compare recorded runs: config, metrics, environment and artifacts.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run reports, run folders or log folders (two or more)",
    )
    parser.add_argument(
        "--html", action="store_true", help="also write the comparison as an HTML page"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="use reports their workspace's manifest does not hold (copied alone, or edited)",
    )
    cli.add_common_options(parser)
    return cli.run(parser, compare_command, argv)


if __name__ == "__main__":
    sys.exit(main())
