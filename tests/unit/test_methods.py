"""The method layer's shape: every setting described, cross-field checks, defaults per
architecture that fit the architecture, and small functions."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

import rfau.methods
from rfau.methods import METHODS, settings_help
from rfau.methods.rfau import RFAU_DEFAULTS, RFAUConfig, resolve_modules
from rfau.methods.scrub import ScrubConfig
from rfau.models.arch import ARCHITECTURES, build_model

MAX_LINES = 60


def test_no_function_in_the_method_layer_is_longer_than_60_lines():
    long = []
    for path in Path(rfau.methods.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long


@pytest.mark.parametrize("name", list(METHODS))
def test_every_setting_has_a_description_type_and_default(name):
    cls = METHODS[name].config
    settings = settings_help(name)
    assert [s.name for s in settings] == (list(cls.model_fields) if cls else [])
    for s in settings:
        assert s.description and s.type, f"{name}.{s.name} has no help"
    if cls is not None:
        defaults = cls().model_dump()
        assert {s.name: s.default for s in settings} == defaults


def test_settings_help_shows_types_and_bounds():
    by_name = {s.name: s for s in settings_help("rfau")}
    assert by_name["rank"].type == "int" and by_name["rank"].constraints == ">= 1"
    assert by_name["regime"].type == "'auto' | 'class' | 'sample'"
    assert by_name["target_modules"].type == "list[str] | None"
    assert "resnet18" in by_name["target_modules"].description  # the per-architecture defaults


def test_rfau_config_cross_field_checks():
    with pytest.raises(ValidationError, match="target_modules is empty"):
        RFAUConfig(target_modules=[])
    with pytest.raises(ValidationError, match="taps names a module twice"):
        RFAUConfig(taps=["fc", "fc"])
    with pytest.warns(UserWarning, match="nothing is forgotten"):
        RFAUConfig(forget_weight=0)
    with pytest.warns(UserWarning, match="no effect"):
        RFAUConfig(regime="sample", classwise_target="other_class_features")
    with pytest.warns(UserWarning, match="shift_keep has no effect"):
        RFAUConfig(classwise_target="masked_output", shift_keep=0.2)
    with pytest.warns(UserWarning, match="loss_match_split has no effect"):
        RFAUConfig(loss_match=0, loss_match_split=True)
    with warnings.catch_warnings():  # the defaults themselves warn about nothing
        warnings.simplefilter("error")
        RFAUConfig(regime="sample")
    with pytest.warns(UserWarning, match="msteps=5 > epochs=3"):
        ScrubConfig(msteps=5, epochs=3)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_rfau_defaults_exist_for_every_architecture_and_fit_it(arch):
    assert arch in RFAU_DEFAULTS
    model = build_model(arch, 3, 10, width=8)
    targets, taps = resolve_modules(model, RFAUConfig())
    assert targets == list(RFAU_DEFAULTS[arch].targets)
    assert taps[: len(RFAU_DEFAULTS[arch].taps)] == list(RFAU_DEFAULTS[arch].taps)
