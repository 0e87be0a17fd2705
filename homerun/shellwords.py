"""Shell words as Docker and /bin/sh split them: quotes, escapes, `$` expansions, operators.

homerun's one shell-word splitter, with two readings. Docker's (`split_words`,
`split_unexpanded`, `expand`) is a Dockerfile's: $VAR and ${VAR:-default} substituted from ARG
and ENV, any whitespace between words. sh's (`split_script`) is a `/bin/sh -c` script's: only
blanks between words, a backslash-newline joins lines, and each word reports what sh would
expand or read as syntax in it, so that a caller can refuse what it cannot follow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Longest first, so "&&" is not read as two "&".
SHELL_OPERATORS = ("&&", "||", ">>", "|", ";", "&", ">", "<", "(", ")")
# In a script a newline ends a command as ";" does. (A Dockerfile's line continuations are
# joined before its words are split, so Docker's reading sees a newline as whitespace.)
_SCRIPT_OPERATORS = (*SHELL_OPERATORS, "\n")
_SCRIPT_BLANKS = " \t"
# Unquoted, these make sh expand a word into file names ("]" as the end of a [...] pattern)...
_GLOB = frozenset("*?[]")
# ...and these make a word something else when they start it: a tilde expansion, a brace
# group, a comment.
_WORD_START_SYNTAX = frozenset("~{#")
# $@, $1, $?...: sh's special parameters, expanded like variables.
_SPECIAL_PARAMETERS = frozenset("@*#?-$!0123456789")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class WordError(ValueError):
    """The text cannot be split into words (an open quote, an unsupported ${...} form)."""


@dataclass(frozen=True)
class Special:
    """Something sh reads as more than characters in a word, as written in the text.

    An expansion (`$PORT`, `${A:-b}`, `$1`, `$(`, a backtick; or a lone `$`, which bash may
    read as `$'...'`), unquoted syntax (a glob character anywhere; `~`, `{` or `#` starting a
    word), or a quote left open (`'` or `"`, where it opens: sh fails on the script).
    """

    start: int  # offset in the text
    source: str
    quoted: bool = False  # inside double quotes


@dataclass(frozen=True)
class Word:
    text: str
    operator: bool = False  # an unquoted shell operator such as && or ;
    specials: tuple[Special, ...] = ()  # split_script's only: what sh acts on, in text order


def split_words(
    text: str,
    env: Mapping[str, str],
    *,
    escape: str = "\\",
    operators: bool = False,
    substitute: bool = True,
) -> list[Word]:
    """Docker's reading: split on unquoted whitespace, removing quotes and substituting
    variables.

    As in Docker, a substituted value is never split again: `ENV A="x y"` then `COPY $A /d`
    copies one file named "x y". With `operators`, unquoted `&&`, `;`, `|`... come back as
    operator words, and command substitution (`$(...)`, backticks) is refused.
    """
    return _Lexer(text, env, escape, operators=operators, substitute=substitute).run()


def split_unexpanded(text: str, *, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace, each word as written (quotes, escapes and $ kept), for
    `expand` to read later: ENV's `A=1 B=$A` pairs are expanded one by one."""
    lexer = _Lexer(text, {}, escape, operators=False, substitute=False, verbatim=True)
    return [word.text for word in lexer.run()]


def expand(text: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """One word: quotes removed and variables substituted, whitespace kept as written."""
    words = _Lexer(text, env, escape, operators=False, substitute=True, split=False).run()
    return words[0].text if words else ""


def split_script(script: str, env: Mapping[str, str]) -> list[Word]:
    """sh's reading of a `/bin/sh -c` script: words split on blanks, quotes and backslashes
    removed, operators (a newline among them) as operator words.

    Only plain `$NAME` and `${NAME}` are substituted (from env, "" when unset); every other
    expansion stays as written. Nothing is refused here: each word's `specials` lists the
    expansions, syntax and open quotes in it, in the order they are read (an open quote is read
    at the end of the text), and the words after one are not necessarily what sh would run
    (`$(a b)` is not read as one command substitution). A caller that cannot follow a special
    refuses the script.
    """
    return _Lexer(script, env, "\\", operators=True, substitute=True, sh=True).run()


class _Lexer:
    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        escape: str,
        *,
        operators: bool,
        substitute: bool,
        split: bool = True,
        verbatim: bool = False,
        sh: bool = False,
    ) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.operators = operators
        self.substitute = substitute
        self.split = split
        self.verbatim = verbatim  # keep quotes and escapes in the words
        self.sh = sh  # sh's reading: blanks, line continuations, specials reported
        self.operator_texts = _SCRIPT_OPERATORS if sh else SHELL_OPERATORS
        # Scan state
        self.pos = 0
        self.words: list[Word] = []
        self.current: list[str] = []
        self.specials: list[Special] = []  # of the current word
        self.in_word = False  # distinguishes an empty quoted word "" from no word at all

    def run(self) -> list[Word]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if self.split and self._separates(char):
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
                self._dollar(quoted=False)
            elif char == "`" and self.operators:
                self._backtick(quoted=False)
            else:
                if self.sh and (char in _GLOB or (char in _WORD_START_SYNTAX and not self.in_word)):
                    self.specials.append(Special(self.pos, char))
                self._append(char)
                self.pos += 1
        self._finish()
        return self.words

    # Pieces of a word

    def _separates(self, char: str) -> bool:
        return char in _SCRIPT_BLANKS if self.sh else char.isspace()

    def _append(self, text: str) -> None:
        self.current.append(text)
        self.in_word = True

    def _finish(self) -> None:
        if self.in_word:
            self.words.append(Word("".join(self.current), specials=tuple(self.specials)))
        self.current = []
        self.specials = []
        self.in_word = False

    def _operator(self) -> bool:
        for operator in self.operator_texts:
            if self.text.startswith(operator, self.pos):
                self._finish()
                self.words.append(Word(operator, operator=True))
                self.pos += len(operator)
                return True
        return False

    def _single_quoted(self) -> None:
        end = self.text.find("'", self.pos + 1)
        if end < 0 and self.sh:
            self.specials.append(Special(self.pos, "'"))
            self._append(self.text[self.pos + 1 :])
            self.pos = len(self.text)
            return
        if end < 0:
            raise WordError("unterminated single quote")
        quoted = self.text[self.pos : end + 1]
        self._append(quoted if self.verbatim else quoted[1:-1])
        self.pos = end + 1

    def _double_quoted(self) -> None:
        opening = self.pos
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
                self._dollar(quoted=True)
            elif char == "`" and self.operators:
                self._backtick(quoted=True)
            else:
                self._append(char)
                self.pos += 1
        if not self.sh:
            raise WordError("unterminated double quote")
        self.specials.append(Special(opening, '"'))

    def _escaped(self, *, in_double_quotes: bool) -> None:
        following = self.text[self.pos + 1 : self.pos + 2]
        if not following:
            self._append(self.escape)
            self.pos += 1
            return
        if self.sh and following == "\n":  # a line continuation: sh drops both
            self.pos += 2
            return
        # Inside double quotes only a few characters can be escaped; elsewhere, any.
        if self.verbatim or (in_double_quotes and following not in ('"', "$", "`", self.escape)):
            self._append(self.escape + following)
        else:
            self._append(following)
        self.pos += 2

    def _backtick(self, *, quoted: bool) -> None:
        if not self.sh:
            raise WordError("command substitution (`...`) is not supported")
        self.specials.append(Special(self.pos, "`", quoted))
        self._append("`")
        self.pos += 1

    def _dollar(self, *, quoted: bool) -> None:
        if self.sh:
            source, name = _script_expansion(self.text, self.pos)
            self.specials.append(Special(self.pos, source, quoted))
            self._append(source if name is None else self.env.get(name, ""))
            self.pos += len(source)
            return
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


def _script_expansion(text: str, start: int) -> tuple[str, str | None]:
    """The `$` expansion at text[start] as written, and its variable if it is a plain $NAME or
    ${NAME} (the only forms split_script substitutes)."""
    following = text[start + 1 : start + 2]
    if following == "{":
        end = _matching_brace(text, start + 2)
        if end < 0:
            return "${", None  # sh fails on it
        inner = text[start + 2 : end]
        return text[start : end + 1], (inner if _NAME.fullmatch(inner) else None)
    if following == "(":
        return "$(", None  # what it runs is not read: a caller refuses the script
    if following and following in _SPECIAL_PARAMETERS:
        return "$" + following, None
    match = _NAME.match(text, start + 1)
    if match is None:
        return "$", None
    return "$" + match.group(), match.group()
