import sys

from maven_fast.cli import main

sys.exit(main())
