"""``python -m avzsl``: the ``avzsl`` command (:mod:`avzsl.app.cli`)."""

from avzsl.app.cli import main

main()
