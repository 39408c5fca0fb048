"""The log converter on a corpus of every format it recognises, line by line.

The corpus (tests/utils/formats/log_corpus/) was written for these tests from each
format's documentation and its project's source (glog/absl, PyTorch C10 and
torchrun, NCCL's debug.cc, RFC 3164 and 5424, Slurm, tqdm, rich, transformers,
Lightning, Hydra, loguru); no line is copied from anyone's log. Every record
is compared whole: a field that appears or goes missing fails the test.
"""

import io
import itertools
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from scripts.utils.formats import log_convert
from scripts.utils.formats.log_convert import convert_lines, convert_stream
from tests.conftest import json_lines, run_script, single_error

CORPUS = Path(__file__).parent / "log_corpus"
END_OF_2025 = date(2025, 12, 31)


def R(line, fmt, ts=None, level=None, source=None, msg=None, **extra):
    return {
        "ts": ts,
        "level": level,
        "source": source,
        "msg": msg,
        "format": fmt,
        "line": line,
        **extra,
    }


def convert(data: bytes, **options) -> list:
    options.setdefault("year_reference", END_OF_2025)
    sink = io.BytesIO()
    convert_stream(io.BytesIO(data), sink, **options)
    return json_lines(sink.getvalue())


EXPECTED = {
    "python.log": [
        R(1, "python", None, "info", "root", "starting"),
        R(2, "python", None, "warning", "trainer.data", "3 corrupt images skipped"),
        R(
            3,
            "python",
            "2025-11-26T12:00:00.123Z",
            "info",
            "trainer.loop",
            "epoch 1 done",
            ts_raw="2025-11-26 12:00:00,123",
        ),
        R(
            4,
            "python",
            "2025-11-26T12:00:01.456Z",
            "error",
            "trainer.io",
            'cannot open shard 7\nTraceback (most recent call last):\n  File "trainer/io.py", line '
            "42, in load\n"
            '    return open(path, "rb")\nFileNotFoundError: [Errno 2] No such file or directory: '
            "'shard7'",
            ts_raw="2025-11-26 12:00:01,456",
        ),
        R(
            9,
            "python",
            "2025-11-26T12:00:02.000Z",
            "debug",
            "trainer.sub",
            "colon style",
            ts_raw="2025-11-26 12:00:02,000",
        ),
        R(
            10,
            "python",
            "2025-11-26T12:00:03.000Z",
            "info",
            "app",
            "flask style",
            ts_raw="2025-11-26 12:00:03,000",
        ),
        R(
            11,
            "python",
            "2025-11-26T12:00:04.500Z",
            "info",
            "__main__",
            "Instantiating model <src.models.Net>",
            ts_raw="2025-11-26 12:00:04,500",
        ),
        R(
            12,
            "python",
            "2025-11-26T12:00:05.250Z",
            "warning",
            "__main__:train:88",
            "loguru style",
            ts_raw="2025-11-26 12:00:05.250",
        ),
        R(
            13,
            "python",
            "2025-11-26T12:00:06.000Z",
            "info",
            None,
            "no logger name",
            ts_raw="2025-11-26 12:00:06,000",
        ),
        R(
            14,
            "python",
            "2025-11-26T12:00:07.000Z",
            "error",
            None,
            "bracketed level",
            ts_raw="2025-11-26 12:00:07,000",
        ),
        R(
            15,
            "python",
            "2025-11-26T12:00:08.000Z",
            "critical",
            None,
            "padded level",
            ts_raw="2025-11-26 12:00:08,000",
        ),
        R(
            16,
            "python",
            "2025-11-26T11:00:09Z",
            "info",
            "svc",
            "zone in the stamp",
            ts_raw="2025-11-26T12:00:09+01:00",
        ),
        R(
            17,
            "python",
            "2025-11-26T12:00:10.000Z",
            "info",
            "real_accelerator.py:191:get_accelerator",  # DeepSpeed
            "Setting ds_accelerator to cuda (auto detect)",
            ts_raw="2025-11-26 12:00:10,000",
        ),
    ],
    "hf_lightning.log": [
        R(
            1,
            "python",
            "2025-11-26T12:00:00Z",
            "warning",
            "__main__",
            "Process rank: 0, device: cuda:0, n_gpu: 1",
            ts_raw="11/26/2025 12:00:00",
        ),
        R(
            2,
            "python",
            "2025-11-26T12:00:00Z",
            "info",
            "__main__",
            "Training/evaluation parameters TrainingArguments(\n_n_gpu=1,\n)",
            ts_raw="11/26/2025 12:00:00",
        ),
        R(
            5,
            "transformers",
            "2025-11-26T12:00:01.250Z",
            "info",
            "configuration_utils.py:733",
            "loading configuration file config.json",
            ts_raw="2025-11-26 12:00:01,250",
        ),
        R(
            6,
            "transformers",
            "2025-11-26T12:00:02.000Z",
            "warning",
            "modeling_utils.py:4172",
            "Some weights of the model checkpoint were not used",
            ts_raw="2025-11-26 12:00:02,000",
        ),
        R(7, "python_dict", loss=0.6931, grad_norm=1.25, learning_rate=5e-05, epoch=0.5),
        R(8, "python_dict", train_runtime=12.5, train_samples_per_second=80.0, epoch=1.0),
        R(9, "plain", msg="GPU available: True (cuda), used: True"),
        R(10, "lightning", msg="Seed set to 42", rank=0),
        R(11, "lightning", msg="Seed set to 42", rank=1),
        R(
            12,
            "python_warning",
            None,
            "warning",
            "/opt/venv/lib/python3.11/site-packages/lightning/pytorch/trainer/connectors/data_connector.py:441",
            "The 'train_dataloader' does not have many workers which may be a bottleneck.",
        ),
        R(
            13,
            "python_warning",
            None,
            "warning",
            "/home/me/train.py:17",
            "The given NumPy array is not writable\n  x = torch.from_numpy(array)",
            category="UserWarning",
        ),
        R(
            15, "plain", msg="LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"
        ),  # not indented: not the warning's
        R(16, "plain", msg="tests/test_model.py:12: AssertionError"),  # pytest's line is no warning
    ],
    "glog.log": [
        R(
            1,
            "glog",
            "2025-11-26T12:00:00.123456Z",
            "info",
            "train.py:42",
            "step 10 loss 0.5",
            ts_raw="1126 12:00:00.123456",
            thread=140123,
        ),
        R(
            2,
            "glog",
            "2025-11-26T12:00:01.000500Z",
            "warning",
            "train.py:50",
            "slow step",
            ts_raw="1126 12:00:01.000500",
            thread=77,
        ),
        R(
            3,
            "glog",
            "2025-11-26T12:00:02.000001Z",
            "error",
            "checkpoint.cc:99",
            "cannot write checkpoint",
            ts_raw="20251126 12:00:02.000001",
            thread=12345,
        ),
        R(
            4,
            "glog",
            "2025-11-26T12:00:03.000000Z",
            "critical",
            "tensor.cc:120",
            "Check failed: shape.ok()\n*** Check failure stack trace: ***\n    @     "
            "0x7f0a1b2c3d4e  (unknown)",
            ts_raw="1126 12:00:03.000000",
            thread=12345,
        ),
        R(
            7,
            "glog",
            "2025-02-19T09:17:03.837000Z",
            "warning",
            "torch/distributed/elastic/multiprocessing/api.py:858",
            "Sending process 2448006 closing signal SIGTERM",
            ts_raw="0219 09:17:03.837000",
            thread=140066961602368,
        ),
        R(
            8,
            "glog",
            "2025-11-26T12:00:00.250000Z",
            "info",
            "cuda_executor.cc:1015",
            "successful NUMA node read from SysFS",
            ts_raw="0000 00:00:1764158400.250000",
            thread=1704934,
        ),
        R(
            9,
            "tensorflow",
            "2025-11-26T12:00:04.500000Z",
            "warning",
            "tensorflow/core/common_runtime/bfc_allocator.cc:290",
            "Allocator ran out of memory\nTo enable them in other operations, rebuild TensorFlow "
            "with the appropriate compiler flags.",
            ts_raw="2025-11-26 12:00:04.500000",
        ),
        R(
            11,
            "glog",
            None,
            "info",
            "bad.py:1",
            "month 13 does not exist",
            ts_raw="1340 12:00:05.000000",
            thread=1,
        ),
    ],
    "c10.log": [
        R(
            1,
            "c10",
            "2025-11-26T12:00:04.000000Z",
            "warning",
            "ProcessGroupNCCL.cpp:1234",
            "Warning: TORCH_NCCL_AVOID_RECORD_STREAMS=1 has no effect",
            ts_raw="1126 12:00:04.000000000",
        ),
        R(
            2,
            "c10",
            "2025-04-03T11:42:02.380967Z",
            "warning",
            "ProcessGroupNCCL.cpp:1250",
            "Warning: WARNING: destroy_process_group() was not called before program exit",
            ts_raw="403 11:42:02.380967152",
            rank=0,
        ),
        R(
            3,
            "c10",
            "2025-11-26T12:00:05.000000Z",
            "error",
            "ProcessGroupNCCL.cpp:616",
            "[Rank 1] Watchdog caught collective operation timeout",
            ts_raw="1126 12:00:05.000000000",
            rank=1,
        ),
        R(
            4,
            "c10",
            None,
            "warning",
            "socket.cpp:663",
            "[c10d] The client socket has failed to connect to [localhost]:29500",
        ),
        R(
            5,
            "c10",
            "2025-11-26T12:00:06.500000Z",
            "info",
            "TCPStore.cpp:312",
            "[c10d - debug] TCP client connected to host 127.0.0.1:29500",
            ts_raw="1126 12:00:06.500000000",
        ),
        R(
            6,
            "traceback",
            None,
            "error",
            None,
            'Traceback (most recent call last):\n  File "/home/me/train.py", line 30, in <module>',
            rank=0,
        ),
        # another rank's line is not rank 0's continuation, and it ends rank 0's open record
        R(8, "plain", msg='  File "/home/me/train.py", line 30, in <module>', rank=1),
        R(9, "plain", msg="torch.distributed.DistBackendError: NCCL error", rank=0),
        R(10, "plain", msg="epoch 1 done", rank=0, role="default"),
    ],
    "nccl.log": [
        R(
            1,
            "nccl",
            None,
            "info",
            "NCCL",
            "Bootstrap : Using eth0:10.0.0.1<0>",
            host="node01",
            pid=12345,
            thread=12345,
            device=0,
        ),
        R(
            2,
            "nccl",
            None,
            "info",
            "NCCL",
            "NCCL version 2.21.5+cuda12.4",
            host="node01",
            pid=12345,
            thread=12345,
            device=0,
        ),
        R(
            4,
            "nccl",
            "2025-11-26T12:00:00Z",
            "warning",
            "misc/socket.cc:484",
            "socketStartConnect: Connect to 10.0.0.2<35423> failed : Connection refused",
            ts_raw="2025-11-26 12:00:00",
            host="node01",
            pid=12345,
            thread=12399,
            device=0,
        ),
        R(
            5,
            "nccl",
            None,
            "warning",
            "proxy.cc:1441",
            "[Proxy Service 1] Failed to execute operation",
            host="node01",
            pid=12345,
            thread=12399,
            device=0,
        ),
        R(
            6,
            "nccl",
            None,
            "info",
            "NCCL",
            "Channel 00/02 :    0   1",
            host="gpu-node-7.cluster",
            pid=9,
            thread=9,
            device=3,
        ),
    ],
    "syslog.log": [  # converted with the year reference 2026-01-01: the log crosses New Year
        R(
            1,
            "syslog",
            "2025-11-26T12:00:02Z",
            None,
            "kernel",
            "[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.",
            ts_raw="Nov 26 12:00:02",
            host="gpu-node-3",
        ),
        R(
            2,
            "syslog",
            "2025-11-06T02:00:02Z",
            None,
            "sshd",
            "Accepted publickey for me from 10.0.0.5 port 50000 ssh2",
            ts_raw="Nov  6 02:00:02",
            host="gpu-node-3",
            pid=1234,
        ),
        R(
            3,
            "syslog",
            "2025-10-11T22:14:15Z",
            "critical",
            "su",
            "'su root' failed for lonvick on /dev/pts/8",
            ts_raw="Oct 11 22:14:15",
            host="mymachine",
            facility="auth",
        ),
        R(
            4,
            "syslog_rfc5424",
            "2025-11-26T22:14:15.003Z",
            "info",
            "evntslog",
            "An application event log entry",
            host="mymachine.example.com",
            msgid="ID47",
            facility="local4",
            structured_data={
                "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}
            },
        ),
        R(
            5,
            "syslog_rfc5424",
            "2025-11-26T11:00:00.5Z",
            "info",
            "app",
            "plain message",
            ts_raw="2025-11-26T12:00:00.5+01:00",
            host="host",
            procid="1234",
            facility="user",
        ),
        R(
            6,
            "syslog_rfc5424",
            None,
            "info",
            None,
            "BOM message",
            facility="user",
            structured_data={"a@1": {"k": "v ] x"}, "b@2": {}},
        ),
        R(
            7,
            "syslog",
            "2025-11-26T11:00:02.123456Z",
            None,
            "systemd",
            "Started Session 5 of User me.",
            ts_raw="2025-11-26T12:00:02.123456+01:00",
            host="node01",
            pid=1,
        ),
        R(
            8,
            "syslog",
            "2025-12-31T23:59:59Z",
            None,
            "cron",
            "year end",
            ts_raw="Dec 31 23:59:59",
            host="node01",
            pid=99,
        ),
        R(
            9,
            "syslog",
            "2026-01-01T00:00:01Z",
            None,
            "cron",
            "new year",
            ts_raw="Jan  1 00:00:01",
            host="node01",
            pid=99,
        ),
    ],
    "slurm.out": [
        R(1, "slurm", None, "info", "slurmstepd", "Setting TMPDIR to /scratch/42"),
        R(
            2,
            "python",
            "2025-11-26T12:00:00.000Z",
            "info",
            "__main__",
            "job started on node01",
            ts_raw="2025-11-26 12:00:00,000",
        ),
        R(
            3,
            "progress",
            msg="0%|          | 0/4 [00:00<?, ?it/s]",
            n=0,
            total=4,
            percent=0,
            rate=None,
            unit=None,
            bar="tqdm",
            elapsed="00:00",
        ),
        R(
            3,
            "progress",
            msg="50%|█████     | 2/4 [00:01<00:01,  1.99it/s]",
            n=2,
            total=4,
            percent=50,
            rate=1.99,
            unit="it",
            bar="tqdm",
            elapsed="00:01",
            remaining="00:01",
        ),
        R(
            3,
            "progress",
            msg="100%|██████████| 4/4 [00:02<00:00,  1.99it/s]",
            n=4,
            total=4,
            percent=100,
            rate=1.99,
            unit="it",
            bar="tqdm",
            elapsed="00:02",
            remaining="00:00",
        ),
        R(4, "slurm", None, "error", "srun", "node02: task 1: Out Of Memory"),
        R(
            5,
            "slurm",
            None,
            "error",
            "slurmstepd",
            "Detected 1 oom_kill event in StepId=42.0. "
            "Some of the step tasks have been OOM Killed.",
            host="node02",
        ),
        R(
            6,
            "slurm",
            None,
            "info",
            "srun",
            "Job step aborted: Waiting up to 32 seconds for job step to finish.",
        ),
        R(
            7,
            "slurm",
            "2025-11-26T13:00:00Z",
            "error",
            "slurmstepd",
            "*** JOB 42 ON node01 CANCELLED AT 2025-11-26T13:00:00 DUE TO TIME LIMIT ***",
            ts_raw="2025-11-26T13:00:00",
            job="42",
            node="node01",
        ),
    ],
    "progress.log": [
        R(1, "python", None, "info", "train", "starting"),
        R(
            2,
            "progress",
            msg="Epoch 0:   0%|          | 0/100 [00:00<?, ?it/s]",
            n=0,
            total=100,
            percent=0,
            rate=None,
            unit=None,
            bar="tqdm",
            desc="Epoch 0",
            elapsed="00:00",
        ),
        R(
            2,
            "progress",
            msg="Epoch 0:  50%|█████     | 50/100 [00:01<00:01, 40.00it/s, loss=0.5]",
            n=50,
            total=100,
            percent=50,
            rate=40.0,
            unit="it",
            bar="tqdm",
            desc="Epoch 0",
            elapsed="00:01",
            remaining="00:01",
            postfix="loss=0.5",
        ),
        R(
            2,
            "progress",
            msg="Epoch 0:  50%|█████     | 50/100 [00:01<00:01, 40.00it/s, loss=0.5]",
            n=50,
            total=100,
            percent=50,
            rate=40.0,
            unit="it",
            bar="tqdm",
            desc="Epoch 0",
            elapsed="00:01",
            remaining="00:01",
            postfix="loss=0.5",
        ),
        R(2, "python", None, "info", "train", "glued after the bar"),
        R(
            3,
            "progress",
            msg="Epoch 0: 100%|██████████| 100/100 [00:02<00:00, 40.00it/s, loss=0.4]",
            n=100,
            total=100,
            percent=100,
            rate=40.0,
            unit="it",
            bar="tqdm",
            desc="Epoch 0",
            elapsed="00:02",
            remaining="00:00",
            postfix="loss=0.4",
        ),
        R(4, "plain", msg="step 3 of 7 [fast]"),
        R(
            5,
            "progress",
            msg="download:  45%|████▌     | 45.2M/100M [00:05<00:06, 9.04MB/s]",
            n=45200000,
            total=100000000,
            percent=45,
            rate=9040000.0,
            unit="B",
            bar="tqdm",
            desc="download",
            elapsed="00:05",
            remaining="00:06",
        ),
        R(
            6,
            "progress",
            msg="12it [00:01, 11.50it/s]",
            n=12,
            total=None,
            rate=11.5,
            unit="it",
            bar="tqdm",
            elapsed="00:01",
        ),
        R(
            6,
            "progress",
            msg="25it [00:02, 12.00it/s]",
            n=25,
            total=None,
            rate=12.0,
            unit="it",
            bar="tqdm",
            elapsed="00:02",
        ),
        R(
            7,
            "progress",
            msg="Epoch 1/9 ━━━━━━━━━━ 50/100 0:00:01 • 0:00:01 40.00it/s",
            n=50,
            total=100,
            rate=40.0,
            unit="it",
            bar="rich",
            desc="Epoch 1/9",
            elapsed="0:00:01",
            remaining="0:00:01",
            ansi=True,
        ),
        R(
            8,
            "progress",
            msg="Working... ━━━━━━━━━━━━━━━━━━━━ 100% 0:00:00",
            n=None,
            total=None,
            percent=100,
            rate=None,
            unit=None,
            bar="rich",
            desc="Working...",
            remaining="0:00:00",
        ),
        R(
            9,
            "python",
            None,
            "error",
            "train",
            "coloured error\n  continuation of the coloured error",
            ansi=True,
        ),
        R(12, "python", None, "info", "train", "done"),
    ],
    "datetime.log": [
        R(
            1,
            "datetime",
            "2025-11-26T12:00:00Z",
            msg="status installed libc6:amd64 2.36-9",
            ts_raw="2025-11-26 12:00:00",
        ),
        R(2, "datetime", "2025-11-26T12:00:01Z", msg="worker started"),
        R(
            3,
            "datetime",
            "2025-11-26T06:30:02.5Z",
            msg="offset stamp",
            ts_raw="2025-11-26T12:00:02.5+05:30",
        ),
        R(
            4,
            "datetime",
            "2025-11-26T12:00:03Z",
            msg="[1234] LOG:  checkpoint starting",
            ts_raw="2025-11-26 12:00:03 UTC",
        ),
        R(
            5,
            "datetime",
            "2025-11-26T12:00:04Z",
            msg="bracketed stamp",
            ts_raw="2025-11-26 12:00:04",
        ),
        R(
            6,
            "datetime",
            "2025-11-26T12:00:05Z",
            msg="colon after stamp\n  indented continuation of the line above",
            ts_raw="2025-11-26 12:00:05",
        ),
        R(8, "datetime", None, msg="no such day", ts_raw="2025-02-30 12:00:06"),
    ],
    "mixed.log": [
        R(
            1,
            "env_logger",
            "2025-11-26T12:00:00Z",
            "info",
            "core::bridge",
            "encoding frame 3\n  with an indented second line",
        ),
        R(3, "logfmt", "2025-11-26T12:00:01Z", "warning", None, "disk almost full", free_gb="3"),
        R(
            4,
            "json",
            "2025-11-26T12:00:02Z",
            "error",
            "svc",
            "json line",
            ts_raw="2025-11-26T13:00:02+01:00",
            step=7,
        ),
        R(
            5,
            "json",
            "2025-11-26T12:00:03.500000Z",
            "info",
            None,
            "epoch seconds",
            ts_raw=1764158403.5,
        ),
        R(
            6,
            "glog",
            "2025-11-26T12:00:04.000000Z",
            "info",
            "train.py:42",
            "glog line",
            ts_raw="1126 12:00:04.000000",
            thread=7,
        ),
        R(
            7,
            "progress",
            msg="50%|█████     | 1/2 [00:01<00:01,  1.00it/s]",
            n=1,
            total=2,
            percent=50,
            rate=1.0,
            unit="it",
            bar="tqdm",
            elapsed="00:01",
            remaining="00:01",
        ),
        R(
            7,
            "python",
            "2025-11-26T12:00:05.000Z",
            "info",
            "trainer",
            "after a bar",
            ts_raw="2025-11-26 12:00:05,000",
        ),
        R(
            8,
            "tensorflow",
            "2025-11-26T12:00:06.000000Z",
            "info",
            "tensorflow/core/util/port.cc:113",
            "oneDNN custom operations are on",
            ts_raw="2025-11-26 12:00:06.000000",
            rank=0,
            stream="stderr",
        ),
        R(
            9,
            "c10",
            "2025-11-26T12:00:07.000000Z",
            "warning",
            "ProcessGroupNCCL.cpp:1250",
            "Warning: leak",
            ts_raw="1126 12:00:07.000000000",
            rank=0,
        ),
        R(
            10,
            "nccl",
            None,
            "info",
            "NCCL",
            "Using network IB",
            host="node01",
            pid=1,
            thread=1,
            device=0,
        ),
        R(
            11,
            "syslog",
            "2025-11-26T12:00:08Z",
            None,
            "kernel",
            "oom-kill",
            ts_raw="Nov 26 12:00:08",
            host="node01",
        ),
        R(12, "slurm", None, "error", "slurmstepd", "Detected 1 oom_kill event"),
        R(13, "plain", msg="plain closing line"),
        R(
            14,
            "level_prefix",
            None,
            "warning",
            None,
            "All log messages before absl::InitializeLog() is called are written to STDERR",
        ),
        R(
            15,
            "level_prefix",
            None,
            "info",
            None,
            "bracketed level only\n  indented detail of the bracketed level",
        ),
    ],
}
YEAR_REFERENCE = {"syslog.log": date(2026, 1, 1)}


def test_the_corpus_is_complete():
    assert sorted(path.name for path in CORPUS.iterdir()) == sorted(EXPECTED)
    recognised = {record["format"] for records in EXPECTED.values() for record in records}
    assert recognised >= {
        "python",
        "transformers",
        "lightning",
        "python_warning",
        "python_dict",
        "glog",
        "c10",
        "nccl",
        "env_logger",
        "syslog",
        "syslog_rfc5424",
        "slurm",
        "datetime",
        "progress",
        "logfmt",
        "json",
        "plain",
        "traceback",
        "tensorflow",
        "level_prefix",
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_line_of_the_corpus(name):
    records = convert(
        (CORPUS / name).read_bytes(), year_reference=YEAR_REFERENCE.get(name, END_OF_2025)
    )
    for got, expected in itertools.zip_longest(records, EXPECTED[name]):
        assert got == expected, f"{name} line {(expected or got)['line']}"


@pytest.mark.parametrize("progress", ["all", "last", "none"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_corpus_converts_to_the_same_bytes_for_any_worker_count(monkeypatch, name, progress):
    data = (CORPUS / name).read_bytes() * 3
    monkeypatch.setattr(log_convert, "BLOCK_BYTES", 64)  # a block every line or two
    monkeypatch.setattr(log_convert, "MAX_JOINED_LINES", 3)  # and capped joins
    monkeypatch.setattr(log_convert, "PARALLEL_AFTER_BLOCKS", 0)
    outputs = []
    for workers in (1, 2, 3):
        sink = io.BytesIO()
        stats = convert_stream(
            io.BytesIO(data), sink, workers=workers, year_reference=END_OF_2025, progress=progress
        )
        outputs.append((sink.getvalue(), stats))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][1]["records"] == len(json_lines(outputs[0][0]))


def test_progress_last_keeps_each_bars_final_state_and_none_drops_bars():
    data = (CORPUS / "progress.log").read_bytes()
    last = [(r["line"], r["format"], r.get("n")) for r in convert(data, progress="last")]
    assert last == [
        (1, "python", None),
        (2, "progress", 50),
        (2, "python", None),
        (3, "progress", 100),
        (4, "plain", None),
        (5, "progress", 45200000),
        (6, "progress", 25),
        (7, "progress", 50),
        (8, "progress", None),
        (9, "python", None),
        (12, "python", None),
    ]
    none = [(r["line"], r["format"]) for r in convert(data, progress="none")]
    assert none == [(1, "python"), (2, "python"), (4, "plain"), (9, "python"), (12, "python")]
    # the bar's last state before the glued log line, then its final state: one bar, two
    # interruptions
    folded = [r for r in convert(data, progress="last") if r["format"] == "progress"]
    assert [r["msg"].split("|")[0] for r in folded[:2]] == ["Epoch 0:  50%", "Epoch 0: 100%"]


def test_a_record_start_is_never_a_continuation():
    """Every line that starts a record on its own still does so right after an open multi-line
    record."""
    starts = []
    for name in EXPECTED:
        lines = (CORPUS / name).read_bytes().split(b"\n")
        for record in EXPECTED[name]:
            line = lines[record["line"] - 1]
            if record["format"] not in ("plain", "progress") and b"\r" not in line:
                starts.append(line)
    assert len(starts) > 60
    for line in starts:
        records = convert(
            b"2025-11-26 12:00:00,000 ERROR open: a record that takes continuation lines\n" + line
        )
        assert len(records) == 2 and records[0]["msg"].count("\n") == 0, line


def test_progress_output_never_joins_a_record():
    data = b"INFO:a:open\n\r 10%|#         | 1/10 [00:01<00:09,  1.00it/s]\nstill text\n"
    records = convert(data)
    assert [r["format"] for r in records] == ["python", "progress", "plain"]
    assert records[0]["msg"] == "open"


def test_naive_stamps_take_the_utc_offset_and_zoned_ones_keep_their_zone():
    records = convert(
        (CORPUS / "python.log").read_bytes(), utc_offset=timedelta(hours=5, minutes=30)
    )
    by_line = {r["line"]: r for r in records}
    assert (
        by_line[3]["ts"] == "2025-11-26T06:30:00.123Z"
        and by_line[3]["ts_raw"] == "2025-11-26 12:00:00,123"
    )
    assert by_line[16]["ts"] == "2025-11-26T11:00:09Z"  # +01:00 in the line wins
    glog = convert(
        b"I0101 01:00:00.000000 1 a.cc:1] early\n",
        utc_offset=timedelta(hours=2),
        year_reference=date(2026, 6, 30),
    )
    assert glog[0]["ts"] == "2025-12-31T23:00:00.000000Z"


def test_year_reference_places_month_days_in_the_twelve_months_up_to_it():
    line = b"Dec 31 23:59:59 h cron: x\nJan  1 00:00:01 h cron: y\n"
    assert [r["ts"][:4] for r in convert(line, year_reference=date(2026, 1, 5))] == ["2025", "2026"]
    assert [r["ts"][:4] for r in convert(line, year_reference=date(2024, 12, 31))] == [
        "2024",
        "2024",
    ]
    (leap,) = convert(b"Feb 29 12:00:00 h cron: leap day\n", year_reference=date(2025, 12, 31))
    assert leap["ts"] is None and leap["ts_raw"] == "Feb 29 12:00:00"  # 2025 has no 29 February


def test_ansi_sequences_are_removed_and_flagged():
    (record,) = convert(b"\x1b[33mWARNING\x1b[0m:x:\x1b]8;;http://a\x1b\\link\x1b]8;;\x1b\\ text\n")
    assert record["msg"] == "link text" and record["ansi"] is True and record["level"] == "warning"
    assert "control_chars" not in record


def test_library_form_takes_the_same_options():
    lines = [
        "I1126 12:00:00.000000 1 a.py:1] one\n",
        "\r 50%|#    | 1/2 [00:01<00:01,  1.00it/s]\n",
    ]
    records = list(convert_lines(iter(lines), year_reference=date(2024, 12, 31), progress="none"))
    assert [r["ts"] for r in records] == ["2024-11-26T12:00:00.000000Z"]


def test_cli_year_and_progress(tmp_path):
    (tmp_path / "job.out").write_bytes(
        (CORPUS / "syslog.log").read_bytes() + (CORPUS / "slurm.out").read_bytes()
    )
    result = run_script(
        "utils",
        "log_formatter",
        "job.out",
        "--year",
        "2026-01-01",
        "--progress",
        "last",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert records[8]["ts"] == "2026-01-01T00:00:01Z"
    assert [r["n"] for r in records if r["format"] == "progress"] == [4]


def test_cli_default_year_is_the_run_stamp(tmp_path):
    """Without --year, SOURCE_DATE_EPOCH (the run's stamp, 2025-10-31 in tests) places year-less
    stamps."""
    (tmp_path / "a.log").write_bytes(
        b"I1126 12:00:00.000000 1 a.py:1] x\nI1030 12:00:00.000000 1 a.py:1] y\n"
    )
    result = run_script("utils", "log_formatter", "a.log", cwd=tmp_path)
    assert [r["ts"][:10] for r in json_lines(result.stdout)] == ["2024-11-26", "2025-10-30"]


@pytest.mark.parametrize(
    "option",
    [["--year", "25"], ["--year", "2025-02-30"], ["--year", "1066"], ["--progress", "some"]],
)
def test_cli_bad_year_or_progress_exits_2(tmp_path, option):
    (tmp_path / "a.log").write_bytes(b"x\n")
    result = run_script("utils", "log_formatter", "a.log", *option, cwd=tmp_path)
    assert result.returncode == 2
    single_error(result.stderr)


HOSTILE_LINES = {  # each aimed at one pattern's backtracking: all must convert in linear time
    "digits before a bracket": b"1" * (1 << 20) + b" [00:01, 1/s]",
    "bar-like pieces between carriage returns": (b"1" * 4000 + b" [0/s\r") * 250,
    "one long logfmt value": b"k=" + b"v" * (1 << 20) + b" x",
    "many logfmt pairs, then a stray quote": b"a=b " * (1 << 18) + b'"',
    "dashes far apart": b"2025-11-26 12:00:00 - " + b"x" * (1 << 20) + b" - INFO",
    "warning paths": b"a.py:" * (1 << 18),
    "rank prefixes": b"[rank0]:" * (1 << 17),
    "syslog structured data never closed": b'<14>1 - - - - - [a k="' + b"\\\\" * (1 << 19),
    "rich bars": "━ 1/".encode() * (1 << 17),
    "ANSI parameters never ended": b"\x1b[" + b"1;" * (1 << 19),
    "nested printed dict": b"{'a': " + b"[" * 5000 + b"]" * 5000 + b"}",
    "glog file:line pieces": b"I1126 12:00:00.000000 1 " + b"a:1" * (1 << 18),
    "NCCL far away": b"h:1:1 [0] " + b"a:1 " * (1 << 18) + b" NCCL ",
    "times without end": b"0:00:0" * (1 << 18),
}


@pytest.mark.timeout(120)
def test_hostile_lines_convert_in_linear_time():
    """A quadratic pattern would take hours on these 1 MiB lines; together they take about a
    second."""
    for name, line in HOSTILE_LINES.items():
        records = convert(line + b"\n")
        assert records, name


LINE_POOL = [
    b"INFO:a:record",
    b"2025-11-26 12:00:00,000 ERROR b: failed",
    b"Traceback (most recent call last):",
    b'  File "x.py", line 1, in f',
    b"ValueError: boom",
    b"plain text",
    b"",
    b"[rank0]: Traceback (most recent call last):",
    b"[rank0]:   indented",
    b"[rank1]:   indented",
    b"x.py:3: UserWarning: careful",
    b"  warnings.warn(",
    b"\r 10%|#  | 1/10 [00:01<00:09,  1.00it/s]\r 20%|## | 2/10 [00:02<00:08,  1.00it/s]",
    b"\r 30%|###| 3/10 [00:03<00:07,  1.00it/s]INFO:a:glued",
    b"\rother: 50%|#  | 1/2 [00:01<00:01,  1.00it/s]",
    b"I1126 12:00:00.000000 1 a.cc:1] glog",
    b'{"msg": "json"}',
    b"\x1b[31mred\x1b[0m text",
    b"\xff\xfe bad bytes",
]


@pytest.mark.parametrize("seed", range(12))
def test_random_mixes_convert_to_the_same_bytes_in_blocks_as_in_one_pass(monkeypatch, seed):
    """Block boundaries may fall anywhere: inside tracebacks, warnings, held progress states,
    rank groups."""
    generator = np.random.Generator(np.random.PCG64(seed))
    data = b"\n".join(LINE_POOL[i] for i in generator.integers(0, len(LINE_POOL), 400)) + b"\n"
    monkeypatch.setattr(log_convert, "BLOCK_BYTES", int(generator.integers(16, 200)))
    monkeypatch.setattr(log_convert, "MAX_JOINED_LINES", int(generator.integers(2, 6)))
    monkeypatch.setattr(log_convert, "PARALLEL_AFTER_BLOCKS", 0)
    for progress in ("all", "last", "none"):
        outputs = []
        for workers in (1, 2):
            sink = io.BytesIO()
            stats = convert_stream(
                io.BytesIO(data),
                sink,
                workers=workers,
                year_reference=END_OF_2025,
                progress=progress,
            )
            outputs.append((sink.getvalue(), stats))
        assert outputs[0] == outputs[1], progress
