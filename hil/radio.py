"""The radio medium: a discrete-event model of the air shared by simulated
radios (the SX126x/SX127x chip simulators, or the mesh simulator's nodes).

Owns simulated time (integer microseconds, advanced by the caller with
``run_until``; no threads, clocks or sleeps inside, so 300 nodes x 48 h run
in seconds to minutes), an event queue the caller may use for its own timers,
who hears what, and at which RSSI/SNR. Must not know chips' registers or
packets' contents. ``RealtimeMedium`` drives one from the wall clock.

The model (docs/radio.md "The radio medium" has the reasoning and sources):

* time on air: ``mesh.airtime`` (Semtech formula for LoRa, the rate model
  for Wi-Fi), or the transmitting chip's own figure (``toa_us``);
* mean RSSI a->b = P_tx + G_a + G_b - PL(d) - X_ab - Y_a>b with the
  log-distance law PL(d) = PL(d0) + 10 n log10(d / d0), X_ab a symmetric
  log-normal shadowing per link (sigma ``shadowing_db``) and Y_a>b a
  per-direction term (sigma ``asymmetry_db``): both fixed per link by
  hashing (seed, a, b), so a link's budget is the same whatever the order
  of events; optional per-frame fading (sigma ``fading_db``);
* noise floor -174 + 10 log10(BW) + NF dBm, SNR = RSSI - noise; a frame is
  detected when RSSI >= the SF's sensitivity and SNR >= the SF's
  demodulation limit (``mesh.airtime`` tables, from the datasheets);
* collisions with capture, energy-based as ns-3's lorawan module does it:
  the wanted frame's energy against the energy each interfering SF puts into
  the overlap must reach the Goursaud & Gorce isolation (6 dB for the same
  SF, -16..-36 dB across SFs); a frame lost that way is still reported to
  the receiver as a failed reception (the chip raises CrcErr);
* half duplex: a node transmitting, or leaving receive, loses the frames it
  was receiving; a receiver must be listening with matching parameters when
  a frame starts;
* per-frame random loss (``frame_loss``, or each link's ``loss``);
* explicit link tables: when ``links`` is given only those links exist;
* a LoRa receiver locks on the first preamble it detects: a frame starting
  while it receives another only interferes (no re-synchronisation);
* nodes down/up: a down node neither sends nor hears.

``AirParams``, ``Reception`` and the constants live in ``hil.radio_air``
and are importable from here.
"""

import heapq
import math
import random
import threading
import time

from hil.radio_air import (  # noqa: F401  (re-exported: hil.radio is the entry point)
    ISOLATION_DB,
    TABLE_LINK_MARGIN_DB,
    WIFI_BW_HZ,
    WIFI_CAPTURE_DB,
    WIFI_SENSITIVITY_DBM,
    WIFI_SNR_LIMIT_DB,
    AirParams,
    MediumError,
    Reception,
    _gauss,
    _isolation,
    _mw,
    scenario_params,
)


class _Node:
    __slots__ = ("id", "x", "y", "power", "nf", "gain", "up", "listener", "rx", "tx",
                 "pending", "airtime_us")

    def __init__(self, node_id, x, y, power, nf, gain):
        self.id = node_id
        self.x = x
        self.y = y
        self.power = power
        self.nf = nf
        self.gain = gain
        self.up = True
        self.listener = None
        self.rx = None
        self.tx = None
        self.pending = set()
        self.airtime_us = 0


class _Tx:
    __slots__ = ("src", "frame", "params", "power", "power_mw", "start", "end", "receivers",
                 "event", "relisten")

    def __init__(self, src, frame, params, power, start, end):
        self.src = src
        self.frame = frame
        self.params = params
        self.power = power
        self.power_mw = _mw(power)
        self.start = start
        self.end = end
        self.receivers = []
        self.event = None
        self.relisten = None


class RadioMedium:
    """The shared air. Every public method takes the medium's lock; listeners
    (``on_frame(Reception)``, ``on_tx_done(end_us)``, optional
    ``on_power(up)``) and ``schedule`` callbacks run outside it, in time
    order, from ``run_until``. A listener may also have ``accepts(frame)``:
    a frame it would drop unread (a mesh frame addressed to another node)
    is then not worked out for it at all (counted ``unread``); it still
    held the receiver for its whole duration.

    ``path_loss``: ``exponent`` (n, 3.0), ``ref_loss_db`` (PL(d0), 40),
    ``ref_distance_m`` (d0, 1), ``shadowing_db`` (4), ``asymmetry_db`` (0),
    ``fading_db`` (0). ``links``: the scenario's list of ``{"a", "b",
    "loss"}`` (optional ``"oneway": true``, ``"rssi_dbm"``). ``collisions``
    defaults to on for LoRa; Wi-Fi's CSMA/CA and MAC retries make them a
    residual loss folded into ``frame_loss`` unless asked for.
    """

    def __init__(self, seed=0, path_loss=None, frame_loss=0.0, links=None,
                 noise_figure_db=6.0, default_power_dbm=14.0, collisions=None):
        pl = dict(path_loss or {})
        self.seed = seed
        self.exponent = float(pl.get("exponent", 3.0))
        self.ref_loss_db = float(pl.get("ref_loss_db", 40.0))
        self.ref_distance_m = float(pl.get("ref_distance_m", 1.0))
        self.shadowing_db = float(pl.get("shadowing_db", 4.0))
        self.asymmetry_db = float(pl.get("asymmetry_db", 0.0))
        self.fading_db = float(pl.get("fading_db", 0.0))
        self.frame_loss = float(frame_loss)
        self.noise_figure_db = noise_figure_db
        self.default_power_dbm = default_power_dbm
        self.collisions = collisions
        self.now_us = 0
        self.rng = random.Random(seed)
        self.counters = {"frames": 0, "delivered": 0, "collisions": 0, "below_sensitivity": 0,
                         "random_loss": 0, "interrupted": 0, "aborted": 0, "tx_while_down": 0,
                         "unread": 0}
        self._nodes = {}
        self._links = None
        self._budget = {}                 # (a, b) -> mean RSSI without the tx power
        self._budget_mw = {}              # the same, linear
        self._neigh = {}                  # (a, threshold) -> [b...]
        self._air = []                    # transmissions that may still interfere
        self._queue = []
        self._seq = 0
        self._lock = threading.RLock()
        if links is not None:
            self.set_links(links)

    # -- topology ---------------------------------------------------------

    def add_node(self, node_id, x=0.0, y=0.0, tx_power_dbm=None, noise_figure_db=None,
                 antenna_gain_db=0.0):
        with self._lock:
            if node_id in self._nodes:
                raise MediumError("node already on the medium", node=node_id)
            self._nodes[node_id] = _Node(
                node_id, float(x), float(y),
                self.default_power_dbm if tx_power_dbm is None else tx_power_dbm,
                self.noise_figure_db if noise_figure_db is None else noise_figure_db,
                antenna_gain_db)
            self._neigh.clear()

    def attach(self, node_id, listener):
        with self._lock:
            self._node(node_id).listener = listener

    def set_links(self, links):
        """Only these links exist from now on (None: the path-loss model decides)."""
        with self._lock:
            if links is None:
                self._links = None
            else:
                table = {}
                for ln in links:
                    a, b = ln["a"], ln["b"]
                    entry = (float(ln.get("loss", 0.0)), ln.get("rssi_dbm"))
                    table[(a, b)] = entry
                    if not ln.get("oneway"):
                        table[(b, a)] = entry
                self._links = table
            self._neigh.clear()

    def nodes(self):
        return list(self._nodes)

    def _node(self, node_id):
        try:
            return self._nodes[node_id]
        except KeyError:
            raise MediumError("no such node on the medium", node=node_id) from None

    def mean_rssi_dbm(self, a, b, power_dbm=None):
        """Mean RSSI of a's frames at b (no per-frame fading)."""
        base = self._budget.get((a, b))
        if base is None:
            base = self._base(a, b)
        return base + (self._node(a).power if power_dbm is None else power_dbm)

    def _gain_mw(self, a, b):
        """The link budget a->b without the tx power, as a linear factor."""
        g = self._budget_mw.get((a, b))
        if g is None:
            base = self._budget.get((a, b))
            g = _mw(self._base(a, b) if base is None else base)
            self._budget_mw[(a, b)] = g
        return g

    def _base(self, a, b):
        na, nb = self._node(a), self._node(b)
        key = (a, b)
        base = self._budget.get(key)
        if base is None:
            d = max(math.hypot(na.x - nb.x, na.y - nb.y), self.ref_distance_m)
            loss = self.ref_loss_db + 10 * self.exponent * math.log10(d / self.ref_distance_m)
            lo, hi = (a, b) if str(a) <= str(b) else (b, a)
            loss += self.shadowing_db * _gauss(self.seed, "shadow", lo, hi)
            if self.asymmetry_db:
                loss += self.asymmetry_db * _gauss(self.seed, "asym", a, b)
            base = na.gain + nb.gain - loss
            self._budget[key] = base
        return base

    def link_exists(self, a, b):
        return self._links is None or (a, b) in self._links

    def _neighbours(self, a, threshold):
        key = (a, int(threshold))
        got = self._neigh.get(key)
        if got is None:
            if self._links is not None:
                got = [b for (x, b) in self._links if x == a and b in self._nodes]
            else:
                got = [b for b in self._nodes
                       if b != a and self.mean_rssi_dbm(a, b) >= threshold]
            self._neigh[key] = got
        return got

    # -- time -------------------------------------------------------------

    def schedule(self, at_us, fn, *args):
        """Call ``fn(*args)`` when simulated time reaches ``at_us``; -> a token
        for ``cancel``. Callbacks at the same instant run in scheduling order."""
        with self._lock:
            if at_us < self.now_us:
                raise MediumError("cannot schedule in the past", at=at_us, now=self.now_us)
            ev = [at_us, self._seq, fn, args, True]
            self._seq += 1
            heapq.heappush(self._queue, ev)
            return ev

    def cancel(self, token):
        token[4] = False

    def next_event_us(self):
        with self._lock:
            while self._queue and not self._queue[0][4]:
                heapq.heappop(self._queue)
            return self._queue[0][0] if self._queue else None

    def run_until(self, t_us):
        """Process every event up to ``t_us`` in order; then now = t_us."""
        if t_us < self.now_us:
            raise MediumError("time runs forward only", to=t_us, now=self.now_us)
        while True:
            with self._lock:
                if not self._queue or self._queue[0][0] > t_us:
                    self.now_us = t_us
                    return
                ev = heapq.heappop(self._queue)
                if not ev[4]:
                    continue
                self.now_us = ev[0]
                fn, args = ev[2], ev[3]
                notes = self._finish(args[0]) if fn is _finish_marker else [(fn, args)]
            for f, a in notes:
                f(*a)

    def advance(self, dt_us):
        self.run_until(self.now_us + dt_us)

    # -- radio state --------------------------------------------------------

    def listen(self, node_id, params):
        """Receive with ``params`` from now on (None: stop). Listening again
        with equal parameters changes nothing; anything else drops the frames
        being received (a receiver restarted loses them)."""
        with self._lock:
            n = self._node(node_id)
            if params is not None and n.rx is not None and n.rx == params:
                return
            self._leave_rx(n)
            n.rx = params if n.up else None

    def listening(self, node_id):
        return self._node(node_id).rx

    def receiving(self, node_id):
        """Is a frame the node may still receive on the air now (its preamble
        was heard: a receiver's timeout stops there)?"""
        with self._lock:
            return bool(self._node(node_id).pending)

    def transmit(self, node_id, frame, params, power_dbm=None, toa_us=None, relisten=False):
        """Start sending ``frame`` now; -> its end time (us), None if the node
        is down. ``relisten``: receive again with the previous parameters
        when the frame ends (what the mesh simulator's nodes want)."""
        with self._lock:
            n = self._node(node_id)
            if not n.up:
                self.counters["tx_while_down"] += 1
                return None
            if n.tx is not None:
                raise MediumError("node already transmitting", node=node_id)
            back = n.rx
            self._leave_rx(n)
            n.rx = None
            toa = params.toa_us(len(frame)) if toa_us is None else toa_us
            power = n.power if power_dbm is None else power_dbm
            tx = _Tx(node_id, bytes(frame), params, power, self.now_us, self.now_us + toa)
            tx.relisten = back if relisten else None
            threshold = params.sensitivity_dbm() - 3 * self.fading_db - 1 - (power - n.power)
            # A LoRa receiver locks on the first preamble it detects: one already
            # receiving a frame only suffers this one as interference.
            lock = self._collisions(params)
            for r in self._neighbours(node_id, threshold):
                rn = self._nodes[r]
                if (rn.up and rn.tx is None and rn.rx is not None and rn.rx.hears(params)
                        and not (lock and rn.pending and _locked(rn, params))):
                    tx.receivers.append(r)
                    rn.pending.add(tx)
            self._air.append(tx)
            n.tx = tx
            n.airtime_us += toa
            self.counters["frames"] += 1
            tx.event = self.schedule(tx.end, _finish_marker, tx)
            return tx.end

    def abort(self, node_id):
        """Stop the node's transmission now (its receivers get nothing)."""
        with self._lock:
            n = self._node(node_id)
            tx = n.tx
            if tx is None:
                return
            self.cancel(tx.event)
            n.airtime_us -= tx.end - self.now_us
            tx.end = self.now_us
            for r in tx.receivers:
                self._nodes[r].pending.discard(tx)
            tx.receivers = []
            n.tx = None
            self.counters["aborted"] += 1

    def set_down(self, node_id):
        with self._lock:
            n = self._node(node_id)
            self.abort(node_id)
            self._leave_rx(n)
            n.rx = None
            n.up = False
            listener = n.listener
        if listener is not None and hasattr(listener, "on_power"):
            listener.on_power(False)

    def set_up(self, node_id):
        with self._lock:
            n = self._node(node_id)
            n.up = True
            listener = n.listener
        if listener is not None and hasattr(listener, "on_power"):
            listener.on_power(True)

    def is_up(self, node_id):
        return self._node(node_id).up

    def airtime_us(self, node_id):
        return self._node(node_id).airtime_us

    def _leave_rx(self, n):
        for tx in n.pending:
            if n.id in tx.receivers:
                tx.receivers.remove(n.id)
                self.counters["interrupted"] += 1
        n.pending = set()

    # -- what a receiver measures ---------------------------------------

    def channel_power_dbm(self, node_id, params):
        """Instantaneous power in the node's channel: noise plus every frame
        on the air now (what GetRssiInst / RegRssiValue read)."""
        with self._lock:
            n = self._node(node_id)
            total = _mw(params.noise_dbm(n.nf))
            for tx in self._air:
                if (tx.start <= self.now_us < tx.end and tx.src != node_id
                        and params.overlaps(tx.params) and self.link_exists(tx.src, node_id)):
                    total += _mw(self.mean_rssi_dbm(tx.src, node_id, tx.power))
            return 10 * math.log10(total)

    def activity(self, node_id, params, start_us, end_us):
        """Channel activity detection: did a frame the node could demodulate
        (its preamble or payload) overlap [start, end)?"""
        with self._lock:
            for tx in self._air:
                if (tx.src != node_id and tx.start < end_us and tx.end > start_us
                        and params.hears(tx.params) and self.link_exists(tx.src, node_id)
                        and self.mean_rssi_dbm(tx.src, node_id, tx.power)
                        >= tx.params.sensitivity_dbm()):     # its SF's (multi-SF receivers)
                    return True
            return False

    # -- the end of a frame ---------------------------------------------------

    def _finish(self, tx):
        n = self._nodes[tx.src]
        notes = []
        if n.tx is tx:
            n.tx = None
            if tx.relisten is not None and n.up and n.rx is None:
                n.rx = tx.relisten
            if n.listener is not None:
                notes.append((n.listener.on_tx_done, (tx.end,)))
        others = None
        if tx.receivers and self._collisions(tx.params):
            others = [o for o in self._air
                      if o is not tx and o.end > tx.start and o.start < tx.end
                      and o.params.kind == tx.params.kind and tx.params.overlaps(o.params)]
        for r in tx.receivers:
            rn = self._nodes[r]
            rn.pending.discard(tx)
            lst = rn.listener
            if lst is not None and hasattr(lst, "accepts") and not lst.accepts(tx.frame):
                self.counters["unread"] += 1
                continue
            rec = self._receive(tx, rn, others)
            if rec is not None and rn.listener is not None:
                notes.append((rn.listener.on_frame, (rec,)))
        tx.receivers = []
        self._prune()
        return notes

    def _receive(self, tx, rn, others):
        rssi = self.mean_rssi_dbm(tx.src, rn.id, tx.power)
        if self.fading_db:
            rssi += self.rng.gauss(0.0, self.fading_db)
        p = rn.rx
        sens = tx.params.sensitivity_dbm()      # the receiver's own for a single-SF one
        loss = self.frame_loss
        if self._links is not None:
            loss, fixed = self._links[(tx.src, rn.id)]
            if fixed is not None:
                rssi = float(fixed)
            elif rssi < sens + TABLE_LINK_MARGIN_DB:
                rssi = sens + TABLE_LINK_MARGIN_DB
        snr = rssi - p.noise_dbm(rn.nf)
        if rssi < sens or snr < tx.params.snr_limit_db():
            self.counters["below_sensitivity"] += 1
            return None
        if others and self._destroyed(tx, rn.id, rssi, others):
            self.counters["collisions"] += 1
            return Reception(tx.frame, rssi, snr, tx.src, tx.start, tx.end, False, "collision",
                             tx.params)
        if loss and self.rng.random() < loss:
            self.counters["random_loss"] += 1
            return None
        self.counters["delivered"] += 1
        return Reception(tx.frame, rssi, snr, tx.src, tx.start, tx.end, True, None, tx.params)

    def _collisions(self, params):
        return self.collisions if self.collisions is not None else params.kind == "lora"

    def _destroyed(self, tx, r, rssi, others):
        """Energy-based capture (ns-3 lorawan): per interfering SF, the wanted
        frame's energy over the interferers' energy in the overlap must reach
        the isolation of ``ISOLATION_DB`` (Wi-Fi: ``WIFI_CAPTURE_DB``)."""
        energy = {}
        gains = self._budget_mw
        links = self._links
        t0, t1 = tx.start, tx.end
        for o in others:                  # the simulator's hottest loop: inlined
            src = o.src
            if src == r or (links is not None and (src, r) not in links):
                continue
            overlap = (o.end if o.end < t1 else t1) - (o.start if o.start > t0 else t0)
            if overlap <= 0:
                continue
            g = gains.get((src, r))
            if g is None:
                g = self._gain_mw(src, r)
            sf = o.params.sf
            energy[sf] = energy.get(sf, 0.0) + g * o.power_mw * overlap
        if not energy:
            return False
        wanted = _mw(rssi) * (tx.end - tx.start)
        for sf in energy:
            if 10 * math.log10(wanted / energy[sf]) < _isolation(tx.params, sf):
                return True
        return False

    def _prune(self):
        now = self.now_us
        horizon = now
        for t in self._air:
            if t.end > now and t.start < horizon:
                horizon = t.start
        self._air = [t for t in self._air if t.end > horizon]

    def stats(self):
        with self._lock:
            out = dict(self.counters)
            out["airtime_us"] = {k: n.airtime_us for k, n in self._nodes.items()}
            return out

    # -- scenarios ------------------------------------------------------------

    @classmethod
    def from_scenario(cls, scenario, seed=0, schedule_events=True):
        """A medium for a ``wum-hil mesh-sim`` scenario (issue 10's JSON):
        nodes at (x, y) metres, ``path_loss``, ``frame_loss``, ``links`` and,
        with ``schedule_events``, the down/up ``events`` at ``at_h`` hours."""
        radio = scenario.get("radio", {})
        kind = radio.get("kind", "lora")
        power = radio.get("tx_power_dbm", 14.0 if kind == "lora" else 20.0)
        m = cls(seed=seed, path_loss=scenario.get("path_loss"),
                frame_loss=scenario.get("frame_loss", 0.0), links=scenario.get("links"),
                default_power_dbm=power)
        for node in scenario.get("nodes", []):
            m.add_node(node["id"], node.get("x", 0.0), node.get("y", 0.0))
        if schedule_events:
            for ev in scenario.get("events", []):
                action = {"down": m.set_down, "up": m.set_up}.get(ev.get("action"))
                if action is None:
                    raise MediumError("event action must be down or up", event=ev)
                m.schedule(int(round(ev["at_h"] * 3600e6)), action, ev["node"])
        return m


def _locked(rn, params):
    """Is receiver ``rn`` (with frames pending) locked against a new frame
    sent with ``params``? A single-SF receiver is; a multi-SF one only on
    that frame's SF (each SF has its own demodulator)."""
    if rn.rx.sfs is None:
        return True
    for t in rn.pending:
        if t.params.sf == params.sf:
            return True
    return False


def _finish_marker(tx):
    """Queue marker for the end of a transmission (handled inside the lock)."""


class RealtimeMedium:
    """Advances a medium with the wall clock (x ``speed``) from a thread,
    every ``tick_s``; for rigs where drivers run in real time."""

    def __init__(self, medium, speed=1.0, tick_s=0.001):
        self.medium = medium
        self.speed = speed
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        t0 = time.monotonic()
        s0 = self.medium.now_us

        def run():
            while not self._stop.wait(self.tick_s):
                self.medium.run_until(s0 + int((time.monotonic() - t0) * self.speed * 1e6))

        self._thread = threading.Thread(target=run, name="radio-medium", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
