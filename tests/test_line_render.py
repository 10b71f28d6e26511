"""The line page's HTML from its views: what each kind of stop offers, and that what a PLC
or a config says is escaped."""

from __future__ import annotations

from agent.status.linepage import AssetView, PartView, StopView, page

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
REASONS = ((21, "Waiting for material", "Material"), (22, "Tool change", None))


def render(*stops: StopView, reasons: tuple[tuple[int, str, str | None], ...] = REASONS,
           asset: str = "press-1") -> str:
    return page("ana", [AssetView(asset, "Europe/Berlin", reasons, stops)], "tok", NOW)


def test_an_unexplained_stop_shows_its_reasons_at_once() -> None:
    html = render(StopView("d1", NOW - 600, NOW - 300, "unclassified", None, True))
    assert 'class="stop todo"' in html
    assert "<details>" not in html.split("Why did it stop?")[0]  # the buttons are open
    assert 'name=code value="21">Waiting for material</button>' in html
    assert "<legend>Material</legend>" in html
    assert "08:50 to 08:55" in html  # Berlin time: UTC+1 in January
    assert "Split in two" in html  # ended and long enough


def test_a_plc_reason_can_be_corrected_and_a_colleagues_too() -> None:
    from_plc = render(StopView("d1", NOW - 600, NOW - 300, "Die jam", None, False))
    assert "(from the machine)" in from_plc
    assert "<summary>Change</summary>" in from_plc
    assert 'class="stop todo"' not in from_plc
    by_bob = render(StopView("d1", NOW - 600, NOW - 300, "Tool change", "bob", False))
    assert "(given by bob)" in by_bob


def test_an_open_stop_cannot_be_split_and_a_split_one_shows_its_parts() -> None:
    going_on = render(StopView("d1", NOW - 30, None, "unclassified", None, True))
    assert "going on" in going_on
    assert "Split in two" not in going_on
    parts = (PartView(1, NOW - 600, NOW - 400, "Tool change", "ana"),
             PartView(2, NOW - 400, NOW - 300, "Waiting for material", "bob"))
    split = render(StopView("d1", NOW - 600, NOW - 300, "Tool change", None, False, parts))
    assert "Part 1, 08:50 to 08:53" in split
    assert "<summary>Change part 2</summary>" in split
    assert 'name=part value="2"' in split


def test_what_plcs_and_configs_say_is_escaped() -> None:
    html = render(StopView('"><script>x()</script>', NOW - 600, NOW - 300, "<b>jam</b>",
                           "<i>bob</i>", False),
                  reasons=((21, "<img src=x onerror=alert(1)>", "<g>"),), asset="a&b")
    assert "<script>" not in html
    assert "<img src=x" not in html
    assert "&lt;b&gt;jam&lt;/b&gt;" in html
    assert "a&amp;b" in html


def test_an_asset_without_reasons_lists_its_stops_without_buttons() -> None:
    html = render(StopView("d1", NOW - 600, NOW - 300, "unclassified", None, True), reasons=())
    assert "No reasons are set up for this asset." in html
    assert "<button type=submit name=code" not in html
