"""Start Dask workers on a batch system (Slurm, PBS) for ``--scheduler``, through dask-jobqueue.

    python scripts/orchestration/cluster_launcher.py slurm --jobs 8
    python scripts/orchestration/cluster_launcher.py pbs --jobs 2 --config my_site.yaml --job-script

The launcher reads dask-jobqueue's settings from ``--config`` (default:
``scripts/orchestration/clusters/jobqueue.yaml``: cores, memory, queue,
account, walltime per job), starts a Dask scheduler here, submits ``--jobs``
batch jobs of workers, prints one JSON line on stdout with the scheduler's
address, and keeps the cluster up until it is interrupted (Ctrl-C, SIGTERM),
when the jobs are cancelled. In another shell, on a machine that sees the
same shared storage::

    make phase7 DATA=/shared/archive SCHEDULER=tcp://<address printed>
    python scripts/data_tools/hash_integrity.py hash /shared/archive --scheduler tcp://...

Each job runs this checkout's Python with ``PYTHONPATH`` at the checkout, so
the workers run the same code and packages as the client (utils/compute/cluster.py
checks it before any work). ``--job-script`` prints the batch script that
would be submitted and exits, submitting nothing.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.utils import cli
from scripts.utils.config.loading import load_config_file
from scripts.utils.errors import InputError
from scripts.utils.workspace import REPO_ROOT

DEFAULT_CONFIG = Path(__file__).resolve().parent / "clusters" / "jobqueue.yaml"
SYSTEMS = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


def job_cluster(system: str, config_file: Path, log=None):
    """The dask-jobqueue cluster for ``system`` with the settings of ``config_file`` (no job
    submitted yet)."""
    import dask_jobqueue

    settings = load_config_file(config_file)
    section = (settings.get("jobqueue") or {}).get(system) if isinstance(settings, dict) else None
    if not isinstance(section, dict):
        raise InputError(
            f"the config has no jobqueue.{system} section",
            file=config_file,
            key=f"jobqueue.{system}",
        )
    options = {key.replace("-", "_"): value for key, value in section.items()}
    missing = [key for key in ("cores", "memory") if not options.get(key)]
    if missing:
        raise InputError(
            f"jobqueue.{system} needs {' and '.join(missing)} (per job)",
            file=config_file,
            key=f"jobqueue.{system}.{missing[0]}",
        )
    options["job_script_prologue"] = [
        f"cd {REPO_ROOT}",
        f"export PYTHONPATH={REPO_ROOT}",
        *options.get("job_script_prologue", []),
    ]
    try:
        cluster = getattr(dask_jobqueue, SYSTEMS[system])(
            python=sys.executable, scheduler_options={"dashboard_address": ":8787"}, **options
        )
        cluster.job_script()  # dask-jobqueue checks most settings only when it writes a job
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(
            f"dask-jobqueue refused the settings: {exc}", file=config_file, key=f"jobqueue.{system}"
        )
    return cluster


def launch_cluster(args, log) -> int:
    with job_cluster(args.system, Path(args.config), log) as cluster:
        if args.job_script:
            sys.stdout.write(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        cli.print_json(
            {
                "scheduler": cluster.scheduler_address,
                "dashboard": cluster.dashboard_link,
                "jobs": args.jobs,
            }
        )
        log.info(
            "cluster_up",
            scheduler=cluster.scheduler_address,
            jobs=args.jobs,
            note="leave this running; Ctrl-C cancels the jobs",
        )
        stop = threading.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: stop.set())
        stop.wait()
        log.info("cluster_down", scheduler=cluster.scheduler_address)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "cluster_launcher",
        doc=__doc__,
        description="Start a Dask scheduler here and workers as batch jobs (dask-jobqueue), for "
        "--scheduler.",
        example="python scripts/orchestration/cluster_launcher.py slurm --jobs 8",
    )
    parser.add_argument("system", choices=sorted(SYSTEMS), help="the batch system")
    parser.add_argument(
        "--jobs",
        type=cli.bounded(int, 1, 10_000),
        default=1,
        help="batch jobs of workers to submit",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=str(DEFAULT_CONFIG),
        help="dask-jobqueue settings (YAML/TOML/JSON with a jobqueue.<system> section)",
    )
    parser.add_argument(
        "--job-script", action="store_true", help="print the job script and exit (submit nothing)"
    )
    cli.add_common_options(parser, workspace=False)
    return cli.run(parser, launch_cluster, argv)


if __name__ == "__main__":
    sys.exit(main())
