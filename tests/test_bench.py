"""The benchmark runner works end to end (quick mode: a smoke test, no timing claims)."""

import subprocess
import sys

from scripts.utils.jsonio import read_json
from tests.conftest import REPO

EXPECTED = {
    "log_converter_single_process",
    "log_converter_workers_",
    "hash_tree_vs_hashlib_one_thread",
    "hash_tree_vs_same_work_one_thread",
    "reverify_unchanged_tree",
    "split_full_manifest",
    "split_assignment_only",
    "metadata_extraction",
    "preprocess_ct_slices",
    "preprocess_ct_slices_one_process",
    "run_experiment_record_keeping",
    "reference_experiment_cupy_vs_numpy",
    "dream_animation_gif",
    "tensor_visualizer_files",
    "make_verify_time",
    "pipeline_second_call",
    "registry_growth",
    "volume_assembly",
    "cluster_metadata_vs_local",
    "cluster_hashing_vs_local",
    "log_converter_all_formats",
    "exact_product_vs_float32_blas",
    "reference_experiment_step_exact_vs_int64",
    "reference_experiment_first_cycle_exact_vs_int64",
}


def test_quick_bench_writes_a_report_with_every_figure(workspace):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run_bench.py"),
            "--quick",
            "--repeat",
            "1",
            "--workspace",
            str(workspace),
        ],
        capture_output=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr.decode()
    (report_path,) = (workspace / "experiments" / "results").glob("bench_*.json")
    report = read_json(report_path)
    figures = report["results"]["benchmarks"]
    names = {
        f["name"]
        if not f["name"].startswith("log_converter_workers_")
        else "log_converter_workers_"
        for f in figures
    }
    assert EXPECTED <= names
    for figure in figures:
        if figure.get("skipped"):  # the GPU comparison, on a machine without one
            assert figure["reason"] and figure["met"] is None
            continue
        assert figure["ratio"] > 0 and figure["anchor"]["value"] > 0 and figure["value"] > 0
        assert figure["met"] in (True, False, None)
        assert (figure["target"] is None) == (figure["met"] is None)
    by_name = {f["name"]: f for f in figures}
    assert (
        by_name["reference_experiment_step_exact_vs_int64"]["same_weights"] is True
    )  # exact = int64, bit for bit
    assert by_name["reference_experiment_first_cycle_exact_vs_int64"]["same_outputs"] is True
    splitter = [f for f in figures if f["name"] == "split_assignment_only"][0]
    assert splitter["growth_10_percent"]["records_moved_ours"] == 0
    assert (
        report_path.relative_to(workspace).as_posix()
        in read_json(workspace / "data/hash_registry.json")["files"]
    )
    # Scaling curves: 1 and 2 workers beside the ideal, 1/100, 1/10 and all of the input, and one
    # PNG of them.
    curves = {f["scaling"]["name"]: f["scaling"] for f in figures if "scaling" in f}
    assert set(curves) == {"hashing", "metadata", "preprocess"}
    for curve in curves.values():
        assert (
            curve["workers"][0]["workers"] == 1
            and curve["workers"][0]["ideal"] == curve["workers"][0]["rate"]
        )
        assert [item["files"] for item in curve["sizes"]] == sorted(
            item["files"] for item in curve["sizes"]
        )
        assert len(curve["sizes"]) == 3 and all(item["seconds"] > 0 for item in curve["sizes"])
    plot = workspace / report["results"]["scaling_plot"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        plot.relative_to(workspace).as_posix()
        in read_json(workspace / "data/hash_registry.json")["files"]
    )
