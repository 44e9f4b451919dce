"""avzsl: audio-visual (generalised) zero-shot video classification, from raw videos to a results table.

``extractors/`` prepares every stored input, ``training/`` trains and evaluates; this package holds what both share
(:mod:`avzsl.common`) and the workflow configuration checks (:mod:`avzsl.workflow_config`). The ``avzsl`` command is
:func:`training.cli.main`, which joins the commands of both stages."""
