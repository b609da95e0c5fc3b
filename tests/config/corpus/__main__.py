"""``python -m tests.config.corpus report|update [--openvpn]`` (see the package docstring)."""

from __future__ import annotations

import argparse
import collections
import json
import sys

from tests.config.corpus import MANIFEST, entries, openvpn_outcome, profile, rate, trivpn_outcome


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.config.corpus")
    ap.add_argument("command", choices=["report", "update"])
    ap.add_argument("--openvpn", action="store_true",
                    help="measure OpenVPN too (root, unshare and /usr/sbin/openvpn needed)")
    args = ap.parse_args(argv)
    data = entries()
    reasons: collections.Counter[str] = collections.Counter()
    for e in data:
        t = trivpn_outcome(profile(e))
        o = openvpn_outcome(profile(e)) if args.openvpn else None
        changed = t.verdict != e["trivpn"]["outcome"] or t.reason != e["trivpn"].get("reason", "")
        print(f"{e['id']:42} trivpn {t.verdict:8} openvpn "
              f"{(o.verdict if o else e['openvpn']['outcome']):8}"
              f"{'  CHANGED' if changed else ''}  {t.reason}")
        if t.verdict == "refused":
            reasons[t.reason.split(": ", 1)[-1]] += 1
        if args.command == "update":
            e["trivpn"] = {"outcome": t.verdict, "reason": t.reason}
            if o is not None:
                e["openvpn"] = {"outcome": o.verdict, "evidence": o.reason}
    print()
    print(f"trivpn:  {rate([e['trivpn']['outcome'] for e in data])} expected in the manifest")
    print(f"OpenVPN: {rate([e['openvpn']['outcome'] for e in data])} measured")
    print("trivpn's refusal reasons:")
    for reason, n in reasons.most_common():
        print(f"  {n:3}  {reason}")
    if args.command == "update":
        MANIFEST.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
