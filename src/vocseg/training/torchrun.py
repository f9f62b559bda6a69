"""`python -m vocseg.training.torchrun ARGS`: torchrun (`torch.distributed.run`) without its crash report.

When a training process fails, torchrun adds its own traceback and a "Root Cause" block under
the process's message. The process has already said what went wrong: in one line (a vocseg
error) or in its own traceback (a bug). This runs the same launcher and exits with the failed
process's code instead.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> None:
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # its "failed (exitcode: N)" and "Sending process ... closing signal" lines say again what
    # vocseg reports itself; `vocseg train --verbose` keeps them
    if "--verbose" not in sys.argv:
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # Slurm's time-limit warning (--requeue) may reach every process of the job step: it is the
    # training processes' stop request (they set their own handler), never the agent's death.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        sys.exit(code if code > 0 else 128 - code)  # killed by signal N: the shell's 128 + N
    except SignalException as exc:  # torchrun itself was told to stop; it stopped the workers
        sys.exit(128 + int(exc.sigval))
    except KeyboardInterrupt:
        sys.exit(128 + int(signal.SIGINT))


if __name__ == "__main__":
    main()
