"""Shell words, Docker's reading and sh's: against shlex, and what each reading reports."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from homerun.shellwords import (
    Special,
    Word,
    WordError,
    expand,
    split_script,
    split_unexpanded,
    split_words,
)

# Text without expansions ($, backticks), operators, globs, ~ { # or newlines: what shlex.split
# reads as sh does (shlex knows none of those).
_PLAIN = st.text(
    alphabet=st.sampled_from(list("abcz019-_=:./,@%+!^é") + [" ", "\t", "'", '"', "\\"]),
    max_size=30,
)


@given(_PLAIN)
def test_both_readings_split_plain_text_as_shlex_does(text: str) -> None:
    try:
        expected = shlex.split(text)
    except ValueError as error:
        # shlex refuses a trailing backslash, which Docker and sh keep as a character.
        assume("No escaped character" not in str(error))
        with pytest.raises(WordError, match="unterminated"):
            split_words(text, {})
        assert split_script(text, {})[-1].specials[-1].source in ("'", '"')
        return
    assert [word.text for word in split_words(text, {})] == expected
    assert split_script(text, {}) == [Word(word) for word in expected]


# sh's reading


def test_a_script_substitutes_plain_variables_and_reports_them() -> None:
    words = split_script("exec gunicorn -b :$PORT \"${PORT}\" '$PORT' \\$PORT", {"PORT": "80"})
    assert words == [
        Word("exec"),
        Word("gunicorn"),
        Word("-b"),
        Word(":80", specials=(Special(18, "$PORT"),)),
        Word("80", specials=(Special(25, "${PORT}", quoted=True),)),
        Word("$PORT"),
        Word("$PORT"),
    ]


@pytest.mark.parametrize(
    ("script", "texts", "sources"),
    [
        ("a $UNSET b", ["a", "", "b"], ["$UNSET"]),
        ("${A:-x y}", ["${A:-x y}"], ["${A:-x y}"]),
        ("${A", ["${A"], ["${"]),
        ('"$(date)"', ["$(date)"], ["$("]),
        ("$1 $@ $$", ["$1", "$@", "$$"], ["$1", "$@", "$$"]),
        ("a$ $'x'", ["a$", "$x"], ["$", "$"]),
        ('`id` "`id`"', ["`id`", "`id`"], ["`", "`", "`", "`"]),
        ("*.py a?[b]", ["*.py", "a?[b]"], ["*", "?", "[", "]"]),
        ("~/x #c {a,b} a#b a~b", ["~/x", "#c", "{a,b}", "a#b", "a~b"], ["~", "#", "{"]),
        ('\\* "*" \\~ "#"', ["*", "*", "~", "#"], []),
        ("a 'b c", ["a", "b c"], ["'"]),
        ('a "$X b', ["a", " b"], ["$X", '"']),
    ],
)
def test_a_script_reports_what_sh_would_act_on(
    script: str, texts: list[str], sources: list[str]
) -> None:
    words = split_script(script, {})
    assert [word.text for word in words] == texts
    specials = [special for word in words for special in word.specials]
    assert [special.source for special in specials] == sources
    assert all(script.startswith(special.source[:1], special.start) for special in specials)


def test_a_script_returns_operators_as_words() -> None:
    words = split_script("a&&b || c;d|e>f 2>>g<h (i)\nj &", {})
    operators = [word.text for word in words if word.operator]
    assert operators == ["&&", "||", ";", "|", ">", ">>", "<", "(", ")", "\n", "&"]
    assert [word.text for word in words if not word.operator] == list("abcdef2ghij")


def test_a_script_splits_on_blanks_and_joins_continued_lines() -> None:
    assert split_script("a\\\nb \\\n c\r\x0bd", {}) == [Word("ab"), Word("c\r\x0bd")]
    assert split_script('"a\\\nb\\c"', {}) == [Word("ab\\c")]
    assert split_script("a\\", {}) == [Word("a\\")]


# Docker's reading


def test_docker_splits_on_any_whitespace_and_never_splits_a_value_again() -> None:
    env = {"A": "x y"}
    assert split_words("COPY $A\r\n${A}/d", env) == [Word("COPY"), Word("x y"), Word("x y/d")]
    assert split_words("a\\\nb", {}) == [Word("a\nb")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A:-d} ${B:-d} ${E:-d} ${E-d}", "1 d d "),
        ("${A:+alt}|${B:+alt}|${E+alt}", "alt||alt"),
        ("'$A' \"$A\" \\$A $", "$A 1 $A $"),
        ("${A:-${B:-nested}}x", "1x"),
    ],
)
def test_docker_substitutes_like_a_dockerfile(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "E": ""}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${A", "unterminated ${"),
        ("${1}", "bad substitution ${1}"),
        ("${A#b}", "unsupported substitution ${A#b}"),
        ("'a", "unterminated single quote"),
        ('"a', "unterminated double quote"),
    ],
)
def test_docker_refuses_what_it_cannot_split(text: str, message: str) -> None:
    with pytest.raises(WordError, match=message.replace("$", r"\$").replace("{", r"\{")):
        split_words(text, {})


def test_docker_operators_and_command_substitution() -> None:
    words = split_words("pip install a && pip install b; x", {}, operators=True)
    assert [(word.text, word.operator) for word in words if word.operator] == [
        ("&&", True),
        (";", True),
    ]
    for text in ("pip install $(cat r)", "pip install `cat r`", 'x "`cat r`"'):
        with pytest.raises(WordError, match="command substitution"):
            split_words(text, {}, operators=True)
    assert split_words("a;b $(c)", {}) == [Word("a;b"), Word("$(c)")]


def test_docker_escape_character_and_unexpanded_words() -> None:
    assert split_words("a` b C:\\dir", {}, escape="`") == [Word("a b"), Word("C:\\dir")]
    assert split_unexpanded('A="x y" B=$A C=\\ d') == ['A="x y"', "B=$A", "C=\\ d"]
    assert split_words("$A 'b'", {"A": "1"}, substitute=False) == [Word("$A"), Word("b")]
