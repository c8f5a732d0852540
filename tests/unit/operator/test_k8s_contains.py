"""``k8s.contains``: is a desired manifest already part of the live object (so no apply)?"""

from __future__ import annotations

from typing import Any

import pytest

from consortium_operator.kube.k8s import KINDS, Kind, contains

LIVE_STS: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "StatefulSet",
    "metadata": {
        "name": "demo",
        "labels": {"a": "1", "b": "2"},
        "uid": "u-1",
        "resourceVersion": "42",
        "managedFields": [{"manager": "consortium-operator"}],
    },
    "spec": {
        "replicas": 3,
        "revisionHistoryLimit": 10,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "node",
                        "image": "img:1",
                        "resources": {"limits": {"cpu": "500m", "memory": "1073741824"}},
                        "terminationMessagePath": "/dev/termination-log",
                    }
                ],
                "automountServiceAccountToken": False,
            }
        },
    },
    "status": {"readyReplicas": 3},
}


def _desired(**spec_changes: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "node",
        "image": "img:1",
        "resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}},
    }
    container.update(spec_changes.pop("container", {}))
    spec: dict[str, Any] = {
        "replicas": 3,
        "template": {"spec": {"containers": [container], "automountServiceAccountToken": False}},
    }
    spec.update(spec_changes)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "demo", "labels": {"a": "1"}},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        (_desired(), True),  # server defaults, status and metadata extras are fine
        (_desired(replicas=4), False),
        (_desired(container={"image": "img:2"}), False),
        (_desired(container={"imagePullPolicy": "Always"}), False),  # key missing live
        (_desired(container={"resources": {"limits": {"cpu": "1"}}}), False),
        (_desired(container={"resources": {"limits": {"cpu": "500m"}}}), True),
        (_desired(template={"spec": {"containers": []}}), False),
        (_desired(template={"spec": {"containers": [{"name": "node"}, {"name": "x"}]}}), False),
        (_desired(template={"spec": {"containers": [{"name": "node"}]}}), True),
        (_desired(template={"spec": {"automountServiceAccountToken": True}}), False),
    ],
)
def test_statefulset_against_live(desired: dict[str, Any], expected: bool) -> None:
    assert contains(LIVE_STS, desired) is expected


@pytest.mark.parametrize(
    ("live", "desired", "expected"),
    [
        # mappings: subset check
        ({}, {}, True),
        ({"a": 1}, {}, True),
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, True),
        ({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}, False),
        ({"a": {"x": 1}}, {"a": {"x": 2}}, False),
        ({"a": None}, {"a": {"x": 1}}, False),
        ({"a": [1]}, {"a": {"x": 1}}, False),
        ("text", {"a": 1}, False),
        ({"a": None}, {"a": None}, True),
        ({}, {"a": None}, False),  # a key that is absent is a change, even if null
        # lists: same length, element-wise containment
        ([], [], True),
        ([1, 2], [1, 2], True),
        ([1, 2], [2, 1], False),
        ([1, 2, 3], [1, 2], False),  # something to remove
        ([1], [1, 2], False),  # something to add
        ([{"a": 1, "b": 2}], [{"a": 1}], True),
        ([{"a": 1}], [{"a": 2}], False),
        ({"a": 1}, [1], False),
        ("ab", ["a", "b"], False),
        # scalars
        ("a", "a", True),
        ("a", "b", False),
        ("Always", "always", False),
        ("", "", True),
        ("x", "", False),
        (1, 1, True),
        (1, 2, False),
        (None, 1, False),
        (1, None, False),
        (False, False, True),
        (True, False, False),
        # quantities compare by value
        ("500m", "0.5", True),
        ("0.5", "500m", True),
        ("1073741824", "1Gi", True),
        ("1Gi", "1024Mi", True),
        ("1G", "1Gi", False),
        ("100m", "0.2", False),
        (8443, "8443", True),
        ("1", 1, True),
        ("2Gi", 2, False),
        # booleans are not numbers
        ("true", True, False),
        ("1", True, False),
        (True, "1", False),
    ],
)
def test_contains_table(live: Any, desired: Any, expected: bool) -> None:
    assert contains(live, desired) is expected


@pytest.mark.parametrize(
    ("live", "desired"),
    [(1, True), (True, 1), (0, False), (False, 0), ({"optional": 1}, {"optional": True})],
)
def test_bool_and_int_are_not_equal(live: Any, desired: Any) -> None:
    assert contains(live, desired) is False


def test_contains_does_not_mutate() -> None:
    live = {"a": [{"b": "500m"}], "c": 1}
    desired = {"a": [{"b": "0.5"}]}
    assert contains(live, desired) is True
    assert live == {"a": [{"b": "500m"}], "c": 1}
    assert desired == {"a": [{"b": "0.5"}]}


@pytest.mark.parametrize(
    ("kind", "namespace", "name", "path"),
    [
        (KINDS["Secret"], "ns", "s", "/api/v1/namespaces/ns/secrets/s"),
        (KINDS["Pod"], "ns", None, "/api/v1/namespaces/ns/pods"),
        (KINDS["StatefulSet"], "ns", "demo", "/apis/apps/v1/namespaces/ns/statefulsets/demo"),
        (
            KINDS["Consortium"],
            "ns",
            "demo",
            "/apis/consortium.tee.dev/v1alpha1/namespaces/ns/consortia/demo",
        ),
        (KINDS["Member"], None, None, "/apis/consortium.tee.dev/v1alpha1/members"),
        (Kind("v1", "namespaces", namespaced=False), "ignored", "x", "/api/v1/namespaces/x"),
    ],
)
def test_kind_paths(kind: Kind, namespace: str | None, name: str | None, path: str) -> None:
    assert kind.path(namespace, name) == path
