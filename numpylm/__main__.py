"""`python -m numpylm` runs the same command line as the `numpylm` script."""
import sys

from numpylm.cli import main

sys.exit(main())
