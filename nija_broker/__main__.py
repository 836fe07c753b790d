"""``python -m nija_broker``: the command line."""

from nija_broker.service.cli import main

raise SystemExit(main())
