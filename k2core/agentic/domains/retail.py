"""Retail store domain: users, products and orders; cancel, return, change quantities, move address."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from k2core.agentic.domains._names import ADJECTIVES, PRODUCT_NOUNS, address, address_text, person, unique_names
from k2core.agentic.env import GoalDraft, Identity, Tool, ToolEnv, ToolError

CANCEL_REASONS = ["no longer needed", "ordered by mistake"]
RETURN_REASONS = ["damaged", "wrong item", "not as described"]
ADDRESS_SCHEMA = {
    "type": "object",
    "properties": {"street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
    "required": ["street", "city", "zip"],
    "additionalProperties": False,
}


def _get(table: dict, key: str, what: str) -> dict:
    if key not in table:
        raise ToolError(f"{what} {key} not found")
    return table[key]


def _order_view(db: dict, order_id: str) -> dict:
    order = _get(db["orders"], order_id, "order")
    items = [
        {"product_id": pid, "name": db["products"][pid]["name"], "quantity": q, "unit_price": db["products"][pid]["price"]}
        for pid, q in sorted(order["items"].items())
    ]
    return {"order_id": order_id, "user_id": order["user_id"], "status": order["status"], "items": items, "total": order["total"]}


def _recompute_total(db: dict, order: dict) -> None:
    order["total"] = round(sum(db["products"][p]["price"] * q for p, q in order["items"].items()), 2)


def find_user_id_by_email(db: dict, email: str) -> dict:
    for uid, user in sorted(db["users"].items()):
        if user["email"].lower() == email.lower():
            return {"user_id": uid}
    raise ToolError(f"no user with email {email}")


def get_user_details(db: dict, user_id: str) -> dict:
    user = _get(db["users"], user_id, "user")
    return {"user_id": user_id, **copy.deepcopy(user)}


def get_order_details(db: dict, order_id: str) -> dict:
    return _order_view(db, order_id)


def search_products(db: dict, query: str) -> dict:
    hits = [
        {"product_id": pid, "name": p["name"], "price": p["price"], "stock": p["stock"]}
        for pid, p in sorted(db["products"].items())
        if query.lower() in p["name"].lower()
    ]
    return {"products": hits}


def cancel_pending_order(db: dict, order_id: str, reason: str) -> dict:
    order = _get(db["orders"], order_id, "order")
    if order["status"] != "pending":
        raise ToolError(f"order {order_id} is {order['status']}; only pending orders can be cancelled")
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    for pid, q in order["items"].items():
        db["products"][pid]["stock"] += q
    return _order_view(db, order_id)


def return_delivered_order(db: dict, order_id: str, reason: str) -> dict:
    order = _get(db["orders"], order_id, "order")
    if order["status"] != "delivered":
        raise ToolError(f"order {order_id} is {order['status']}; only delivered orders can be returned")
    order["status"] = "return requested"
    order["return_reason"] = reason
    return _order_view(db, order_id)


def set_item_quantity(db: dict, order_id: str, product_id: str, quantity: int) -> dict:
    order = _get(db["orders"], order_id, "order")
    if order["status"] != "pending":
        raise ToolError(f"order {order_id} is {order['status']}; only pending orders can be modified")
    if product_id not in order["items"]:
        raise ToolError(f"product {product_id} is not in order {order_id}")
    delta = quantity - order["items"][product_id]
    if delta > db["products"][product_id]["stock"]:
        raise ToolError(f"only {db['products'][product_id]['stock']} more units of {product_id} in stock")
    db["products"][product_id]["stock"] -= delta
    order["items"][product_id] = quantity
    _recompute_total(db, order)
    return _order_view(db, order_id)


def update_user_address(db: dict, user_id: str, address: dict) -> dict:
    user = _get(db["users"], user_id, "user")
    user["address"] = dict(address)
    return {"user_id": user_id, **copy.deepcopy(user)}


class RetailEnv(ToolEnv):
    """A small online store (τ-bench retail in miniature)."""

    name = "retail"
    domain_description = "an online store"
    identify_tool = "find_user_id_by_email"
    slot_descriptions = {
        "email": "email address",
        "order_id": "order id",
        "reason": "reason",
        "product": "product name",
        "quantity": "new quantity",
        "address": "new address",
    }

    def build_tools(self) -> list[Tool]:
        s, oid = {"type": "string"}, {"type": "string", "description": "order id such as O1234"}
        uid = {"type": "string", "description": "user id such as U101"}
        return [
            Tool("find_user_id_by_email", "read", "Look up a user id by email address.", {"email": s}, ["email"], find_user_id_by_email),
            Tool("get_user_details", "read", "Get a user's profile, address and order ids.", {"user_id": uid}, ["user_id"], get_user_details),
            Tool("get_order_details", "read", "Get an order's status, items and total.", {"order_id": oid}, ["order_id"], get_order_details),
            Tool("search_products", "read", "Find products whose name contains the query.", {"query": s}, ["query"], search_products),
            Tool(
                "cancel_pending_order", "write", "Cancel a pending order and restock its items.",
                {"order_id": oid, "reason": {"type": "string", "enum": CANCEL_REASONS}}, ["order_id", "reason"], cancel_pending_order,
                verify=lambda a: ("get_order_details", {"order_id": a["order_id"]}, lambda r: r.get("status") == "cancelled"),
            ),
            Tool(
                "return_delivered_order", "write", "Request a return for a delivered order.",
                {"order_id": oid, "reason": {"type": "string", "enum": RETURN_REASONS}}, ["order_id", "reason"], return_delivered_order,
                verify=lambda a: ("get_order_details", {"order_id": a["order_id"]}, lambda r: r.get("status") == "return requested"),
            ),
            Tool(
                "set_item_quantity", "write", "Set the quantity of one item in a pending order.",
                {"order_id": oid, "product_id": s, "quantity": {"type": "integer", "minimum": 1, "maximum": 10}},
                ["order_id", "product_id", "quantity"], set_item_quantity,
                verify=lambda a: (
                    "get_order_details", {"order_id": a["order_id"]},
                    lambda r: any(i["product_id"] == a["product_id"] and i["quantity"] == a["quantity"] for i in r.get("items", [])),
                ),
            ),
            Tool(
                "update_user_address", "write", "Replace a user's default shipping address.",
                {"user_id": uid, "address": ADDRESS_SCHEMA}, ["user_id", "address"], update_user_address,
                verify=lambda a: ("get_user_details", {"user_id": a["user_id"]}, lambda r: r.get("address") == a["address"]),
            ),
        ]

    def build_db(self, rng: random.Random) -> dict[str, Any]:
        names = unique_names(rng, ADJECTIVES, PRODUCT_NOUNS, 12, "{a} {b}")
        products = {f"P{1001 + i}": {"name": n, "price": rng.randint(500, 9999) / 100, "stock": rng.randint(0, 12)} for i, n in enumerate(names)}
        users, orders = {}, {}
        for i in range(8):
            full, email = person(rng, i)
            uid = f"U{101 + i}"
            users[uid] = {"name": full, "email": email, "address": address(rng), "orders": []}
            for _ in range(rng.randint(1, 3)):
                order_id = f"O{rng.randint(1000, 9999)}"
                while order_id in orders:
                    order_id = f"O{rng.randint(1000, 9999)}"
                items = {pid: rng.randint(1, 3) for pid in rng.sample(sorted(products), rng.randint(1, 3))}
                order = {"user_id": uid, "items": items, "status": rng.choice(["pending", "pending", "delivered", "delivered", "cancelled"]), "total": 0.0}
                _recompute_total({"products": products}, order)
                orders[order_id] = order
                users[uid]["orders"].append(order_id)
        return {"users": users, "products": products, "orders": orders}

    def identify(self, rng: random.Random) -> Identity:
        uid = rng.choice(sorted(self.db["users"]))
        user = self.db["users"][uid]
        return Identity(uid, user["name"], user["email"])

    def _orders(self, who: Identity, status: str | None = None) -> list[str]:
        return [o for o in self.db["users"][who.key]["orders"] if status is None or self.db["orders"][o]["status"] == status]

    def moves(self):
        return [self._cancel, self._return, self._quantity, self._address, self._order_total, self._price]

    def _cancel(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        pending = self._orders(who, "pending")
        if not pending:
            return None
        order_id, reason = rng.choice(pending), rng.choice(CANCEL_REASONS)
        src = {"order_id": "slot:order_id", "reason": "slot:reason"}
        return GoalDraft(
            "cancel", f"cancel order {order_id} because it was {reason}", "cancel one of my orders",
            {"order_id": order_id, "reason": reason},
            [("get_order_details", {"order_id": order_id}, {"order_id": "slot:order_id"}),
             ("cancel_pending_order", {"order_id": order_id, "reason": reason}, src)],
        )

    def _return(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        delivered = self._orders(who, "delivered")
        if not delivered:
            return None
        order_id, reason = rng.choice(delivered), rng.choice(RETURN_REASONS)
        src = {"order_id": "slot:order_id", "reason": "slot:reason"}
        return GoalDraft(
            "return", f"return order {order_id}, the reason is: {reason}", "return something I received",
            {"order_id": order_id, "reason": reason},
            [("get_order_details", {"order_id": order_id}, {"order_id": "slot:order_id"}),
             ("return_delivered_order", {"order_id": order_id, "reason": reason}, src)],
        )

    def _quantity(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        options = []
        for order_id in self._orders(who, "pending"):
            for pid, q in sorted(self.db["orders"][order_id]["items"].items()):
                room = self.db["products"][pid]["stock"]
                options += [(order_id, pid, n) for n in range(1, 6) if n != q and n - q <= room]
        if not options:
            return None
        order_id, pid, n = rng.choice(options)
        product = self.db["products"][pid]["name"]
        return GoalDraft(
            "quantity", f"change the quantity of the {product} in order {order_id} to {n}", "change an item quantity in an order",
            {"order_id": order_id, "product": product, "quantity": n},
            [("get_order_details", {"order_id": order_id}, {"order_id": "slot:order_id"}),
             ("set_item_quantity", {"order_id": order_id, "product_id": pid, "quantity": n},
              {"order_id": "slot:order_id", "product_id": "step:0", "quantity": "slot:quantity"})],
        )

    def _address(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        new = address(rng)
        if new == self.db["users"][who.key]["address"]:
            return None
        return GoalDraft(
            "address", f"update my shipping address to {address_text(new)}", "update my shipping address",
            {"address": new},
            [("update_user_address", {"user_id": who.key, "address": new}, {"user_id": "identity", "address": "slot:address"})],
        )

    def _order_total(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        order_id = rng.choice(self._orders(who))
        total = self.db["orders"][order_id]["total"]
        return GoalDraft(
            "order_total", f"know the total of order {order_id}", "know the total of one of my orders",
            {"order_id": order_id},
            [("get_order_details", {"order_id": order_id}, {"order_id": "slot:order_id"})],
            outputs=[json.dumps(total)],
        )

    def _price(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        pid = rng.choice(sorted(self.db["products"]))
        product = self.db["products"][pid]
        return GoalDraft(
            "price", f"know the price of the {product['name']}", "know the price of a product",
            {"product": product["name"]},
            [("search_products", {"query": product["name"]}, {"query": "slot:product"})],
            outputs=[json.dumps(product["price"])],
        )
