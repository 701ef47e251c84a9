import sys

from spinn_export.cli import main

sys.exit(main())
