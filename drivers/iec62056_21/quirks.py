"""Registered quirks of IEC 62056-21 meters, keyed by identification.

Portable. Owns the table of device oddities that the protocol core consults
when a meter identifies itself, so behaviour differences are data, not
branches. Today one kind: meters that do not honour the baud rate they
propose in their identification (they keep answering at 300 Bd, or at some
other fixed rate). For those the master selects that rate in its option
select and stays on it. Must not know IO.

A quirk matches on the manufacturer (three letters, case-sensitive: the third
letter's case carries the reaction-time flag) and a prefix of the model part
of the identification (after any ``\\W`` enhanced identification pairs).
"""


class Quirk:
    __slots__ = ("manufacturer", "model_prefix", "line_baud", "note", "learned")

    def __init__(self, manufacturer, model_prefix="", line_baud=None, note="", learned=False):
        self.manufacturer = manufacturer
        self.model_prefix = model_prefix
        self.line_baud = line_baud      # the rate the meter really talks after sign-on
        self.note = note
        self.learned = learned          # True when found at run time, not shipped

    def matches(self, ident):
        return (ident.manufacturer == self.manufacturer
                and ident.model.startswith(self.model_prefix))

    def __repr__(self):
        return "Quirk(%s %r line_baud=%r%s)" % (self.manufacturer, self.model_prefix,
                                                 self.line_baud, " learned" if self.learned else "")


class QuirkRegistry:
    def __init__(self, quirks=None):
        self._quirks = list(quirks or [])

    def register(self, quirk):
        """Add a quirk; a later registration for the same key wins."""
        self._quirks = [q for q in self._quirks
                        if (q.manufacturer, q.model_prefix) != (quirk.manufacturer,
                                                                quirk.model_prefix)]
        self._quirks.append(quirk)
        return quirk

    def lookup(self, ident):
        """The most specific quirk matching ``ident`` (longest model prefix), or None."""
        best = None
        for q in self._quirks:
            if q.matches(ident) and (best is None or len(q.model_prefix) > len(best.model_prefix)):
                best = q
        return best

    def learn_line_baud(self, ident, baud, note="answered garbage after switching speed"):
        """Record at run time that ``ident`` talks at ``baud`` whatever it proposes."""
        return self.register(Quirk(ident.manufacturer, ident.model, baud, note, learned=True))

    def __iter__(self):
        return iter(list(self._quirks))


# Shipped quirks. The simulator's "WUM IEC-LEGACY" model (hil/iec_meter.py with
# honour_baud=False) stands in for field meters whose firmware proposes 9600 Bd
# but keeps its UART at 300 Bd after the option select.
QUIRKS = QuirkRegistry([
    Quirk("WUM", "IEC-LEGACY", 300, "proposes 9600 Bd, keeps answering at 300 Bd"),
    Quirk("WUM", "IEC-2400", 2400, "proposes 9600 Bd, answers at 2400 Bd"),
])
