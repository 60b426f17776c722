"""English plus the 22 languages of the Eighth Schedule of India's constitution, by ISO 639 code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Language:
    code: str  # ISO 639-1 where one exists, else ISO 639-2/3
    name: str
    flores: str  # the FLORES-200 tag IndicTrans2 models expect, e.g. hin_Deva


LANGUAGES: dict[str, Language] = {
    language.code: language
    for language in (
        Language("en", "English", "eng_Latn"),
        Language("as", "Assamese", "asm_Beng"),
        Language("bn", "Bengali", "ben_Beng"),
        Language("brx", "Bodo", "brx_Deva"),
        Language("doi", "Dogri", "doi_Deva"),
        Language("gu", "Gujarati", "guj_Gujr"),
        Language("hi", "Hindi", "hin_Deva"),
        Language("kn", "Kannada", "kan_Knda"),
        Language("ks", "Kashmiri", "kas_Arab"),
        Language("kok", "Konkani", "gom_Deva"),
        Language("mai", "Maithili", "mai_Deva"),
        Language("ml", "Malayalam", "mal_Mlym"),
        Language("mni", "Manipuri", "mni_Beng"),
        Language("mr", "Marathi", "mar_Deva"),
        Language("ne", "Nepali", "npi_Deva"),
        Language("or", "Odia", "ory_Orya"),
        Language("pa", "Punjabi", "pan_Guru"),
        Language("sa", "Sanskrit", "san_Deva"),
        Language("sat", "Santali", "sat_Olck"),
        Language("sd", "Sindhi", "snd_Arab"),
        Language("ta", "Tamil", "tam_Taml"),
        Language("te", "Telugu", "tel_Telu"),
        Language("ur", "Urdu", "urd_Arab"),
    )
}
