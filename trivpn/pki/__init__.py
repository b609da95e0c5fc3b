"""trivpn pki layer: CA and certificates (certs, keys), the easy-rsa style directory (store),
tls-auth/tls-crypt key files (statickeys) and the ``trivpn pki`` command (cli)."""
