"""Shared fixtures: every ISA path of this machine, thread counts, and an error ledger.

The ledger records the worst relative error each op showed against the float64 reference and
prints it at the end of the run, so a test run reports the accuracy it saw, not just pass/fail.
"""
import collections

import numpy as np
import pytest

import cconv

ISAS = cconv.available_isas()
_worst_error = collections.defaultdict(float)
_case_count = collections.Counter()
_fuzz_cases = collections.Counter()
_fuzz_refused = collections.Counter()
_onnx_node_tests = collections.defaultdict(collections.Counter)   # operator -> outcome -> count


def record_fuzz_case(op, refused=False):
    """Count one property-based case of ``op`` (``refused``: it raised a ValueError)."""
    _fuzz_cases[op] += 1
    if refused:
        _fuzz_refused[op] += 1


@pytest.fixture(autouse=True, scope="session")
def every_thread_asked():
    """Small ops run on one thread by default (cconv.min_parallel_work); the tests run every op
    on all the threads they ask for, so that the parallel code runs on their small shapes too."""
    previous = cconv.min_parallel_work(0)
    yield
    cconv.min_parallel_work(previous)


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per ISA this machine supports (FASTCNN_ISA-style cap)."""
    previous = cconv.get_isa()
    cconv.set_isa(request.param)
    yield request.param
    cconv.set_isa(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def relative_error(actual, expected):
    """max |actual - expected| / max(|expected|, tiny): error relative to the output's magnitude."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    if expected.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    return float(np.max(np.abs(actual - expected))) / scale


def assert_close(op, actual, expected, tol=1e-5):
    """Assert ``actual`` matches the float64 ``expected`` within ``tol`` of its max magnitude."""
    err = relative_error(actual, expected)
    _worst_error[op] = max(_worst_error[op], err)
    _case_count[op] += 1
    assert np.all(np.isfinite(actual)), f"{op}: non-finite values in result"
    assert err <= tol, f"{op}: relative error {err:.3g} > {tol:.1g}"


def pytest_runtest_logreport(report):
    """Count ONNX's node tests (tests/test_onnx_backend.py) per operator and outcome."""
    if "test_onnx_backend.py" not in report.nodeid or not (
            report.when == "call" or (report.when == "setup" and report.skipped)):
        return
    from test_onnx_backend import operator_of
    op = operator_of(report.nodeid.rsplit("::", 1)[-1])
    if op is not None:
        _onnx_node_tests[op][report.outcome] += 1


def pytest_terminal_summary(terminalreporter):
    if _onnx_node_tests:
        total = collections.Counter()
        for counts in _onnx_node_tests.values():
            total.update(counts)
        terminalreporter.section(f"ONNX node tests: {total['passed']} passed, {total['failed']} "
                                 f"failed, {total['skipped']} skipped (refused on purpose)")
        for op in sorted(_onnx_node_tests):
            c = _onnx_node_tests[op]
            terminalreporter.write_line(f"{op:20s} {c['passed']:4d} passed {c['failed']:4d} failed "
                                        f"{c['skipped']:4d} skipped")
    if _fuzz_cases:
        total, refused = sum(_fuzz_cases.values()), sum(_fuzz_refused.values())
        terminalreporter.section(f"fuzzed cases: {total} ({total - refused} checked against "
                                 f"the reference, {refused} refused with a ValueError)")
        for op in sorted(_fuzz_cases):
            terminalreporter.write_line(f"{op:38s} {_fuzz_cases[op]:6d} cases "
                                        f"({_fuzz_refused[op]} refused)")
    if not _worst_error:
        return
    terminalreporter.section("worst relative error against the float64 reference, per op")
    for op in sorted(_worst_error):
        terminalreporter.write_line(f"{op:38s} {_worst_error[op]:9.2e}   ({_case_count[op]} checks)")
