"""One self-contained HTML page for a run, a run folder, or a make verify report.

    python scripts/visualization/html_report.py                              # the newest phase run
    python scripts/visualization/html_report.py experiments/results/phase7   # a run or log folder
    python scripts/visualization/html_report.py experiments/results/verify_20251031T120000Z.json

The page holds the config (keys set by ``--set`` highlighted), the seeds,
the environment and its hash, the metrics as plots (inline SVG) with their
final and best values, the newest dreams (PNG) and bridge spectra (SVG),
the artifact table (path, size, SHA-256, the run that produced it), and
warnings and skipped files. For a verify report: the spec's pass/fail
table, each cause with its artifacts, and every difference side by side
(both values; for images both versions with the differing boxes drawn,
from the copies verify keeps of small differing files).

Everything is inline (no network, no script), the layout reads at 1280 px
and on a phone, and the same inputs give the same bytes. The page is a
recorded output (``experiments/results/html_report_<stamp>/report.html``);
its path is printed. ``make report`` writes one for the newest phase run.
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

from scripts.utils import cli
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import resolve_workspace, run_report
from scripts.visualization.pages import build_page


def write_report(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    report = WorkspaceRecords(workspace).resolve(args.target, force=args.force)
    text = build_page(workspace, report)
    with RunRecorder(
        "html_report",
        argv=args.argv,
        workspace=workspace,
        log=log,
        config={"run": report["run_id"]},
    ) as record:
        record.consume(workspace / run_report(report["run_id"]), report["run_id"])
        record.output_path("report.html").write_text(text, encoding="utf-8")
        record.results.update(run=report["run_id"], html=f"{record.folder}/report.html")
    path = workspace / record.folder / "report.html"
    log.info("report_written", run=report["run_id"], html=str(path))
    cli.print_json({"run": report["run_id"], "html": str(path)})
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "html_report",
        doc=__doc__,
        description="Write one self-contained HTML page for a run, a run folder, or a verify "
        "report.",
    )
    parser.add_argument(
        "target",
        nargs="?",
        metavar="RUN",
        help="a run report (.json), a run folder or log folder (default: the newest phase run)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="show a report the workspace's manifest does not hold (from elsewhere, or edited)",
    )
    cli.add_common_options(parser)
    return cli.run(parser, write_report, argv)


if __name__ == "__main__":
    sys.exit(main())
