"""``python -m pysyncer`` runs the command line."""

import sys

from pysyncer.cli import main

sys.exit(main())
