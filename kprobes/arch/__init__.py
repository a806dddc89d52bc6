"""Architecture parts of kprobes: only x86_64 here.  The generic core reaches them through
the arch_* functions and carries their data opaquely (p.ainsn)."""
