"""Names and identifiers are matched whole against their character sets: nothing after the
last allowed character, a newline included, and no control character anywhere."""
from __future__ import annotations

import pytest

from vdcos.apiserver import validate
from vdcos.v1 import types_pb2 as pb

GOOD = ["web", "web-1", "a", "0", "x" * 63]
BAD = ["web\n", "web\r\n", "\nweb", "we\nb", "web\x00", "web\t", "web ", " web", "Web", "web_1", "-web", "web-",
       "x" * 64, "../web", "web/1", "ünï", "web\u2028"]


@pytest.mark.parametrize("value", GOOD)
def test_a_good_name_passes(value: str) -> None:
    out: validate.Violations = []
    validate.name(value, "name", out)
    assert out == []


@pytest.mark.parametrize("value", BAD)
def test_a_bad_name_is_refused_naming_the_field(value: str) -> None:
    out: validate.Violations = []
    validate.name(value, "spec.name", out)
    assert [f for f, _ in out] == ["spec.name"]


@pytest.mark.parametrize("value", ["mig-0123456789ab\n", "mig-0123456789ab\x00", "xmig-0123456789ab"])
def test_a_migration_id_is_matched_whole(value: str) -> None:
    assert validate.migration_id("mig-0123456789ab") == []
    assert [f for f, _ in validate.migration_id(value)] == ["id"]


@pytest.mark.parametrize("value", ["rb-0123456789ab\n", "rb-0123456789ab "])
def test_a_rebalance_id_is_matched_whole(value: str) -> None:
    assert validate.rebalance_id("rb-0123456789ab") == []
    assert [f for f, _ in validate.rebalance_id(value)] == ["id"]


@pytest.mark.parametrize("key,value", [("rack\n", "r1"), ("rack", "r1\n"), ("ra\x00ck", "r1"), ("rack", "r\t1")])
def test_labels_are_matched_whole(key: str, value: str) -> None:
    out: validate.Violations = []
    validate.labels({key: value}, "spec.node_selector", out)
    assert len(out) == 1 and out[0][0].startswith("spec.node_selector[")


def test_every_name_field_of_a_vm_spec_is_checked_whole() -> None:
    spec = pb.VmSpec(name="web\n", resources=pb.Resources(vcpus=1, memory_mib=512), qos_policy="gold\n",
                     placement_group="g\n", group_policy=pb.AFFINITY_POLICY_SOFT_ANTI_AFFINITY,
                     networks=["net\n"], volumes=["vol\n"])
    fields = {f for f, _ in validate.vm_spec(spec)}
    assert {"spec.name", "spec.qos_policy", "spec.placement_group", "spec.networks[0]", "spec.volumes[0]"} <= fields
