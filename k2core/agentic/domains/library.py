"""Public library domain: members, books and loans; check out, return, hold, pay fines, look up authors."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from k2core.agentic.domains._names import ADJECTIVES, BOOK_NOUNS, person, unique_names
from k2core.agentic.env import GoalDraft, Identity, Tool, ToolEnv, ToolError

MAX_LOANS = 3


def _get(table: dict, key: str, what: str) -> dict:
    if key not in table:
        raise ToolError(f"{what} {key} not found")
    return table[key]


def _member_view(db: dict, member_id: str) -> dict:
    m = _get(db["members"], member_id, "member")
    view = copy.deepcopy(m)
    view["loans"] = [{"book_id": b, "title": db["books"][b]["title"]} for b in m["loans"]]
    view["holds"] = [{"book_id": b, "title": db["books"][b]["title"]} for b in m["holds"]]
    return {"member_id": member_id, **view}


def find_member_by_email(db: dict, email: str) -> dict:
    for mid, m in sorted(db["members"].items()):
        if m["email"].lower() == email.lower():
            return {"member_id": mid}
    raise ToolError(f"no member with email {email}")


def get_member_details(db: dict, member_id: str) -> dict:
    return _member_view(db, member_id)


def search_books(db: dict, query: str) -> dict:
    hits = [
        {"book_id": bid, "title": b["title"], "author": b["author"], "available": b["available"]}
        for bid, b in sorted(db["books"].items())
        if query.lower() in b["title"].lower()
    ]
    return {"books": hits}


def get_book_details(db: dict, book_id: str) -> dict:
    return {"book_id": book_id, **copy.deepcopy(_get(db["books"], book_id, "book"))}


def checkout_book(db: dict, member_id: str, book_id: str) -> dict:
    m, b = _get(db["members"], member_id, "member"), _get(db["books"], book_id, "book")
    if m["fines"] > 0:
        raise ToolError(f"member {member_id} has unpaid fines of {m['fines']}; they must be paid first")
    if book_id in m["loans"]:
        raise ToolError(f"book {book_id} is already on loan to {member_id}")
    if len(m["loans"]) >= MAX_LOANS:
        raise ToolError(f"member {member_id} already has {MAX_LOANS} loans")
    if b["available"] == 0:
        raise ToolError(f"no copy of {book_id} is available; place a hold instead")
    b["available"] -= 1
    m["loans"].append(book_id)
    if book_id in m["holds"]:
        m["holds"].remove(book_id)
    return _member_view(db, member_id)


def return_book(db: dict, member_id: str, book_id: str) -> dict:
    m, b = _get(db["members"], member_id, "member"), _get(db["books"], book_id, "book")
    if book_id not in m["loans"]:
        raise ToolError(f"book {book_id} is not on loan to {member_id}")
    m["loans"].remove(book_id)
    b["available"] += 1
    return _member_view(db, member_id)


def place_hold(db: dict, member_id: str, book_id: str) -> dict:
    m, b = _get(db["members"], member_id, "member"), _get(db["books"], book_id, "book")
    if b["available"] > 0:
        raise ToolError(f"{book_id} has copies available; check it out instead")
    if book_id in m["holds"]:
        raise ToolError(f"member {member_id} already holds {book_id}")
    m["holds"].append(book_id)
    return _member_view(db, member_id)


def pay_fines(db: dict, member_id: str) -> dict:
    m = _get(db["members"], member_id, "member")
    if m["fines"] == 0:
        raise ToolError(f"member {member_id} has no outstanding fines")
    paid, m["fines"] = m["fines"], 0
    return {"member_id": member_id, "paid": paid, "fines": 0}


class LibraryEnv(ToolEnv):
    """A lending library with a loan limit, fines and holds."""

    name = "library"
    domain_description = "a public library"
    identify_tool = "find_member_by_email"
    slot_descriptions = {"email": "email address", "title": "book title"}

    def build_tools(self) -> list[Tool]:
        s = {"type": "string"}
        mid, bid = {"type": "string", "description": "member id such as M301"}, {"type": "string", "description": "book id such as B501"}
        return [
            Tool("find_member_by_email", "read", "Look up a member id by email address.", {"email": s}, ["email"], find_member_by_email),
            Tool("get_member_details", "read", "Get a member's loans, holds and fines.", {"member_id": mid}, ["member_id"], get_member_details),
            Tool("search_books", "read", "Find books whose title contains the query.", {"query": s}, ["query"], search_books),
            Tool("get_book_details", "read", "Get a book's author and availability.", {"book_id": bid}, ["book_id"], get_book_details),
            Tool(
                "checkout_book", "write", "Lend an available copy of a book to a member.", {"member_id": mid, "book_id": bid},
                ["member_id", "book_id"], checkout_book,
                verify=lambda a: ("get_member_details", {"member_id": a["member_id"]}, lambda r: any(x["book_id"] == a["book_id"] for x in r.get("loans", []))),
            ),
            Tool(
                "return_book", "write", "Return a book a member has on loan.", {"member_id": mid, "book_id": bid},
                ["member_id", "book_id"], return_book,
                verify=lambda a: ("get_member_details", {"member_id": a["member_id"]}, lambda r: all(x["book_id"] != a["book_id"] for x in r.get("loans", []))),
            ),
            Tool(
                "place_hold", "write", "Reserve a book with no available copies.", {"member_id": mid, "book_id": bid},
                ["member_id", "book_id"], place_hold,
                verify=lambda a: ("get_member_details", {"member_id": a["member_id"]}, lambda r: any(x["book_id"] == a["book_id"] for x in r.get("holds", []))),
            ),
            Tool(
                "pay_fines", "write", "Pay all of a member's outstanding fines.", {"member_id": mid}, ["member_id"], pay_fines,
                verify=lambda a: ("get_member_details", {"member_id": a["member_id"]}, lambda r: r.get("fines") == 0),
            ),
        ]

    def build_db(self, rng: random.Random) -> dict[str, Any]:
        titles = unique_names(rng, ADJECTIVES, BOOK_NOUNS, 12, "The {a} {b}")
        books = {}
        for i, title in enumerate(titles):
            copies = rng.randint(1, 3)
            books[f"B{501 + i}"] = {"title": title, "author": person(rng, i)[0], "copies": copies, "available": copies}
        members = {}
        for i in range(8):
            full, email = person(rng, i)
            members[f"M{301 + i}"] = {"name": full, "email": email, "loans": [], "holds": [], "fines": rng.choice([0, 0, 0, 1.5, 4.25, 7.0])}
        for mid in sorted(members):
            for bid in rng.sample(sorted(books), rng.randint(0, 2)):
                if books[bid]["available"] > 0:
                    books[bid]["available"] -= 1
                    members[mid]["loans"].append(bid)
        return {"members": members, "books": books}

    def identify(self, rng: random.Random) -> Identity:
        mid = rng.choice(sorted(self.db["members"]))
        m = self.db["members"][mid]
        return Identity(mid, m["name"], m["email"])

    def moves(self):
        return [self._checkout, self._return, self._hold, self._fines, self._author]

    def _checkout(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        m = self.db["members"][who.key]
        if m["fines"] > 0 or len(m["loans"]) >= MAX_LOANS:
            return None
        options = [b for b, book in sorted(self.db["books"].items()) if book["available"] > 0 and b not in m["loans"]]
        if not options:
            return None
        bid = rng.choice(options)
        title = self.db["books"][bid]["title"]
        return GoalDraft(
            "checkout", f"borrow {title}", "borrow a book", {"title": title},
            [("search_books", {"query": title}, {"query": "slot:title"}),
             ("checkout_book", {"member_id": who.key, "book_id": bid}, {"member_id": "identity", "book_id": "step:0"})],
        )

    def _return(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        loans = self.db["members"][who.key]["loans"]
        if not loans:
            return None
        bid = rng.choice(sorted(loans))
        title = self.db["books"][bid]["title"]
        return GoalDraft(
            "return", f"return {title}", "return a book I borrowed", {"title": title},
            [("get_member_details", {"member_id": who.key}, {"member_id": "identity"}),
             ("return_book", {"member_id": who.key, "book_id": bid}, {"member_id": "identity", "book_id": "step:0"})],
        )

    def _hold(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        m = self.db["members"][who.key]
        options = [b for b, book in sorted(self.db["books"].items()) if book["available"] == 0 and b not in m["holds"] and b not in m["loans"]]
        if not options:
            return None
        bid = rng.choice(options)
        title = self.db["books"][bid]["title"]
        return GoalDraft(
            "hold", f"place a hold on {title}", "reserve a book that is out", {"title": title},
            [("search_books", {"query": title}, {"query": "slot:title"}),
             ("place_hold", {"member_id": who.key, "book_id": bid}, {"member_id": "identity", "book_id": "step:0"})],
        )

    def _fines(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        fines = self.db["members"][who.key]["fines"]
        if fines == 0:
            return None
        return GoalDraft(
            "fines", "pay my outstanding fines and know how much they were", "pay my fines", {},
            [("get_member_details", {"member_id": who.key}, {"member_id": "identity"}),
             ("pay_fines", {"member_id": who.key}, {"member_id": "identity"})],
            outputs=[json.dumps(fines)],
        )

    def _author(self, rng: random.Random, who: Identity) -> GoalDraft | None:
        bid = rng.choice(sorted(self.db["books"]))
        book = self.db["books"][bid]
        return GoalDraft(
            "author", f"know who wrote {book['title']}", "know the author of a book", {"title": book["title"]},
            [("search_books", {"query": book["title"]}, {"query": "slot:title"})],
            outputs=[book["author"]],
        )
