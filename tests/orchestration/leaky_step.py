"""Test helper: a pipeline step with a hidden nondeterminism, chosen by its argument.

python tests/orchestration/leaky_step.py tz|hashseed|none --workspace DIR
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.utils.records.run_records import RunRecorder  # noqa: E402


def main() -> None:
    leak, workspace = sys.argv[1], sys.argv[3]
    content = {
        "tz": f"offset {time.strftime('%z', time.localtime(0))}\n",
        "hashseed": f"bucket {hash('dreamer') % 1000}\n",
        "none": "steady\n",
    }[leak]
    with RunRecorder("leaky_step", workspace=workspace) as run:
        run.output_path("value.txt").write_text(content)
        run.output_path("stable.json").write_text('{"a": 1}\n')


if __name__ == "__main__":
    main()
