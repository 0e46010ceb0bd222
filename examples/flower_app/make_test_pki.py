"""Make a test CA, SuperLink certificate and institution keys for a dry run.

    python examples/flower_app/make_test_pki.py pki hospital-a hospital-b \
        hospital-c hospital-d [--host 127.0.0.1 --host localhost]

Writes, under the output folder: ``ca.pem``; ``superlink.pem`` and
``superlink.key`` (valid for the ``--host`` names); per institution
``nodes/NAME/auth`` and ``auth.pub`` (SuperNode authentication key, EC P-384,
OpenSSH format) and ``nodes/NAME/identity.pem`` (Ed25519 identity key);
``roster.json`` (every institution's id, name and public identity key; ids
follow the order given).  For a dry run only: in a real consortium each
institution makes its own keys and hands out public halves only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.flower.pki import make_test_pki


def main(argv: list[str] | None = None) -> int:
    """Write the files and list them; exit 2 on bad arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (must not exist)")
    parser.add_argument("institutions", nargs="+", help="institution names")
    parser.add_argument("--host", action="append", dest="hosts",
                        help="SuperLink host name or IP (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"make_test_pki: {args.out} exists; choose a new folder", file=sys.stderr)
        return 2
    if len(set(args.institutions)) != len(args.institutions):
        print("make_test_pki: institution names must be distinct", file=sys.stderr)
        return 2
    pki = make_test_pki(
        args.out, args.institutions, hosts=args.hosts or ["127.0.0.1", "localhost"]
    )
    print(f"CA certificate:        {pki.ca_cert}")
    print(f"SuperLink certificate: {pki.server_cert} (key {pki.server_key})")
    print(f"consortium roster:     {pki.roster}")
    for node in pki.nodes:
        print(f"institution {node.institution} ({node.name}): auth key "
              f"{node.auth_key}, identity {node.identity_key}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
