"""What is generated from the command line's parser: shell completion and ``docs/cli.md``.

Owns walking an :class:`argparse.ArgumentParser` (every command path, e.g. ``tls cert
create``, with its options and positional arguments), the bash and zsh completion scripts
(``pysyncer completion bash|zsh``) and the Markdown reference of every command. The
parser itself is :func:`pysyncer.cli.build_parser`'s: nothing here knows a command by
name, so a new command or option shows up in both without an edit here.

Imports: -.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SHELLS", "Command", "commands", "completion_script", "leaves", "render_markdown"]

SHELLS = ("bash", "zsh")


@dataclass(frozen=True)
class Command:
    """One command path of the parser and the parser that reads its arguments."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    help: str

    @property
    def subcommands(self) -> list[str]:
        action = _subparsers(self.parser)
        return list(action.choices) if action is not None else []

    @property
    def options(self) -> list[str]:
        return [
            flag
            for action in self.parser._actions  # argparse has no public walk of its actions
            if action.option_strings and action.help != argparse.SUPPRESS
            for flag in action.option_strings
        ]


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Command]:
    """Every command path under ``parser`` (the root first), depth first, in the order
    they were added."""
    yield Command(path, parser, parser.description or "")
    action = _subparsers(parser)
    if action is None:
        return
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    for name, child in action.choices.items():
        for command in commands(child, (*path, name)):
            if command.path == (*path, name):
                command = Command(command.path, child, helps.get(name, "") or command.help)
            yield command


def leaves(parser: argparse.ArgumentParser) -> list[Command]:
    """The commands that run something (no further subcommand)."""
    return [c for c in commands(parser) if c.path and not c.subcommands]


# -- completion ------------------------------------------------------------------------


def _bash_function(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    cases = []
    for command in commands(parser):
        words = " ".join(command.subcommands + command.options)
        cases.append(f'        "{" ".join(command.path)}") words="{words}" ;;')
    lines = [
        f"_{prog}_complete() {{",
        '    local cur path="" word i',
        '    cur="${COMP_WORDS[COMP_CWORD]}"',
        "    # the command path: the words before the cursor that are not options",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        case "$word" in -*) continue ;; esac',
        f'        if _{prog}_is_command "${{path:+$path }}$word"; then',
        '            path="${path:+$path }$word"',
        "        fi",
        "    done",
        '    local words=""',
        '    case "$path" in',
        *cases,
        "    esac",
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        f"_{prog}_is_command() {{",
        '    case "$1" in',
        "        "
        + "|".join(f'"{" ".join(c.path)}"' for c in commands(parser) if c.path)
        + ") return 0 ;;",
        "    esac",
        "    return 1",
        "}",
    ]
    return "\n".join(lines) + "\n"


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (bash, or zsh through its bash compatibility)."""
    prog = parser.prog
    function = _bash_function(parser)
    header = (
        f"# {shell} completion for {prog}, generated from its parser ({prog} completion {shell})"
    )
    if shell == "bash":
        return f"{header}\n{function}complete -o default -F _{prog}_complete {prog}\n"
    if shell == "zsh":
        return (
            f"#compdef {prog}\n{header}\n"
            "autoload -U +X bashcompinit && bashcompinit\n"
            f"{function}complete -o default -F _{prog}_complete {prog}\n"
        )
    raise ValueError(f"shell {shell!r} must be one of {', '.join(SHELLS)}")


# -- Markdown --------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _argument_items(parser: argparse.ArgumentParser, elsewhere: Mapping[str, str]) -> list[str]:
    """One list item per argument; options named in ``elsewhere`` become one item per
    distinct text there (a link to where they are documented)."""
    items: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(
            action, argparse._SubParsersAction | argparse._HelpAction
        ):
            continue
        told = [elsewhere[flag] for flag in action.option_strings if flag in elsewhere]
        if told:
            item = f"- {told[0]}"
            if item not in items:
                items.append(item)
            continue
        name = ", ".join(action.option_strings) or str(action.metavar or action.dest)
        if action.option_strings and action.nargs != 0:
            if action.metavar is not None:
                name += f" {action.metavar}"
            elif action.choices:
                name += " {" + ",".join(map(str, action.choices)) + "}"
            else:
                name += f" {action.dest.upper()}"
        shown_default = action.default not in (None, False, argparse.SUPPRESS)
        default = f" (default `{action.default}`)" if shown_default and action.nargs != 0 else ""
        items.append(f"- `{name}`: {_cell(action.help or '')}{default}")
    return items


def render_markdown(
    parser: argparse.ArgumentParser,
    elsewhere: Mapping[tuple[str, ...], Mapping[str, str]] | None = None,
) -> str:
    """Every command: its purpose, usage, and a list of its arguments. ``elsewhere``: per
    command path, options documented on another page -> the list item that says where."""
    out: list[str] = []
    for command in commands(parser):
        if not command.path:
            continue
        name = " ".join((parser.prog, *command.path))
        level = "#" * min(2 + len(command.path), 4)
        out += [f"{level} `{name}`", ""]
        if command.help:
            out += [_cell(command.help), ""]
        if command.subcommands:
            out += [f"Commands: {', '.join(f'`{s}`' for s in command.subcommands)}.", ""]
            continue
        usage = " ".join(command.parser.format_usage().split()).removeprefix("usage: ")
        out += ["```", usage, "```", ""]
        items = _argument_items(command.parser, (elsewhere or {}).get(command.path, {}))
        if items:
            out += [*items, ""]
    return "\n".join(out).rstrip("\n")
