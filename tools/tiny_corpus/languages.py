"""The tiny corpus's languages: espeak-ng voice, Debian fortunes package(s) and alphabet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One language of the tiny corpus.

    ``packages``: the Debian ``fortunes`` packages whose collections hold its text (their
    installed-file lists, ``/var/lib/dpkg/info/PACKAGE.list``, say which files those are);
    ``letters``: the lower-case letters a usable sentence may be written with (after
    :func:`astra.text_norm.normalize_text`).
    """

    code: str  # corpus folder name (FLEURS config style)
    name: str  # display name written to the manifests' ``language`` column
    espeak_voice: str  # espeak-ng voice name
    packages: tuple[str, ...]
    letters: str


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en_us", "English", "en-us", ("fortunes", "fortunes-min"), "abcdefghijklmnopqrstuvwxyz"),
        Language("de_de", "German", "de", ("fortunes-de",), "abcdefghijklmnopqrstuvwxyzäöüß"),
        Language("es_419", "Spanish", "es-419", ("fortunes-es",), "abcdefghijklmnopqrstuvwxyzáéíóúüñ"),
        Language("it_it", "Italian", "it", ("fortunes-it",), "abcdefghijklmnopqrstuvwxyzàèéìíòóùú"),
        Language("ru_ru", "Russian", "ru", ("fortunes-ru",), "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"),
    )
}
