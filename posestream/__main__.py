"""`python -m posestream` is the `posestream` command."""
import sys

from posestream.cli import main

sys.exit(main())
