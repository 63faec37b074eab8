"""The per-epoch progress display of ``fit``: a redrawn bar on a terminal, one plain line per
epoch otherwise (logs, CI), nothing with ``verbose=0``."""
import shutil
import sys
import time

_SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}


def _fmt_time(seconds):
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


class ProgressBar:
    """``update(seen, logs)`` after each batch, ``finish(logs)`` at the end of the epoch."""

    width = 24
    interval = 0.1  # seconds between redraws on a terminal

    def __init__(self, total, epoch=0, epochs=1, verbose=1, accuracy=True, stream=None):
        self.total, self.epoch, self.epochs = max(int(total), 1), epoch, epochs
        self.stream = sys.stdout if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        tty = bool(isatty and isatty())
        self.mode = "silent" if not verbose else ("bar" if verbose == 1 and tty else "lines")
        self.start = time.perf_counter()
        self.seen = 0
        self._last_draw = 0.0
        self._last_len = 0

    def rate(self):
        elapsed = time.perf_counter() - self.start
        return self.seen / elapsed if elapsed > 0 else 0.0

    def _metrics(self, logs):
        parts = []
        for k, v in logs.items():
            if k in ("lr", "images_per_s"):
                continue
            parts.append(f"{_SHORT.get(k, k)} {v:.4f}")
        return "  ".join(parts)

    def _line(self, logs, done):
        n = len(str(self.total))
        frac = min(self.seen / self.total, 1.0)
        filled = int(self.width * frac)
        bar = "=" * filled + (">" if filled < self.width else "") + "." * (self.width - filled - 1)
        head = f"Epoch {self.epoch + 1}/{self.epochs} [{bar[:self.width]}] {self.seen:>{n}}/{self.total}"
        rate = self.rate()
        elapsed = time.perf_counter() - self.start
        tail = (_fmt_time(elapsed) if done else
                f"ETA {_fmt_time((self.total - self.seen) / rate) if rate else '?'}")
        return f"{head}  {rate:,.0f} img/s  {self._metrics(logs)}  {tail}"

    def update(self, seen, logs):
        self.seen = seen
        if self.mode != "bar":
            return
        now = time.perf_counter()
        if now - self._last_draw < self.interval and seen < self.total:
            return
        self._last_draw = now
        self._write("\r" + self._fit(self._line(logs, done=False)))

    def _fit(self, line):
        """A redrawn line must not wrap, or each redraw starts a new line: cut it to the width."""
        width = shutil.get_terminal_size((120, 24)).columns - 1
        return line if len(line) <= width else line[:max(width - 3, 10)] + "..."

    def _write(self, text):
        visible = len(text.lstrip("\r"))
        pad = " " * max(self._last_len - visible, 0)
        self._last_len = visible
        self.stream.write(text + pad)
        self.stream.flush()

    def finish(self, logs):
        if self.mode == "silent":
            return
        line = self._line(logs, done=True)
        if self.mode == "bar":
            self._write("\r" + line)   # the final line may wrap: nothing redraws it
            self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
