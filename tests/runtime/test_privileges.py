"""user/group: resolved at start-up (clear errors), dropped once after setup."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys

import pytest

from tests.conftest import require_root
from trivpn.runtime.privileges import PrivilegeError, resolve_identity


def test_nothing_configured_means_no_identity():
    assert resolve_identity(None, None) is None


def test_user_and_group_resolve_to_their_ids():
    user = pwd.getpwuid(0).pw_name
    group = grp.getgrgid(0).gr_name
    identity = resolve_identity(user, group)
    assert identity is not None
    assert (identity.uid, identity.gid) == (0, 0)


def test_user_alone_takes_its_primary_group():
    entry = pwd.getpwuid(os.getuid())
    identity = resolve_identity(entry.pw_name, None)
    assert identity is not None and identity.gid == entry.pw_gid


@pytest.mark.parametrize(("user", "group", "message"), [
    ("no-such-user-trivpn", None, "user 'no-such-user-trivpn' does not exist"),
    (None, "no-such-group-trivpn", "group 'no-such-group-trivpn' does not exist"),
])
def test_missing_user_or_group_is_a_clear_error(user, group, message):
    with pytest.raises(PrivilegeError, match=message):
        resolve_identity(user, group)


_DROP = """
import os
from trivpn.runtime.privileges import drop_privileges, resolve_identity
drop_privileges(resolve_identity("nobody", "nogroup"))
print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
"""


def test_drop_privileges_switches_uid_gid_and_clears_groups():
    require_root()  # drops privileges (CI: a failure, never a skip)
    try:
        nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nobody/nogroup on this system")
    done = subprocess.run([sys.executable, "-c", _DROP], capture_output=True, text=True,
                          timeout=20, check=True)
    assert done.stdout.split() == [str(nobody), str(nobody), str(nogroup), f"[{nogroup}]"]
