import sys

from kprobes.cli import main

sys.exit(main())
