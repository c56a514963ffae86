"""``hitpaw-emulator`` / ``python -m airflow_provider_hitpaw.emulator``: run the emulator in the foreground.

Once it accepts connections it prints exactly one line on stdout,

    HitPaw emulator listening on http://HOST:PORT (control token: TOKEN)

(``https://`` with ``--tls-cert``/``--tls-key``; with ``--port 0`` it shows the port the system picked), so
that scripts can wait for it and read the address and the token that ``/_emulator/*`` requests must send
in ``X-Emulator-Token``: :func:`airflow_provider_hitpaw.emulator.startup.parse_startup_line` reads it.
The token is random per run unless ``--control-token`` gives one. Logs go to stderr. SIGINT and SIGTERM
stop it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from typing import TYPE_CHECKING

from airflow_provider_hitpaw.emulator.app import Emulator, EmulatorConfig
from airflow_provider_hitpaw.emulator.control import check_control_token
from airflow_provider_hitpaw.emulator.faults import FaultSpecError, fault_help, parse_fault_spec
from airflow_provider_hitpaw.emulator.startup import format_startup_line

if TYPE_CHECKING:
    from collections.abc import Sequence

_DEFAULT_KEY = "hitpaw-emulator-key"
_CONTROL_HELP = """\
control endpoint: GET /_emulator/state, GET|POST|DELETE /_emulator/faults,
  POST /_emulator/keys|config|down|reset, POST /_emulator/jobs/{job_id}/expire|fail
  every request needs the header X-Emulator-Token: TOKEN and a loopback Host (127.0.0.1, ::1,
  localhost); a request body must be Content-Type: application/json
start-up line on stdout: HitPaw emulator listening on http://HOST:PORT (control token: TOKEN)"""


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--help`` also documents the fault syntax."""
    parser = argparse.ArgumentParser(
        prog="hitpaw-emulator",
        description="A local emulator of HitPaw's image segmentation API (loopback only, no coins spent).",
        epilog=fault_help() + "\n\n" + _CONTROL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default: 8090; 0 picks a free one)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("HITPAW_EMULATOR_API_KEY", _DEFAULT_KEY),
        help=f"the valid Apikey (default: $HITPAW_EMULATOR_API_KEY or {_DEFAULT_KEY!r})",
    )
    parser.add_argument(
        "--job-seconds", type=_positive_float, default=3.0, help="how long jobs stay CONVERTING (default: 3)"
    )
    parser.add_argument("--coins", type=int, default=100_000, help="starting balance (default: 100000)")
    parser.add_argument(
        "--result-ttl",
        type=_positive_float,
        default=8 * 24 * 3600.0,
        help="seconds a finished job and its files are kept (default: 8 days)",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", help="a fault rule (repeatable; see below)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for share= fault rules (default: 0)")
    parser.add_argument(
        "--public-url",
        default=None,
        help="base URL put in res_url, upload_url etc. (default: http://HOST:PORT)",
    )
    parser.add_argument(
        "--allow-remote-fetch",
        action="store_true",
        help="let jobs fetch images from non-loopback hosts (off by default)",
    )
    parser.add_argument(
        "--tls-cert", default=None, metavar="FILE", help="serve https with this PEM certificate (chain)"
    )
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--control-token",
        default=None,
        metavar="TOKEN",
        help="the token /_emulator/* requests must send in X-Emulator-Token (16 to 256 characters from "
        "A-Z a-z 0-9 _ . ~ -; default: a random one, printed on the start-up line)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level on stderr (default: INFO)")
    return parser


async def _serve(config: EmulatorConfig) -> None:
    emulator = Emulator(config)
    await emulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(format_startup_line(emulator.internal_url, emulator.control_token), flush=True)
    try:
        await stop.wait()
    finally:
        logging.getLogger("airflow_provider_hitpaw.emulator").info("stopping")
        await emulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run until SIGINT/SIGTERM."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = [parse_fault_spec(spec) for spec in args.fault]
    except FaultSpecError as exc:
        parser.error(f"--fault: {exc}")
    if args.coins < 0:
        parser.error("--coins must be >= 0")
    if args.control_token is not None:
        try:
            check_control_token(args.control_token)
        except ValueError as exc:
            parser.error(f"--control-token: {exc}")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    ssl_context = None
    if args.tls_cert is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"--tls-cert/--tls-key: {exc}")
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = EmulatorConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        job_seconds=args.job_seconds,
        coins=args.coins,
        result_ttl=args.result_ttl,
        faults=faults,
        public_url=args.public_url,
        seed=args.seed,
        allow_remote_fetch=args.allow_remote_fetch,
        ssl_context=ssl_context,
        control_token=args.control_token,
    )
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        print(f"hitpaw-emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
