"""``python -m tfdropblock.export._child JOB.pickle FD``: one isolated child of the verifier.

The job file is written by the parent into its own private work directory; it is not an input
from anyone else.
"""

import pickle
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from tfdropblock.export.isolation import child_main

if __name__ == "__main__":
    job = pickle.loads(Path(sys.argv[1]).read_bytes())
    child_main(Connection(int(sys.argv[2]), readable=False), job)
