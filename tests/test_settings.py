"""One declaration of the run settings (keras_landscape.settings) and one text -> value rule
(keras_landscape.values): the CLI options, the YAML keys, their validation and RunSpec all
come from the declaration; booleans read the same wherever a setting is written."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import run_cli
from pydantic import Field

from keras_landscape import registry
from keras_landscape.cli.common import setting_options
from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.errors import ConfigError, UserError
from keras_landscape.experiment.config import TOP_KEYS, load_config, read_yaml
from keras_landscape.settings import (
    Cli,
    Int,
    RunSettings,
    RunSpec,
    cli_of,
    parse_strategy,
    run_spec,
    validate,
)
from keras_landscape.values import (
    BadValue,
    conform,
    parse_named,
    parse_pairs,
    text_value,
    to_bool,
    to_type,
    yaml_load,
)

ROOT = Path(__file__).resolve().parents[1]
TRUE_WORDS = ["true", "True", "YES", "yes", "1"]
FALSE_WORDS = ["false", "FALSE", "no", "No", "0"]
NOT_BOOLEANS = ["maybe", "on", "off", "2", "y", "t"]


def _help(capsys, *command) -> str:
    code, out, err = run_cli(capsys, *command, "--help")
    assert code == 0, err
    return " ".join(out.split())  # click wraps the help text


# ------------------------------------------------------------------ one declaration


def test_every_setting_is_an_option_a_yaml_key_and_a_runspec_field(capsys):
    helps = {c: _help(capsys, c) for c in ("probe", "run", "census")}
    for name, field in RunSettings.model_fields.items():
        flag = cli_of(field).flags.split("/")[0]
        words = " ".join(field.description.split()[:4])
        for command, text in helps.items():
            assert f"{flag} " in text, (command, flag)
            assert words in text, (command, name)  # its help text is the field's
        assert f"Overrides `{name}`" in helps["run"]
        assert name in TOP_KEYS  # a YAML key
        assert name in RunSpec.model_fields  # and a RunSpec field, with the same default
        assert RunSpec.model_fields[name].default == field.default
    # the defaults `probe --help` shows are the declaration's
    assert "Samples per compiled evaluation call. [default: 1024; x>=1]" in helps["probe"]
    assert "[default: recompute]" in helps["probe"] and "--tf32" in helps["probe"]


def test_a_setting_added_to_the_declaration_reaches_cli_yaml_and_spec():
    """A new field is at once a click option (help and bounds from the field), a YAML key
    validated with its key path, and a field of the spec, with nothing else written."""

    class Settings(RunSettings):
        window: Annotated[
            Int, Field(ge=2, description="Beads per sliding window."), Cli("--window")
        ] = 3

    @click.command()
    @setting_options(Settings, "probe")
    def command(**values):
        click.echo(json.dumps(validate(Settings, values).model_dump()))

    runner = CliRunner()
    shown = " ".join(runner.invoke(command, ["--help"]).output.split())
    assert "--window INTEGER RANGE Beads per sliding window. [default: 3; x>=2]" in shown
    done = runner.invoke(command, ["--data", "digits", "--window", "5"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["window"] == 5
    refused = runner.invoke(command, ["--data", "digits", "--window", "1"])
    assert refused.exit_code == 2 and "x>=2" in refused.output
    assert validate(Settings, {"data": "digits", "window": "4"}).window == 4
    with pytest.raises(ConfigError, match=r"^window: must be >= 2, got 1$"):
        validate(Settings, {"data": "digits", "window": 1})
    with pytest.raises(ConfigError, match=r"^windw: unknown key \(did you mean window\?\)"):
        validate(Settings, {"data": "digits", "windw": 4})

    class Spec(RunSpec, Settings):
        pass

    assert Spec(data="digits").window == 3 and "window" in Spec.model_fields


def test_tf32_is_one_name_from_the_flag_to_the_spec(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    mapping = {"model": {"builder": "mlp", "input": [1], "output": 1}, "data": "cubic"}
    config.write_text(yaml.safe_dump({**mapping, "loss": "mae", "tf32": True}))
    code, out, err = run_cli(capsys, "run", str(config), "--dry-run")
    assert code == 0, err
    assert json.loads(out)["run"]["tf32"] is True and "fast_float32" not in out
    code, out, err = run_cli(capsys, "run", str(config), "--dry-run", "--no-tf32", "--xla", "off")
    assert code == 0, err
    assert (json.loads(out)["run"]["tf32"], json.loads(out)["run"]["xla"]) == (False, False)
    assert run_spec(models=["a.keras"], data="digits", tf32=True).tf32 is True


def test_settings_validate_with_the_key_named():
    for values, message in [
        ({"eval_batch_size": 0}, "--eval-batch-size: must be >= 1, got 0"),
        ({"seed": 2.5}, "--seed: expected an integer, got 2.5"),
        ({"split": "val"}, "--split: expected train or test, got 'val'"),
        ({"xla": "maybe"}, "--xla: expected auto, on or off, got 'maybe'"),
        ({"lockstep": "on"}, "--lockstep: expected true or false (or yes/no, 1/0), got 'on'"),
        ({"strategy": "bogus"}, "--strategy: Unknown strategy 'bogus'"),
        ({"tpu": "x"}, "--strategy: A TPU name ('x') was given with strategy 'one'"),
    ]:
        with pytest.raises(UserError) as info:
            run_spec(data="digits", **values)
        assert str(info.value).startswith(message), info.value
    spec = run_spec(data="digits", strategy="Mirrored:cpus=2", xla="on", bn_batches="8")
    assert (spec.strategy, spec.xla, spec.bn_batches) == ("mirrored:cpus=2", True, 8)


# ------------------------------------------------------------------- one boolean rule


def _yaml_lockstep(tmp_path, word):
    path = tmp_path / "b.yaml"
    path.write_text(f"models: [{ROOT / 'README.md'}]\ndata: cubic\nlockstep: {word}\n")
    return load_config(str(path)).spec.lockstep


def _cli_run_lockstep(capsys, tmp_path, word):
    path = tmp_path / "c.yaml"
    path.write_text(f"models: [{ROOT / 'README.md'}]\ndata: cubic\n")
    code, out, err = run_cli(capsys, "run", str(path), "--set", f"lockstep={word}", "--dry-run")
    if code:
        return code, err
    return json.loads(out)["run"]["lockstep"]


@dataclass
class _BoolConfig:
    strict: bool = False


class _BoolProbe:
    name = "boolprobe"
    Config = _BoolConfig


def _teacher_bias(word):
    from keras_landscape.data.specs import _Options

    return _Options("teacher:bias=" + word, {"bias": word}).get_bool("bias", True)


def _loss_like(from_logits=False, label_smoothing=0.0):
    return from_logits


@pytest.mark.parametrize("word", TRUE_WORDS + FALSE_WORDS)
def test_booleans_agree_across_set_yaml_and_key_value_specs(word, capsys, tmp_path):
    expected = word.lower() in ("true", "yes", "1")
    assert to_bool(word) is expected
    # a probe's --set (registry.coerce -> the probe Config's type)
    assert registry.coerce(word, bool, "probe.strict") is expected
    # a YAML config key, and a `run --set` override (read as YAML)
    assert _yaml_lockstep(tmp_path, word) is expected
    assert _cli_run_lockstep(capsys, tmp_path, word) is expected
    # key=value specs: a data spec option, a loss/optimizer/initializer argument
    assert _teacher_bias(word) is expected
    _, options = parse_named(f"_loss_like:from_logits={word}", "loss option", example="x")
    assert conform(options, _loss_like, "loss")["from_logits"] is expected
    # the probe --set path end to end
    assert registry.make_config(_BoolProbe, {"strict": word}).strict is expected


@pytest.mark.parametrize("word", NOT_BOOLEANS)
def test_other_words_are_refused_everywhere_with_the_setting_named(word, capsys, tmp_path):
    with pytest.raises(BadValue, match="for probe.strict: expected true or false"):
        registry.coerce(word, bool, "probe.strict")
    with pytest.raises(ConfigError, match=f"lockstep: expected true or false .*got '?{word}'?$"):
        _yaml_lockstep(tmp_path, word)
    code, err = _cli_run_lockstep(capsys, tmp_path, word)
    assert code == EXIT_BAD_INPUT and "lockstep: expected true or false" in err
    with pytest.raises(UserError, match=f"Option bias='{word}' .* must be true or false"):
        _teacher_bias(word)
    _, options = parse_named(f"_loss_like:from_logits={word}", "loss option", example="x")
    with pytest.raises(BadValue, match="for loss option from_logits: expected true or false"):
        conform(options, _loss_like, "loss")


def test_yaml_reads_on_and_off_as_words():
    assert yaml_load("a: on\nb: off\nc: yes\nd: NO\ne: true\n") == {
        "a": "on",
        "b": "off",
        "c": True,
        "d": False,
        "e": True,
    }


def test_from_logits_maybe_is_refused_not_read_as_true():
    pytest.importorskip("keras")
    from keras_landscape.engine.objectives import keras_loss

    with pytest.raises(UserError, match="'maybe' for loss sparse_categorical_crossentropy"):
        keras_loss("sparse_categorical_crossentropy:from_logits=maybe")
    assert keras_loss("sparse_categorical_crossentropy:from_logits=yes").from_logits is True
    assert keras_loss("binary_crossentropy:from_logits=0").from_logits is False


def test_bad_values_exit_2_naming_the_key(capsys, tmp_path, digits_model_file):
    digits_model_file = str(digits_model_file)
    config = tmp_path / "c.yaml"
    config.write_text(f"models: [{digits_model_file}]\ndata: digits\n")
    for args, message in [
        (["run", str(config), "--set", "tf32=maybe"], "tf32: expected true or false"),
        (["run", str(config), "--set", "eval_batch_size=0"], "eval_batch_size: must be >= 1"),
        (["run", str(config), "--bn-batches", "0"], "'--bn-batches': 0 is not in the range"),
        (["run", str(config), "--set", "split=val"], "split: expected train or test"),
        (
            ["probe", digits_model_file, "--data", "digits", "--set", "retrain_endpoints=on"],
            "curviness.retrain_endpoints: expected true or false",
        ),
        (
            ["probe", digits_model_file, "--data", "teacher:bias=maybe"],
            "Option bias='maybe'",
        ),
        (["probe", digits_model_file, "--data", "digits", "--tf32=1"], "does not take a value"),
    ]:
        if "retrain_endpoints=on" in args[-1]:
            args = [*args, "--probe", "curviness"]
        code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "x.h5"))
        assert code == EXIT_BAD_INPUT, (args, err)
        assert message in err and "Traceback" not in err, (args, err)


def test_loss_option_maybe_exits_2(capsys, tmp_path, digits_model_file):
    code, out, err = run_cli(
        capsys,
        "probe",
        str(digits_model_file),
        "--data",
        "digits",
        "--loss",
        "sparse_categorical_crossentropy:from_logits=maybe",
        "--out",
        str(tmp_path / "x.h5"),
    )
    assert code == EXIT_BAD_INPUT
    assert "Bad value 'maybe' for loss sparse_categorical_crossentropy option from_logits" in err


# ------------------------------------------------------------------------ one parser


def test_parse_pairs_texts_and_items():
    assert parse_pairs("a=1, b = x,,", "option", example="a=1") == {"a": "1", "b": "x"}
    # separate items (repeated --set) keep their commas
    assert parse_pairs(["levels=0.3,0.1", "tag="], "--set option", example="x") == {
        "levels": "0.3,0.1",
        "tag": "",
    }
    with pytest.raises(UserError, match="Malformed --set option 'bogus': write key=value"):
        parse_pairs(["bogus"], "--set option", example="--set alpha=0.95")
    with pytest.raises(UserError, match="Malformed option '=1' in 'k:=1'"):
        parse_pairs("=1", "option", example="x", within="k:=1")
    with pytest.raises(UserError, match="Option 'a' is given twice"):
        parse_pairs("a=1,a=2", "option", example="x")
    with pytest.raises(UserError, match="given twice"):
        parse_pairs("a=2", "option", example="x", taken={"a": "1"})
    assert parse_named("mirrored:cpus=2", "o", example="x") == ("mirrored", {"cpus": 2})


def test_text_value_and_to_type():
    assert [text_value(t) for t in ("true", "None", "10", "0.5", "1e-3", "'adam'", "yes")] == [
        True,
        None,
        10,
        0.5,
        1e-3,
        "adam",
        "yes",  # yes/no/1/0 are booleans only where a boolean is expected
    ]
    assert to_type("7", int) == 7 and to_type("1e-3", float) == 1e-3
    assert to_type("1,2", list[int]) == [1, 2] and to_type([0.3, 0.1], str) == "0.3,0.1"
    assert to_type("none", int | None) is None and to_type("2", int | None) == 2
    for raw, hint, expected in [
        ("2.5", int, "an integer"),
        (True, int, "an integer"),
        ("nan", float, "a finite number"),
        (float("inf"), float, "a finite number"),
        ("x", float, "a number"),
        (None, int, "an integer"),
    ]:
        with pytest.raises(BadValue, match=re.escape(expected)):
            to_type(raw, hint, "k")


def test_strategy_options_by_the_one_parser():
    assert str(parse_strategy("mirrored:cpus=2")) == "mirrored:cpus=2"
    assert parse_strategy("tpu", "node-1").tpu == "node-1"
    with pytest.raises(UserError, match="Bad strategy option 'gpus=2'"):
        parse_strategy("mirrored:gpus=2")
    with pytest.raises(UserError, match="Malformed strategy option 'cpus'"):
        parse_strategy("mirrored:cpus")


# ---------------------------------------------------------------------- the config file


def test_config_module_is_validation_by_declaration():
    """experiment/config.py reads YAML through the declarations (RunSettings, ModelRecipe)
    instead of by hand: it was 855 lines of hand-written checks."""
    lines = (ROOT / "keras_landscape" / "experiment" / "config.py").read_text().splitlines()
    assert len(lines) < 650, len(lines)
    source = "\n".join(lines)
    for hand_written in ("def _integer(", "def _flag(", "def _number(", "def _string("):
        assert hand_written not in source


def test_every_shipped_config_reads_with_the_one_yaml_rule():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert read_yaml(str(path)) == yaml.safe_load(path.read_text()), path
