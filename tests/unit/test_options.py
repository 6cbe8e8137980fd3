from __future__ import annotations

import pytest

from kombu_redis_streams.options import IGNORED_OPTIONS, TransportOptions


def test_defaults_match_kombu_redis() -> None:
    options = TransportOptions.from_mapping({})
    assert options.visibility_timeout == 300
    assert options.priority_steps == (0, 3, 6, 9)
    assert options.queue_order_strategy == "round_robin"
    assert options.global_keyprefix == ""
    assert options.max_connections == 10
    assert options.health_check_interval == 25
    assert options.unacked_restore_interval == 10
    assert options.stream_maxlen is None
    assert options.block_timeout_s == 1.0


def test_unknown_options_are_ignored() -> None:
    options = TransportOptions.from_mapping({"confirm_publish": True, "max_retries": 3})
    assert options.visibility_timeout == 300


def test_lists_only_options_are_accepted() -> None:
    given = {name: object() for name in IGNORED_OPTIONS}
    options = TransportOptions.from_mapping(given)
    assert set(options.ignored) == set(IGNORED_OPTIONS)


def test_valid_values_are_kept() -> None:
    options = TransportOptions.from_mapping(
        {
            "visibility_timeout": 30,
            "priority_steps": [0, 5],
            "queue_order_strategy": "priority",
            "global_keyprefix": "app:",
            "polling_interval": 0.5,
            "stream_maxlen": 1000,
            "prefetch_count": 50,
        }
    )
    assert options.visibility_timeout == 30.0
    assert options.priority_steps == (0, 5)
    assert options.block_timeout_s == 0.5
    assert options.stream_maxlen == 1000
    assert options.prefetch_count == 50


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("visibility_timeout", 0, "greater than 0"),
        ("visibility_timeout", "1h", "greater than 0"),
        ("visibility_timeout", True, "greater than 0"),
        ("priority_steps", [], "strictly increasing"),
        ("priority_steps", [3, 0], "strictly increasing"),
        ("priority_steps", [0, 12], "from 0 to 9"),
        ("priority_steps", 5, "strictly increasing"),
        ("queue_order_strategy", "random", "round_robin"),
        ("stream_maxlen", 0, "greater than 0"),
        ("stream_maxlen", -1, "greater than 0"),
        ("prefetch_count", -1, "0 or more"),
        ("max_connections", 0, "greater than 0"),
        ("global_keyprefix", 5, "a string"),
        ("consumer_group_prefix", "", "non-empty"),
        ("polling_interval", 0, "greater than 0"),
        ("visibility_timeout", float("nan"), "finite"),
        ("visibility_timeout", float("inf"), "finite"),
        ("health_check_interval", float("inf"), "finite"),
        ("batch_acks", "yes", "True or False"),
        ("max_deliveries", 0, "greater than 0"),
    ],
)
def test_invalid_value_names_option(name: str, value: object, allowed: str) -> None:
    with pytest.raises(ValueError) as info:
        TransportOptions.from_mapping({name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message
    assert allowed in message


def test_misspelled_option_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    options = TransportOptions.from_mapping({"visiblity_timeout": 10})
    assert options.visibility_timeout == 300.0
    assert "'visiblity_timeout'" in caplog.text
    assert "'visibility_timeout'" in caplog.text


def test_misspelling_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    TransportOptions.from_mapping({"max_delivery": 3})
    TransportOptions.from_mapping({"max_delivery": 3})
    assert caplog.text.count("'max_delivery'") == 1
    assert "'max_deliveries'" in caplog.text


@pytest.mark.parametrize("name", ["max_retries", "interval_start", "master_name"])
def test_unrelated_unknown_option_is_quiet(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    TransportOptions.from_mapping({name: 3})
    assert caplog.text == ""
