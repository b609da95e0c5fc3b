"""What trivpn's code says OpenVPN 2.6 does with a directive, checked against the real binary
(inert reasons in trivpn/config/directives.py, refusals in trivpn/config/parser.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.openvpn import as_config, openvpn_output
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config
from trivpn.config.directives import DIRECTIVES, NOT_ON_LINUX, UNSUPPORTED_WHY

pytestmark = pytest.mark.integration

CLIENT = ["--client", "--dev", "tun", "--proto", "udp", "--remote", "198.18.0.9", "1194",
          "--nobind", "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key",
          "--verb", "4"]
SERVER = ["--server", "198.18.8.0", "255.255.255.0", "--topology", "subnet", "--dev", "tun",
          "--proto", "udp", "--ca", "ca.crt", "--cert", "server.crt", "--key", "server.key",
          "--dh", "none", "--verb", "4"]


def _option_spans(args: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each '--option value...' group of a command line."""
    starts = [i for i, a in enumerate(args) if a.startswith("--")]
    return list(zip(starts, [*starts[1:], len(args)], strict=True))


@pytest.mark.directive("tun-ipv6")
def test_openvpn_ignores_tun_ipv6_and_says_so(lab: NetnsLab, openvpn_binary: None,
                                              workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, "--tun-ipv6"])
    assert ("Note: option tun-ipv6 is ignored because modern operating systems do not need "
            "special IPv6 tun handling anymore.") in out
    assert "ignored" in (DIRECTIVES["tun-ipv6"].inert or "")


@pytest.mark.directive("cipher")
def test_openvpn_ignores_cipher_for_negotiation_in_client_mode(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    args = [*CLIENT, "--cipher", "AES-128-CBC"]
    out = openvpn_output(lab, workdir, args)
    assert "OpenVPN ignores --cipher for cipher negotiations" in out, out[-3000:]
    # trivpn says the same of the same client config (in TLS peer-to-peer mode 'cipher' is
    # the fallback cipher instead, so the directive is not inert)
    config = workdir / "client.conf"
    config.write_text("\n".join(" ".join(args[i:j]).removeprefix("--")
                                 for i, j in _option_spans(args)) + "\n")
    warnings = [w.message for w in load_config(config).warnings]
    assert any("OpenVPN 2.6 ignores it for cipher negotiation" in w for w in warnings), warnings


@pytest.mark.directive("disable-dco")
def test_openvpn_with_disable_dco_runs_without_offload(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, "--disable-dco"])
    assert "disable_dco = ENABLED" in out, out[-3000:]


@pytest.mark.directive("verify-client-cert")
@pytest.mark.parametrize(("role", "value", "theirs"), [
    ("server", "none", "--verify-client-cert none|optional must be used with "
                       "--management-client-auth, an --auth-user-pass-verify script, or plugin"),
    ("server", "optional", "--verify-client-cert none|optional must be used with"),
    ("client", "none", "--verify-client-cert requires --mode server"),
])
def test_verify_client_cert_refusals_match_openvpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, role: str, value: str,
        theirs: str) -> None:
    base = SERVER if role == "server" else CLIENT
    out = openvpn_output(lab, workdir, [*base, "--verify-client-cert", value])
    assert f"Options error: {theirs}" in out, out[-3000:]
    # trivpn refuses the same config, naming the line
    conf = workdir / "t.conf"
    conf.write_text(as_config(base) + f"verify-client-cert {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    ours = str(info.value)
    expected = "must be used with" if role == "server" else "requires 'mode server'"
    assert "'verify-client-cert" in ours and expected in ours, ours
    assert f"t.conf:{as_config(base).count(chr(10)) + 1}" in ours


@pytest.mark.parametrize("extra", [["--route-method", "exe"], ["--tun-mtu-extra", "32"],
                                   ["--lport", "0"]])
def test_openvpn_accepts_corpus_directives_on_linux(lab: NetnsLab, openvpn_binary: None,
                                                    workdir: Path, extra: list[str]) -> None:
    """route-method (inert: Windows only), tun-mtu-extra (inert) and lport 0 pass
    OpenVPN 2.6's option checks on Linux, as trivpn's reasons say."""
    base = [a for a in CLIENT if a != "--nobind"]  # OpenVPN: lport and nobind conflict
    out = openvpn_output(lab, workdir, [*base, *extra])
    assert "Options error" not in out, out[-2000:]
    assert "link remote" in out, out[-2000:]
    assert "non-Windows" in (DIRECTIVES["route-method"].inert or "")


NOT_ON_LINUX_ARGS = {"cryptoapicert": ["SUBJ:trivpn"], "ip-win32": ["netsh"],
                     "key-method": ["2"], "keysize": ["256"], "tap-sleep": ["1"],
                     "tun-max-mtu": ["1600"],
                     "win-sys": ["env"], "windows-driver": ["wintun"]}


@pytest.mark.parametrize("name", sorted(NOT_ON_LINUX))
def test_openvpn_on_linux_does_not_recognize_what_trivpn_refuses_as_such(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, name: str) -> None:
    """trivpn says 'OpenVPN 2.6 on Linux does not recognize it either' for these."""
    out = openvpn_output(lab, workdir, [*CLIENT, f"--{name}", *NOT_ON_LINUX_ARGS.get(name, [])])
    assert f"Unrecognized option or missing or extra parameter(s) in [CMD-LINE]:1: {name}" \
        in out, out[-2000:]


@pytest.mark.parametrize("name", ["disable-occ", "ifconfig-nowarn"])
def test_openvpn_accepts_inert_corpus_flags(lab: NetnsLab, openvpn_binary: None,
                                            workdir: Path, name: str) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, f"--{name}"])
    assert "Options error" not in out and "link remote" in out, out[-2000:]


@pytest.mark.parametrize(("extra", "notice"), [
    (["--prng", "sha1"], "NOTICE: --prng option ignored (SSL library PRNG is used)"),
    (["--max-routes", "100"], "DEPRECATED OPTION: --max-routes option ignored. The number of "
                              "routes is unlimited as of OpenVPN 2.4.")])
def test_openvpn_ignores_prng_and_max_routes_and_says_so(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, extra: list[str],
        notice: str) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, *extra])
    assert notice in out, out[-2000:]
    quoted = notice.split(" (", maxsplit=1)[0].split(". The", maxsplit=1)[0]
    assert quoted in (DIRECTIVES[extra[0][2:]].inert or "")


# --- client breadth b ---

@pytest.mark.parametrize("extra", [["--peer-id", "3"], ["--key-derivation", "tls-ekm"],
                                   ["--protocol-flags", "cc-exit", "tls-ekm", "dyn-tls-crypt"]])
def test_openvpn_accepts_pushed_only_options_in_a_config(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, extra: list[str]) -> None:
    """peer-id, key-derivation and protocol-flags pass OpenVPN 2.6's checks in a client
    config (trivpn accepts them as inert, reasons in directives.py)."""
    out = openvpn_output(lab, workdir, [*CLIENT, *extra])
    assert "Options error" not in out and "link remote" in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([*CLIENT, *extra]))
    load_config(conf)


@pytest.mark.parametrize(("extra", "theirs"), [
    (["--key-derivation", "foo"], "Options error: Unknown key-derivation method foo"),
    (["--protocol-flags", "cc-exit", "bogus"], "Options error: Unknown protocol-flags flag: bogus"),
])
def test_bad_pushed_only_options_are_refused_like_openvpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, extra: list[str],
        theirs: str) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, *extra])
    assert theirs in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([*CLIENT, *extra]))
    with pytest.raises(ConfigError, match=r"t\.conf:\d+: unknown (key-derivation|protocol-flags)"):
        load_config(conf)


@pytest.mark.parametrize(("value", "theirs", "ours"), [
    (["NOTEXPORTER", "16"], 'Keying material exporter label must begin with "EXPORTER"',
     "must begin with 'EXPORTER'"),
    (["EXPORTER_X", "15"], "Invalid keying material exporter length",
     "invalid keying material exporter length '15'"),
    (["EXPORTER_X", "4096"], "Invalid keying material exporter length",
     "invalid keying material exporter length '4096'"),
    (["EXPORTER-OpenVPN-datakeys", "16"],
     "Keying material exporter label must not be 'EXPORTER-OpenVPN-datakeys'.",
     "must not be 'EXPORTER-OpenVPN-datakeys'"),
])
def test_keying_material_exporter_checks_match_openvpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, value: list[str], theirs: str,
        ours: str) -> None:
    extra = ["--keying-material-exporter", *value]
    out = openvpn_output(lab, workdir, [*CLIENT, *extra])
    assert f"Options error: {theirs}" in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([*CLIENT, *extra]))
    with pytest.raises(ConfigError, match=ours):
        load_config(conf)


def test_openvpn_accepts_keying_material_exporter(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    extra = ["--keying-material-exporter", "EXPORTER_X", "4095"]
    out = openvpn_output(lab, workdir, [*CLIENT, *extra])
    assert "Options error" not in out and "link remote" in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([*CLIENT, *extra]))
    load_config(conf)


# a small locked-memory limit that only CAP_SYS_RESOURCE could raise, and without it
SMALL_MEMLOCK_NO_CAP = ["prlimit", "--memlock=65536:65536", "setpriv",
                        "--bounding-set=-sys_resource", "--inh-caps=-sys_resource"]


@pytest.mark.directive("mlock")
def test_mlock_stops_both_when_the_locked_memory_limit_cannot_be_raised(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    """OpenVPN raises RLIMIT_MEMLOCK to 100 MB for mlock and exits when it cannot
    (platform.c, platform_mlockall()); trivpn (runtime/mlock.py) does the same."""
    ns = lab.add("mlock")
    args = [*CLIENT, "--dev", "null", "--mlock"]
    done = ns.run(["timeout", "5", *SMALL_MEMLOCK_NO_CAP, "openvpn", "--cd", str(workdir),
                   *args], check=False, timeout=10)
    theirs = done.stdout + done.stderr
    assert "ERROR: setrlimit() failed: Operation not permitted" in theirs, theirs
    assert done.returncode == 1
    conf = workdir / "t.conf"
    conf.write_text(as_config(args))
    ours = ns.run(["timeout", "10", *SMALL_MEMLOCK_NO_CAP, sys.executable, "-m", "trivpn",
                   "run", str(conf), "--log-format", "json"], check=False, timeout=15)
    out = ours.stdout + ours.stderr
    assert ours.returncode == 1, out[-2000:]
    assert "mlock_failed" in out and "RLIMIT_MEMLOCK" in out, out[-2000:]


@pytest.mark.directive("management-log-cache")
@pytest.mark.parametrize(("extra", "theirs", "ours"), [
    (["--management", "127.0.0.1", "7505", "--management-log-cache", "0"],
     "--management-log-cache parameter is out of range", "at least 1, got '0'"),
    (["--management-log-cache", "10"],
     "--management is not specified, however one or more options which modify the behavior "
     "of --management were specified", "'management' is not given"),
])
def test_management_log_cache_refusals_match_openvpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, extra: list[str], theirs: str,
        ours: str) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, *extra])
    assert f"Options error: {theirs}" in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([*CLIENT, *extra]))
    with pytest.raises(ConfigError, match=ours):
        load_config(conf)


@pytest.mark.directive("no-replay")
def test_openvpn_warns_about_no_replay_as_trivpn_does(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, "--no-replay"])
    assert ("WARNING: You have disabled Replay Protection (--no-replay) which may make "
            "OpenVPN less secure") in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([*CLIENT, "--no-replay"]))
    assert any("replay protection is disabled" in w.message
               for w in load_config(conf).warnings)


@pytest.mark.directive("no-replay")
@pytest.mark.parametrize(("extra", "theirs", "ours"), [
    (["--replay-window", "128"], "Options error: --replay-window doesn't make sense when "
     "replay protection is disabled with --no-replay", "'replay-window' makes no sense"),
    (["--cipher", "AES-256-GCM"], "--no-replay cannot be used with a CFB, OFB or AEAD mode "
     "cipher", "'no-replay' cannot be used with a CFB, OFB or AEAD mode cipher"),
])
def test_no_replay_refusals_match_openvpn(lab: NetnsLab, openvpn_binary: None, workdir: Path,
                                          extra: list[str], theirs: str, ours: str) -> None:
    args = [*CLIENT, "--no-replay", *extra]
    out = openvpn_output(lab, workdir, args)
    assert theirs in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config(args))
    with pytest.raises(ConfigError, match=ours):
        load_config(conf)


@pytest.mark.parametrize("extra", [["--redirect-private", "local"], ["--preresolve"],
                                   ["--tmp-dir", "/tmp"], ["--tls-exit"],
                                   ["--remap-usr1", "SIGTERM"], ["--no-replay"]])
def test_openvpn_accepts_client_breadth_b_directives(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, extra: list[str]) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, *extra])
    assert "Options error" not in out and "link remote" in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([*CLIENT, *extra]))
    load_config(conf)


@pytest.mark.directive("lladdr")
@pytest.mark.parametrize(("extra", "theirs", "ours"), [
    (["--lladdr", "02:00:5e:10:00:42"], "Options error: --lladdr can only be used in --dev "
     "tap mode", "'lladdr' can only be used with a tap device"),
    (["--dev", "tap", "--lladdr", "02:00:5e:10:00:zz"], "lladdr parm '02:00:5e:10:00:zz' must be "
     "a MAC address", "'lladdr' expects a MAC address"),
])
def test_lladdr_refusals_match_openvpn(lab: NetnsLab, openvpn_binary: None, workdir: Path,
                                       extra: list[str], theirs: str, ours: str) -> None:
    args = [*CLIENT, *extra]
    out = openvpn_output(lab, workdir, args)
    assert theirs in out, out[-2000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config(args))
    with pytest.raises(ConfigError, match=ours):
        load_config(conf)


@pytest.mark.directive("errors-to-stderr")
def test_errors_to_stderr_moves_openvpns_errors_where_trivpn_always_writes_them(
        tmp_path: Path, openvpn_binary: None) -> None:
    args = ["--errors-to-stderr", "--remote", "198.18.0.9", "--no-such-option"]
    theirs = subprocess.run(["openvpn", *args], capture_output=True, text=True, timeout=10,
                            check=False)
    assert "Options error: Unrecognized option" in theirs.stderr
    assert "Options error" not in theirs.stdout
    without = subprocess.run(["openvpn", *args[1:]], capture_output=True, text=True,
                             timeout=10, check=False)
    assert "Options error: Unrecognized option" in without.stdout  # OpenVPN's default
    assert "stderr" in (DIRECTIVES["errors-to-stderr"].inert or "")
    conf = tmp_path / "t.conf"
    conf.write_text("errors-to-stderr\nclient\ndev tun\nremote 198.18.0.9\nno-such-option\n")
    ours = subprocess.run([sys.executable, "-m", "trivpn", "run", str(conf)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert ours.returncode != 0
    assert "no-such-option" in ours.stderr and ours.stdout == ""


# --- client breadth a ---

def test_openvpn_spells_the_maximum_tun_mtu_option_tun_mtu_max(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    """trivpn's refusal of 'tun-max-mtu' says 2.6 spells it 'tun-mtu-max'."""
    out = openvpn_output(lab, workdir, [*CLIENT, "--tun-mtu-max", "9000"])
    assert "Options error" not in out and "link remote" in out, out[-2000:]
    assert "2.6 spells it 'tun-mtu-max'" in NOT_ON_LINUX["tun-max-mtu"]


def test_openvpn_knows_only_the_tcp_nodelay_socket_flag(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, "--socket-flags", "SO_KEEPALIVE"])
    assert "unknown socket flag: SO_KEEPALIVE" in out, out[-2000:]
    out = openvpn_output(lab, workdir, [*CLIENT, "--socket-flags", "TCP_NODELAY"])
    assert "Options error" not in out and "link remote" in out, out[-2000:]


def test_openvpn_reads_udp_mtu_as_link_mtu_and_derives_the_tun_mtu_from_it(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    """trivpn/config/linkmtu.py applies link-mtu/udp-mtu this way; the mtu-test refusal
    (UNSUPPORTED_WHY) paraphrases the help text."""
    out = openvpn_output(lab, workdir, [*CLIENT, "--udp-mtu", "1400", "--tun-mtu", "1300"])
    assert "only one of --tun-mtu or --link-mtu may be defined" in out, out[-2000:]
    helptext = openvpn_output(lab, workdir, ["--help"])
    assert ("--link-mtu n    : Take the TCP/UDP device MTU to be n and derive the tun MTU"
            in helptext)
    assert "--mtu-test      : Empirically measure and report MTU." in helptext
    assert "empirically measure and report the MTU" in UNSUPPORTED_WHY["mtu-test"]


def test_openvpn_caps_a_pushed_tun_mtu_at_tun_mtu_max_with_this_hint(
        openvpn_binary: None) -> None:
    """The hint trivpn repeats (runtime/tunnel.py, plan_client_tunnel) is in the binary."""
    binary = Path(shutil.which("openvpn") or "/usr/sbin/openvpn")
    assert (b"Server-pushed tun-mtu is too large, please add tun-mtu-max %d in the client "
            b"configuration") in binary.read_bytes()


def test_openvpn_2_6_has_no_digest_proxy_method_only_auto_meets_digest(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    """docs/connections.md says so; trivpn refuses 'http-proxy ... digest' too."""
    (workdir / "proxy-creds.txt").write_text("u\np\n")
    out = openvpn_output(lab, workdir, [*(a if a != "udp" else "tcp-client" for a in CLIENT),
                                  "--http-proxy", "198.18.0.5", "8080", "proxy-creds.txt",
                                  "digest"])
    assert "ERROR: unknown HTTP authentication method: 'digest'" in out, out[-2000:]
    assert "http-proxy authentication method 'digest' is not supported" in _trivpn_refusal(
        workdir, "proto tcp-client\nhttp-proxy 198.18.0.5 8080 proxy-creds.txt digest\n")


def _trivpn_refusal(workdir: Path, extra: str) -> str:
    conf = workdir / "digest.conf"
    conf.write_text("client\ndev tun\nremote 198.18.0.9 1194\nca ca.crt\ncert client.crt\n"
                    "key client.key\n" + extra)
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    return str(info.value)
