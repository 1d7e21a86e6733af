"""Language identifiers accepted by the text metrics, and their normalisation to ISO 639-1 codes.

Languages outside the task suite and CrossX are refused rather than treated as "not English".
"""

from __future__ import annotations

import re

from adamergex_pl.errors import InvalidTypeError, InvalidValueError

__all__ = ["LANGUAGES", "normalize_language"]

# ISO 639-1 (or the shortest ISO code where there is none) -> (English name, ISO 639-3 code); ro for XQuAD.
# fmt: off
LANGUAGES: dict[str, tuple[str, str]] = {
    "am": ("Amharic", "amh"), "ar": ("Arabic", "ara"), "az": ("Azerbaijani", "aze"),
    "bg": ("Bulgarian", "bul"), "bn": ("Bengali", "ben"), "cy": ("Welsh", "cym"), "de": ("German", "deu"),
    "el": ("Greek", "ell"), "en": ("English", "eng"), "es": ("Spanish", "spa"), "et": ("Estonian", "est"),
    "fa": ("Persian", "fas"), "fil": ("Filipino", "fil"), "fr": ("French", "fra"),
    "gd": ("Scottish Gaelic", "gla"), "gu": ("Gujarati", "guj"), "ha": ("Hausa", "hau"),
    "hi": ("Hindi", "hin"), "ht": ("Haitian Creole", "hat"), "id": ("Indonesian", "ind"),
    "ig": ("Igbo", "ibo"), "it": ("Italian", "ita"), "ja": ("Japanese", "jpn"), "km": ("Khmer", "khm"),
    "ko": ("Korean", "kor"), "ky": ("Kyrgyz", "kir"), "lo": ("Lao", "lao"), "mr": ("Marathi", "mar"),
    "ms": ("Malay", "msa"), "my": ("Burmese", "mya"), "ne": ("Nepali", "nep"), "nl": ("Dutch", "nld"),
    "om": ("Oromo", "orm"), "pa": ("Punjabi", "pan"), "pcm": ("Nigerian Pidgin", "pcm"),
    "pl": ("Polish", "pol"), "ps": ("Pashto", "pus"), "pt": ("Portuguese", "por"), "qu": ("Quechua", "que"),
    "rn": ("Kirundi", "run"), "ro": ("Romanian", "ron"), "ru": ("Russian", "rus"), "si": ("Sinhala", "sin"),
    "so": ("Somali", "som"), "sr": ("Serbian", "srp"), "sw": ("Swahili", "swa"), "ta": ("Tamil", "tam"),
    "te": ("Telugu", "tel"), "th": ("Thai", "tha"), "ti": ("Tigrinya", "tir"), "tl": ("Tagalog", "tgl"),
    "tr": ("Turkish", "tur"), "uk": ("Ukrainian", "ukr"), "ur": ("Urdu", "urd"), "uz": ("Uzbek", "uzb"),
    "vi": ("Vietnamese", "vie"), "yo": ("Yoruba", "yor"), "zh": ("Chinese", "zho"),
}
# fmt: on

_ALIASES: dict[str, str] = {}
for _code, (_name, _iso3) in LANGUAGES.items():
    _ALIASES[_code] = _code
    _ALIASES[_iso3] = _code
    _ALIASES[_name.lower()] = _code
# Bibliographic ISO 639-2 codes and common alternative names.
# fmt: off
_ALIASES.update({
    "chi": "zh", "ger": "de", "fre": "fr", "gre": "el", "per": "fa", "rum": "ro", "bur": "my", "may": "ms",
    "zsm": "ms", "cmn": "zh", "farsi": "fa", "mandarin": "zh", "myanmar": "my", "cambodian": "km",
    "swahili": "sw", "kiswahili": "sw",
})
# fmt: on

_TAG = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")


def normalize_language(language: str) -> str:
    """Return the ISO 639-1 code (``"fil"``/``"pcm"`` where there is none) for a language identifier.

    Accepts an ISO 639-1 or 639-3 code, a BCP 47 tag (primary subtag) or an English name.

    Raises:
        TypeError: If ``language`` is not a string.
        ValueError: If the language is not in :data:`LANGUAGES`.

    Example:
        >>> normalize_language("zh-CN"), normalize_language("English"), normalize_language("deu")
        ('zh', 'en', 'de')
    """
    if not isinstance(language, str):
        raise InvalidTypeError(f"language={language!r} must be a string such as 'en', 'zh-CN' or 'English'")
    text = language.strip()
    match = _TAG.match(text)
    key = match.group(1).lower() if match else text.lower()
    code = _ALIASES.get(key)
    if code is None:
        raise InvalidValueError(
            f"language={language!r} is not a known language; expected an ISO 639-1/639-3 code, a BCP 47 tag "
            f"such as 'zh-CN', or an English name, one of: {', '.join(sorted(LANGUAGES))}. "
            "To support a new language, add it to LANGUAGES in adamergex_pl/metrics/languages.py"
        )
    return code
