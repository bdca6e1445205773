"""The SVG charts: scaled to the data, newest at the right, no library."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from plinth.client.console.charts import Series, line_chart, nice_ceiling

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str):
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def test_the_y_axis_rounds_up_to_one_two_or_five_times_a_power_of_ten():
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 1.1, 3, 7, 12, 4999)] == \
        [1, 0.5, 1, 2, 5, 10, 20, 5000]


def test_a_chart_draws_one_polyline_per_series_with_a_point_per_sample():
    points = [(100.0 + i, float(i)) for i in range(10)]
    svg = parse(line_chart("t", [Series("in", "in", points), Series("out", "out", points[:4])],
                           str, window_s=60))
    lines = svg.findall(f"{SVG}polyline")
    assert [len(line.get("points").split()) for line in lines] == [10, 4]
    assert svg.get("data-points") == "14"


def test_the_newest_sample_is_at_the_right_edge_and_the_highest_at_the_top():
    svg = parse(line_chart("t", [Series("in", "in", [(0.0, 0.0), (30.0, 10.0)])], str, 60))
    (first, last) = [tuple(map(float, p.split(","))) for p in
                     svg.find(f"{SVG}polyline").get("points").split()]
    assert last[0] > first[0] and last[1] < first[1]
    assert last[0] == 600 - 8   # the plot's right edge: WIDTH - RIGHT


def test_a_chart_without_samples_says_it_waits():
    assert "waiting for samples" in line_chart("t", [Series("in", "in", [])], str, 60)
