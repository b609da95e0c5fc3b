"""trivpn diagnostics layer."""
