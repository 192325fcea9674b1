import pytest

from edgetl.targets import BackendUnavailable, backends, get_target
from edgetl.targets.onnxruntime import OnnxRuntimeTarget


class _Missing(OnnxRuntimeTarget):
    package = "edgetl_no_such_backend"
    install_hint = "pip install edgetl-no-such-backend"


def test_missing_backend_is_probed_without_raising_and_refuses_with_the_fix():
    target = _Missing()
    assert target.is_available() is False
    assert target.version() == ""
    with pytest.raises(BackendUnavailable, match="pip install edgetl-no-such-backend"):
        target.require()


def test_registry_names_every_backend_and_rejects_unknown_ones():
    for name in backends():
        assert get_target(name).name == name
    with pytest.raises(BackendUnavailable, match="known"):
        get_target("coreml")
