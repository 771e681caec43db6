"""Every registered op must have a finite-difference property test and a sample input for
the `numpylm gradcheck` table."""
import importlib.util
import pathlib

import numpylm  # noqa: F401  (registers every op)
from numpylm.autograd import REGISTRY
from op_coverage import COVERED

HERE = pathlib.Path(__file__).parent


def _import_every_test_module():
    for path in sorted(HERE.glob("test_*.py")):
        if path.name == pathlib.Path(__file__).name:
            continue
        spec = importlib.util.spec_from_file_location(f"_coverage_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def test_every_registered_op_has_a_gradient_test():
    _import_every_test_module()
    missing = sorted(set(REGISTRY) - COVERED)
    assert not missing, f"registered ops without a finite-difference test: {missing}"


def test_every_registered_op_has_a_sample_input():
    from numpylm.autograd.gradcheck_inputs import GRADCHECK_INPUTS
    missing = sorted(set(REGISTRY) - set(GRADCHECK_INPUTS))
    assert not missing, f"registered ops without a sample for `numpylm gradcheck`: {missing}"


def test_the_coverage_check_can_fail():
    # The check above is only meaningful if an op that no test covers is noticed.
    assert "an_op_nobody_tested" not in COVERED
