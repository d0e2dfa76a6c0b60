"""docs/behaviour.md §4: a write to a follower gets 307 to the leader, method and body preserved."""

from __future__ import annotations

from collections.abc import Callable

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import boot, create_namespace, get_config


def test_follower_redirects_writes_to_the_leader(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    leader = boot(c)
    follower = next(n for n in c.ids if n != leader)
    leader_base = c.url(leader).rstrip("/")

    # Namespace created through the follower: PUT and body survive the redirect.
    r = c.request(
        follower,
        "PUT",
        "api/v1/namespaces/redir",
        json={"description": "via follower"},
        follow=True,
    )
    assert r.status_code == 201, r.text
    assert [h.status_code for h in r.history] == [307]
    assert r.json()["description"] == "via follower"

    path = "/api/v1/namespaces/redir/config/greeting"
    r = c.request(follower, "PUT", path + "?note=x", json={"value": "hello"})
    assert r.status_code == 307, r.text
    assert r.headers["Location"] == leader_base + path + "?note=x"
    assert get_config(c, leader, "redir", "greeting").status_code == 404  # not applied by a 307

    r = c.request(follower, "PUT", path, json={"value": "hello"}, follow=True)
    assert r.status_code == 201, r.text
    assert r.history[0].status_code == 307 and r.request.method == "PUT"
    assert str(r.url) == leader_base + path
    assert r.json()["value"] == "hello" and r.json()["version"] == 1

    r = c.request(follower, "DELETE", path, follow=True)
    assert r.status_code == 204 and r.history[0].status_code == 307
    assert get_config(c, leader, "redir", "greeting").status_code == 404

    # Reads are answered locally by the follower, never redirected.
    create_namespace(c, "reads", nodes=[leader])
    r = c.request(follower, "GET", "api/v1/namespaces/reads", role="viewer")
    assert r.status_code in (200, 404) and not r.history
