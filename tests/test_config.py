import pytest

from engramlab.config import describe, load_yaml, parse_override, parse_value, resolve, to_yaml, validate
from engramlab.errors import ConfigError
from engramlab.experiments.ponder.pondernet_parity import PonderParityConfig


def test_overrides_reach_nested_fields_and_parse_values():
    cfg = resolve(
        PonderParityConfig,
        {"task": {"n": 40}},
        overrides=[
            "model.halting.lambda_p=0.3",
            "train.lr=1e-3",
            "task.test_k=[21, 40]",
            "task.train_k=[1,20]",
            "methods=[pondernet]",
            "model.halting.eval_max_steps=null",
        ],
    )
    assert cfg.model.halting.lambda_p == 0.3 and cfg.train.lr == 1e-3
    assert cfg.task.n == 40 and cfg.task.test_k == (21, 40)
    assert cfg.methods == ["pondernet"] and cfg.model.halting.eval_max_steps is None


def test_later_layers_win():
    cfg = resolve(PonderParityConfig, {"train": {"steps": 5}}, {"train": {"steps": 7}}, overrides=["train.steps=9"])
    assert cfg.train.steps == 9


def test_parse_value_reads_numbers_lists_and_strings():
    assert parse_value("1e-3") == 1e-3 and parse_value("3") == 3
    assert parse_value("[1, 2]") == [1, 2] and parse_value("gru") == "gru" and parse_value("null") is None
    assert parse_override("a.b = 2") == ("a.b", 2)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("model.lambda_p")


def test_unknown_key_names_the_section_its_keys_and_a_close_match():
    with pytest.raises(ConfigError) as err:
        resolve(PonderParityConfig, overrides=["model.halting.lamda_p=0.1"])
    msg = str(err.value)
    assert "model.halting.lamda_p" in msg and "did you mean 'model.halting.lambda_p'" in msg and "max_steps" in msg
    assert "\n" not in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        resolve(PonderParityConfig, overrides=["modle.x=1"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.halting.lambda_p=2", "invalid value for model.halting.lambda_p: 2 (allowed: a number > 0 and < 1)"),
        (
            "model.step=lstm",
            "invalid value for model.step: 'lstm' (allowed: one of 'gru', 'rnn', 'mlp', 'transformer')",
        ),
        ("train.steps=0", "invalid value for train.steps: 0 (allowed: an integer >= 1)"),
        ("train.checkpoint_every=150", "must be a multiple of train.log_every"),
    ],
)
def test_invalid_values_give_one_line_naming_key_value_and_what_is_allowed(override, expected):
    with pytest.raises(ConfigError) as err:
        resolve(PonderParityConfig, overrides=[override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_round_trip(tmp_path):
    cfg = resolve(PonderParityConfig, overrides=["task.test_k=[49, 96]", "seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert validate(PonderParityConfig, load_yaml(path)) == cfg


def test_bad_yaml_file_names_file_and_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("seed: 1\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config.yaml line \d+: not valid YAML"):
        load_yaml(path)


def test_describe_lists_every_leaf_with_value_and_help():
    cfg = resolve(PonderParityConfig)
    rows = {key: (value, allowed, text) for key, value, allowed, text in describe(cfg)}
    assert rows["model.halting.lambda_p"][0] == cfg.model.halting.lambda_p
    assert "a number > 0 and < 1" in rows["model.halting.lambda_p"][1]
    assert all(text for _, _, text in rows.values()), "every config key needs a description"
