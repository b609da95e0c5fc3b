"""trivpn: an OpenVPN 2.6 wire-compatible VPN on trio, with diagnostics."""

__version__ = "0.1.0"
