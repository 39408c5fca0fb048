"""Fixtures for the data tools: a workspace holding the sample dataset."""

import pytest

from scripts.data_tools.sample_data import write_sample_dataset
from scripts.utils.config.seeds import SeedManager
from scripts.utils.records.run_records import RunRecorder


def make_sample(workspace, patients=4, slices=3, size=32):
    seeds = SeedManager.from_file()
    with RunRecorder("sample_data", workspace=workspace, seeds=seeds) as run:
        write_sample_dataset(workspace, seeds, run, patients, slices, size)
    return workspace / "data" / "sample"


@pytest.fixture
def sample_workspace(workspace):
    make_sample(workspace)
    return workspace
