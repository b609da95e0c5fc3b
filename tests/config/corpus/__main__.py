"""``python -m tests.config.corpus report|update [--openvpn] [--corpus clients|servers]``
(see the package docstring). Without ``--corpus`` both corpora are handled."""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys

from tests.config.corpus import CORPORA, Corpus, rate


def run(corpus: Corpus, command: str, openvpn: bool) -> None:
    data = corpus.entries()
    reasons: collections.Counter[str] = collections.Counter()
    print(f"== {corpus.name} ({corpus.manifest})")
    for e in data:
        path = corpus.profile(e)
        t = corpus.trivpn_outcome(path)
        o = corpus.openvpn_outcome(path) if openvpn else None
        changed = t.verdict != e["trivpn"]["outcome"] or t.reason != e["trivpn"].get("reason", "")
        print(f"{e['id']:42} trivpn {t.verdict:8} openvpn "
              f"{(o.verdict if o else e['openvpn']['outcome']):8}"
              f"{'  CHANGED' if changed else ''}  {t.reason}")
        if t.verdict == "refused":
            reasons[re.sub(r"^line \d+: ", "", t.reason)] += 1
        if command == "update":
            e["trivpn"] = {"outcome": t.verdict, "reason": t.reason}
            if o is not None:
                e["openvpn"] = {"outcome": o.verdict, "evidence": o.reason}
    print()
    print(f"trivpn:  {rate([e['trivpn']['outcome'] for e in data])} expected in the manifest")
    print(f"OpenVPN: {rate([e['openvpn']['outcome'] for e in data])} measured")
    print("trivpn's refusal reasons:")
    for reason, n in reasons.most_common():
        print(f"  {n:3}  {reason}")
    print()
    if command == "update":
        corpus.manifest.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.config.corpus")
    ap.add_argument("command", choices=["report", "update"])
    ap.add_argument("--openvpn", action="store_true",
                    help="measure OpenVPN too (root, unshare and /usr/sbin/openvpn needed)")
    ap.add_argument("--corpus", choices=sorted(CORPORA), action="append",
                    help="the corpus to handle (repeatable; default: all)")
    args = ap.parse_args(argv)
    for name in args.corpus or sorted(CORPORA):
        run(CORPORA[name], args.command, args.openvpn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
