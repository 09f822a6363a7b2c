"""`python -m dycoke_cli` and the `dycoke` console script: the signal handlers are installed before
anything slow is imported, so Ctrl-C and SIGTERM end with 130 and 143 from the first moment
(dycoke_cli.signals)."""

import os

from dycoke_cli import signals

signals.install()
try:
    from dycoke_cli.cli import main
except (KeyboardInterrupt, signals.Terminated) as stopped:  # before the command even started
    os._exit(signals.status_of(stopped))

if __name__ == "__main__":
    main()
