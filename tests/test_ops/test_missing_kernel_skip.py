"""A missing C++ kernel shows as SKIPPED cases with the import error as the reason, never as cases that
disappear from the run.

The compiled modules are hidden (``sys.modules[name] = None`` makes their import raise a real
``ImportError``) and an inner pytest session runs a test file parametrised like the operator tests
(``pytest.param('cpp', marks=pytest.mark.cpp_kernel)``) with this suite's ``conftest.py``.
"""
import os
import sys

import pytest

from dgmn_mm.ops import backend as ob

CONFTEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'conftest.py')
KERNEL_MODULES = ('dgmn_mm.ops._sampled_attention_cpp', 'dgmn_mm.ops._sampled_attention_cpp_avx2',
                  'dgmn_mm.ops._sampled_attention_cpp_avx512')

INNER_TESTS = '''
import pytest
from dgmn_mm.ops import backend as ob


@pytest.mark.parametrize('backend', ['torch', pytest.param('cpp', marks=pytest.mark.cpp_kernel)])
def test_forced_backend_runs(backend, monkeypatch):
    monkeypatch.setenv(ob.ENV_VAR, backend)
    assert ob.resolve('cpu') == backend  # 'cpp' would raise BackendUnavailableError without the kernel


@pytest.mark.cpp_kernel
def test_automatic_choice_is_cpp():
    assert ob.resolve('cpu') == 'cpp'
'''


class _Reports:
    """Collects the outcome and skip reason of every test of the inner session."""

    def __init__(self):
        self.outcomes = {}

    def pytest_runtest_logreport(self, report):
        if report.when == 'call' or report.skipped:
            reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else None
            self.outcomes[report.nodeid.split('::')[-1]] = (report.outcome, reason)


def _run_inner(tmp_path):
    (tmp_path / 'conftest.py').write_text(open(CONFTEST).read())
    (tmp_path / 'test_inner.py').write_text(INNER_TESTS)
    reports = _Reports()
    code = pytest.main([str(tmp_path), '-q', '-p', 'no:cacheprovider', '--import-mode=importlib',
                        '--rootdir', str(tmp_path), '-W', 'ignore::RuntimeWarning'], plugins=[reports])
    return code, reports.outcomes


def test_missing_kernel_cases_are_skipped_with_the_import_error(tmp_path, fresh_backends):
    for name in KERNEL_MODULES:
        fresh_backends.setitem(sys.modules, name, None)
    code, outcomes = _run_inner(tmp_path)
    assert code == pytest.ExitCode.OK
    assert set(outcomes) == {'test_forced_backend_runs[torch]', 'test_forced_backend_runs[cpp]',
                             'test_automatic_choice_is_cpp'}  # collected, none disappears
    assert outcomes['test_forced_backend_runs[torch]'] == ('passed', None)
    for case in ('test_forced_backend_runs[cpp]', 'test_automatic_choice_is_cpp'):
        outcome, reason = outcomes[case]
        assert outcome == 'skipped'
        assert 'the C++ kernel is not built' in reason
        assert 'ModuleNotFoundError: import of dgmn_mm.ops._sampled_attention_cpp' in reason  # the import error
        assert ob.BUILD_HINT in reason  # and how to build it


@pytest.mark.cpp_kernel
def test_built_kernel_cases_run(tmp_path, fresh_backends):
    """With the kernel built, the same cases run and pass (nothing is skipped)."""
    code, outcomes = _run_inner(tmp_path)
    assert code == pytest.ExitCode.OK
    assert {case: outcome for case, (outcome, _) in outcomes.items()} == {
        'test_forced_backend_runs[torch]': 'passed', 'test_forced_backend_runs[cpp]': 'passed',
        'test_automatic_choice_is_cpp': 'passed'}
