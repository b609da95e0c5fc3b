"""trivpn runtime layer."""
