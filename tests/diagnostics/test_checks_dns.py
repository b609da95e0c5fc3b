"""dns.remote: literal addresses, and names that cannot resolve (inside an isolated namespace,
so no query can leave the machine)."""

from __future__ import annotations

from pathlib import Path

from tests.diagnostics.doctorkit import CLIENT, by_id, context, write_config, write_pki
from tests.netns import NetnsLab
from trivpn.diagnostics.checks_dns import CHECKS

DNS = by_id(CHECKS, "dns.remote")


async def test_literal_addresses_resolve_to_themselves(tmp_path: Path) -> None:
    write_pki(tmp_path)
    text = CLIENT + "remote 198.18.0.3 1195 tcp-client\nremote 2001:db8::1\n"
    result = await DNS.run(context(write_config(tmp_path, text)))
    assert result.status == "ok"
    assert [r["addresses"] for r in result.evidence["remotes"]] == [
        ["198.18.0.2"], ["198.18.0.3"], ["2001:db8::1"]]
    assert result.evidence["remotes"][1]["port"] == 1195
    assert result.evidence["remotes"][1]["proto"] == "tcp-client"


async def test_unresolvable_name_fails(netns_lab: NetnsLab, tmp_path: Path) -> None:
    ns = netns_lab.add("d")  # loopback only: a resolver query has nowhere to go
    write_pki(tmp_path)
    text = CLIENT.replace("remote 198.18.0.2 1194", "remote vpn.trivpn-test.invalid 1194")
    result = await DNS.run(context(write_config(tmp_path, text), netns=ns.name))
    assert result.status == "fail"
    row = result.evidence["remotes"][0]
    assert row["host"] == "vpn.trivpn-test.invalid"
    assert row["addresses"] == []
    assert row["error"]
    assert "Cannot resolve host address" in result.explanation
    assert "getent ahosts vpn.trivpn-test.invalid" in result.fix


async def test_one_unresolvable_of_several_warns(netns_lab: NetnsLab, tmp_path: Path) -> None:
    ns = netns_lab.add("d")
    write_pki(tmp_path)
    text = CLIENT + "remote backup.trivpn-test.invalid 1194\n"
    result = await DNS.run(context(write_config(tmp_path, text), netns=ns.name))
    assert result.status == "warn"
    assert "next 'remote'" in result.explanation
