"""``plinth group list`` (plinth/cli_groups.py) prints the groups of the shards that
answered and names on stderr those that did not, from pages as Admin returns them. The
Admin is replaced by one that returns the given values; the rendering is the real
CLI's."""

from __future__ import annotations

import contextlib

from click.testing import CliRunner

from plinth import cli, cli_groups, limits
from plinth.name_pages import NamesPage, page_of

GROUPS = [f"g{i:03d}" for i in range(limits.ADMIN_LIST_PAGE_NAMES_MAX + 5)]


class PagesAdmin:
    """Answers pages of GROUPS, each lacking the shards of ``unanswered``."""

    def __init__(self, unanswered: list[str]):
        self.unanswered = unanswered

    def list_groups_page(self, prefix: str = "", after: str = "", limit: int = 100) -> NamesPage:
        page = page_of(GROUPS, prefix, after, limit)
        return NamesPage(page.names, page.more, list(self.unanswered))

    def list_groups(self) -> list[str]:   # what Admin.list_groups gives: no word of them
        return list(GROUPS)


def run(monkeypatch, admin, args: list[str]):
    monkeypatch.setattr(cli_groups, "admin_for", lambda ctx: contextlib.nullcontext(admin))
    return CliRunner().invoke(cli.main, args)


def test_group_list_prints_the_groups_that_answered_and_names_the_shards_that_did_not(
        monkeypatch):
    # Given pages that lack shard-1's groups
    admin = PagesAdmin(["shard-1"])
    # When every group is listed, and one page of them
    whole = run(monkeypatch, admin, ["group", "list"])
    page = run(monkeypatch, admin, ["group", "list", "--limit", "3"])
    # Then each prints its names on stdout, exits 0 as topic list does, and names
    # shard-1 on stderr
    assert whole.exit_code == 0 and page.exit_code == 0, (whole.output, page.output)
    assert whole.stdout.split() == GROUPS and page.stdout.split() == GROUPS[:3]
    for result in (whole, page):
        assert result.stderr.splitlines()[-1] == (
            "# not answered: shard-1 (stopped, hung or restarting: see plinth status); the "
            "groups it coordinates are not listed")


def test_group_list_says_nothing_more_when_every_shard_answered(monkeypatch):
    result = run(monkeypatch, PagesAdmin([]), ["group", "list"])
    assert result.exit_code == 0 and result.stdout.split() == GROUPS
    assert result.stderr == ""
