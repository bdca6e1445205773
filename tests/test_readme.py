"""The README's account of the Kafka listener matches what it serves: the API table names
every API of router/kafka/messages.py, and the architecture table counts them."""

from __future__ import annotations

import re
from pathlib import Path

from plinth.router.kafka.messages import APIS

README = Path(__file__).resolve().parents[1] / "README.md"


def kafka_api_table() -> set[str]:
    """The API names of the README's Kafka API table (its first column)."""
    lines = README.read_text().splitlines()
    start = lines.index("| API | versions | notes |") + 2   # after the header and its rule
    names = set()
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        names.update(name.strip() for name in line.split("|")[1].split(","))
    return names


def test_the_kafka_api_table_names_every_api_the_listener_serves_and_no_other():
    assert kafka_api_table() == {api.name for api in APIS}


def test_the_architecture_table_counts_the_apis_the_listener_serves():
    counted = re.search(r"the declarative tables of the (\d+) APIs it serves", README.read_text())
    assert counted is not None and int(counted.group(1)) == len(APIS)
