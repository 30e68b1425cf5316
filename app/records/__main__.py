"""`python -m app.records`: the prediction log's database from the command line.

    python -m app.records upgrade                 # the schema to this code's revision
    python -m app.records check                   # exit 0 if the schema is this code's
    python -m app.records export --out feedback.npz [--since 2026-12-01]

The database is MNIST_DATABASE_URL's, as the service's.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from app.config import get_settings
from app.records.database import SchemaError, create_database_engine, prepare_schema
from app.records.export import export_feedback
from model_store.feedback_records import FeedbackRecordsError
from model_store.reporting import fail, load_settings

PROG = "python -m app.records"


def moment(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-12-01 or 2026-12-01T12:00"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(PROG, get_settings)
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="bring the schema to this code's revision (what startup does)")
    commands.add_parser("check", help="fail unless the schema is this code's revision")
    export = commands.add_parser("export", help="write the labelled examples for training (.npz)")
    export.add_argument("--out", type=Path, required=True, help="the file to write, e.g. feedback.npz")
    export.add_argument("--since", type=moment, help="only labels given at or after this time (UTC)")
    args = parser.parse_args(argv)
    engine = create_database_engine(settings.database_url)
    try:
        if args.command == "upgrade":
            prepare_schema(engine, migrate=True)
            sys.stdout.write("the prediction log's schema is up to date\n")
        elif args.command == "check":
            prepare_schema(engine, migrate=False)
            sys.stdout.write("the prediction log's schema is this code's\n")
        else:
            prepare_schema(engine, migrate=False)
            if not args.out.parent.is_dir():
                fail(PROG, f"{args.out.parent} is not a folder")
            count = export_feedback(engine, args.out, args.since)
            sys.stdout.write(f"{count} labelled examples written to {args.out}\n")
    except (SchemaError, FeedbackRecordsError) as exc:
        fail(PROG, str(exc))
    except SQLAlchemyError as exc:
        fail(PROG, f"the database does not answer: {getattr(exc, 'orig', exc)}")
    except OSError as exc:
        fail(PROG, str(exc))
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
