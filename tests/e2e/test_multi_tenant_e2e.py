"""Two tenants on one secured broker: A floods it for a minute with everything
issue 11 found (unknown topics with oversized frames, acks=0 produces between
parked fetches, group churn, producer-id churn, fetch replies it never reads)
while B produces and consumes at a fixed rate. B loses nothing, sees no error
and reads everything it wrote; the broker's memory stays within its budgets. The tooling is loadtest/tenant_flood.py, which also measures B's
latency with and without the flood (the README's figures)."""

from __future__ import annotations

import time

from loadtest.tenant_flood import (Deployment, Flood, RssSampler, SteadyTenant,
                                   broker_rss_bytes, percentiles)
from plinth import limits

FLOOD_S = 60
B_RATE_PER_S = 100
# Beyond the router's two budgets (held requests, unsent replies), what the
# flood may cost: sockets' queues, the shards' parked fetches and group state,
# allocator slack.
RSS_SLACK_BYTES = 512 * limits.MiB


def test_a_tenant_flooding_the_broker_for_a_minute_costs_another_tenant_nothing(tmp_path, broker_factory):
    # Given a broker with CurveZMQ keys and an ACL, A's and B's topics, and B at work
    deployment = Deployment.create(tmp_path / "tenants")
    broker = broker_factory(shards=2, extra_args=tuple(deployment.serve_args()))
    deployment.create_topics(broker.url)
    tenant = SteadyTenant(broker.url, deployment.tenant_b, B_RATE_PER_S).start()
    rss_before_bytes = broker_rss_bytes(broker.proc.pid, broker.data_dir)
    sampler = RssSampler(broker.proc.pid, broker.data_dir)

    # When A floods the broker for a minute (the flood's length, not a wait for anything)
    flood = Flood(broker.url, deployment.tenant_a).start()
    time.sleep(FLOOD_S)
    flood.stop()
    tenant.stop_producing()
    tenant.wait_read_all()
    tenant.stop()
    rss_largest_bytes = sampler.stop()

    # Then the flood ran, every kind of it, and the broker refused what it had to
    assert flood.failures == []
    assert set(flood.counts.sent) == set(Flood.KINDS), flood.counts.sent
    answers = flood.counts.answers
    assert answers.get("unknown_topics:MalformedRequestError", 0) > 0, answers
    assert answers.get("group_churn:NotAuthorizedError", 0) > 0, answers
    # And B saw no error, and every record it sent was acknowledged and read (at least
    # once: a group member that misses its session under the flood rejoins and reads
    # again from its last commit, which the test reports)
    assert tenant.errors == []
    assert tenant.sent > B_RATE_PER_S * FLOOD_S / 2
    assert tenant.acked == set(range(tenant.sent)) == set(tenant.read)
    duplicates = sum(1 for times in tenant.read.values() if times > 1)
    print(f"tenant B: {tenant.sent} records, {duplicates} read twice; p99 latency "
          f"{percentiles([ms for _, ms in tenant.e2e_latency_ms])['p99']:.0f} ms")
    # And the broker's memory stayed within its budgets
    bound_bytes = (rss_before_bytes + limits.ROUTER_REQUEST_BYTES_HELD_MAX
                   + limits.ROUTER_REPLY_BYTES_UNSENT_MAX + RSS_SLACK_BYTES)
    assert sampler.samples > FLOOD_S, "the sampler did not watch the flood"
    assert rss_largest_bytes <= bound_bytes, (
        f"broker RSS reached {rss_largest_bytes / limits.MiB:.0f} MiB, over the bound of "
        f"{bound_bytes / limits.MiB:.0f} MiB (before the flood: {rss_before_bytes / limits.MiB:.0f} MiB)")
