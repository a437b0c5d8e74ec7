"""Who may change what of a local announcement, and fields that say what is true
(issue 13 items 4 and 8), with the announce service's fake hub and sender."""

from __future__ import annotations

import pytest

from sapd.announce.service import PublishError
from sapd.plumbing.control import Peer
from sapd.records import SessionRecord
from tests.packets import sdp_text
from tests.unit.test_announce_service import OWNER, STRANGER, Rig, rig  # noqa: F401

MEMBER = STRANGER  # uid 2000, listed in the ACL below
OTHER = Peer(pid=12, uid=3000, gid=3000, groups=(3000,))
ROOT = Peer(pid=13, uid=0, gid=0, groups=(0,))


def shared(rig: Rig) -> SessionRecord:  # noqa: F811
    return rig.run(rig.announcer.publish(sdp_text(name="Studio"), {}, OWNER.uid,
                                         acl={"uids": [MEMBER.uid]}))


def test_acl_members_cannot_rewrite_the_acl(rig: Rig) -> None:  # noqa: F811
    sid = shared(rig).id
    for acl in ({"uids": [MEMBER.uid, OTHER.uid]}, {}, {"uids": [MEMBER.uid], "gids": [0]}):
        with pytest.raises(PublishError) as info:
            rig.run(rig.announcer.update(sid, sdp_text(name="Studio"), {}, MEMBER, acl=acl))
        assert info.value.status == 403 and info.value.field == "acl"
        assert "not its ACL" in str(info.value)
    assert rig.announcer.locals[sid].record.acl == {"uids": [MEMBER.uid]}


def test_acl_members_may_change_the_sdp_and_withdraw(rig: Rig) -> None:  # noqa: F811
    sid = shared(rig).id
    changed = rig.run(rig.announcer.update(sid, sdp_text(name="Studio B"), {}, MEMBER))
    assert changed.name == "Studio B" and changed.acl == {"uids": [MEMBER.uid]}
    same = rig.run(rig.announcer.update(sid, sdp_text(name="Studio C"), {}, MEMBER,
                                        acl={"uids": [MEMBER.uid]}))  # unchanged: fine
    assert same.owner_uid == OWNER.uid
    with pytest.raises(PublishError):
        rig.run(rig.announcer.withdraw(sid, OTHER))
    rig.run(rig.announcer.withdraw(sid, MEMBER))
    assert rig.announcer.count() == 0


def test_owner_and_root_may_change_the_acl_and_an_empty_acl_clears_it(
        rig: Rig) -> None:  # noqa: F811
    sid = shared(rig).id
    widened = rig.run(rig.announcer.update(sid, sdp_text(name="Studio"), {}, ROOT,
                                           acl={"uids": [MEMBER.uid, OTHER.uid]}))
    assert widened.acl == {"uids": [MEMBER.uid, OTHER.uid]}
    cleared = rig.run(rig.announcer.update(sid, sdp_text(name="Studio"), {}, OWNER, acl={}))
    assert cleared.acl == {}  # before, {} kept the old ACL: it could never be emptied
    with pytest.raises(PublishError):
        rig.run(rig.announcer.withdraw(sid, MEMBER))


def test_update_stores_acl_and_blob_beside_the_options_not_in_them(
        rig: Rig) -> None:  # noqa: F811
    sid = shared(rig).id
    changed = rig.run(rig.announcer.update(sid, sdp_text(name="Studio"), {"ttl": 5}, OWNER,
                                           acl={"gids": [50]}, blob={"room": "B"}))
    assert changed.options == {"ttl": 5}
    assert changed.acl == {"gids": [50]} and changed.blob == {"room": "B"}


def test_a_malformed_stored_acl_is_no_typeerror_when_checked(rig: Rig) -> None:  # noqa: F811
    sid = shared(rig).id
    local = rig.announcer.locals[sid]
    local.record = local.record.with_changes(acl={"uids": "2000", "gids": 5})  # old sapd
    with pytest.raises(PublishError) as info:
        rig.run(rig.announcer.withdraw(sid, OTHER))
    assert info.value.status == 403


def test_announcement_shows_the_fixed_interval_in_force_not_the_group_floor(
        rig: Rig) -> None:  # noqa: F811
    record = rig.run(rig.announcer.publish(sdp_text(name="Fast"), {"interval": 5.0},
                                           OWNER.uid))
    (target,) = rig.announcer.describe(record.id)["targets"]
    assert target["interval"] == 5.0  # was the aes67 floor, 30 s, while 5 s was in effect
    plain = rig.run(rig.announcer.publish(sdp_text(name="Plain", session=77), {},
                                          OWNER.uid))
    assert rig.announcer.describe(plain.id)["targets"][0]["interval"] == 30.0


def test_record_sap_group_is_the_real_target_when_one_is_given(rig: Rig) -> None:  # noqa: F811
    record = rig.run(rig.announcer.publish(sdp_text(name="Elsewhere"),
                                           {"sap_group": "224.2.127.254"}, OWNER.uid))
    assert record.sap_group == "224.2.127.254"  # was the scope's 239.255.255.255
    stored = [r for w in rig.hub.committed for r in w.upserts.values()]
    assert [r.sap_group for r in stored] == ["224.2.127.254"]
    assert rig.announcer.describe(record.id)["targets"][0]["sap_group"] == "224.2.127.254"


def test_interfaces_must_be_announcing_interfaces(rig: Rig) -> None:  # noqa: F811
    with pytest.raises(PublishError) as info:
        rig.run(rig.announcer.publish(sdp_text(), {"interfaces": ["eth9"]}, OWNER.uid))
    assert info.value.status == 400 and info.value.field == "interfaces"
    assert "eth9" in str(info.value) and "eth0" in str(info.value)
    assert rig.hub.committed == []
