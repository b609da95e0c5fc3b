"""Sans-IO OpenVPN 2.6 protocol core: bytes and time in, bytes and events out.

Nothing in this package imports trio, opens a socket or reads a clock.
"""
