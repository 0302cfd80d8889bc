import sys

from jaxsam.cli import main

sys.exit(main())
