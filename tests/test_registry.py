import pytest

from fairbench.errors import FairbenchError, UnknownNameError
from fairbench.registry import DuplicateNameError, Registry


def test_decorator_and_direct_registration():
    r = Registry[object]("widget")

    @r.register("alpha")
    def alpha():
        return "a"

    r.register("beta", 42)
    assert r.get("alpha") is alpha
    assert r.get("beta") == 42
    assert r.names() == ["alpha", "beta"]
    assert "alpha" in r and "gamma" not in r
    assert len(r) == 2


def test_duplicate_names_rejected():
    r = Registry[int]("widget")
    r.register("one", 1)
    with pytest.raises(DuplicateNameError, match="'one' is already registered"):
        r.register("one", 2)
    with pytest.raises(DuplicateNameError):
        r.register_lazy("one", "math:pi")
    assert r.get("one") == 1


def test_unknown_name_suggests_and_lists():
    r = Registry[int]("model")
    for name in ("medclip_vit", "medclip_resnet", "gloria"):
        r.register(name, 0)
    with pytest.raises(UnknownNameError) as info:
        r.get("medclip_vt")
    msg = str(info.value)
    assert "Did you mean 'medclip_vit'" in msg
    assert "Known models: gloria, medclip_resnet, medclip_vit" in msg
    assert isinstance(info.value, FairbenchError)


def test_unknown_name_without_close_match_still_lists():
    r = Registry[int]("adapter")
    r.register("zeroshot", 0)
    msg = r.unknown_message("qqqqqq")
    assert "Did you mean" not in msg and "zeroshot" in msg


def test_lazy_module_target_and_factory():
    r = Registry[object]("thing")
    r.register_lazy("pi", "math:pi")
    calls = []

    def factory():
        calls.append(1)
        return "built"

    r.register_lazy("made", factory)
    assert abs(r.get("pi") - 3.14159) < 1e-4
    assert r.get("made") == "built" and r.get("made") == "built"
    assert calls == [1]  # loaded once, then cached


def test_failing_lazy_load_is_not_swallowed():
    r = Registry[object]("thing")
    r.register_lazy("bad", "math:does_not_exist")
    for _ in range(2):
        with pytest.raises(AttributeError):
            r.get("bad")


def test_lazy_target_must_name_module_and_attr():
    r = Registry[object]("thing")
    with pytest.raises(ValueError, match="module:attr"):
        r.register_lazy("x", "no_colon")


def test_each_adapter_is_registered_under_its_own_name():
    """The registry key and the adapter's ``name`` (what metrics.json, cell paths and stale checks record) are one
    name: an adapter registered as 'reweight' that calls itself 'resample' would write its cells under another
    adapter's folder."""
    from fairbench.adapters.base import ADAPTERS

    assert len(ADAPTERS) >= 11
    for key in ADAPTERS.names():
        cls = ADAPTERS.get(key)
        assert cls.name == key, (key, cls.__name__, cls.name)
