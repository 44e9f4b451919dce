"""avzsl: audio-visual (generalised) zero-shot video classification, from raw videos to a results table.

This package is the ground floor every other package shares (:mod:`avzsl.common`, :mod:`avzsl.fetching`,
:mod:`avzsl.lockfile`, :mod:`avzsl.gpu_pool`); its subpackage :mod:`avzsl.app` is the top floor: the ``avzsl``
command, which joins the commands of ``extractors``, ``training`` and ``bench``, and the workflow's configuration
check (tests/test_floors.py)."""
