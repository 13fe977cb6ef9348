"""Checks of the JSON search endpoint shared by its transports (stdlib server, ASGI app, Ray Serve)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import sparsecore as sc


def post(url: str, body: object) -> tuple[int, Any]:
    """POST ``body`` (JSON-encoded unless bytes); the status and the decoded answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def query_json(queries: sc.SparseBatch, n: int) -> list[dict[str, list[Any]]]:
    return [{"indices": queries.row(i)[0].tolist(), "values": queries.row(i)[1].tolist()} for i in range(n)]


def bad_requests(qs: list[dict[str, list[Any]]]) -> list[tuple[object, str]]:
    """Malformed ``POST /search`` bodies and the field each answer must name."""
    return [
        ({"queries": qs, "k": 0}, "k"),
        ({"queries": qs, "k": "10"}, "k"),
        ({"queries": qs, "k_per_shard": -2}, "k_per_shard"),
        ({"queries": qs, "recall_target": 1.5}, "recall_target"),
        ({"queries": qs, "timeout": -1}, "timeout"),
        ({"queries": qs, "allow_partial": "yes"}, "allow_partial"),
        ({"queries": qs, "nprobe": 4}, "nprobe"),
        ({"queries": []}, "queries"),
        ({"k": 3}, "queries"),
        ({"queries": qs, "query": qs[0]}, "queries"),
        ({"queries": [{"indices": [1, 2], "values": [1.0]}]}, "queries[0].values"),
        ({"queries": [qs[0], {"indices": [5, 3], "values": [1.0, 1.0]}]}, "queries[1].indices"),
        ({"queries": [{"indices": [1, 99999], "values": [1.0, 1.0]}]}, "queries[0].indices"),
        ({"queries": [{"indices": [1], "values": [-1.0]}]}, "queries[0].values"),
        ({"queries": [{"indices": [1], "values": ["a"]}]}, "queries[0].values"),
        ({"query": {"indices": [1]}}, "query"),
        (b"{not json", "body"),
        ([1, 2], "body"),
    ]


def check_endpoint(url: str, docs: sc.SparseBatch, queries: sc.SparseBatch, n_shards: int) -> None:
    """Searches equal one exact index over ``docs``; bad requests get 400 naming the field; 404; stats; health."""
    qs = query_json(queries, 5)
    status, body = post(url + "/search", {"queries": qs, "k": 7})
    assert status == 200, body
    want_ids, want_scores = sc.InvertedIndex.build(docs, mode="exact").search(queries[:5], 7)
    assert len(body["results"]) == 5
    for row, wi, ws in zip(body["results"], want_ids.tolist(), want_scores.tolist(), strict=True):
        n = sum(1 for i in wi if i >= 0)
        assert row["ids"] == wi[:n]
        np.testing.assert_array_equal(np.float32(row["scores"]), np.float32(ws[:n]))
    assert body["missing_shards"] == []
    status, body = post(url + "/search", {"query": qs[0], "k": 3, "k_per_shard": 5, "recall_target": 0.9})
    assert status == 200
    assert len(body["results"]) == 1
    assert len(body["results"][0]["ids"]) == 3
    for req, field in bad_requests(qs):
        status, body = post(url + "/search", req)
        assert status == 400, (req, body)
        assert body["error"]["type"] == "RequestError", (req, body)
        assert body["error"]["field"] == field, (req, body)
        assert field.split("[")[0] in body["error"]["message"]
    status, body = post(url + "/nothing", {})
    assert status == 404
    assert body["error"]["type"] == "NotFound"
    status, stats = get(url + "/stats")
    assert status == 200
    assert stats["n_docs"] == docs.n_rows
    assert stats["n_shards"] == n_shards
    status, body = get(url + "/health")
    assert (status, body["status"], body["n_docs"]) == (200, "ok", docs.n_rows)
