"""Typed dataclass configurations: nested dicts, dotted overrides, errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from normlab.configs import check_value, from_dict, parse_override, set_field
from normlab.diagnostics.sources import gpt_config, parse_settings


@dataclass
class Inner:
    rate: float = 0.1
    mode: Literal["a", "b"] = "a"
    limit: int | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str = "x"
    flag: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    triple: tuple[float, float, float] | None = None
    sizes: tuple[int, ...] = ()
    tags: list[str] = field(default_factory=list)


def test_from_dict_builds_nested_dataclasses_and_converts_exactly():
    cfg = from_dict(Outer, {"inner": {"rate": 1, "mode": "b", "limit": None}, "flag": True,
                            "kwargs": {"eps": 1e-6}, "triple": [1, 0.5, 2],
                            "sizes": [3, 4], "tags": ["p"]})
    assert cfg.inner == Inner(rate=1.0, mode="b") and isinstance(cfg.inner.rate, float)
    assert cfg.flag is True and cfg.kwargs == {"eps": 1e-6} and cfg.tags == ["p"]
    assert cfg.triple == (1.0, 0.5, 2.0) and cfg.sizes == (3, 4) and cfg.name == "x"


def test_yaml_exponents_without_a_dot_are_numbers():
    assert check_value("lr", float, "1e-3") == 1e-3


@pytest.mark.parametrize(("data", "named"), [
    ({"inner": {"rate": "fast"}}, r"inner\.rate: expected a number"),
    ({"inner": {"mode": "c"}}, r"inner\.mode: 'c' is not one of \['a', 'b'\]"),
    ({"inner": {"limit": 1.5}}, r"inner\.limit: expected an integer"),
    ({"flag": 1}, "flag: expected true or false"),
    ({"name": 3}, "name: expected a string"),
    ({"kwargs": [1]}, "kwargs: expected a mapping"),
    ({"triple": [1, 2]}, "triple: expected 3 values"),
    ({"sizes": [1, "x"]}, r"sizes\[1\]: expected an integer"),
    ({"tags": "p"}, "tags: expected a list"),
    ({"inner": 3}, "inner: expected a mapping"),
])
def test_a_wrong_type_names_the_field(data, named):
    with pytest.raises(ValueError, match=named):
        from_dict(Outer, data)


def test_an_unknown_key_names_it_and_the_known_keys():
    with pytest.raises(ValueError, match=r"unknown config key 'inner\.rat'; known keys here: "
                                         r"rate, mode, limit"):
        from_dict(Outer, {"inner": {"rat": 1}})
    with pytest.raises(ValueError, match="unknown widget field 'nam'"):
        from_dict(Outer, {"nam": 1}, what="widget field")


def test_set_field_checks_the_dotted_field():
    cfg = Outer()
    set_field(cfg, "inner.rate", 2)
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    with pytest.raises(ValueError, match=r"inner\.rate: expected a number"):
        set_field(cfg, "inner.rate", "fast")
    with pytest.raises(ValueError, match="'name' is not a section"):
        set_field(cfg, "name.x", 1)
    with pytest.raises(ValueError, match="'inner' is a section"):
        set_field(cfg, "inner", 1)
    with pytest.raises(ValueError, match=r"unknown config key 'inner\.nope'"):
        set_field(cfg, "inner.nope", 1)


def test_parse_override_reads_the_value_as_yaml():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override(" k = [1, 2]") == ("k", [1, 2])
    assert parse_override("k={eps: 1.0e-6}") == ("k", {"eps": 1e-6})
    assert parse_override("k=") == ("k", "")
    with pytest.raises(ValueError, match=r"must look like field=value or section\.field=value"):
        parse_override("k")
    with pytest.raises(ValueError, match="cannot read the value"):
        parse_override("k=[1")


def test_diagnostics_gpt_settings_use_the_same_parser(tmp_path):
    path = tmp_path / "gpt.json"
    path.write_text('{"depth": 2, "dim": 16, "heads": 2}')
    settings = parse_settings(["placement=post", "norm=dyt",
                               "norm_kwargs_by_position={attn: {alpha_init: 0.8}}"], path)
    config = gpt_config(settings)
    assert (config.depth, config.dim, config.placement) == (2, 16, "post")
    assert config.norm_kwargs_by_position == {"attn": {"alpha_init": 0.8}}
    with pytest.raises(ValueError, match=r"unknown GPT config field 'depht'; known keys here: "
                                         r".*\bdepth\b"):
        gpt_config({"depht": 2})
    with pytest.raises(ValueError, match="depth: expected an integer"):
        gpt_config({"depth": "deep"})
    with pytest.raises(ValueError, match="unknown GPT config field 'architecture'"):
        gpt_config({"architecture": "encoder"})
