"""US shipping addresses: validation with a message per field, so a typo is caught before it ships.

The store ships within the United States only (knowledge/policies/cancellations-and-changes.md).
"""

import re
from dataclasses import asdict, dataclass

US_STATES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon",
    "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia",
    "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
    "PR": "Puerto Rico",
}  # fmt: skip
_BY_NAME = {name.lower(): code for code, name in US_STATES.items()}
ZIP_FORMAT = re.compile(r"^\d{5}(?:-\d{4})?$")
_STREET = re.compile(r"^\d{1,6}[A-Za-z]?\s+\S.*$")
_CITY = re.compile(r"^[A-Za-z][A-Za-z .'-]*$")


class InvalidAddress(ValueError):
    """An address that cannot be shipped to; `errors` maps each bad field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ShippingAddress:
    address1: str
    city: str
    state: str  # two-letter code
    zip: str
    address2: str = ""
    country: str = "USA"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def one_line(self) -> str:
        street = f"{self.address1}, {self.address2}" if self.address2 else self.address1
        return f"{street}, {self.city}, {self.state} {self.zip}"


def state_code(text: str) -> str | None:
    """ "tx", "TX", "Texas" -> "TX"; None for anything that is not a US state."""
    cleaned = " ".join(text.split()).strip(" .,")
    if cleaned.upper() in US_STATES:
        return cleaned.upper()
    return _BY_NAME.get(cleaned.lower())


def validate_address(
    address1: str, city: str, state: str, zip_code: str, address2: str = ""
) -> ShippingAddress:
    """A normalised address, or InvalidAddress naming every field that is wrong."""
    street, unit = " ".join(address1.split()).strip(" ,"), " ".join(address2.split()).strip(" ,")
    town, code, zip_clean = " ".join(city.split()).strip(" ,"), state_code(state), zip_code.strip()
    errors: dict[str, str] = {}
    if not _STREET.match(street) or len(street) > 100:
        errors["street"] = "give the house number and the street, like 445 Maple Drive"
    if len(unit) > 50:
        errors["address2"] = "the apartment or suite is too long"
    if not _CITY.match(town) or len(town) > 60:
        errors["city"] = "give the city's name"
    if code is None:
        errors["state"] = "give a US state, like TX or Texas"
    if not ZIP_FORMAT.match(zip_clean):
        errors["zip"] = (
            f"{zip_clean or 'it'} is not a US zip code: it has 5 digits (or 5 + 4, like 76165-1234)"
        )
    if errors:
        raise InvalidAddress(errors)
    assert code is not None
    return ShippingAddress(
        address1=street,
        address2=unit,
        city=town.title() if town.islower() else town,
        state=code,
        zip=zip_clean,
    )
