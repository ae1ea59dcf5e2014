"""``python -m aisentinel`` entry point."""

from aisentinel.cli import main

raise SystemExit(main())
