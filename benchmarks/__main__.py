import sys

from benchmarks.command import run_main
from benchmarks.suite import main

sys.exit(run_main("python -m benchmarks", main))
