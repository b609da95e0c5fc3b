"""Script and process directives as parsed: commands kept as written, flags, setenv-safe's
prefix, the down-root plugin line, and the clear refusals (other plugins, chroot)."""

from __future__ import annotations

import pytest

from tests.config.helpers import client, server
from trivpn.config import ConfigError


@pytest.mark.directive("up", "down", "route-up", "route-pre-down", "ipchange", "tls-verify",
                       "tls-export-cert")
def test_script_commands_keep_the_program_and_its_fixed_arguments() -> None:
    o = client('up "/etc/openvpn/up.sh --flag x"\ndown /etc/openvpn/down.sh\n'
               "route-up /bin/ru\nroute-pre-down /bin/rpd\nipchange /bin/ipc\n"
               "tls-verify /bin/tv\ntls-export-cert /run/certs\n")
    assert (o.up, o.down, o.route_up, o.route_pre_down, o.ipchange, o.tls_verify) == (
        "/etc/openvpn/up.sh --flag x", "/etc/openvpn/down.sh", "/bin/ru", "/bin/rpd",
        "/bin/ipc", "/bin/tv")
    assert str(o.tls_export_cert) == "/run/certs"


@pytest.mark.directive("up")
def test_a_script_directive_needs_exactly_one_command() -> None:
    with pytest.raises(ConfigError, match=r"client\.conf:8"):
        client("up /bin/a /bin/b\n")
    with pytest.raises(ConfigError, match="'up' needs a command"):
        client('up " "\n')


@pytest.mark.directive("up-restart", "down-pre", "ifconfig-noexec", "route-noexec",
                       "script-security")
def test_script_flags_and_level() -> None:
    o = client("up-restart\ndown-pre\nifconfig-noexec\nroute-noexec\nscript-security 3\n")
    assert (o.up_restart, o.down_pre, o.ifconfig_noexec, o.route_noexec) == (
        True, True, True, True)
    assert o.script_security == 3
    assert client().script_security == 1  # OpenVPN's default: built-in programs only
    with pytest.raises(ConfigError, match="script-security"):
        client("script-security 4\n")


@pytest.mark.directive("setenv-safe")
def test_setenv_safe_puts_openvpn_prefixed_names_into_the_script_environment() -> None:
    o = client("setenv-safe SITE lab\nsetenv PLAIN x\n")
    assert o.setenv == (("OPENVPN_SITE", "lab"), ("PLAIN", "x"))


@pytest.mark.directive("plugin")
def test_the_down_root_plugin_line_is_understood_natively() -> None:
    o = client('plugin /usr/lib/openvpn/openvpn-plugin-down-root.so "/etc/openvpn/down.sh"\n')
    assert o.down_root == "/etc/openvpn/down.sh"


@pytest.mark.directive("plugin")
@pytest.mark.parametrize(("line", "fragment"), [
    ("plugin /usr/lib/openvpn/openvpn-auth-ldap.so /etc/openvpn/auth/ldap.conf",
     "trivpn loads no plugin modules"),
    ("plugin /usr/lib/openvpn/openvpn-plugin-down-root.so",
     "needs the command to run at down"),
])
def test_other_plugins_are_refused_clearly(line: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        client(line + "\n")
    assert "client.conf:8" in str(info.value)


@pytest.mark.directive("chroot")
def test_chroot_is_refused_with_the_reason_and_an_alternative() -> None:
    with pytest.raises(ConfigError, match="RootDirectory=") as info:
        client("chroot /var/empty\n")
    assert "client.conf:8" in str(info.value)


@pytest.mark.directive("dev")
def test_dev_null_is_a_client_without_a_device() -> None:
    o = client("dev null\n")
    assert o.dev_null and o.dev == "null"
    assert not client().dev_null


def test_up_delay_is_accepted_for_a_pulling_client() -> None:
    assert client("up-delay\n").up is None


@pytest.mark.directive("route-pre-down", "dev")
@pytest.mark.parametrize("line", ["route-pre-down /bin/true", "ipchange /bin/true",
                                  "route-noexec", "dev null"])
def test_a_server_refuses_the_script_directives_it_does_not_run_yet(line: str) -> None:
    with pytest.raises(ConfigError, match=r"not supported|clients only") as info:
        server(line + "\n")
    assert "server.conf:" in str(info.value)


@pytest.mark.directive("client-connect", "client-disconnect", "learn-address", "up", "down",
                       "route-up", "tls-verify")
def test_a_server_keeps_its_script_commands() -> None:
    o = server('client-connect "/etc/openvpn/cc.sh x"\nclient-disconnect /bin/cd\n'
               "learn-address /bin/la\nup /bin/up\ndown /bin/down\nroute-up /bin/ru\n"
               "tls-verify /bin/tv\n")
    assert (o.client_connect, o.client_disconnect, o.learn_address) == (
        "/etc/openvpn/cc.sh x", "/bin/cd", "/bin/la")
    assert (o.up, o.down, o.route_up, o.tls_verify) == ("/bin/up", "/bin/down", "/bin/ru",
                                                        "/bin/tv")


@pytest.mark.directive("client-connect", "client-disconnect", "learn-address")
@pytest.mark.parametrize("name", ["client-connect", "client-disconnect", "learn-address"])
def test_a_client_config_refuses_the_server_only_scripts(name: str) -> None:
    # OpenVPN: "--client-connect requires --mode server" (options.c,
    # options_postprocess_verify_ce)
    with pytest.raises(ConfigError, match=f"'{name}' requires 'mode server'"):
        client(f"{name} /bin/true\n")
    with pytest.raises(ConfigError, match=f"'{name}' needs a command"):
        server(f'{name} " "\n')
