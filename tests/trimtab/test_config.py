"""Configuration: typed sections from YAML plus TRIMTAB_ environment overrides, with errors that name
the key, where it came from and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cli import run_cli
from trimtab.config import ConfigError, TrimtabConfig, handoff, load_config

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_run_everything_locally() -> None:
    config = load_config(path=None, environ={})
    assert config.kafka.first_server[0] == "127.0.0.1"
    assert config.redis.url.startswith("redis://127.0.0.1")
    assert [t.name for t in config.kafka.topics.all()] == ["trimtab.responses", "trimtab.feedback", "trimtab.versions"]
    assert config.learner.device == "cpu" and config.learner.backend == "gloo"


def test_file_values_apply_and_environment_overrides_them(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml",
        {"kafka": {"bootstrap_servers": "10.0.0.1:9092", "topics": {"feedback": {"name": "fb", "partitions": 2}}}},
    )
    config = load_config(path, environ={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS": "8"})
    assert config.kafka.bootstrap_servers == "10.0.0.1:9092"
    assert config.kafka.topics.feedback.name == "fb"
    assert config.kafka.topics.feedback.partitions == 8  # parsed as YAML: an int, not "8"


def test_environment_values_keep_strings_that_look_like_yaml() -> None:
    config = load_config(environ={"TRIMTAB_REDIS__KEY_PREFIX": "app:", "TRIMTAB_LEARNER__OPTIM__BETAS": "[0.8, 0.9]"})
    assert config.redis.key_prefix == "app:"
    assert config.learner.optim.betas == (0.8, 0.9)


def test_off_in_a_file_or_a_variable_is_the_word_not_false(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml", "telemetry:\n  traces: off\nlearner:\n  online:\n    canary:\n      enabled: false\n"
    )
    config = load_config(
        path, environ={"TRIMTAB_TELEMETRY__METRICS": "off", "TRIMTAB_LEARNER__ONLINE__ADAPTER": "true"}
    )
    assert (config.telemetry.traces, config.telemetry.metrics) == ("off", "off")  # YAML 1.1 would say False
    assert config.learner.online.canary.enabled is False and config.learner.online.adapter is True


def test_config_file_may_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", {"telemetry": {"traces": "console"}})
    assert load_config(environ={"TRIMTAB_CONFIG": str(path)}).telemetry.traces == "console"


def test_unknown_key_in_file_names_file_key_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", {"stack": {"start_timeout": 5}})
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert f"{path}: stack.start_timeout: unknown key" in str(raised.value)


def test_wrong_type_from_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"TRIMTAB_STACK__START_TIMEOUT_S": "soon"})
    message = str(raised.value)
    assert "environment TRIMTAB_STACK__START_TIMEOUT_S: stack.start_timeout_s" in message
    assert "'soon'" in message


def test_invalid_values_are_refused_with_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"kafka.bootstrap_servers: .*expected host:port"):
        load_config(environ={"TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": "localhost"})
    with pytest.raises(ConfigError, match=r"head size vLLM's CPU attention supports"):
        load_config(environ={"TRIMTAB_MODEL__RECIPE__NUM_HEADS": "16"})  # 256 / 16 = head_dim 16


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "kafka: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_config(path, environ={})


def test_a_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_sections_are_immutable() -> None:
    config = load_config(environ={})
    with pytest.raises(ValueError):
        config.kafka.client_id = "other"  # type: ignore[misc]


def test_the_defaults_round_trip_through_plain_data() -> None:
    """The loader starts from the defaults dumped to plain data: that must mean the same config."""
    assert TrimtabConfig.model_validate(TrimtabConfig().model_dump()) == TrimtabConfig()


DEFAULT_TOPICS = TrimtabConfig().kafka.topics


def test_a_variable_sets_one_field_and_keeps_the_rest_of_its_section() -> None:
    named = load_config(environ={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": "x"}).kafka
    assert named.topics.feedback == DEFAULT_TOPICS.feedback.model_copy(update={"name": "x"})
    assert (named.topics.responses, named.topics.versions) == (DEFAULT_TOPICS.responses, DEFAULT_TOPICS.versions)
    assert named.bootstrap_servers == TrimtabConfig().kafka.bootstrap_servers

    resized = load_config(environ={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS": "8"}).kafka.topics
    assert (resized.feedback.name, resized.feedback.partitions) == ("trimtab.feedback", 8)


def test_defaults_file_and_environment_merge_at_every_depth(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", {"kafka": {"topics": {"feedback": {"partitions": 3}}}})
    config = load_config(path, environ={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": "x"})
    feedback = config.kafka.topics.feedback
    assert (feedback.name, feedback.partitions, feedback.replication_factor) == ("x", 3, 1)  # env, file, default
    assert config.kafka.topics.responses == DEFAULT_TOPICS.responses
    assert config.kafka.client_id == "trimtab"


def test_a_deeper_variable_refines_a_mapping_given_by_a_shallower_one() -> None:
    environ = {  # the deeper one first: the order of the environment must not matter
        "TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": "b",
        "TRIMTAB_KAFKA__TOPICS": "{feedback: {name: a, partitions: 2}}",
    }
    topics = load_config(environ=environ).kafka.topics
    assert (topics.feedback.name, topics.feedback.partitions) == ("b", 2)
    assert topics.versions == DEFAULT_TOPICS.versions


def test_a_mapping_setting_in_a_file_adds_to_its_default_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", {"auth": {"tenants": {"acme": {"allow_raters": True}}}})
    tenants = load_config(path, environ={}).auth.tenants
    assert sorted(tenants) == ["acme", "default"] and tenants["acme"].allow_raters


def test_a_bad_value_names_the_variable_or_the_file_that_set_it_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS": "0"})
    message = str(raised.value)
    assert "environment TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS: kafka.topics.feedback.partitions:" in message
    assert "defaults" not in message

    path = write(tmp_path / "t.yaml", {"kafka": {"topics": {"feedback": {"partitions": 0}}}})
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": "x"})
    message = str(raised.value)
    assert f"{path}: kafka.topics.feedback.partitions: Input should be greater than or equal to 1" in message
    assert "defaults" not in message and "TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME" not in message


def test_a_rule_across_a_sections_fields_names_every_source_of_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"TRIMTAB_MODEL__RECIPE__NUM_HEADS": "16"})  # 256 / 16 = head_dim 16
    assert "environment TRIMTAB_MODEL__RECIPE__NUM_HEADS: model.recipe: " in str(raised.value)
    path = write(tmp_path / "t.yaml", {"model": {"recipe": {"hidden_size": 64}}})
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"TRIMTAB_MODEL__RECIPE__NUM_HEADS": "4"})  # 64 / 4 = 16 again
    assert f"{path} and environment TRIMTAB_MODEL__RECIPE__NUM_HEADS: model.recipe: " in str(raised.value)


def test_the_canarys_evidence_cap_may_not_be_below_its_minimum() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"TRIMTAB_LEARNER__ONLINE__CANARY__MAX_FEEDBACK": "20"})
    assert "MAX_FEEDBACK: learner.online.canary: Value error, max_feedback (20) is below min_feedback (30)" in str(
        raised.value
    )


def test_a_missing_field_names_who_gave_its_section(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", {"auth": {"api_keys": [{"name": "ops", "tenant": "default"}]}})
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert f"{path}: auth.api_keys.0.sha256: Field required" in str(raised.value)


def test_a_section_set_to_something_else_is_refused_naming_who_did(tmp_path: Path) -> None:
    listed = write(tmp_path / "listed.yaml", {"kafka": [1, 2]})
    with pytest.raises(ConfigError) as raised:
        load_config(listed, environ={})
    assert f"{listed}: kafka: Input should be a valid dictionary" in str(raised.value)

    flat = write(tmp_path / "flat.yaml", {"kafka": {"topics": 3}})
    with pytest.raises(ConfigError) as raised:
        load_config(flat, environ={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": "x"})
    assert f"environment TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME: kafka.topics is not a section (3, from {flat})" in str(
        raised.value
    )
    with pytest.raises(ConfigError, match=r"redis.url is not a section \('redis://127.0.0.1:6379/0', from defaults\)"):
        load_config(environ={"TRIMTAB_REDIS__URL__HOST": "x"})


def test_cli_config_show_prints_the_effective_config_which_loads_back(tmp_path: Path) -> None:
    result = run_cli("config", "show", env={"TRIMTAB_REDIS__KEY_PREFIX": "x:"}, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["redis"]["key_prefix"] == "x:"
    assert TrimtabConfig.model_validate(shown) == load_config(environ={"TRIMTAB_REDIS__KEY_PREFIX": "x:"})


def test_a_secret_in_the_config_is_never_printed() -> None:
    for output in ("yaml", "json"):
        args = ("config", "show", "--json") if output == "json" else ("config", "show")
        result = run_cli(*args, env={"TRIMTAB_REWARD_SERVICE__CLIENT_KEY": "sekrit-123"}, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "sekrit-123" not in result.stdout and "client_key" in result.stdout
    config = load_config(environ={"TRIMTAB_REWARD_SERVICE__CLIENT_KEY": "sekrit-123"})
    loaded = config.reward_service.client_key
    assert loaded is not None and loaded.get_secret_value() == "sekrit-123" and "sekrit" not in repr(config)
    # A config handed to a child process (the demo's processes, the learner's gate) keeps the secret.
    assert TrimtabConfig.model_validate(handoff(config)) == config


def test_cli_config_show_with_one_field_set_by_a_variable_shows_its_whole_section() -> None:
    result = run_cli("config", "show", env={"TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": "x"})
    assert result.returncode == 0, result.stderr
    feedback = yaml.safe_load(result.stdout)["kafka"]["topics"]["feedback"]
    assert feedback == {"name": "x", "partitions": 4, "replication_factor": 1}


def test_cli_exits_2_on_invalid_config_with_a_one_screen_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", {"redis": {"url": "http://x"}, "nope": 1})
    result = run_cli("--config", str(path), "status")
    assert result.returncode == 2
    assert "redis.url: Value error, must start with redis://" in result.stderr
    assert "nope: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
