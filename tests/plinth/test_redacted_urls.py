"""URLs fit to show (plinth/redacted_urls.py): a command line's URLs masked."""

from __future__ import annotations

from plinth.redacted_urls import redacted_command_line


def test_a_command_lines_urls_are_masked_and_its_other_arguments_kept_as_they_are():
    # Given a command line with URLs in both option spellings, and arguments that are not
    argv = ["plinth", "serve", "--data-dir", "/srv/a=b?c", "--tier-url",
            "az://c:pw@acct/p?sv=1&sig=S", "--tier-url=gs://user:pw@bucket", "--x=y?z",
            "--broker", "tcp://127.0.0.1:7900", "s3:/malformed:pw@bucket"]
    # When it is masked
    shown = redacted_command_line(argv)
    # Then no secret is left, and what holds none is unchanged
    assert shown == ("plinth serve --data-dir /srv/a=b?c --tier-url az://***@acct/p?*** "
                     "--tier-url=gs://***@bucket --x=y?z --broker tcp://127.0.0.1:7900 "
                     "s3:/***@bucket")
