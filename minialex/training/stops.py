"""Ctrl-C and SIGTERM during training: a stop request, never a half-written save.

    stops = StopRequests()
    with stops.installed(vote=False):      # the handlers, for the length of Trainer.fit
        ...
        with stops.deferred():             # a save and the state it records: a signal waits
            checkpoint.save(...)           #   until the block is done, then stops the run

Alone (vote=False), a signal raises Interrupted where the program is, except inside a
`deferred()` block, which it lets finish first. In a data-parallel run (vote=True) a signal only
marks a request: the strategy sends it with the step's all-reduce (`votes()`), so that every rank
stops after the same step (a rank that raised at once would leave the others waiting in a
collective; mpiexec passes Ctrl-C to every rank, but each gets it at another point of its step).
A second signal while a request waits stops this rank at once.
"""
import contextlib
import signal
import threading


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (what schedulers send) arrived. together: every rank of a
    data-parallel run stops at the same step (the request rode in the step's all-reduce)."""

    def __init__(self, signum, together=False):
        super().__init__(signum)
        self.signum, self.together = int(signum), together

    @property
    def name(self):
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name


def as_interrupted(error):
    """An Interrupted for an Interrupted or a KeyboardInterrupt (Python's own Ctrl-C), else None."""
    if isinstance(error, Interrupted):
        return error
    if isinstance(error, KeyboardInterrupt):
        return Interrupted(signal.SIGINT)
    return None


class StopRequests:
    def __init__(self):
        self.pending = None    # the signal waiting to be acted on
        self.vote = False      # data parallel: a signal is a request, voted at the next step
        self.saving = False    # inside deferred(): a signal waits for the block's end

    def _on_signal(self, signum, frame):
        if self.saving or (self.vote and self.pending is None):
            self.pending = signum      # raised after the save, or voted (votes())
        else:
            raise Interrupted(signum)  # (voting: a second signal while a request waits stops this rank now)

    @contextlib.contextmanager
    def installed(self, vote=False):
        """The Ctrl-C / SIGTERM handlers for the block (in the main thread only: Python runs
        handlers there, and a thread cannot install them)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.pending, self.vote = None, vote
        try:
            yield self
        finally:
            self.vote = False
            for s, handler in previous.items():
                signal.signal(s, handler)

    def votes(self):
        """This rank's stop request as (Ctrl-C, SIGTERM) counts, to be summed over the ranks."""
        pending = self.pending if self.vote else None
        return float(pending == signal.SIGINT), float(pending == signal.SIGTERM)

    @staticmethod
    def raise_if_voted(ctrl_c, term):
        """Every rank raises the same Interrupted when any rank asked to stop (Ctrl-C wins over SIGTERM)."""
        if ctrl_c or term:
            raise Interrupted(signal.SIGINT if ctrl_c else signal.SIGTERM, together=True)

    @contextlib.contextmanager
    def deferred(self):
        """Hold Ctrl-C / SIGTERM until the block (a save and the state it records) is complete.
        When voting, the signal stays pending for the next step's all-reduce."""
        outer = self.saving or self.vote
        saving = self.saving
        if not outer:
            self.pending = None
        self.saving = True
        try:
            yield
        finally:
            self.saving = saving
            if not outer and self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signum)
