"""A private D-Bus bus (Debian's ``dbus-daemon`` on a unix socket in a temporary directory)
and a recording stand-in for systemd-resolved on it: it owns ``org.freedesktop.resolve1`` and
records every method call on ``org.freedesktop.resolve1.Manager`` with its signature and
arguments, answering as resolved does (an empty reply; errors on request)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jeepney import HeaderFields, MessageType, message_bus, new_error, new_method_return
from jeepney.io.blocking import open_dbus_connection

from tests.conftest import _unavailable

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

RESOLVE1 = "org.freedesktop.resolve1"


@contextmanager
def private_bus(directory: Path) -> Iterator[str]:
    """A dbus-daemon listening in ``directory``; yields its address; killed by PID after."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        _unavailable("needs dbus-daemon (Debian package dbus-daemon; scripts/test installs it)")
    assert daemon is not None
    socket = directory / "bus"
    config = directory / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket))
    proc = subprocess.Popen([daemon, "--config-file", str(config), "--nofork",
                             "--print-address"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().decode().strip()
        assert address.startswith("unix:"), address
        yield address
    finally:
        proc.kill()
        proc.wait(timeout=5)


@dataclass
class FakeResolved:
    """Records ``(member, signature, body)`` of every Manager call; ``fail`` maps a member to
    the D-Bus error name to answer it with."""

    address: str
    calls: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> FakeResolved:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "the fake resolved did not get its name"
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self) -> None:
        with open_dbus_connection(bus=self.address) as conn:
            conn.send_and_get_reply(message_bus.RequestName(RESOLVE1), timeout=5)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    msg = conn.receive(timeout=0.1)
                except TimeoutError:
                    continue
                header = msg.header
                if header.message_type != MessageType.method_call:
                    continue
                member = header.fields.get(HeaderFields.member, "")
                interface = header.fields.get(HeaderFields.interface, "")
                path = header.fields.get(HeaderFields.path, "")
                if interface != f"{RESOLVE1}.Manager" or path != "/org/freedesktop/resolve1":
                    conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
                    continue
                self.calls.append((member, header.fields.get(HeaderFields.signature, ""),
                                   msg.body))
                if member in self.fail:
                    conn.send(new_error(msg, self.fail[member], "s", ("refused by the test",)))
                else:
                    conn.send(new_method_return(msg))
