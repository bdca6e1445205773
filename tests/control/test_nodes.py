"""nodes.py: RayNodes lists Ray's nodes, a dead one (for which Ray reports no resources)
under the ``plinth-node:`` pin it had while alive, or, if it died before the controller
first looked, under the one saved pin no other node holds. Over a fake of Ray's node
table (ray_node_table.py)."""

from plinth.control.nodes import RayNodes
from tests.control.ray_node_table import RayNodeTable


def pins(nodes) -> dict[str, tuple[str, bool]]:
    """node id prefix -> (its pin, alive)"""
    return {n.node_id[:4]: (n.pin_resource, n.alive) for n in nodes}


def test_a_node_that_dies_keeps_the_name_it_had_while_alive():
    # Given nodes a, b, c seen alive
    table = RayNodeTable("abc")
    nodes = RayNodes(ray_node_list=table.list)
    assert pins(nodes())["cccc"] == ("plinth-node:c", True)
    # When c dies (Ray lists it without resources)
    table.lose("c")
    # Then it is listed dead, still pinned by plinth-node:c, not by its address
    assert pins(nodes()) == {"aaaa": ("plinth-node:a", True), "bbbb": ("plinth-node:b", True),
                             "cccc": ("plinth-node:c", False)}


def test_a_node_that_died_and_came_back_is_listed_twice_under_its_name():
    # Given nodes a and c seen alive, and c dies and is started again (a new node id)
    table = RayNodeTable("ac")
    nodes = RayNodes(ray_node_list=table.list)
    nodes()
    table.lose("c")
    table.come_back("c")
    # Then Ray's dead entry and the new alive one are both node c
    assert pins(nodes()) == {"aaaa": ("plinth-node:a", True), "cccc": ("plinth-node:c", False),
                             "CCCC": ("plinth-node:c", True)}


def test_a_node_dead_before_the_first_look_takes_the_one_saved_pin_no_other_node_holds():
    # Given node c died before this controller looked (it restarted meanwhile), and the
    # saved pins of the shards are a, b and c
    table = RayNodeTable("abc")
    table.lose("c")
    nodes = RayNodes(ray_node_list=table.list,
                     saved_pins=lambda: ("plinth-node:a", "plinth-node:b", "plinth-node:c"))
    # Then it is named c: the only dead node not seen and the only pin not held
    assert pins(nodes())["cccc"] == ("plinth-node:c", False)


def test_dead_nodes_never_seen_alive_keep_their_address_when_the_saved_pins_leave_a_doubt():
    # Given b and c died before the first look, and the saved pins are a, b and c
    table = RayNodeTable("abc")
    table.lose("b")
    table.lose("c")
    nodes = RayNodes(ray_node_list=table.list,
                     saved_pins=lambda: ("plinth-node:a", "plinth-node:b", "plinth-node:c"))
    # Then neither is given a name that may be the other's: both are known by their address
    assert pins(nodes()) == {"aaaa": ("plinth-node:a", True), "bbbb": ("node:127.0.0.1", False),
                             "cccc": ("node:127.0.0.1", False)}
