"""`python -m slimdeploy` is the `slimdeploy` command."""
from .cli import main

raise SystemExit(main())
