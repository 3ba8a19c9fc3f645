"""The code of the longer scripts of ``bench/``, one package per script (``suites.faults`` for
``bench/faults.py``, ...). The scripts themselves keep their command line, their documentation and
their ``main``; what every script shares is in :mod:`harness`.
"""
