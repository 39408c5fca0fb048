"""Deterministic seeds: one base seed, named streams, explicit Generators.

``seeds.toml`` holds ``base_seed`` (0 <= seed < 2**63) and an optional
``[streams]`` table of explicit per-stream seeds. Any other stream's seed is
derived from the base seed and the stream's key with NumPy's SeedSequence:

    key     = the stream name, or (name, sub-key, ...) such as (name, sample_id, epoch)
    key_int = int.from_bytes(sha256(orjson.dumps([name, sub-key, ...])), "little")
    seed    = SeedSequence(base_seed, spawn_key=(key_int,)).generate_state(1, uint64)[0] >> 1

The key is hashed with SHA-256, never Python's salted ``hash()``, so a seed
is the same on every platform and under every PYTHONHASHSEED. Code receives
``numpy.random.Generator`` objects (PCG64) and never touches global state;
``seed_globals()`` seeds Python's ``random``, NumPy's legacy global state
and CuPy (only if already imported) as a safety net for third-party code.

The command ``scripts/utils/seed_manager.py`` prints the seeds of named streams.

    from scripts.utils.config.seeds import SeedManager
    seeds = SeedManager.from_file("scripts/utils/seeds.toml")
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from scripts.utils.config.loading import load_config_file
from scripts.utils.config.schema import validate
from scripts.utils.jsonio import append_json_line
from scripts.utils.workspace import SEED_LOG

if TYPE_CHECKING:
    import numpy as np

DEFAULT_SEEDS_FILE = Path(__file__).resolve().parents[1] / "seeds.toml"


def key_to_int(*key) -> int:
    """A platform-stable integer for a stream key (strings and ints)."""
    for part in key:
        if not isinstance(part, (str, int)) or isinstance(part, bool):
            raise TypeError(f"stream key parts must be str or int, got {type(part).__name__}")
    return int.from_bytes(hashlib.sha256(orjson.dumps(list(key))).digest(), "little")


def derive_seed(base_seed: int, *key) -> int:
    """The seed of stream ``key`` under ``base_seed`` (see the module docstring)."""
    import numpy as np  # here, not at import: the run records use this module without NumPy

    sequence = np.random.SeedSequence(base_seed, spawn_key=(key_to_int(*key),))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass
class SeedManager:
    """Hands out named seeds and Generators; remembers which streams were used."""

    base_seed: int
    streams: dict = field(default_factory=dict)  # explicit seeds from [streams]
    source: str | None = None  # the seeds file, as given
    file_sha256: str | None = None
    used: dict = field(default_factory=dict)  # stream name -> seed handed out

    @classmethod
    def from_file(cls, path=None) -> SeedManager:
        path = Path(path) if path is not None else DEFAULT_SEEDS_FILE
        data = load_config_file(path)
        validate(data, "seeds", source=path)
        base = data["base_seed"]
        explicit = dict(sorted(data.get("streams", {}).items()))
        return cls(base, explicit, str(path), hashlib.sha256(path.read_bytes()).hexdigest())

    def seed(self, name: str, *subkey) -> int:
        """The seed of stream ``name`` (or of ``(name, *subkey)``)."""
        if not subkey and name in self.streams:
            value = self.streams[name]
        else:
            value = derive_seed(self.base_seed, name, *subkey)
        if not subkey:
            self.used[name] = value
        return value

    def generator(self, name: str, *subkey) -> np.random.Generator:
        """A fresh PCG64 Generator for stream ``name`` (or ``(name, *subkey)``)."""
        import numpy as np

        return np.random.Generator(np.random.PCG64(self.seed(name, *subkey)))

    def seed_globals(self) -> None:
        """Seed global RNGs as a safety net (our code never draws from them)."""
        import random

        import numpy as np

        random.seed(self.base_seed)
        np.random.seed(self.base_seed % 2**32)
        cupy = sys.modules.get("cupy")  # only when the run already asked for CuPy
        if cupy is not None:
            cupy.random.seed(self.base_seed % 2**32)

    def summary(self) -> dict:
        """What a run records about its seeds."""
        return {
            "base_seed": self.base_seed,
            "seeds_file_sha256": self.file_sha256,
            "streams": dict(sorted(self.used.items())),
        }


def log_seed(workspace: Path, run_id: str, script: str, seeds: SeedManager) -> str | None:
    """Append this run's seeds to the append-only log in meta/chronicle/.

    Returns what was repaired in the log first (a torn last line), or None.
    """
    return append_seed_line(workspace, run_id, script, seeds.summary())


def append_seed_line(workspace: Path, run_id: str, script: str, summary: dict) -> str | None:
    """Log one run's seeds (also used to roll a killed run's line forward).

    One line per run id: a run that takes the name of a retracted run (the
    pipeline redoing a step) finds that run's line; the same line is kept
    where it is, a different one replaces it in place. So a redone step
    leaves the log as a clean run would have written it.
    """
    return append_json_line(
        Path(workspace) / SEED_LOG, {"run_id": run_id, "script": script, **summary}, key="run_id"
    )
