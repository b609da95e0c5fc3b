import sys

from trivpn.cli import main

sys.exit(main())
