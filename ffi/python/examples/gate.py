"""Gate a feature of a Python application with Tessera.

    python gate.py STATE_FILE PRODUCT_ID SERVER_URL|- [LICENSE_KEY]

With a key it activates online first; then it checks ``export_pdf``, uses 3 units of ``api_calls``, and sends a
heartbeat when a server is given (a server that cannot be reached is fine: the checks are local).
Exit status: 0 when export_pdf is allowed, 1 when denied, 2 on an error.

``keyset.py`` holds the vendor's public keyset (``tessera-server keys export``) as a string: keep it in the
application's code rather than reading it from a file the customer could replace.
"""

import sys

import tessera
from keyset import KEYSET  # KEYSET = '{"keys": [...]}'


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(f"usage: {argv[0]} STATE_FILE PRODUCT_ID SERVER_URL|- [LICENSE_KEY]", file=sys.stderr)
        return 2
    state, product, url = argv[1], argv[2], argv[3]
    try:
        with tessera.Agent(
            state,
            keyset=KEYSET,
            product_id=product,
            server_url=None if url == "-" else url,
            app_version="gate-example 1.0",
        ) as agent:
            if len(argv) > 4:
                outcome = agent.activate(argv[4])
                print(f"activated: activation {outcome['activation_id']}")

            pdf = agent.check("export_pdf")
            print(f"export_pdf: {'allowed' if pdf else 'denied'} ({pdf.reason.name})")
            if not pdf:
                print(f"why: {pdf.explanation}")

            calls = agent.consume("api_calls", 3)
            print(
                f"api_calls: {'recorded' if calls else 'refused'} ({calls.reason.name}), "
                f"{calls.used} used of {calls.limit}, {calls.remaining} left"
            )

            if url != "-":
                try:
                    beat = agent.heartbeat()
                    print(f"heartbeat: {beat['usage_acknowledged']} use(s) acknowledged")
                except tessera.Unreachable:
                    print("heartbeat: server unreachable, working offline")
            return 0 if pdf else 1
    except tessera.TesseraError as e:
        print(f"failed ({e.status.name}{', ' + e.server_code if e.server_code else ''}): {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
