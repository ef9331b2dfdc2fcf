"""The ``negotiate`` command-line tool (see :mod:`negotiate.cli`)."""
