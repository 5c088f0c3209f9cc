"""The demo store's labelled fraud history: legitimate shoppers plus four known fraud patterns.

`add_fraud_history(rows, seed, today)` adds to the rows `commerce.seed.generate_store` made (it
never changes them, except to count the new orders in the daily sales):

- **Legitimate shoppers** (new customers): the base the model must not flag, with the confounders
  real shoppers have: orders minutes after signing up, new cards used at once, moves, gifts to
  another name and address, addresses fixed after ordering, several orders in one evening, gift-card
  payments, returns, a few serial returners, cancellations. The 1,000 tau2 orders are legitimate too.
- **account_takeover**: an established account gets a new card and a new shipping address (on the
  account or on an order just placed) and buys resellable goods within hours.
- **card_testing**: a fresh account runs a burst of small orders, each on another new card, many
  cancelled, sometimes ending in one large order.
- **refund_abuse**: accounts whose delivered orders are refunded again and again ("not received").
- **reshipping**: new accounts with new cards ship electronics to a few shared drop addresses under
  a name that is not the account holder's.

Every fraudulent order gets a `FraudLabel` (pattern, case id); all other orders are legitimate.
One takeover is fixed for the demo (DEMO_TAKEOVER_*): a delivered order of an existing tau2 customer.
The conversation-test customers (PROTECTED_CUSTOMERS) are never touched.

Determinism: every random draw comes from `commerce.seed._rng(seed, "fraud", ...)`, ids are drawn
in a fixed order and checked against those already used, and times are relative to `today`.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from commerce.fraud_features import HIGH_RISK_PRODUCTS
from commerce.seed import (
    CANCEL_REASONS,
    HISTORY_DAYS,
    WAREHOUSES,
    _now_naive,
    _pick_carrier,
    _rng,
    _sample_time,
    _shipment_plan,
)

PROTECTED_CUSTOMERS = frozenset({"james_li_5688", "aarav_anderson_8794"})
DEMO_TAKEOVER_CUSTOMER = "harper_silva_8534"
DEMO_TAKEOVER_ORDER = "#W8011920"

N_LEGIT_CUSTOMERS = 350
N_TAKEOVERS = 30
N_CARD_TESTING = 14
N_REFUND_ABUSERS = 14
N_DROPS = 4
ACCOUNTS_PER_DROP = 9

CHEAP_PRODUCTS = frozenset({"Notebook", "Jigsaw Puzzle", "LED Light Bulb", "Water Bottle", "T-Shirt"})
DROP_STREETS = ("Freight Lane", "Commerce Park Drive", "Cargo Way", "Logistics Boulevard")
PENDING_DAYS = 3  # orders younger than this are pending; older generated ones are delivered or cancelled
SHIPPED_DAYS = 20  # generated orders are either younger than PENDING_DAYS or older than this


@dataclass
class _Customer:
    id: str
    first: str
    last: str
    created: datetime
    address: dict[str, str]  # the default address
    methods: list[tuple[str, str, datetime]] = field(default_factory=list)  # (id, kind, added_at)
    order_times: list[datetime] = field(default_factory=list)


class _History:
    """Appends consistent rows (orders with items, shipment story, payments; customers; labels)."""

    def __init__(self, rows: dict[str, list[dict[str, Any]]], seed: int, today: date) -> None:
        self.rows = rows
        self.seed = seed
        self.today = today
        self.now = _now_naive(today)
        self.start = datetime.combine(today - timedelta(days=HISTORY_DAYS), time(0))
        self.next_id = {
            t: max((r["id"] for r in rows[t]), default=0) + 1
            for t in ("address", "orderitem", "shipment", "shipmentevent", "payment", "addresschange")
        }
        self.order_ids = {r["id"] for r in rows["orders"]}
        self.customer_ids = {r["id"] for r in rows["customer"]}
        self.emails = {r["email"] for r in rows["customer"]}
        self.method_ids = {r["id"] for r in rows["paymentmethod"]}
        self.method_added = {r["id"]: r["added_at"] for r in rows["paymentmethod"]}
        self.tracking = {r["tracking_id"] for r in rows["shipment"]}
        self.firsts = sorted({r["first_name"] for r in rows["customer"]})
        self.lasts = sorted({r["last_name"] for r in rows["customer"]})
        self.places = sorted({(a["city"], a["state"], a["zip"]) for a in rows["address"]})
        self.streets = sorted(
            {a["address1"].split(" ", 1)[1] for a in rows["address"] if " " in a["address1"]}
        )
        names = {p["id"]: p["name"] for p in rows["product"]}
        popularity = Counter(i["product_id"] for i in rows["orderitem"])
        self.variants = [
            (v["id"], v["product_id"], names[v["product_id"]], v["price"], dict(v["options"]))
            for v in rows["variant"]
            if v["available"]
        ]
        self.weights = [popularity[v[1]] + 3.0 for v in self.variants]
        self.cheap = [v for v in self.variants if v[2] in CHEAP_PRODUCTS]
        self.risky = [v for v in self.variants if v[2] in HIGH_RISK_PRODUCTS]
        self.customers: dict[str, _Customer] = {}
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)  # generated order id -> its events
        self._shipment_order: dict[int, str] = {}

    # -- ids and names --------------------------------------------------------------------------

    def _fresh(self, used: set[str], make: Any) -> str:
        for _ in range(1000):
            value = make()
            if value not in used:
                used.add(value)
                return value
        raise RuntimeError("could not draw a fresh id")  # pragma: no cover

    def order_id(self, rng: random.Random) -> str:
        return self._fresh(self.order_ids, lambda: f"#W{rng.randint(1_000_000, 9_999_999)}")

    def name(self, rng: random.Random) -> tuple[str, str]:
        return rng.choice(self.firsts), rng.choice(self.lasts)

    def address(self, rng: random.Random, street: str | None = None) -> dict[str, str]:
        city, state, zip_code = rng.choice(self.places)
        suite = rng.choice(["", "", "", f"Apt {rng.randint(1, 40)}", f"Suite {rng.randint(100, 999)}"])
        return {
            "address1": f"{rng.randint(10, 9999)} {street or rng.choice(self.streets)}",
            "address2": suite,
            "city": city,
            "state": state,
            "zip": zip_code,
            "country": "USA",
        }

    # -- customers, addresses, payment methods -------------------------------------------------------

    def new_customer(self, rng: random.Random, created: datetime) -> _Customer:
        first, last = self.name(rng)
        cid = self._fresh(
            self.customer_ids, lambda: f"{first.lower()}_{last.lower()}_{rng.randint(1000, 9999)}"
        )
        email = self._fresh(
            self.emails, lambda: f"{first.lower()}.{last.lower()}{rng.randint(1000, 9999)}@example.com"
        )
        created = created.replace(microsecond=0)
        addr = self.address(rng)
        self.rows["customer"].append(
            {"id": cid, "first_name": first, "last_name": last, "email": email, "created_at": created}
        )
        self.add_address(cid, addr, created, default=True)
        cust = _Customer(cid, first, last, created, addr)
        self.customers[cid] = cust
        return cust

    def existing(self, cid: str) -> _Customer:
        if cid not in self.customers:
            row = next(r for r in self.rows["customer"] if r["id"] == cid)
            addr = next(a for a in self.rows["address"] if a["customer_id"] == cid and a["is_default"])
            cust = _Customer(cid, row["first_name"], row["last_name"], row["created_at"], dict(addr))
            cust.methods = [
                (m["id"], m["kind"], m["added_at"])
                for m in self.rows["paymentmethod"]
                if m["customer_id"] == cid
            ]
            cust.order_times = sorted(o["created_at"] for o in self.rows["orders"] if o["customer_id"] == cid)
            self.customers[cid] = cust
        return self.customers[cid]

    def add_address(self, cid: str, addr: dict[str, str], at: datetime, default: bool = False) -> None:
        self.rows["address"].append(
            {
                "id": self._next("address"),
                "customer_id": cid,
                "is_default": default,
                "address1": addr["address1"],
                "address2": addr.get("address2", ""),
                "city": addr["city"],
                "state": addr["state"],
                "zip": addr["zip"],
                "country": addr.get("country", "USA"),
                "created_at": at.replace(microsecond=0),
            }
        )

    def add_method(self, rng: random.Random, cust: _Customer, kind: str, at: datetime) -> str:
        pm_id = self._fresh(self.method_ids, lambda: f"{kind}_{rng.randint(1_000_000, 9_999_999)}")
        at = max(at, cust.created).replace(microsecond=0)
        self.rows["paymentmethod"].append(
            {
                "id": pm_id,
                "customer_id": cust.id,
                "kind": kind,
                "brand": rng.choice(["visa", "mastercard"]) if kind == "credit_card" else None,
                "last_four": f"{rng.randint(0, 9999):04d}" if kind == "credit_card" else None,
                "balance": round(rng.uniform(0, 400), 2) if kind == "gift_card" else None,
                "added_at": at,
            }
        )
        cust.methods.append((pm_id, kind, at))
        self.method_added[pm_id] = at
        return pm_id

    def change_address(
        self,
        cust: _Customer,
        at: datetime,
        old: dict[str, str],
        new: dict[str, str],
        order_id: str | None = None,
        recipient: str | None = None,
    ) -> None:
        self.rows["addresschange"].append(
            {
                "id": self._next("addresschange"),
                "customer_id": cust.id,
                "order_id": order_id,
                "changed_at": at.replace(microsecond=0),
                "channel": "web",
                "old_address1": old["address1"],
                "old_zip": old["zip"],
                "address1": new["address1"],
                "address2": new.get("address2", ""),
                "city": new["city"],
                "state": new["state"],
                "zip": new["zip"],
                "country": new.get("country", "USA"),
                "recipient_name": recipient,
            }
        )
        if order_id is None:
            self.add_address(cust.id, new, at)

    def label(self, order_id: str, cid: str, pattern: str, case_id: str) -> None:
        self.rows["fraudlabel"].append(
            {"order_id": order_id, "customer_id": cid, "pattern": pattern, "case_id": case_id}
        )

    def _next(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] += 1
        return value

    # -- times ------------------------------------------------------------------------------------

    def fit(self, t: datetime) -> datetime:
        """A time an order can have: pending (last PENDING_DAYS) or old enough to be delivered."""
        t = min(t, self.now - timedelta(minutes=10))
        if self.now - timedelta(days=SHIPPED_DAYS) < t < self.now - timedelta(days=PENDING_DAYS):
            t -= timedelta(days=SHIPPED_DAYS - PENDING_DAYS)
        return max(t, self.start + timedelta(hours=1)).replace(microsecond=0)

    def episode_start(
        self, rng: random.Random, span: timedelta, recent: bool, earliest: datetime
    ) -> datetime | None:
        """The start of an episode lasting `span`, wholly pending (recent) or wholly shippable (else
        the other window; None when neither fits after `earliest`)."""
        windows = [
            (
                max(self.start + timedelta(days=1), earliest),
                self.now - timedelta(days=SHIPPED_DAYS + 2) - span,
            ),
            (
                max(self.now - timedelta(days=PENDING_DAYS) + timedelta(hours=1), earliest),
                self.now - span - timedelta(minutes=15),
            ),
        ]
        if recent:
            windows.reverse()
        for lo, hi in windows:
            if hi > lo + timedelta(minutes=5):
                return _sample_time(rng, lo, hi, self.today)
        return None

    # -- orders -------------------------------------------------------------------------------------

    def pick(self, rng: random.Random, pool: list | None = None, k: int = 1) -> list[tuple]:
        if pool is None:
            return rng.choices(self.variants, weights=self.weights, k=k)
        return [rng.choice(pool) for _ in range(k)]

    def place_order(
        self,
        rng: random.Random,
        cust: _Customer,
        created: datetime,
        variants: list[tuple],
        methods: list[str],
        ship: dict[str, str] | None = None,
        ship_name: str | None = None,
        cancel: bool = False,
        refund_share: float = 0.0,
        order_id: str | None = None,
    ) -> str:
        """One order with its items, payments and shipment story; status follows its age.

        `methods`: one payment method, or a gift card first and the method paying the rest.
        `refund_share` > 0: after delivery, that share of the total is refunded (a return or a claim)."""
        created = created.replace(microsecond=0)
        if not (self.start <= created <= self.now - timedelta(minutes=10)) or created <= cust.created:
            raise RuntimeError(
                f"order of {cust.id} at {created} is outside the store's history"
            )  # pragma: no cover
        late = [m for m in methods if self.method_added[m] >= created]
        if late:
            raise RuntimeError(
                f"payment methods {late} added after the order at {created}"
            )  # pragma: no cover
        oid = order_id or self.order_id(rng)
        if order_id:
            self.order_ids.add(order_id)
        ship = ship or cust.address
        total = round(sum(v[3] for v in variants), 2)
        status = "pending" if created >= self.now - timedelta(days=PENDING_DAYS) else "delivered"
        cancelled_at = None
        if cancel:
            status = "cancelled"
            cancelled_at = min(
                created + timedelta(seconds=rng.randint(300, 36 * 3600)), self.now - timedelta(minutes=1)
            )
        row = {
            "id": oid,
            "customer_id": cust.id,
            "status": status,
            "created_at": created,
            "updated_at": cancelled_at or created,
            "ship_address1": ship["address1"],
            "ship_address2": ship.get("address2", ""),
            "ship_city": ship["city"],
            "ship_state": ship["state"],
            "ship_zip": ship["zip"],
            "ship_country": ship.get("country", "USA"),
            "ship_name": ship_name,
            "cancel_reason": rng.choice(CANCEL_REASONS) if cancel else None,
            "cancelled_at": cancelled_at,
        }
        self.rows["orders"].append(row)
        cust.order_times.append(created)
        for vid, pid, name, price, options in variants:
            self.rows["orderitem"].append(
                {
                    "id": self._next("orderitem"),
                    "order_id": oid,
                    "variant_id": vid,
                    "product_id": pid,
                    "name": name,
                    "price": price,
                    "options": dict(options),
                }
            )
        paid: list[tuple[str, float]] = []
        if len(methods) > 1 and status != "pending":  # pending orders stay one payment (easy to cancel)
            first = round(min(total * rng.uniform(0.2, 0.7), total - 0.01), 2)
            paid = [(methods[0], first), (methods[1], round(total - first, 2))]
        else:
            paid = [(methods[0], total)]
        pay_at = created + timedelta(seconds=rng.randint(5, 90))
        for k, (method, amount) in enumerate(paid):
            self._payment(oid, "payment", amount, method, pay_at + timedelta(seconds=k))
        vids = [v[0] for v in variants]
        carrier = _pick_carrier(rng)
        tracking = self._fresh(self.tracking, lambda: str(rng.randint(10**11, 10**12 - 1)))
        if status == "cancelled":
            assert cancelled_at is not None
            origin = WAREHOUSES.get(ship["state"], "Columbus, OH")
            label_at = created + timedelta(
                seconds=int((cancelled_at - created).total_seconds() * rng.uniform(0.1, 0.9))
            )
            sid = self._shipment(oid, carrier, tracking, "cancelled", None, None, None, vids)
            self._event(
                sid, label_at, "label_created", origin, f"Shipping label created, {carrier} awaiting item"
            )
            self._event(sid, cancelled_at, "cancelled", origin, "Order cancelled before pickup; label voided")
            for k, (method, amount) in enumerate(paid):
                self._payment(oid, "refund", amount, method, cancelled_at + timedelta(seconds=30 + k))
        elif status == "delivered":
            delay = rng.choices([-1, 0, 1, 2, 3], weights=[10, 70, 12, 6, 2])[0]
            pickup, estimate, events = _shipment_plan(
                rng, created, carrier, ship["city"], ship["state"], delay
            )
            delivered = events[-1][0]
            if delivered > self.now - timedelta(hours=1) or created > self.now - timedelta(days=7):
                raise RuntimeError(
                    f"generated order {oid} cannot be delivered by {self.now}"
                )  # pragma: no cover
            sid = self._shipment(oid, carrier, tracking, "delivered", pickup, estimate, delivered, vids)
            for at, st, location, desc in events:
                self._event(sid, at, st, location, desc)
            row["updated_at"] = delivered
            if refund_share > 0:
                refund_at = delivered + timedelta(seconds=rng.randint(86400, 20 * 86400))
                if refund_at < self.now - timedelta(hours=1):
                    self._payment(oid, "refund", round(total * refund_share, 2), paid[-1][0], refund_at)
        return oid

    def _payment(self, oid: str, kind: str, amount: float, method: str, at: datetime) -> None:
        self.rows["payment"].append(
            {
                "id": self._next("payment"),
                "order_id": oid,
                "kind": kind,
                "amount": amount,
                "payment_method_id": method,
                "created_at": at.replace(microsecond=0),
            }
        )

    def _shipment(
        self, oid: str, carrier: str, tracking: str, status: str, shipped, estimate, delivered, vids
    ) -> int:  # type: ignore[no-untyped-def]
        sid = self._next("shipment")
        self._shipment_order[sid] = oid
        self.rows["shipment"].append(
            {
                "id": sid,
                "order_id": oid,
                "carrier": carrier,
                "tracking_id": tracking,
                "status": status,
                "shipped_at": shipped,
                "estimated_delivery": estimate,
                "delivered_at": delivered,
                "variant_ids": list(vids),
            }
        )
        return sid

    def _event(self, sid: int, at: datetime, status: str, location: str, description: str) -> None:
        event = {
            "id": self._next("shipmentevent"),
            "shipment_id": sid,
            "at": at.replace(microsecond=0),
            "status": status,
            "location": location,
            "description": description,
        }
        self.rows["shipmentevent"].append(event)
        self.events[self._shipment_order[sid]].append(event)

    # -- finishing ------------------------------------------------------------------------------------

    def fold_daily_sales(self) -> None:
        """Every non-cancelled order's units are part of the daily sales (as seed does for tau2)."""
        status = {o["id"]: (o["status"], o["created_at"].date()) for o in self.rows["orders"]}
        counts: Counter[tuple[str, date]] = Counter()
        for it in self.rows["orderitem"]:
            st, day = status[it["order_id"]]
            if st != "cancelled":
                counts[(it["variant_id"], day)] += 1
        for r in self.rows["dailysales"]:
            need = counts.get((r["variant_id"], r["day"]))
            if need and r["units"] < need:
                r["units"] = need


# ---- legitimate shoppers ---------------------------------------------------------------------------------


def _legit_customer(h: _History, i: int) -> _Customer:
    rng = _rng(h.seed, "fraud", "legit", str(i))
    created = (
        h.start
        - timedelta(days=365)
        + timedelta(
            seconds=int(
                rng.random() * ((h.now - timedelta(days=2)) - (h.start - timedelta(days=365))).total_seconds()
            )
        )
    )
    cust = h.new_customer(rng, created)
    active_from = max(created, h.start) + timedelta(minutes=30)
    active_days = (h.now - active_from).days
    n_orders = 1 + min(14, int(rng.expovariate(1.0) * 2.2 * active_days / 365.0 + 0.5))
    times: list[datetime] = []
    if created >= h.start and rng.random() < 0.35:  # shops right after signing up
        times.append(created + timedelta(seconds=rng.randint(120, 86400)))
    while len(times) < n_orders:
        t = _sample_time(rng, active_from, h.now - timedelta(minutes=20), h.today)
        times.append(t)
        if rng.random() < 0.10 and len(times) < n_orders:  # a second order the same evening
            times.append(t + timedelta(seconds=rng.randint(600, 9000)))
    # Fitting moves some times back past the signup: those are dropped (a pending order stands in).
    times = sorted({f for t in times if (f := h.fit(t)) > created + timedelta(minutes=1)}) or [
        h.now - timedelta(seconds=rng.randint(900, 47 * 3600))
    ]

    gift_heavy = rng.random() < 0.15
    serial_returner = rng.random() < 0.04
    main_kind = (
        "gift_card" if gift_heavy else rng.choices(["credit_card", "paypal", "gift_card"], [50, 35, 15])[0]
    )
    first_gap = (times[0] - created).total_seconds()
    main = h.add_method(
        rng, cust, main_kind, created + timedelta(seconds=int(first_gap * rng.random() ** 3 * 0.9))
    )
    gift = None
    if main_kind != "gift_card" and rng.random() < 0.12:
        gift = h.add_method(
            rng, cust, "gift_card", created + timedelta(seconds=int(first_gap * rng.random() * 0.9))
        )
    elif gift_heavy:
        gift = main
        main = h.add_method(
            rng, cust, "credit_card", created + timedelta(seconds=int(first_gap * rng.random() * 0.9))
        )

    new_card_at = None
    if len(times) >= 2 and rng.random() < 0.25:  # a new card later, used at once half the time
        k = rng.randint(1, len(times) - 1)
        gap = (times[k] - times[k - 1]).total_seconds()
        back = rng.randint(60, 3600) if rng.random() < 0.5 else int(gap * rng.uniform(0.1, 0.9))
        new_card_at = (k, times[k] - timedelta(seconds=max(30, min(back, int(gap) - 60))))
    move_at = None
    if len(times) >= 2 and rng.random() < 0.12:  # moves house between two orders
        k = rng.randint(1, len(times) - 1)
        move_at = (k, times[k - 1] + (times[k] - times[k - 1]) * rng.uniform(0.2, 0.95))

    home = cust.address
    for k, t in enumerate(times):
        if new_card_at and new_card_at[0] == k:
            main = h.add_method(rng, cust, "credit_card", new_card_at[1])
        if move_at and move_at[0] == k:
            moved = h.address(rng)
            h.change_address(cust, move_at[1], home, moved)
            home = moved
        methods = [main]
        if gift and rng.random() < (0.8 if gift_heavy else 0.3):
            methods = [gift, main] if rng.random() < 0.5 else [gift]
        ship, ship_name = home, None
        if rng.random() < 0.07:  # a gift, shipped to someone else
            first, last = h.name(rng)
            ship, ship_name = h.address(rng), f"{first} {last if rng.random() < 0.8 else cust.last}"
        n_items = rng.choices([1, 2, 3, 4], [60, 25, 10, 5])[0]
        returns = 0.0
        if rng.random() < (0.4 if serial_returner else 0.06):
            returns = 1.0 if n_items == 1 else rng.choice([0.5, 1.0])
        oid = h.place_order(
            rng,
            cust,
            t,
            h.pick(rng, k=n_items),
            methods,
            ship=ship,
            ship_name=ship_name,
            cancel=rng.random() < 0.05,
            refund_share=returns,
        )
        if rng.random() < 0.03:  # fixed the address shortly after ordering (office, neighbour)
            fixed = h.address(rng)
            _redirect(h, cust, oid, t + timedelta(seconds=rng.randint(300, 5400)), fixed, None)
    return cust


def _redirect(
    h: _History, cust: _Customer, oid: str, at: datetime, new: dict[str, str], recipient: str | None
) -> None:
    """An order-level address change: the order (and its shipment story) goes to `new`."""
    order = next(o for o in reversed(h.rows["orders"]) if o["id"] == oid)
    old = {"address1": order["ship_address1"], "zip": order["ship_zip"]}
    h.change_address(cust, min(at, h.now - timedelta(minutes=5)), old, new, order_id=oid, recipient=recipient)
    order.update(
        ship_address1=new["address1"],
        ship_address2=new.get("address2", ""),
        ship_city=new["city"],
        ship_state=new["state"],
        ship_zip=new["zip"],
        ship_country=new.get("country", "USA"),
    )
    if recipient:
        order["ship_name"] = recipient
    dest = f"{new['city']}, {new['state']}"
    for e in h.events.get(oid, []):
        if e["status"] in ("out_for_delivery", "delivered") or e["description"].startswith(
            "Arrived at destination"
        ):
            e["location"] = dest


# ---- fraud ------------------------------------------------------------------------------------------------


def _takeover(
    h: _History,
    rng: random.Random,
    case: str,
    victim: _Customer,
    t0: datetime,
    *,
    new_card: bool,
    on_account: bool,
    n_orders: int,
    order_id: str | None = None,
    variants: list[tuple] | None = None,
) -> None:
    owned = [m for m, _, added in victim.methods if added < t0]
    new_card = new_card or not owned
    method = h.add_method(rng, victim, "credit_card", t0) if new_card else rng.choice(owned)
    drop = h.address(rng)
    first, last = h.name(rng)
    recipient = f"{first} {last}" if rng.random() < 0.6 or order_id else None
    t = t0 + timedelta(seconds=rng.randint(120, 1800))
    if on_account:
        h.change_address(victim, t, victim.address, drop, recipient=recipient)
    for k in range(n_orders):
        t += timedelta(seconds=rng.randint(600, 3 * 3600))
        items = (
            variants
            if (k == 0 and variants)
            else h.pick(rng, h.risky if rng.random() < 0.75 else None, k=rng.randint(1, 2))
        )
        oid = h.place_order(
            rng,
            victim,
            t,
            items,
            [method],
            ship=drop if on_account else victim.address,
            ship_name=recipient if on_account else None,
            order_id=order_id if k == 0 else None,
        )
        if not on_account:  # placed to the real address, then redirected
            _redirect(h, victim, oid, t + timedelta(seconds=rng.randint(300, 3600)), drop, recipient)
        h.label(oid, victim.id, "account_takeover", case)


def _card_testing(h: _History, i: int) -> None:
    rng = _rng(h.seed, "fraud", "card_testing", str(i))
    n = rng.randint(5, 12)
    span = timedelta(minutes=10 * n + 60)
    recent = rng.random() < 0.25
    t0 = h.episode_start(rng, span, recent, h.start + timedelta(days=30))
    if t0 is None:  # pragma: no cover
        return
    cust = h.new_customer(rng, t0 - timedelta(seconds=rng.randint(120, 900)))
    case = f"ct-{i:03d}"
    t = t0
    method = ""
    for _ in range(n):
        t += timedelta(seconds=rng.randint(40, 540))
        method = h.add_method(rng, cust, "credit_card", t - timedelta(seconds=rng.randint(20, 100)))
        oid = h.place_order(rng, cust, t, h.pick(rng, h.cheap), [method], cancel=rng.random() < 0.5)
        h.label(oid, cust.id, "card_testing", case)
    if rng.random() < 0.4:  # cash out on the card that worked
        t += timedelta(seconds=rng.randint(300, 1800))
        oid = h.place_order(rng, cust, t, h.pick(rng, h.risky, k=rng.randint(1, 2)), [method])
        h.label(oid, cust.id, "card_testing", case)


def _refund_abuser(h: _History, i: int, cust: _Customer | None) -> None:
    rng = _rng(h.seed, "fraud", "refund_abuse", str(i))
    k = rng.randint(4, 8)
    span = timedelta(days=rng.randint(60, 240))
    earliest = cust.created + timedelta(days=1) if cust else h.start
    t0 = h.episode_start(rng, span, False, earliest)
    if t0 is None:  # pragma: no cover
        return
    if cust is None:
        cust = h.new_customer(rng, t0 - timedelta(days=rng.uniform(0.5, 60)))
    method = h.add_method(
        rng, cust, rng.choice(["credit_card", "paypal"]), t0 - timedelta(hours=rng.uniform(1, 48))
    )
    case = f"ra-{i:03d}"
    times = sorted(h.fit(t0 + span * rng.random()) for _ in range(k))
    for t in times:
        mid = [v for v in h.variants if 100 <= v[3] <= 600]
        claim = 1.0 if rng.random() < 0.8 else 0.0
        oid = h.place_order(
            rng, cust, max(t, t0), h.pick(rng, mid, k=rng.randint(1, 2)), [method], refund_share=claim
        )
        h.label(oid, cust.id, "refund_abuse", case)


def _reshipping(h: _History, d: int) -> None:
    rng = _rng(h.seed, "fraud", "reshipping", str(d))
    drop = h.address(rng, street=DROP_STREETS[d % len(DROP_STREETS)])
    drop["address2"] = f"Unit {rng.randint(100, 999)}"
    mule = " ".join(h.name(rng))
    recent = d == N_DROPS - 1
    window = timedelta(days=1) if recent else timedelta(days=rng.randint(14, 40))
    w0 = h.episode_start(rng, window + timedelta(hours=3), recent, h.start + timedelta(days=60))
    if w0 is None:  # pragma: no cover
        return
    for a in range(ACCOUNTS_PER_DROP):
        arng = _rng(h.seed, "fraud", "reshipping", str(d), str(a))
        t = w0 + window * arng.random()
        cust = h.new_customer(arng, t - timedelta(seconds=arng.randint(60, 3 * 86400)))
        for k in range(arng.choice([1, 1, 2])):
            t += timedelta(seconds=arng.randint(600, 7200) * k)
            card = h.add_method(arng, cust, "credit_card", t - timedelta(seconds=arng.randint(60, 1800)))
            name = mule if arng.random() < 0.7 else " ".join(h.name(arng))
            oid = h.place_order(
                arng, cust, t, h.pick(arng, h.risky, k=arng.randint(1, 2)), [card], ship=drop, ship_name=name
            )
            h.label(oid, cust.id, "reshipping", f"rs-{d:03d}")


def _demo_takeover(h: _History) -> None:
    """The documented demo case: a delivered order of an existing customer placed with a card added
    minutes before and shipped to an address set minutes before, under another name."""
    rng = _rng(h.seed, "fraud", "demo")
    victim = h.existing(DEMO_TAKEOVER_CUSTOMER)
    t0 = (h.now - timedelta(days=SHIPPED_DAYS + 3)).replace(hour=1, minute=47, second=0)
    laptop = max((v for v in h.variants if v[2] == "Laptop"), key=lambda v: v[3])
    earbuds = min((v for v in h.variants if v[2] == "Wireless Earbuds"), key=lambda v: v[3])
    _takeover(
        h,
        rng,
        "ato-demo",
        victim,
        t0,
        new_card=True,
        on_account=True,
        n_orders=1,
        order_id=DEMO_TAKEOVER_ORDER,
        variants=[laptop, earbuds],
    )


# ---- entry point ----------------------------------------------------------------------------------------


def add_fraud_history(rows: dict[str, list[dict[str, Any]]], seed: int, today: date) -> dict[str, int]:
    """Append the labelled history to `rows` (see the module docstring); returns rows added per table."""
    before = {t: len(v) for t, v in rows.items()}
    for r in rows["orders"]:
        r.setdefault("ship_name", None)
    h = _History(rows, seed, today)
    if DEMO_TAKEOVER_ORDER in h.order_ids:  # pragma: no cover
        raise RuntimeError(f"{DEMO_TAKEOVER_ORDER} is already a tau2 order")
    _demo_takeover(h)
    legit = [_legit_customer(h, i) for i in range(N_LEGIT_CUSTOMERS)]

    rng = _rng(seed, "fraud", "victims")
    tau2_victims = sorted(
        cid
        for cid in {o["customer_id"] for o in rows["orders"][: before["orders"]]}
        if cid not in PROTECTED_CUSTOMERS and cid != DEMO_TAKEOVER_CUSTOMER
    )
    victims = rng.sample(tau2_victims, 18) + [
        c.id for c in rng.sample([c for c in legit if c.order_times], 12)
    ]
    for i, cid in enumerate(victims[:N_TAKEOVERS]):
        vrng = _rng(seed, "fraud", "takeover", str(i))
        victim = h.existing(cid)
        earliest = max(min(victim.order_times) + timedelta(days=7), victim.created + timedelta(days=60))
        recent = vrng.random() < 0.2
        n = vrng.choice([1, 1, 2, 3])
        t0 = h.episode_start(vrng, timedelta(hours=4 * n + 1), recent, earliest)
        if t0 is None:
            continue
        _takeover(
            h,
            vrng,
            f"ato-{i:03d}",
            victim,
            t0,
            new_card=vrng.random() < 0.75,
            on_account=vrng.random() < 0.7,
            n_orders=n,
        )
    for i in range(N_CARD_TESTING):
        _card_testing(h, i)
    veterans = [c for c in legit if c.created <= h.now - timedelta(days=400)]
    turned = _rng(seed, "fraud", "turned").sample(veterans, 6)
    for i in range(N_REFUND_ABUSERS):
        _refund_abuser(h, i, turned[i] if i < len(turned) else None)
    for d in range(N_DROPS):
        _reshipping(h, d)
    h.fold_daily_sales()
    return {t: len(v) - before.get(t, 0) for t, v in rows.items() if len(v) != before.get(t, 0)}
