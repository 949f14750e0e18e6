import sys

from .fastpath import run

sys.exit(run())
