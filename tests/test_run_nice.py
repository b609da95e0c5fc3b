"""``nice N`` lowers (or raises) the priority of ``trivpn run``, as OpenVPN's platform_nice()."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CONFIG = ("client\\ndev tun\\nremote vpn.example.com 1194\\nca ca.crt\\ncert c.crt\\n"
          "key c.key\\nnice {n}\\n")


def _niceness_after(n: int) -> int:
    """Apply ``nice n`` in a child process (this one keeps its priority); its niceness."""
    code = textwrap.dedent(f"""
        import os
        from trivpn.commands.run import apply_nice
        from trivpn.config import parse_config
        from trivpn.logging import get_logger
        o = parse_config("{CONFIG.format(n=n)}", "/etc/openvpn/client.conf")
        apply_nice(o, get_logger())
        print(os.nice(0))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ}, timeout=30)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.directive("nice")
def test_nice_adds_to_the_process_niceness() -> None:
    base = os.nice(0)
    assert _niceness_after(5) == min(base + 5, 19)


@pytest.mark.directive("nice")
def test_without_nice_the_priority_is_unchanged() -> None:
    assert _niceness_after(0) == os.nice(0)
