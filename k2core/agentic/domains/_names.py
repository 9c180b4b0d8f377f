"""Word lists that make generated databases look like real accounts and catalogues."""

FIRST_NAMES = ["Ava", "Liam", "Mia", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Ines", "Kenji", "Sara", "Tomas"]
LAST_NAMES = ["Garcia", "Okafor", "Schmidt", "Tanaka", "Novak", "Silva", "Khan", "Moreau", "Berg", "Rossi"]
CITIES = ["Springfield", "Riverton", "Lakeview", "Fairmont", "Ashford", "Brookside"]
STREETS = ["Oak", "Maple", "Cedar", "Pine", "Elm", "Birch", "Willow", "Hill"]
ADJECTIVES = ["Blue", "Compact", "Steel", "Bamboo", "Wireless", "Vintage", "Silent", "Golden", "Hidden", "Northern"]
PRODUCT_NOUNS = ["Mug", "Backpack", "Lamp", "Kettle", "Headphones", "Notebook", "Water Bottle", "Desk Fan"]
BOOK_NOUNS = ["River", "Garden", "Orchard", "Lighthouse", "Archive", "Harbor", "Forest", "Clockmaker"]


def person(rng, index: int) -> tuple[str, str]:
    """A (full name, email) pair; the index keeps emails unique within one database."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}{index}@example.com"


def address(rng) -> dict:
    return {"street": f"{rng.randint(1, 999)} {rng.choice(STREETS)} St", "city": rng.choice(CITIES), "zip": f"{rng.randint(10000, 99999)}"}


def address_text(addr: dict) -> str:
    return f"{addr['street']}, {addr['city']}, {addr['zip']}"


def unique_names(rng, left: list[str], right: list[str], count: int, pattern: str) -> list[str]:
    pairs = [(a, b) for a in left for b in right]
    rng.shuffle(pairs)
    return [pattern.format(a=a, b=b) for a, b in pairs[:count]]
