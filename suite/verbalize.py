"""Written forms to spoken words: numbers, symbols, units and abbreviations.

:func:`verbalize` rewrites what a reader would say differently from what is written
(``Dr. Smith paid $3.50 (15%) at 10:05 p.m.`` -> ``doctor Smith paid three dollars and fifty
cents (fifteen percent) at ten oh five p m``) and leaves everything else, punctuation included,
to :func:`suite.text.normalize_text` and :func:`suite.data.sentences.speakable`. Numbers are
spelled the way ``normalize_text`` spells them (``num2words``, so ``105`` is ``one hundred and
five``), which keeps the built-in grammar's sentences reading the same through either path.

It is rule-based and English-only, in the spirit of the front ends of text-to-speech systems
(Sproat et al., "Normalization of non-standard words", 2001) without their learned
disambiguation: ``St.`` is "saint" before a capitalized word and "street" elsewhere, four-digit
numbers are years only after a word that introduces a year (``in 1990``, ``May 1990``).
"""

from __future__ import annotations

import re

from num2words import num2words

# Abbreviations that are expanded wherever they appear (case-sensitive, with their dot).
_TITLES = {
    "Dr.": "doctor",
    "Mr.": "mister",
    "Mrs.": "missus",
    "Ms.": "miz",
    "Prof.": "professor",
    "Jr.": "junior",
    "Sr.": "senior",
    "Mt.": "mount",
    "Gen.": "general",
    "Gov.": "governor",
    "Sen.": "senator",
    "Rep.": "representative",
    "Capt.": "captain",
    "Col.": "colonel",
    "Lt.": "lieutenant",
    "Sgt.": "sergeant",
    "Rev.": "reverend",
    "Hon.": "honorable",
    "Ave.": "avenue",
    "Blvd.": "boulevard",
    "Inc.": "incorporated",
    "Ltd.": "limited",
    "Corp.": "corporation",
    "Bros.": "brothers",
    "Dept.": "department",
    "Univ.": "university",
    "Jan.": "January",
    "Feb.": "February",
    "Mar.": "March",
    "Apr.": "April",
    "Aug.": "August",
    "Sep.": "September",
    "Sept.": "September",
    "Oct.": "October",
    "Nov.": "November",
    "Dec.": "December",
}
# Latin and scholarly abbreviations, any case.
_LATIN = {
    "e.g.": "for example",
    "i.e.": "that is",
    "etc.": "et cetera",
    "vs.": "versus",
    "cf.": "compare",
    "viz.": "namely",
    "approx.": "approximately",
    "incl.": "including",
    "esp.": "especially",
    "resp.": "respectively",
    "ca.": "circa",
}
# Abbreviations that stand for a word only before a number (``No. 5``, ``pp. 10-12``).
_BEFORE_NUMBER = {
    "no.": "number",
    "nos.": "numbers",
    "fig.": "figure",
    "figs.": "figures",
    "ch.": "chapter",
    "sec.": "section",
    "vol.": "volume",
    "p.": "page",
    "pp.": "pages",
}
# Abbreviations after which a period never ends a sentence (for sentence splitting).
NO_BREAK_ABBREVIATIONS = frozenset(
    [a.lower() for a in _TITLES if a not in ("Inc.", "Ltd.", "Corp.", "Bros.", "Dept.")]
    + [a for a in _LATIN if a != "etc."]
    + list(_BEFORE_NUMBER)
    + ["st.", "co.", "a.m.", "p.m."]
)

# Units after a number: symbol -> (singular, plural).
_UNITS = {
    "km": ("kilometer", "kilometers"),
    "m": ("meter", "meters"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "ft": ("foot", "feet"),
    "mi": ("mile", "miles"),
    "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "KB": ("kilobyte", "kilobytes"),
    "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "KiB": ("kibibyte", "kibibytes"),
    "MiB": ("mebibyte", "mebibytes"),
    "GiB": ("gibibyte", "gibibytes"),
    "ms": ("millisecond", "milliseconds"),
    "sec": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "V": ("volt", "volts"),
    "W": ("watt", "watts"),
    "kW": ("kilowatt", "kilowatts"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "%": ("percent", "percent"),
}
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_FRACTIONS = {"1/2": "one half", "1/3": "one third", "2/3": "two thirds", "1/4": "one quarter"}
_FRACTIONS |= {"3/4": "three quarters", "½": "one half", "¼": "one quarter", "¾": "three quarters"}
_SYMBOLS = {
    "&": " and ",
    "±": " plus or minus ",
    "×": " times ",
    "§": " section ",
    "…": "...",  # then, like "...", a pause (a comma) unless it ends the text
    "—": ", ",
    "–": "-",
    "\u00a0": " ",
    "“": '"',
    "”": '"',
    "‘": "'",
    "’": "'",
}
# Words after which a four-digit number is read as a year ("of" and "by" are not: "out of 1500").
_YEAR_CUES = {"in", "since", "until", "till", "before", "after", "circa", "during", "year"}
_YEAR_CUES |= {"early", "late", "mid", "summer", "winter", "spring", "autumn"}
_YEAR_CUES |= {"january", "february", "march", "april", "may", "june", "july", "august"}
_YEAR_CUES |= {"september", "october", "november", "december"}

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_SCALE = r"(?:\s(?:thousand|million|billion|trillion))?"
_SYMBOL_RE = re.compile("|".join(map(re.escape, _SYMBOLS)))
_FRACTION_RE = re.compile(r"(?<![\d/])(?:" + "|".join(map(re.escape, _FRACTIONS)) + r")(?![\d/])")
_CURRENCY_RE = re.compile(rf"([$£€])\s?({_NUM})({_SCALE})\b")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?:\s?([ap])\.?m\.?\b)?", re.IGNORECASE)
_HOUR_AMPM_RE = re.compile(r"\b(1[0-2]|[1-9])\s?([ap])\.?m\.?(?=\W|$)", re.IGNORECASE)
_UNIT_RE = re.compile(
    rf"(?<![\w.])(-?{_NUM})\s?("
    + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
    + r")(?![\w/])"
)
_RANGE_RE = re.compile(rf"(?<![\w.,])({_NUM})\s?-\s?({_NUM})(?![\w.,]\d)")
_YEAR_SPAN_RE = re.compile(
    r"(?<![\w.,])(1[1-9]\d\d|20\d\d)\s?-\s?(1[1-9]\d\d|20\d\d|\d\d)\b(?![.,]\d)"
)
_DECADE_RE = re.compile(r"\b(1[1-9]\d0|20[0-9]0)'?s\b")
_YEAR_RE = re.compile(r"(\w+)?(\s+)(1\d{3}|20\d\d)\b(?![.,]\d)")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE_RE = re.compile(
    rf"\b({_MONTHS})\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(1\d{{3}}|20\d\d)\b(?![.,]\d)"
)
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NEGATIVE_RE = re.compile(rf"(?<![\w.])-({_NUM})\b")
_NUMBER_RE = re.compile(rf"(?<![\w])\.?{_NUM}|(?<=[A-Za-z])\d+")
_DIGIT = re.compile(r"\d")
_ELLIPSIS_RE = re.compile(r"\s?\.(?:\s?\.){2,}\s*")
_HASH_NUMBER_RE = re.compile(r"#\s?(?=\d)")
_PLUS_RE = re.compile(r"(?<=\d)\s?\+\s?(?=\d)")
_LANGUAGES = {"C++": "C plus plus", "C#": "C sharp", "F#": "F sharp"}
_LANGUAGE_RE = re.compile(r"(?<![\w+#])(C\+\+|C#|F#)(?![\w+#])")
_LATIN_RE = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(a) for a in _LATIN) + r")(?=\W|$)", re.IGNORECASE
)
_TITLE_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(a) for a in _TITLES) + r")(?=\W|$)")
_BEFORE_NUMBER_RE = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(a) for a in _BEFORE_NUMBER) + r")\s?(?=\d)",
    re.IGNORECASE,
)
_SAINT_RE = re.compile(r"(?<![\w.])St\.(\s+)(?=[A-Z])")
_STREET_RE = re.compile(r"(?<![\w.])St\.")
_DOTTED_RE = re.compile(r"(?<![\w.])((?:[A-Za-z]\.){2,})")


def spell_number(number: str) -> str:
    """Words for a number as written (``"1,024"``, ``"3.50"``, ``".5"``), the way it is read.

    Integers are read whole (``num2words``); digits after a decimal point, and integers with a
    leading zero or over twelve digits, are read one by one (``"0.05"`` -> ``"zero point zero
    five"``, ``".5"`` -> ``"point five"``).
    """
    whole, *fractions = number.replace(",", "").split(".")
    if len(whole) > 12 or (len(whole) > 1 and whole.startswith("0")):
        words = " ".join(num2words(int(d)) for d in whole)
    else:
        words = num2words(int(whole)) if whole else ""
    for fraction in fractions:  # several in version numbers ("1.2.3"), read point by point
        words += " point " + " ".join(num2words(int(d)) for d in fraction)
    return words.strip()


def _is_one(number: str) -> bool:
    return number.replace(",", "") in ("1", "1.0", "-1")


def _currency(m: re.Match) -> str:
    one, many, cent, cents = _CURRENCIES[m.group(1)]
    amount, scale = m.group(2).replace(",", ""), m.group(3)
    if scale:
        return f"{spell_number(amount)}{scale} {many}"
    whole, _, fraction = amount.partition(".")
    if len(fraction) != 2:
        return f"{spell_number(amount)} {one if _is_one(amount) else many}"
    hundredths = int(fraction)
    if int(whole) == 0:
        return f"{spell_number(str(hundredths))} {cent if hundredths == 1 else cents}"
    words = f"{spell_number(whole)} {one if whole == '1' else many}"
    if hundredths:
        words += f" and {spell_number(str(hundredths))} {cent if hundredths == 1 else cents}"
    return words


def _clock(m: re.Match) -> str:
    hour, minute, half = int(m.group(1)), int(m.group(2)), m.group(3)
    words = num2words(hour)
    if minute == 0:
        words += "" if half else " o'clock"
    elif minute < 10:
        words += f" oh {num2words(minute)}"
    else:
        words += f" {num2words(minute)}"
    return words + (f" {half.lower()} m" if half else "")


def _unit(m: re.Match) -> str:
    number, unit = m.group(1), m.group(2)
    one, many = _UNITS[unit]
    sign = "minus " if number.startswith("-") else ""
    return f"{sign}{spell_number(number.lstrip('-'))} {one if _is_one(number) else many}"


def _year(year: int) -> str:
    return num2words(year, to="year")


def _decade(m: re.Match) -> str:
    words = _year(int(m.group(1))).rsplit(" ", 1)
    last = words[-1]
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return " ".join([*words[:-1], last])


def _maybe_year(m: re.Match) -> str:
    cue, space, year = m.group(1), m.group(2), m.group(3)
    if cue is not None and cue.lower() in _YEAR_CUES:
        return f"{cue}{space}{_year(int(year))}"
    return m.group(0)


def _year_span(m: re.Match) -> str:
    first, last = m.group(1), m.group(2)
    words = num2words(int(last)) if len(last) == 2 else _year(int(last))
    return f"{_year(int(first))} to {words}"


def _date(m: re.Match) -> str:
    day = num2words(int(m.group(2)), to="ordinal")
    return f"{m.group(1)} {day}, {_year(int(m.group(3)))}"


def _range(m: re.Match) -> str:
    return f"{spell_number(m.group(1))} to {spell_number(m.group(2))}"


def verbalize(text: str) -> str:
    """``text`` with numbers, symbols, units and abbreviations written out as words.

    The result keeps the input's punctuation and case, so it can still be split into sentences
    and handed to :func:`~suite.data.sentences.speakable`; no digit is left in it.

    Example:
        >>> verbalize("Dr. Lee ran 3.5 km (about 20%) on Jan. 5th, 1990.")
        'doctor Lee ran three point five kilometers (about twenty percent) on January fifth, nineteen ninety.'
    """  # noqa: E501
    text = _SYMBOL_RE.sub(lambda m: _SYMBOLS[m.group(0)], text).replace("--", ", ")
    text = _ELLIPSIS_RE.sub(lambda m: "." if m.end() == len(text) else ", ", text)
    text = _LANGUAGE_RE.sub(lambda m: _LANGUAGES[m.group(1)], text)
    text = _FRACTION_RE.sub(lambda m: f" {_FRACTIONS[m.group(0)]} ", text)
    digits, dots = _DIGIT.search(text) is not None, "." in text  # most text skips most rules
    if dots:
        text = _LATIN_RE.sub(lambda m: _LATIN[m.group(1).lower()], text)
        text = _BEFORE_NUMBER_RE.sub(lambda m: _BEFORE_NUMBER[m.group(1).lower()] + " ", text)
        text = _SAINT_RE.sub(r"saint\1", text)
        text = _STREET_RE.sub("street", text)
        text = _TITLE_RE.sub(lambda m: _TITLES[m.group(1)], text)
    if digits:
        text = _HASH_NUMBER_RE.sub("number ", text)
        text = _CURRENCY_RE.sub(_currency, text)
        text = _TIME_RE.sub(_clock, text)
        text = _HOUR_AMPM_RE.sub(
            lambda m: f"{num2words(int(m.group(1)))} {m.group(2).lower()} m", text
        )
    if dots:
        text = _DOTTED_RE.sub(lambda m: " ".join(m.group(1).split(".")).strip(), text)
    if digits:
        text = _UNIT_RE.sub(_unit, text)
        text = _DATE_RE.sub(_date, text)
        text = _YEAR_SPAN_RE.sub(_year_span, text)
        text = _DECADE_RE.sub(_decade, text)
        text = _YEAR_RE.sub(_maybe_year, text)
        text = _PLUS_RE.sub(" plus ", text)
        text = _ORDINAL_RE.sub(lambda m: num2words(int(m.group(1)), to="ordinal"), text)
        text = _RANGE_RE.sub(_range, text)
        text = _NEGATIVE_RE.sub(lambda m: f"minus {spell_number(m.group(1))}", text)
        text = _NUMBER_RE.sub(lambda m: f" {spell_number(m.group(0))} ", text)
    return text.replace("%", " percent ")
