"""Parsing and checking of the small value languages a spec uses: durations, Kubernetes
quantities, percentages, cron expressions and DNS names.

Called by the spec models' validators and by plan/render. Pure: no I/O.
Each checker raises ValueError with a message that says what was expected.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_CPU = re.compile(r"^(\d+(\.\d+)?|\.\d+)(m)?$")
_MEMORY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_MEMORY_FACTOR = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PERCENT = re.compile(r"^(\d{1,3})%$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7))
_CRON_NAMES = {
    3: {m: i + 1 for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])},
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as `30s`, `5m`, `1h30m`, `250ms`; a bare number is seconds."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h (got {text!r})")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ValueError(f"expected a duration such as 30s, 5m or 1h (got {text!r})")
        if text < 0:
            raise ValueError(f"a duration cannot be negative (got {text})")
        return float(text)
    value = text.strip()
    if not _DURATION.match(value):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h30m (got {text!r})")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


def format_duration(seconds: float) -> str:
    """The shortest spec form of a duration: 90 -> `90s`, 300 -> `5m`, 7200 -> `2h`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0 and whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def check_cpu(text: str | int | float) -> str:
    """A CPU quantity (`250m`, `0.5`, `2`), returned as a string."""
    value = str(text)
    if isinstance(text, bool) or not _CPU.match(value) or float(value.rstrip("m") or 0) <= 0:
        raise ValueError(f"expected a CPU quantity such as 250m, 0.5 or 2 (got {text!r})")
    return value


def cpu_millis(text: str) -> int:
    """Millicores in a CPU quantity."""
    if text.endswith("m"):
        return int(Decimal(text[:-1]))
    return int(Decimal(text) * 1000)


def check_memory(text: str | int) -> str:
    """A memory quantity (`128Mi`, `1Gi`, `500M`, bytes), returned as a string."""
    value = str(text)
    if isinstance(text, bool) or not _MEMORY.match(value):
        raise ValueError(f"expected a memory quantity such as 128Mi, 1Gi or 500M (got {text!r})")
    if memory_bytes(value) <= 0:
        raise ValueError(f"a memory quantity must be more than zero (got {text!r})")
    return value


def memory_bytes(text: str) -> int:
    """Bytes in a memory quantity."""
    match = _MEMORY.match(text)
    if match is None:
        raise ValueError(f"not a memory quantity: {text!r}")
    try:
        return int(Decimal(match.group(1)) * _MEMORY_FACTOR[match.group(3)])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"not a memory quantity: {text!r}") from exc


def check_int_or_percent(value: int | str) -> int | str:
    """A count or a percentage (`25%`), as Kubernetes' IntOrString takes it."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number or a percentage such as 25% (got {value!r})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        return value
    match = _PERCENT.match(value.strip())
    if match is None or int(match.group(1)) > 100:
        raise ValueError(f"expected a number or a percentage from 0% to 100% (got {value!r})")
    return value.strip()


def check_dns_label(name: str, *, what: str = "name", max_length: int = 63, start_letter: bool = False) -> str:
    """A Kubernetes DNS-1123 label: lower case letters, digits and '-', at most 63 characters;
    with `start_letter`, a DNS-1035 label (what Service names must be)."""
    if len(name) > max_length or not _DNS_LABEL.match(name):
        raise ValueError(
            f"{what} {name!r} must be lower case letters, digits and '-', start and end with a "
            f"letter or digit, at most {max_length} characters"
        )
    if start_letter and not name[0].isalpha():
        raise ValueError(f"{what} {name!r} must start with a letter (it names a Kubernetes Service)")
    return name


def check_port_name(name: str) -> str:
    """A port name as Kubernetes takes it (IANA_SVC_NAME): at most 15 lower case letters,
    digits and '-', with at least one letter."""
    if len(name) > 15 or not _DNS_LABEL.match(name) or "--" in name or not any(c.isalpha() for c in name):
        raise ValueError(f"port name {name!r} must be at most 15 lower case letters, digits and single '-', "
                         "with at least one letter")
    return name


def check_env_name(name: str) -> str:
    """A process environment variable name."""
    if not _ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name (letters, digits, _)")
    return name


def check_cron(expression: str) -> str:
    """A five-field cron expression (or a macro such as @daily), as Kubernetes CronJobs take it."""
    text = " ".join(expression.split())
    if text in _CRON_MACROS:
        return text
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"expected a cron expression of 5 fields (minute hour day month weekday), "
            f"e.g. '0 2 * * *' (got {expression!r})"
        )
    for index, (field, (label, low, high)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        for item in field.split(","):
            _check_cron_item(item, index, label, low, high, expression)
    return text


def _check_cron_item(item: str, index: int, label: str, low: int, high: int, expression: str) -> None:
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        raise ValueError(f"cron {label} step {step!r} must be a positive number in {expression!r}")
    if base == "*":
        return
    bounds = base.split("-")
    if len(bounds) > 2 or not all(bounds):
        raise ValueError(f"cron {label} {item!r} is not a number, range or list in {expression!r}")
    numbers = [_cron_number(b, index) for b in bounds]
    for number in numbers:
        if number is None or not low <= number <= high:
            raise ValueError(f"cron {label} must be within {low}-{high} (got {item!r} in {expression!r})")
    if len(numbers) == 2 and numbers[0] is not None and numbers[1] is not None and numbers[0] > numbers[1]:
        raise ValueError(f"cron {label} range {item!r} runs backwards in {expression!r}")


def _cron_number(text: str, index: int) -> int | None:
    if text.isdigit():
        return int(text)
    return _CRON_NAMES.get(index, {}).get(text.lower())


def check_image(image: str) -> str:
    """An OCI image reference without whitespace; a tag or digest is optional."""
    if not image or any(c.isspace() for c in image) or image != image.strip("/:@"):
        raise ValueError(f"expected an image reference such as ghcr.io/acme/api (got {image!r})")
    return image
