"""Hidden characters of a user's text shown as marked escapes
(client/console/visible_text.py)."""

from __future__ import annotations

from plinth.client.console import visible_text


def test_a_right_to_left_override_is_shown_as_its_escape_marked_with_its_name():
    shown = str(visible_text.visible("é漢字🙂\u202eRTL"))
    assert "\u202e" not in shown
    assert shown == ('é漢字🙂<span class="ctl" title="U+202E RIGHT-TO-LEFT OVERRIDE">'
                     '\\u202e</span>RTL')


def test_control_format_and_tag_characters_are_escaped_but_newline_and_tab_are_kept():
    shown = str(visible_text.visible("a\x00b\u200bc\u2066d\U000e0041e\u2028f\n\tg"))
    for escape in ("\\u0000", "\\u200b", "\\u2066", "\\U000e0041", "\\u2028"):
        assert escape in shown
    assert "\n\tg" in shown
    assert visible_text.hidden_count("a\x00b\u200bc\u2066d\U000e0041e\u2028f\n\tg") == 5


def test_html_in_the_text_stays_escaped():
    assert str(visible_text.visible('<script>"x"</script>\u202e')).startswith(
        "&lt;script&gt;&#34;x&#34;&lt;/script&gt;<span")
