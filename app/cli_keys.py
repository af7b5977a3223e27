"""``retnet keys create|list|revoke``: API keys of the service's database (RETNET_DATABASE_URL)."""

from __future__ import annotations

import argparse
import sys


def _cmd_keys(args: argparse.Namespace) -> int:
    from app.core.config import get_settings
    from app.db.migrate import check_migrated
    from app.db.session import session_scope
    from app.services import keys
    from app.services.errors import ServiceError

    settings = get_settings()
    check_migrated(settings.db_url)
    try:
        with session_scope(settings.db_url) as session:
            if args.keys_command == "create":
                secret = keys.create_key(session, args.name, admin=args.admin)
                kind = "admin key" if args.admin else "key"
                print(f"created {kind} '{args.name}'. It is shown only now; the service keeps its hash. "
                      "Send it as 'Authorization: Bearer <key>':", file=sys.stderr)
                print(secret)
            elif args.keys_command == "revoke":
                keys.revoke_key(session, args.name)
                print(f"revoked key '{args.name}'", file=sys.stderr)
            else:
                print("name,admin,created_at,revoked_at,last_used_at")
                for k in keys.list_keys(session):
                    print(f"{k.name},{str(k.admin).lower()},{k.created_at:%Y-%m-%dT%H:%M:%SZ},"
                          f"{'' if k.revoked_at is None else f'{k.revoked_at:%Y-%m-%dT%H:%M:%SZ}'},"
                          f"{'' if k.last_used_at is None else f'{k.last_used_at:%Y-%m-%dT%H:%M:%SZ}'}")
    except ServiceError as exc:
        print(f"retnet keys: {exc.detail}", file=sys.stderr)
        return 2
    return 0


def register_keys(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``keys`` command to the ``retnet`` parser."""
    p = sub.add_parser("keys", help="API keys: create, list, revoke",
                       description="API keys for the HTTP API (required when RETNET_AUTH__REQUIRED=true, the default "
                       "in scaled mode). A key sees only its own jobs and models; an admin key sees all.")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = ks.add_parser("create", help="create a key and print it (last line; shown once)")
    q.add_argument("name", help="a name for the key's owner (letters, digits, _ . -)")
    q.add_argument("--admin", action="store_true", help="sees and manages every job and model")
    q.set_defaults(func=_cmd_keys)
    q = ks.add_parser("list", help="list keys (never their secrets)")
    q.set_defaults(func=_cmd_keys)
    q = ks.add_parser("revoke", help="revoke a key: it stops working at once")
    q.add_argument("name")
    q.set_defaults(func=_cmd_keys)
