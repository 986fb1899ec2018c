"""Admission (pure): each pool's bound as Serve's own, shared among ingress replicas; tickets that cannot
leak; the Retry-After of a refusal."""

from __future__ import annotations

import gc

from rayhet.admission import Admission, PoolRoom


def rooms(**kw) -> dict[str, PoolRoom]:
    base = {"a": PoolRoom(slots=4, queue_per_replica=2, queued_at_caller=8, startup_s=12.0),
            "b": PoolRoom(slots=8, queue_per_replica=0, queued_at_caller=-1, startup_s=90.0)}
    return base | kw


def test_a_pools_bound_is_serves_own_shared_among_ingress_replicas():
    adm = Admission(rooms(), running={"a": 3})
    assert adm.limit("a") == 3 * (4 + 2) + 8  # replicas x max_ongoing_requests + max_queued_requests
    assert adm.limit("b") is None  # max_queued_requests -1: never refused here
    assert Admission(rooms(), ingress_replicas=4, running={"a": 3}).limit("a") == 7  # ceil(26 / 4)
    assert Admission(rooms(), running={"a": 0}).limit("a") == 8  # no replica: what may wait for one


def test_tickets_give_their_place_back_once_even_when_dropped():
    adm = Admission({"a": PoolRoom(1, 0, 1)}, running={"a": 1})
    t1, t2 = adm.enter("a"), adm.enter("a")
    assert not adm.has_room("a") and adm.saturated()
    t1.release()
    t1.release()  # idempotent
    assert adm.in_flight["a"] == 1 and adm.has_room("a")
    del t2  # a ticket lost without release (a stream never started) still gives its place back
    gc.collect()
    assert adm.in_flight["a"] == 0


def test_retry_after_is_the_fullest_queue_drain_time_or_the_start_up_time():
    adm = Admission(rooms(), running={"a": 1, "b": 1})
    held = [adm.enter("a") for _ in range(4 + 2 + 8)]  # noqa: F841 - held: a dropped ticket frees its place
    # 14 on a, 4 in its slots: 10 waiting + 1 place, at 2 completions/s -> 5.5 s -> 6
    assert adm.retry_after_s(["a"], {"a": 2.0}) == 6
    assert adm.retry_after_s(["a"], {}) == 1  # no completions seen yet: 1 s
    assert adm.retry_after_s(["a"], {"a": 0.01}) == 60  # bounded
    adm.set_running({"a": 0, "b": 0})
    assert adm.retry_after_s(["a", "b"], {}) == 12  # nothing runs: the soonest start-up
