"""The generated reference pages are committed as generated: ``docs/reference/fields.md``
(every configuration field, from the configuration classes) and ``docs/reference/cli.md``
(every command's ``--help``, from the commands' own parsers). A field or a flag added without
regenerating the pages fails here."""

from __future__ import annotations

import argparse

from fpzo_ray.config import field_infos
from fpzo_ray.reference import CLI_PAGE, PAGE, cli_page, commands, main, page


def test_the_committed_page_is_what_the_generator_writes():
    assert PAGE.read_text() == page(), "run: python -m fpzo_ray.reference"


def test_every_field_is_on_the_page_with_its_default():
    text = page()
    infos = field_infos()
    assert len(infos) > 80
    for info in infos:
        assert f"| `{info.name}` | `{info.default!r}`" in text.replace("\\|", "|"), info.name


def test_the_committed_cli_page_is_what_the_generator_writes():
    assert CLI_PAGE.read_text() == cli_page(), "run: python -m fpzo_ray.reference"


def test_every_command_and_every_flag_is_on_the_cli_page():
    text = CLI_PAGE.read_text()
    parsers = [parser for _, _, parser in commands() if parser is not None]
    progs = {parser.prog for parser in parsers}
    names = ("run", "sweep", "report", "signing", "reference", "bench zo-step", "bench gpu")
    assert {f"python -m fpzo_ray.{name}" for name in names} <= progs
    for parser in parsers:
        assert f"usage: {parser.prog} " in text, parser.prog
        for action in parser._actions:
            if action.option_strings:
                for flag in action.option_strings:
                    assert flag in text, f"{parser.prog} {flag}"
            else:  # a positional: its name in the usage line
                name = action.metavar or action.dest
                assert isinstance(name, str) and name in text, f"{parser.prog} {name}"
        for action in parser._actions:
            if action.help and action.help != argparse.SUPPRESS:
                first_words = " ".join(action.help.split()[:3])
                assert first_words in " ".join(text.split()), f"{parser.prog}: {first_words}"


def test_every_config_field_is_in_the_runs_help():
    text = CLI_PAGE.read_text()
    for info in field_infos():
        assert f"  {info.name} = " in text, info.name


def test_check_says_whether_the_pages_are_stale(monkeypatch, tmp_path, capsys):
    from fpzo_ray import reference

    assert main(["--check"]) == 0
    monkeypatch.setattr(reference, "CLI_PAGE", tmp_path / "cli.md")
    (tmp_path / "cli.md").write_text("# old\n")
    assert main(["--check"]) == 1
    assert "stale:" in capsys.readouterr().err and (tmp_path / "cli.md").read_text() == "# old\n"


def test_the_help_is_the_same_at_any_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert cli_page() == CLI_PAGE.read_text()
