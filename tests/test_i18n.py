"""The interface in Simplified Chinese and Spanish: complete catalogues, compiled as written, chosen per user."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest

from tests.conftest import logged_in
from tests.factories import batch_for, scored_study

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = {"zh_Hans": "zh-hans", "es": "es"}
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|%[sd]|\{\{ ?\w+ ?\}\}|\{\w+\}")


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unquote(lines: list[str]) -> str:
    text = "".join(re.fullmatch(r'"(.*)"', line.strip()).group(1) for line in lines)
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def entries(po: Path) -> list[dict]:
    """The catalogue's entries: msgid, msgid_plural, msgstr (list), flags."""
    result, current, key = [], None, None
    for line in po.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if current:
                result.append(current)
            current, key = None, None
            continue
        current = current or {"flags": "", "msgid": [], "msgid_plural": [], "msgstr": {}}
        if line.startswith("#,"):
            current["flags"] += line
        elif line.startswith("#"):
            continue
        elif match := re.match(r"(msgid|msgid_plural|msgstr(?:\[(\d)\])?) (\".*\")$", line):
            name, index, text = match.groups()
            key = ("msgstr", int(index or 0)) if name.startswith("msgstr") else name
            target = current["msgstr"].setdefault(key[1], []) if isinstance(key, tuple) else current[key]
            target.append(text)
        else:
            target = current["msgstr"][key[1]] if isinstance(key, tuple) else current[key]
            target.append(line)
    for entry in result:
        entry["msgid"] = _unquote(entry["msgid"])
        entry["msgid_plural"] = _unquote(entry["msgid_plural"])
        entry["msgstr"] = [_unquote(entry["msgstr"][i]) for i in sorted(entry["msgstr"])]
    return [e for e in result if e["msgid"]]  # not the header


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_entry_is_translated_keeps_its_placeholders_and_none_is_fuzzy(language):
    catalogue = entries(ROOT / "locale" / language / "LC_MESSAGES" / "django.po")
    assert len(catalogue) > 200
    for entry in catalogue:
        assert "fuzzy" not in entry["flags"], entry["msgid"]
        for translated in entry["msgstr"]:
            assert translated.strip(), f"untranslated: {entry['msgid']!r}"
            source = (
                entry["msgid_plural"]
                if entry["msgid_plural"] and translated is not entry["msgstr"][0]
                else entry["msgid"]
            )
            assert sorted(PLACEHOLDER.findall(translated)) == sorted(PLACEHOLDER.findall(source)), entry["msgid"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalogue_says_what_the_po_file_says(language):
    folder = ROOT / "locale" / language / "LC_MESSAGES"
    with (folder / "django.mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for entry in entries(folder / "django.po"):
        if not entry["msgid_plural"]:
            assert compiled.gettext(entry["msgid"]) == entry["msgstr"][0], entry["msgid"]


def _marked_strings() -> set[str]:
    """Strings marked in templates ({% translate %}) and Python (_("...")): each must be in the catalogues."""
    found = set()
    for template in (ROOT / "screening" / "templates").rglob("*.html"):
        found |= set(re.findall(r'{% translate "([^"]+)"', template.read_text()))
    for template in (ROOT / "webapp" / "templates").rglob("*.html"):
        found |= set(re.findall(r'{% translate "([^"]+)"', template.read_text()))
    for module in (ROOT / "screening").rglob("*.py"):
        if "migrations" not in module.parts:
            found |= set(re.findall(r'\b_\("([^"\\]+)"\)', module.read_text()))
    return found


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_marked_string_is_in_the_catalogue(language):
    catalogue = {e["msgid"] for e in entries(ROOT / "locale" / language / "LC_MESSAGES" / "django.po")}
    missing = sorted(_marked_strings() - catalogue)
    assert not missing, f"run makemessages and translate: {missing}"


def test_the_browser_language_decides_until_the_user_chooses(radiologist, submitter, settings):
    study = scored_study(batch_for(submitter), 0.873, media_root=settings.MEDIA_ROOT)
    client = logged_in(radiologist)
    chinese = client.get("/worklist/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert "<h1>工作列表</h1>" in chinese
    assert 'lang="zh-hans"' in chinese
    assert "用于分诊的辅助决策" in chinese  # the intended-use statement
    response = client.post("/i18n/setlang/", {"language": "es", "next": f"/studies/{study.pk}/"})
    assert response.status_code == 302
    assert response["Location"] == f"/studies/{study.pk}/"
    spanish = client.get(f"/studies/{study.pk}/", HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    assert "Lista de trabajo" in spanish
    assert 'lang="es"' in spanish
    assert "0,873" in spanish  # numbers are localised: a decimal comma
    english = client.get("/worklist/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Lista de trabajo" in english, "the chosen language outlives the browser's"
    client.post("/i18n/setlang/", {"language": "en", "next": "/worklist/"})
    assert "<h1>Worklist</h1>" in client.get("/worklist/").content.decode()
