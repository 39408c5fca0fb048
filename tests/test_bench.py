"""The benchmark runner works end to end (quick mode: a smoke test, no timing claims)."""

import subprocess
import sys

from scripts.utils.jsonio import read_json
from tests.conftest import REPO


def test_quick_bench_writes_a_report_with_ratios(workspace):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "run_bench.py"), "--quick", "--repeat", "1",
                             "--workspace", str(workspace)], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    (report_path,) = (workspace / "experiments" / "results").glob("bench_*.json")
    report = read_json(report_path)
    figures = report["results"]["benchmarks"]
    assert [f["name"].startswith("log_converter") for f in figures] == [True, True]
    for figure in figures:
        assert figure["ratio"] > 0 and figure["anchor"]["value"] > 0 and isinstance(figure["met"], bool)
    assert report_path.relative_to(workspace).as_posix() in read_json(workspace / "data/hash_registry.json")["files"]
