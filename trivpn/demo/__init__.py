"""``trivpn demo``: a complete tunnel between two throwaway network namespaces.

:mod:`~trivpn.demo.lab` creates the namespaces, the veth between them and the processes inside
them (and removes all of it by name and PID); :mod:`~trivpn.demo.configs` writes the PKI and the
classic-looking server/client configs; :mod:`~trivpn.demo.state` remembers a ``--keep`` demo so
that ``trivpn demo --stop`` can remove it; :mod:`~trivpn.demo.runner` runs the steps.
Nothing here prints: progress goes to a ``say`` callback supplied by the command.
"""
