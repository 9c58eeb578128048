"""The YAML loader behind every configuration, sweep file and ``--set`` value: it measures
documents while composing them, so alias bombs, recursive aliases, deep nesting and duplicate
keys are refused as one-line errors before anything expands them."""

from __future__ import annotations

import pytest

from fpzo_ray.config import MAX_DEPTH, MAX_NODES, ConfigError, load_yaml_text, parse_overrides


def _bomb(levels: int = 9, fan_out: int = 9) -> str:
    """The 342-byte "billion laughs": ``levels`` anchors, each a list of ``fan_out`` aliases
    of the previous one; it expands to 9^9 strings."""
    lines = ["a: &a [" + ",".join(['"lol"'] * fan_out) + "]"]
    names = "abcdefghijklmnopqrstuvwxyz"
    for previous, name in zip(names, names[1:levels]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


def _refusal(text: str, where: str = "c.yaml") -> str:
    with pytest.raises(ConfigError) as err:
        load_yaml_text(text, where)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"config error: {where}: ")
    return message


def test_a_billion_laughs_is_refused_while_it_is_composed():
    assert len(_bomb()) == 342
    assert f"more than {MAX_NODES} values" in _refusal(_bomb())


def test_merge_keys_cannot_escape_the_limit():
    lines = ["a: &a {" + ", ".join(f"a{i}: lol" for i in range(10)) + "}"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        pairs = ", ".join(f"{name}{i}: *{previous}" for i in range(10))
        lines.append(f"{name}: &{name} {{<<: *{previous}, {pairs}}}")
    assert f"more than {MAX_NODES} values" in _refusal("\n".join(lines))


@pytest.mark.parametrize("fan_out, refused", [(300, False), (333, True)])
def test_the_limit_is_on_the_expanded_count(fan_out, refused):
    """``b`` holds ``fan_out`` aliases of a list of ``fan_out`` values: 1 + 300 * 301 = 90,301
    values loads, 1 + 333 * 334 = 111,223 does not, though both files are small."""
    ones = ",".join(["1"] * fan_out)
    text = f"a: &a [{ones}]\nb: [" + ",".join(["*a"] * fan_out) + "]\n"
    assert len(text) < 3000
    if refused:
        assert f"more than {MAX_NODES} values" in _refusal(text)
    else:
        assert len(load_yaml_text(text, "c.yaml")["b"]) == fan_out


def test_small_anchors_and_aliases_load_as_the_written_out_value():
    aliased = """
defaults: &defaults {rounds: 5, clients_per_round: 4}
lrs: &lrs [0.1, 0.01]
training: *defaults
grid: {training.server_lr: *lrs, training.client_lr: *lrs}
merged: {<<: *defaults, rounds: 7}
"""
    written_out = """
defaults: {rounds: 5, clients_per_round: 4}
lrs: [0.1, 0.01]
training: {rounds: 5, clients_per_round: 4}
grid: {training.server_lr: [0.1, 0.01], training.client_lr: [0.1, 0.01]}
merged: {clients_per_round: 4, rounds: 7}
"""
    assert load_yaml_text(aliased, "a.yaml") == load_yaml_text(written_out, "b.yaml")


@pytest.mark.parametrize(
    "text, line",
    [
        ("training:\n  rounds: 5\n  rounds: 7\n", 3),
        ("training: {rounds: 5, 'rounds': 7}\n", 1),
        ("seed: 1\ndata:\n  name: digits\nseed: 2\n", 4),
    ],
)
def test_duplicate_keys_are_refused_with_their_line(text, line):
    key = "seed" if text.startswith("seed") else "rounds"
    assert _refusal(text).endswith(f": duplicate key {key!r} (line {line})")


def test_duplicate_keys_in_set_values_are_refused():
    with pytest.raises(ConfigError, match=r"^config error: --set training: duplicate key 'rounds'"):
        parse_overrides(["training={rounds: 5, rounds: 7}"])


def test_equal_keys_in_different_mappings_are_no_duplicates():
    value = load_yaml_text("a: {rounds: 1}\nb: {rounds: 2}\n", "c.yaml")
    assert value == {"a": {"rounds": 1}, "b": {"rounds": 2}}


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: [1, *a]}\n", "&r [1, [2, *r]]\n"])
def test_a_recursive_alias_is_refused(text):
    assert "recursive alias *" in _refusal(text)


def test_an_undefined_alias_is_invalid_yaml():
    assert "not valid YAML" in _refusal("a: *nowhere\n")


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, 100_000])
def test_deep_nesting_is_refused_past_the_limit(depth):
    text = "[" * depth + "]" * depth
    if depth <= MAX_DEPTH:
        assert load_yaml_text(text, "c.yaml") is not None
    else:
        assert f"nested more than {MAX_DEPTH} levels deep" in _refusal(text)


def test_an_alias_counts_at_the_depth_it_is_used():
    """An anchor 16 deep, used 17 deep, nests 33 levels: refused though neither part is."""
    half = MAX_DEPTH // 2
    anchor = "a: &a " + "[" * half + "]" * half
    assert load_yaml_text(f"{anchor}\nb: {'[' * (half - 1)}*a{']' * (half - 1)}\n", "c.yaml")
    assert "nested more than" in _refusal(f"{anchor}\nb: {'[' * half}*a{']' * half}\n")
