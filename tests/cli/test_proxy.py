"""`homerun services proxy`: its token is minted again before it expires; its flags checked."""

from __future__ import annotations

from homerun.cli._proxy import TOKEN_REFRESH_SECONDS, TokenSource

from .conftest import FakeClient, Run


def test_the_token_is_minted_once_then_again_before_its_hour_ends() -> None:
    now = [100.0]
    minted: list[float] = []

    def mint() -> str:
        minted.append(now[0])
        return f"token-{len(minted)}"

    tokens = TokenSource(mint, clock=lambda: now[0])
    assert tokens() == tokens() == "token-1"
    now[0] += TOKEN_REFRESH_SECONDS - 1
    assert tokens() == "token-1"
    now[0] += 1
    assert tokens() == "token-2" and len(minted) == 2


def test_an_unknown_tag_is_refused_with_the_tags_there_are(run: Run, fake: FakeClient) -> None:
    result = run("services", "proxy", "hello", "--tag", "nope")
    assert result.code == 1
    assert "--tag: service hello has no tag 'nope' (its tags:" in result.err
