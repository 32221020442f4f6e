"""The ``chronos`` command: the bundled demo, its console output and its final report.

:mod:`chronos.cli.app` parses the command line and runs the jobs of :mod:`chronos.cli.demo`;
:mod:`chronos.cli.progress` keeps log lines and the progress line apart, and
:mod:`chronos.cli.report` prints the final report.  This package is an application built on
chronos's public API; nothing in the library imports this package.
"""

from chronos.cli.app import main

__all__ = ["main"]
