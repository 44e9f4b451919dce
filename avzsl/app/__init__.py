"""The application layer, the top floor: the ``avzsl`` command (:mod:`.cli`), which joins the commands of every
package, and the workflow's configuration check (:mod:`.workflow_config`). Everything below may be imported here;
nothing below imports this (tests/test_floors.py)."""
