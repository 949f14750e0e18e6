import sys

from walbucket.cli.entry import run

sys.exit(run())
