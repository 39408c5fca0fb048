"""Test helper: record runs in a loop, printing "ack RUN_ID" after each commit.

    python tests/utils/records/record_worker.py WORKSPACE SCRIPT RUNS OUTPUTS_PER_RUN

Used by the concurrency test (many of these at once) and the crash test
(killed with SIGKILL while it writes).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from scripts.utils.records.run_records import RunRecorder  # noqa: E402


def main() -> None:
    workspace, script, runs, outputs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for run_number in range(runs):
        with RunRecorder(script, workspace=workspace) as run:
            for index in range(outputs):
                run.output_path(f"out_{index}.txt").write_text(f"{script} {run_number} {index}\n")
        sys.stdout.write(f"ack {run.run_id}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
