"""Config of server-side user authentication (auth-user-pass-verify and friends)."""

from __future__ import annotations

import pytest

from tests.config.helpers import client, server
from trivpn.config import ConfigError


@pytest.mark.directive("auth-user-pass-verify")
def test_auth_user_pass_verify_splits_the_command_and_resolves_it_by_the_config() -> None:
    o = server('script-security 2\nauth-user-pass-verify "check.sh --strict" via-file\n')
    assert o.auth_user_pass_verify == (str(o.base_dir / "check.sh"), "--strict")
    assert o.auth_user_pass_verify_via_file
    o = server("auth-user-pass-verify /usr/local/bin/check via-env\n")
    assert o.auth_user_pass_verify == ("/usr/local/bin/check",)
    assert not o.auth_user_pass_verify_via_file


@pytest.mark.directive("auth-user-pass-verify")
def test_auth_user_pass_verify_needs_a_method() -> None:
    with pytest.raises(ConfigError):
        server("auth-user-pass-verify /bin/check via-magic\n")
    with pytest.raises(ConfigError):
        server("auth-user-pass-verify /bin/check\n")


@pytest.mark.directive("verify-client-cert", "username-as-common-name", "auth-user-pass-optional")
@pytest.mark.parametrize("line", ["verify-client-cert none", "verify-client-cert optional",
                                  "username-as-common-name", "auth-user-pass-optional"])
def test_password_only_options_need_a_password_check(line: str) -> None:
    with pytest.raises(ConfigError, match="must be used with"):
        server(line + "\n")
    o = server(line + "\nauth-user-pass-verify /bin/check via-file\n")
    assert o.auth_user_pass_verify == ("/bin/check",)


@pytest.mark.parametrize("line", ["auth-user-pass-verify /bin/check via-file",
                                  "username-as-common-name", "auth-user-pass-optional"])
def test_server_auth_options_are_refused_on_a_client(line: str) -> None:
    with pytest.raises(ConfigError, match="requires 'mode server'"):
        client(line + "\n")


@pytest.mark.directive("auth-gen-token")
def test_auth_gen_token_reads_lifetime_renewal_and_external_auth() -> None:
    o = server("auth-user-pass-verify /bin/check via-file\n"
               "auth-gen-token 86400 600 external-auth\n")
    assert (o.auth_gen_token, o.auth_token_lifetime, o.auth_token_renewal,
            o.auth_token_external) == (True, 86400, 600, True)
    o = server("auth-user-pass-verify /bin/check via-file\nauth-gen-token\n")
    assert (o.auth_token_lifetime, o.auth_token_renewal, o.auth_token_external) == (
        0, None, False)
    with pytest.raises(ConfigError, match="Invalid argument to auth-gen-token"):
        server("auth-gen-token 0 600 bogus\n")


@pytest.mark.directive("auth-gen-token-secret")
def test_auth_gen_token_secret_is_a_file_or_inline_block() -> None:
    o = server("auth-gen-token\nauth-gen-token-secret token.key\n")
    assert o.auth_gen_token_secret is not None
    assert o.auth_gen_token_secret.path == o.base_dir / "token.key"
    alone = server("auth-gen-token-secret token.key\n")  # OpenVPN does not read it then
    assert alone.auth_gen_token_secret is None
    assert any("does nothing without 'auth-gen-token'" in w.message for w in alone.warnings)


@pytest.mark.directive("plugin")
@pytest.mark.parametrize("path", [
    "/usr/lib/openvpn/openvpn-plugin-auth-pam.so",
    "/usr/lib/x86_64-linux-gnu/openvpn/plugins/openvpn-plugin-auth-pam.so",
    "openvpn-plugin-auth-pam.so"])
def test_pam_plugin_line_names_the_pam_service(path: str) -> None:
    o = server(f"plugin {path} login\n")
    assert o.auth_pam_service == "login"
    assert server(f"plugin {path} openvpn\nverify-client-cert none\n").verify_client_cert == \
        "none"  # PAM is a password check


@pytest.mark.directive("plugin")
def test_other_plugins_are_refused_naming_the_script_equivalent() -> None:
    with pytest.raises(ConfigError, match="auth-user-pass-verify SCRIPT via-file"):
        server("plugin /usr/lib/openvpn/openvpn-auth-ldap.so /etc/openvpn/auth-ldap.conf\n")
    # the down-root line is served natively on a server too (tests/interop/test_server_down_root.py)
    assert server("plugin /usr/lib/openvpn/plugins/openvpn-plugin-down-root.so 'service x'\n"
                  ).down_root == "service x"
    with pytest.raises(ConfigError, match="exactly one PAM service"):
        server("plugin openvpn-plugin-auth-pam.so login login USERNAME password PASSWORD\n")
    with pytest.raises(ConfigError, match="requires 'mode server'"):
        client("plugin openvpn-plugin-auth-pam.so login\n")
