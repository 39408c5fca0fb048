"""Exact fixed-point products through float64 BLAS: the int64 product's bits, checked at and past
the bound."""

import platform
import subprocess
import sys

import numpy as np
import pytest

from scripts.utils.compute import exact
from scripts.utils.errors import InputError
from tests.conftest import REPO


def int64_reference(qa, qb):
    """What the experiment computed before: an int64 product (no BLAS), converted to float64
    once."""
    return (qa.astype(np.int64) @ qb.astype(np.int64)).astype(np.float64)


def python_reference(qa, qb):
    """Arbitrary-precision integers, for products an int64 could not hold."""
    exact_ints = np.array(qa.astype(np.int64), dtype=object) @ np.array(
        qb.astype(np.int64), dtype=object
    )
    return np.array([[float(value) for value in row] for row in exact_ints])


@pytest.mark.parametrize("seed", range(6))
def test_products_have_the_int64_products_bits(seed):
    generator = np.random.Generator(np.random.PCG64(seed))
    rows, inner, columns = (int(n) for n in generator.integers(1, 300, 3))
    magnitude = 2.0 ** int(
        generator.integers(4, 33)
    )  # int64 holds every sum: the reference cannot wrap
    qa = np.rint(generator.uniform(-magnitude, magnitude, (rows, inner)))
    qb = np.rint(generator.uniform(-1, 1, (inner, columns)) * 2.0**20)
    got = exact.integer_matmul(np, qa, qb)
    assert got.tobytes() == int64_reference(qa, qb).tobytes()


def test_real_values_give_the_bits_of_the_former_int64_arithmetic():
    generator = np.random.Generator(np.random.PCG64(7))
    a, b = generator.normal(0, 3, (64, 3000)), generator.normal(0, 0.05, (3000, 40))
    former = int64_reference(np.rint(a * exact.SCALE), np.rint(b * exact.SCALE)) / (
        exact.SCALE * exact.SCALE
    )
    assert exact.exact_matmul(np, a, b).tobytes() == former.tobytes()
    assert (
        exact.exact_matmul(np, a.T.copy().T, b).tobytes() == former.tobytes()
    )  # memory layout cannot matter


def test_just_inside_the_bound_is_one_float64_product():
    qa, qb = np.full((3, 4), 2.0**25), np.full((4, 2), 2.0**25)  # sums reach 2**52
    assert exact.product_bound(np, qa, qb) < exact.EXACT_LIMIT
    assert exact.integer_matmul(np, qa, qb).tobytes() == int64_reference(qa, qb).tobytes()


def test_past_the_bound_the_operands_are_split_and_the_result_stays_exact():
    # (2**30 + 1)**2 - (2**30 + 1)(2**30 - 1) = 2**31 + 2, but each term needs 61 bits: float64
    # rounds both
    qa = np.array([[2.0**30 + 1, 2.0**30 + 1]])
    qb = np.array([[2.0**30 + 1], [-(2.0**30 - 1)]])
    assert exact.product_bound(np, qa, qb) >= exact.EXACT_LIMIT
    reference = int64_reference(qa, qb)
    assert (
        reference[0, 0] == 2.0**31 + 2 and (qa @ qb)[0, 0] != reference[0, 0]
    )  # a plain product rounds
    assert exact.integer_matmul(np, qa, qb).tobytes() == reference.tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_split_products_of_large_random_operands_are_exact(seed):
    generator = np.random.Generator(np.random.PCG64(100 + seed))
    inner = int(generator.integers(2, 200))
    qa = np.rint(generator.uniform(-(2.0**29), 2.0**29, (5, inner)))
    qb = np.rint(generator.uniform(-(2.0**27), 2.0**27, (inner, 3)))
    assert exact.product_bound(np, qa, qb) >= exact.EXACT_LIMIT  # every case takes the split path
    assert exact.integer_matmul(np, qa, qb).tobytes() == python_reference(qa, qb).tobytes()


def test_a_product_that_int64_cannot_hold_stops_with_exit_2_naming_it():
    qa, qb = np.full((2, 8), 2.0**31), np.full((8, 2), 2.0**31)  # sums reach 2**65
    with pytest.raises(InputError) as caught:
        exact.integer_matmul(np, qa, qb, "encoder (batch @ w1)")
    assert caught.value.details["layer"] == "encoder (batch @ w1)"
    assert caught.value.details["bound"] >= 2.0**62 and caught.value.exit_code == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_operands_stop_with_exit_2(bad):
    a = np.ones((2, 3))
    a[1, 2] = bad
    with pytest.raises(InputError) as caught:
        exact.exact_matmul(np, a, np.ones((3, 2)), "gradient of w1")
    assert caught.value.details["layer"] == "gradient of w1"


def test_empty_and_zero_operands():
    assert exact.integer_matmul(np, np.zeros((0, 3)), np.zeros((3, 2))).shape == (0, 2)
    assert not exact.integer_matmul(np, np.zeros((2, 3)), np.full((3, 2), 2.0**60)).any()


DIGESTS = (
    "import hashlib, sys, numpy as np; sys.path.insert(0, sys.argv[1]);from "
    "scripts.utils.compute.exact import exact_matmul;g = np.random.Generator(np.random.PCG64(3)); "
    "a = g.normal(0, 1, (96, 2048)); b = g.normal(0, 0.02, (2048, "
    "160));print(hashlib.sha256(exact_matmul(np, a, b).tobytes()).hexdigest(), hashlib.sha256((a @ "
    "b).tobytes()).hexdigest())"
)


def test_the_same_bits_on_every_thread_count_and_blas_kernel():
    exact_digests, float_digests = set(), set()
    for threads in ("1", "2"):
        for core in ("Prescott", "Haswell"):
            env = {
                "OMP_NUM_THREADS": threads,
                "OPENBLAS_NUM_THREADS": threads,
                "OPENBLAS_CORETYPE": core,
                "PATH": "/usr/bin:/bin",
            }
            result = subprocess.run(
                [sys.executable, "-c", DIGESTS, str(REPO)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            exact_digest, float_digest = result.stdout.split()
            exact_digests.add(exact_digest)
            float_digests.add(float_digest)
    assert len(exact_digests) == 1
    if platform.machine() in ("x86_64", "AMD64"):
        assert (
            len(float_digests) > 1
        )  # the variations are real: a plain float64 product changes under them
