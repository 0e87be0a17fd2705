"""Shell words as Docker and /bin/sh split them: quotes, escapes and $VAR / ${VAR:-default}
substitution (from ARG and ENV in a Dockerfile). homerun's one shell-word splitter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Longest first, so "&&" is not read as two "&".
SHELL_OPERATORS = ("&&", "||", ">>", "|", ";", "&", ">", "<", "(", ")")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class WordError(ValueError):
    """The text cannot be split into words (an open quote, an unsupported ${...} form)."""


@dataclass(frozen=True)
class Word:
    text: str
    operator: bool = False  # an unquoted shell operator such as && or ;


def split_words(
    text: str,
    env: Mapping[str, str],
    *,
    escape: str = "\\",
    operators: bool = False,
    substitute: bool = True,
) -> list[Word]:
    """Split on unquoted whitespace, removing quotes and substituting variables.

    As in Docker, a substituted value is never split again: `ENV A="x y"` then `COPY $A /d`
    copies one file named "x y". With `operators`, unquoted `&&`, `;`, `|`... come back as
    operator words, and command substitution (`$(...)`, backticks) is refused.
    """
    return _Lexer(text, env, escape, operators, substitute, split=True).run()


def split_unexpanded(text: str, *, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace, each word as written (quotes, escapes and $ kept), for
    `expand` to read later: ENV's `A=1 B=$A` pairs are expanded one by one."""
    lexer = _Lexer(text, {}, escape, operators=False, substitute=False, split=True, verbatim=True)
    return [word.text for word in lexer.run()]


def expand(text: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """One word: quotes removed and variables substituted, whitespace kept as written."""
    words = _Lexer(text, env, escape, operators=False, substitute=True, split=False).run()
    return words[0].text if words else ""


class _Lexer:
    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        escape: str,
        operators: bool,
        substitute: bool,
        *,
        split: bool,
        verbatim: bool = False,
    ) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.operators = operators
        self.substitute = substitute
        self.split = split
        self.verbatim = verbatim  # keep quotes and escapes in the words
        # Scan state
        self.pos = 0
        self.words: list[Word] = []
        self.current: list[str] = []
        self.in_word = False  # distinguishes an empty quoted word "" from no word at all

    def run(self) -> list[Word]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() and self.split:
                self._finish()
                self.pos += 1
            elif self.operators and self._operator():
                continue
            elif char == "'":
                self._single_quoted()
            elif char == '"':
                self._double_quoted()
            elif char == self.escape:
                self._escaped(in_double_quotes=False)
            elif char == "$" and self.substitute:
                self._dollar()
            elif char == "`" and self.operators:
                raise WordError("command substitution (`...`) is not supported")
            else:
                self._append(char)
                self.pos += 1
        self._finish()
        return self.words

    # Pieces of a word

    def _append(self, text: str) -> None:
        self.current.append(text)
        self.in_word = True

    def _finish(self) -> None:
        if self.in_word:
            self.words.append(Word("".join(self.current)))
        self.current = []
        self.in_word = False

    def _operator(self) -> bool:
        for operator in SHELL_OPERATORS:
            if self.text.startswith(operator, self.pos):
                self._finish()
                self.words.append(Word(operator, operator=True))
                self.pos += len(operator)
                return True
        return False

    def _single_quoted(self) -> None:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise WordError("unterminated single quote")
        quoted = self.text[self.pos : end + 1]
        self._append(quoted if self.verbatim else quoted[1:-1])
        self.pos = end + 1

    def _double_quoted(self) -> None:
        self.in_word = True
        if self.verbatim:
            self._append('"')
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                if self.verbatim:
                    self._append('"')
                self.pos += 1
                return
            if char == self.escape:
                self._escaped(in_double_quotes=True)
            elif char == "$" and self.substitute:
                self._dollar()
            elif char == "`" and self.operators:
                raise WordError("command substitution (`...`) is not supported")
            else:
                self._append(char)
                self.pos += 1
        raise WordError("unterminated double quote")

    def _escaped(self, *, in_double_quotes: bool) -> None:
        following = self.text[self.pos + 1 : self.pos + 2]
        if not following:
            self._append(self.escape)
            self.pos += 1
            return
        # Inside double quotes only a few characters can be escaped; elsewhere, any.
        if self.verbatim or (in_double_quotes and following not in ('"', "$", "`", self.escape)):
            self._append(self.escape + following)
        else:
            self._append(following)
        self.pos += 2

    def _dollar(self) -> None:
        text = self.text
        following = text[self.pos + 1 : self.pos + 2]
        if following == "{":
            end = _matching_brace(text, self.pos + 2)
            if end < 0:
                raise WordError(f"unterminated ${{ in {text!r}")
            self._append(self._braced(text[self.pos + 2 : end]))
            self.pos = end + 1
        elif following == "(" and self.operators:
            raise WordError("command substitution $(...) is not supported")
        else:
            match = _NAME.match(text, self.pos + 1)
            if match is None:
                self._append("$")
                self.pos += 1
            else:
                self._append(self.env.get(match.group(), ""))
                self.pos = match.end()

    def _braced(self, inner: str) -> str:
        match = _NAME.match(inner)
        if match is None:
            raise WordError(f"bad substitution ${{{inner}}}")
        name, rest = match.group(), inner[match.end() :]
        value = self.env.get(name)
        if not rest:
            return value or ""
        for modifier in (":-", ":+", "-", "+"):
            if rest.startswith(modifier):
                word = expand(rest[len(modifier) :], self.env, escape=self.escape)
                is_set = value is not None and (value != "" or ":" not in modifier)
                if modifier.endswith("-"):
                    return value if is_set and value is not None else word
                return word if is_set else ""
        raise WordError(
            f"unsupported substitution ${{{inner}}}: use $VAR, ${{VAR:-default}} "
            "or ${VAR:+alternative}"
        )


def _matching_brace(text: str, start: int) -> int:
    depth = 1
    position = start
    while position < len(text):
        if text.startswith("${", position):
            depth += 1
            position += 2
            continue
        if text[position] == "}":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    return -1
