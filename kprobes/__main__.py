import sys

from kprobes.cli import console_main

sys.exit(console_main())
