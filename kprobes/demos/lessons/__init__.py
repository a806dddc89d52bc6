"""The demos themselves: one module per demo, each defining DEMO (a lesson.Demo).
kprobes.demos.catalogue finds them; a new demo is a new module here."""
