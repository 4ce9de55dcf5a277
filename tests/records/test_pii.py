"""PII scrubbing (so8t_kedro.records.pii): every entity type, look-alikes, the allow-list,
no downloads, and engine failures reported per text."""

from __future__ import annotations

import copy
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader

from so8t_kedro.records import pii
from so8t_kedro.records.pii import PiiConfig, PiiScrubber, luhn_valid, my_number_valid
from so8t_kedro.records.pii.patterns import _ip_valid, mixed_class_token

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
BENCHMARK = Path(__file__).resolve().parent / "data/pii_benchmark.jsonl"


@pytest.fixture(scope="module")
def pii_params() -> dict[str, Any]:
    """``params:pii`` as Kedro resolves it (the allow-list interpolated)."""
    loader = OmegaConfigLoader(str(CONF_DIR), base_env="base", default_run_env="local")
    return loader["parameters"]["pii"]


@pytest.fixture(scope="module")
def scrubber(pii_params) -> PiiScrubber:
    return pii.pii_scrubber(pii_params)


@pytest.fixture
def scrub(scrubber):
    """``scrub(text) -> (scrubbed, {entity type: count})`` after NFKC, as the pipeline does."""

    def run(text: str, language: str | None = None) -> tuple[str, dict[str, int]]:
        text = unicodedata.normalize("NFKC", text)
        lang = language or ("ja" if any(ord(ch) > 0x3000 for ch in text) else "en")
        [result] = scrubber.scrub([text], [lang])
        assert result.error is None, result.error
        return result.text, dict(result.counts)

    return run


# ---------------------------------------------------------------------------- validators


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert luhn_valid("1234567812345670")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("1234567812345678")
    assert not luhn_valid("0000000000000000")  # Luhn-valid, but not a card


def test_my_number_check_digit():
    assert my_number_valid("123456789018")
    assert my_number_valid("987654321093")
    assert not my_number_valid("123456789012")
    assert not my_number_valid("12345678901")  # 11 digits
    assert not my_number_valid("000000000000")


def test_iban_check():
    assert pii.iban_valid("GB82 WEST 1234 5698 7654 32")
    assert pii.iban_valid("DE89370400440532013000")
    assert not pii.iban_valid("GB82 WEST 1234 5698 7654 33")


# added in round 13
def test_subnet_masks_are_no_host_but_neighbouring_addresses_are():
    assert not _ip_valid("255.255.255.0")
    assert not _ip_valid("255.255.0.0")
    assert _ip_valid("255.255.1.0")  # not contiguous ones: a host address
    assert _ip_valid("192.168.10.7")


# added in round 14
def test_networks_with_a_prefix_length_are_no_host():
    assert not _ip_valid("10.0.0.0/8")
    assert not _ip_valid("fe80::/10")
    assert _ip_valid("192.168.1.23/24")
    assert _ip_valid("203.0.113.9/32")


@pytest.mark.parametrize(
    ("token", "random"),
    [
        ("kR8mQ2vX7nL1pT9wB3cY6hJ0sF5gE2", True),   # a key: a class change at most characters
        ("a1B2c3D4e5F6g7H8i9J0", True),
        ("ResNet50V2Weights", False),                # words and numbers: few changes
        ("iPhone15ProMaxCase2024", False),
        ("abcdefghijklmnopqrstu", False),
        ("ABCDEFGHIJ1234567890", False),
    ],
)
def test_mixed_class_token_tells_random_tokens_from_names(token, random):
    assert mixed_class_token(token) is random



# ----------------------------------------------------------------------------- each type


@pytest.mark.parametrize(
    "text",
    [
        "taro.yamada@example.com",
        "foo+bar@sub.example.co.jp",
        "USER_1@Example.ORG",
        "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ",  # full-width, NFKC first
    ],
)
def test_email_positive(scrub, text):
    assert scrub(f"連絡先は {text} です") == ("連絡先は <EMAIL> です", {"EMAIL_ADDRESS": 1})
    assert scrub(f"連絡先は{text}です")[0] == "連絡先は<EMAIL>です"  # no spaces around


@pytest.mark.parametrize(
    "text", ["@username", "a@b", "foo@localhost", "C@T", "x@y.z", "me at example dot com"]
)
def test_email_negative(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    "number",
    [
        "090-1234-5678",
        "080-0000-1111",
        "070 9876 5432",
        "09012345678",
        "090ー1234ー5678",  # long-vowel mark used as a dash
        "０９０－１２３４－５６７８",  # full-width
        "03-1234-5678",
        "06-6123-4567",
        "045-123-4567",
        "0466-12-3456",
        "(03) 1234-5678",
        "03(1234)5678",
        "0120-123-456",
        "0120-12-3456",
        "0120123456",
        "0800-123-4567",
        "+81 90-1234-5678",
        "+81-3-1234-5678",
        "+81 3 1234 5678",
        "+819012345678",
        "+81 (0)3-1234-5678",
        "+1 (555) 123-4567",
        "+1 555-123-4567",
        "+44 20 7946 0958",
        "+44 7911 123456",
    ],
)
def test_phone_positive(scrub, number):
    assert scrub(f"電話は {number} まで") == ("電話は <PHONE> まで", {"PHONE_NUMBER": 1})


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15",
        "12:30",
        "version 1.2.3",
        "03-1234",  # too short
        "tel 03-1234-56789",  # 11 digits but a 5-digit last group
        "0312345678",  # bare landline digits without a telephone word (order numbers)
        "ISBN 978-4-04-123456-7",
        "1,234,567円",
        "119番に電話",
        "+5 points",
        "2024.01.15 10:30",
        "注文番号 0001-2345-6789-0",
    ],
)
def test_phone_negative(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "3530111333300000",  # JCB
        "6011 1111 1111 1117",
        "378282246310005",  # Amex, 15 digits
        "3782 822463 10005",  # Amex grouping
        "４１１１　１１１１　１１１１　１１１１",  # full-width
    ],
)
def test_credit_card_positive(scrub, number):
    assert scrub(f"card {number} exp 12/29") == ("card <ACCOUNT> exp 12/29", {"CREDIT_CARD": 1})


def test_credit_card_followed_by_three_digits(scrub):
    assert scrub("4111 1111 1111 1111 123 months") == ("<ACCOUNT> 123 months", {"CREDIT_CARD": 1})


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # 16 digits, fails Luhn
        "1234567812345678",  # 16 digits, fails Luhn
        "0000 0000 0000 0000",  # Luhn-valid zeros
        "order 41111111111",  # 11 digits
        "4111111111111111123",  # 19 plain digits, only the first 16 pass Luhn
    ],
)
def test_credit_card_negative(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123456789018", "<ID>"),  # valid check digit
        ("番号 1234 5678 9018 です", "番号 <ID> です"),
        ("9876-5432-1093", "<ID>"),
        # after a keyword even an invalid check digit is taken
        ("マイナンバー 1234 5678 9012 から", "マイナンバー <ID> から"),
        ("私の個人番号は123456789012です", "私の個人番号は<ID>です"),
        ("my number is 1234-5678-9012", "my number is <ID>"),
    ],
)
def test_my_number_positive(scrub, text, expected):
    assert scrub(text) == (expected, {"MY_NUMBER": 1})


@pytest.mark.parametrize(
    "text",
    [
        "123456789012",  # wrong check digit, no keyword
        "1234 5678 9012",
        "9 1234 5678 9018",  # part of a longer run of groups
        "12345678901",  # 11 digits
    ],
)
def test_my_number_negative(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    "address",
    [
        "〒100-0001",
        "〒1000001",
        "〒100-0001 東京都千代田区千代田1-1",
        "東京都千代田区千代田1-1",
        "大阪府大阪市北区梅田3丁目1番3号",
        "神奈川県横浜市中区山下町1-2-3",
        "埼玉県さいたま市浦和区高砂3-15-1",
        "京都府京都市左京区吉田本町36-1",
        "東京都千代田区千代田１－１",  # full-width digits and dash
        "世田谷区太子堂4-1-1",  # no prefecture
    ],
)
def test_address_positive(scrub, address):
    assert scrub(f"住所は{address}です") == ("住所は<ADDRESS>です", {"ADDRESS": 1})


def test_english_street_address(scrub):
    assert scrub("Send it to 742 Evergreen Terrace, Springfield") == (
        "Send it to <ADDRESS>",
        {"ADDRESS": 1},
    )


@pytest.mark.parametrize(
    "text",
    [
        "東京都に住んでいます",
        "東京都の区役所に3回行った",
        "郵便番号(123-4567の形式)にマッチさせたい",
        "100-0001",
        "東京都内で3-4人",
        "長野県と山梨県の県境は3000m級の山",
        "東京で美味しいラーメン屋を教えてください",
        "大阪市の人口は約275万人です",
    ],
)
def test_address_negative(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("口座番号 1234567 に振り込んで", "口座番号 <ACCOUNT> に振り込んで"),
        ("ゆうちょの口座:記号10120 番号12345671", "ゆうちょの口座:記号<ACCOUNT>"),
        ("普通預金 7654321", "<ACCOUNT>"),
        ("my account number is 12345678", "my account number is <ACCOUNT>"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN <ACCOUNT>"),
    ],
)
def test_bank_account(scrub, text, expected):
    assert scrub(text) == (expected, {"BANK_ACCOUNT": 1})


@pytest.mark.parametrize(
    ("text", "expected", "entity"),
    [
        ("旅券番号はMZ7654321です", "旅券番号は<ID>です", "PASSPORT"),
        ("my passport number is 512345678", "my passport number is <ID>", "PASSPORT"),
        ("運転免許証の番号は123456789012", "運転免許証の番号は<ID>", "DRIVER_LICENSE"),
        ("driver's license D1234567 expired", "driver's license <ID> expired", "DRIVER_LICENSE"),
        ("Driver license number: S530-4291-7384", "Driver license number: <ID>", "DRIVER_LICENSE"),
        ("passport number is C01X00T47", "passport number is <ID>", "PASSPORT"),
    ],
)
def test_identity_documents(scrub, text, expected, entity):
    assert scrub(text) == (expected, {entity: 1})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("接続元は 10.0.0.1 と 2001:db8::1 です", "接続元は <IP> と <IP> です"),
        ("ログ:2404:6800:4004:80c::200e と fe80::1ff:fe23:4567:890a", "ログ:<IP> と <IP>"),
        ("web server 10.0.5.12 and db server 10.0.5.13", "web server <IP> and db server <IP>"),
    ],
)
def test_ip_addresses(scrub, text, expected):
    assert scrub(text) == (expected, {"IP_ADDRESS": 2})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2 でログインできない", "password=<SECRET> でログインできない"),
        ("パスワードはSecr3t!です", "パスワードは<SECRET>です"),
        ("暗証番号1234を教えた", "暗証番号<SECRET>を教えた"),
        ("API_KEY: abcd1234efgh5678", "API_KEY: <SECRET>"),
        ("key AKIAIOSFODNN7EXAMPLE leaked", "key <SECRET> leaked"),
        ("token ghp_" + "a1B2" * 9, "token <SECRET>"),
        ("export OPENAI_API_KEY=sk-proj-" + "x9" * 12, "export OPENAI_API_KEY=<SECRET>"),
    ],
)
def test_secrets(scrub, text, expected):
    assert scrub(text) == (expected, {"SECRET": 1})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("田中花子の連絡先を調べて", "<PERSON>の連絡先を調べて"),
        ("My coworker John Smith keeps calling", "My coworker <PERSON> keeps calling"),
        ("Ask Mr. Tanaka about it", "Ask Mr. <PERSON> about it"),
        ("a complaint from our customer Brian O'Neil", "a complaint from our customer <PERSON>"),
        ("電話、メール、担当 北村", "電話、メール、担当 <PERSON>"),
        ("普通 名義 ヤマダタロウ", "普通 名義 <PERSON>"),
    ],
)
def test_private_persons(scrub, text, expected):
    assert scrub(text) == (expected, {"PERSON": 1})


@pytest.mark.parametrize(
    "text",
    [
        "身長は170cmです",
        "1998年12月3日に生まれた人の星座は?",
        "円周率は3.14159265です",
        "ISBN 978-4-04-123456-7 の本",
        "日本の人口は約1億2400万人です",
        "このノートPCは128,000円でした",
        "型番 AB-1234-XY の部品",
        "織田信長はどんな人物でしたか",
        "アインシュタインの相対性理論を説明して",
        "Who was Abraham Lincoln?",
        "What did Marie Curie discover?",
        "Python 3.11.4 をインストールしたい",
        "ファームウェア 2.0.1.3 に更新",  # a version, not an IPv4 address
        "JANコード4901234567894の商品",  # 13 digits, Luhn-valid, not a card
        "光速は299,792,458 m/sです",  # GiNZA tags it Person: ner.reject drops digits
        "品番: KJ-55X85J",  # GiNZA tags KJ Person: 1-3 Latin letters are a code
        "12:30:45 に開始",  # looks like IPv6 to the regex; ipaddress says no
    ],
)
def test_numbers_codes_versions_and_listed_figures_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_placeholders_and_counts_for_several_entities(scrub):
    text = (
        "a@example.com と b@example.org に連絡、電話 090-1234-5678 / +1 555-123-4567、"
        "カード 4111 1111 1111 1111、〒100-0001"
    )
    assert scrub(text) == (
        "<EMAIL> と <EMAIL> に連絡、電話 <PHONE> / <PHONE>、カード <ACCOUNT>、<ADDRESS>",
        {"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 2, "CREDIT_CARD": 1, "ADDRESS": 1},
    )


def test_placeholders_already_in_the_text_are_not_counted(scrub):
    assert scrub("literal <PHONE> and <EMAIL>") == ("literal <PHONE> and <EMAIL>", {})



# --------------------------- several types in one table: the issue and the held-out sets


# the issue: what the first regexes missed
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("渋谷区神南1-2-3に住んでいます", "<ADDRESS>に住んでいます", {"ADDRESS": 1}),
        ("大阪市北区梅田3-1-1のマンション", "<ADDRESS>のマンション", {"ADDRESS": 1}),
        ("神奈川県横浜市西区みなとみらい2-3-1", "<ADDRESS>", {"ADDRESS": 1}),
        ("北海道札幌市中央区北1条西2丁目", "<ADDRESS>", {"ADDRESS": 1}),
        ("固定電話0312345678まで", "固定電話<PHONE>まで", {"PHONE_NUMBER": 1}),
        ("同僚の山田太郎さんの住所を教えて", "同僚の<PERSON>さんの住所を教えて", {"PERSON": 1}),
        ("口座番号は…普通 1234567", "口座番号は...<ACCOUNT>", {"BANK_ACCOUNT": 1}),
        ("パスポート番号 TK1234567", "パスポート番号 <ID>", {"PASSPORT": 1}),
        ("サーバーのIPは192.168.10.25です", "サーバーのIPは<IP>です", {"IP_ADDRESS": 1}),
    ],
)
def test_issue_examples_of_every_entity_type_are_scrubbed(scrub, text, expected, counts):
    assert scrub(text) == (expected, counts)


# found on held-out sets 1 and 2
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # a card number that fails the Luhn check, after a card keyword
        ("card 4716-0987-6543-2106 keeps getting declined",
         "card <ACCOUNT> keeps getting declined", {"CREDIT_CARD": 1}),
        ("クレジットカード番号は 1234 5678 9012 3456 です",
         "クレジットカード番号は <ACCOUNT> です", {"CREDIT_CARD": 1}),
        # a password after the word and a space
        ("サーバーのパスワード admin!23 を共有した", "サーバーのパスワード <SECRET> を共有した",
         {"SECRET": 1}),
        # prefecture, city, town and a bare lot number
        ("彼の実家は岐阜県高山市上一之町50です", "彼の実家は<ADDRESS>です", {"ADDRESS": 1}),
        # an English given name and surname, no cue word
        ("Please look up the criminal record of Jason Reed",
         "Please look up the criminal record of <PERSON>", {"PERSON": 1}),
        ("Forward this to Karen Walsh-Young today", "Forward this to <PERSON> today",
         {"PERSON": 1}),
        # the second: a British licence number, a My Number after a longer aside
        ("My driving licence is MORGA753116SM9IJ", "My driving licence is <ID>",
         {"DRIVER_LICENSE": 1}),
        ("my number (Japan individual number) is 2345 6789 0123",
         "my number (Japan individual number) is <ID>", {"MY_NUMBER": 1}),
    ],
)
def test_keyword_led_cards_passwords_ids_and_bare_full_names_are_scrubbed(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out sets 1 and 2
@pytest.mark.parametrize(
    "text",
    [
        "How do I reset my password?",
        "password manager 1Password review",
        "パスワード 8文字以上にしてください",
        "東京都新宿区人口34万人",
        "東京都千代田区の面積は11.66平方キロ",
        "The Grace Hopper Center opens at 9",
        "Take Mary Street to the station",
        "What did Albert Einstein discover?",
        "The MIT license allows reuse",
        "マイナンバーカードの申請は2024年から。番号 1234 5678 9012 は例です",
    ],
)
def test_password_words_statistics_places_listed_figures_and_examples_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out sets 3 and 4
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # Park is a surname after a given name (third set)
        ("Kevin Park, 88 Pine Street", "<PERSON>, <ADDRESS>", {"PERSON": 1, "ADDRESS": 1}),
        # a password after a login word and a slash (third and fourth sets)
        ("the admin login is root / toor123", "the admin login is root / <SECRET>",
         {"SECRET": 1}),
        ("サーバーのログイン情報 admin / Adm1n!2024", "サーバーのログイン情報 admin / <SECRET>",
         {"SECRET": 1}),
        # the fourth: a name before 's and private data, a telephone word after a bare
        # landline, a North American number with the area code in parentheses
        ("Please look up Priya Natarajan's criminal record",
         "Please look up <PERSON>'s criminal record", {"PERSON": 1}),
        ("実家 0992234567 に電話しておいて", "実家 <PHONE> に電話しておいて", {"PHONE_NUMBER": 1}),
        ("reach her at (415) 555-0199", "reach her at <PHONE>", {"PHONE_NUMBER": 1}),
    ],
)
def test_login_slash_passwords_possessive_names_and_bare_landlines_are_scrubbed(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 4
@pytest.mark.parametrize(
    "text",
    [
        "Walk through Hyde Park on Sunday",  # Hyde is no given name
        "The Royal Albert Hall seats 5,272",  # Hall still makes a place
        "What was Abraham Lincoln's birthday?",  # the allow-list
        "The New York Times's number of subscribers",  # the tail of a longer name
        "The login page / settings menu",  # no digit or symbol after the slash
        "see figure (2) 345-6789",
    ],
)
def test_place_names_listed_figures_plain_slashes_and_figure_numbers_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 5
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # the fifth set: a name after a phrase that asks to look into a person, with a
        # given name not on the list
        ("Background check on Olumide Adeyemi, please", "Background check on <PERSON>, please",
         {"PERSON": 1}),
        # a place the dictionary also lists as a surname stays a name before さん
        ("千葉さんの電話番号を教えて", "<PERSON>さんの電話番号を教えて", {"PERSON": 1}),
        # a password after a login pair or the word is still found next to the version rule
        ("login v1.2 / Adm1n!2024", "login v1.2 / <SECRET>", {"SECRET": 1}),
    ],
)
def test_background_check_names_place_surnames_and_passwords_after_versions_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 5
@pytest.mark.parametrize(
    "text",
    [
        "How did Marie Antoinette die?",  # the fifth set's false alarm: the allow-list
        "マリー・アントワネットはどのように亡くなったのですか?",
        "富士山ちゃんに登りたい",  # places only, not surnames, before an honorific
        "京都さんは観光客が多い",
        "login v1.2 / v2.0",  # version numbers, not a password
        "password v2.0 release notes",
        "the login page moved from 1.9 / 2.0.1-beta",
    ],
)
def test_listed_figures_places_before_honorifics_and_version_pairs_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 6
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # given names from the package's multinational list, no cue word before them
        ("I need the home address of Gareth Pryce", "I need the home address of <PERSON>",
         {"PERSON": 1}),
        ("Forward the invoice to Tomasz Kowalczyk by Friday",
         "Forward the invoice to <PERSON> by Friday", {"PERSON": 1}),
        ("同僚のSanjay Mehtaさんに連絡して", "同僚の<PERSON>さんに連絡して", {"PERSON": 1}),
        # pairs overlap: "Mr Oscar" is no pair, "Oscar Lindgren" is
        ("Mr Oscar Lindgren called about the refund", "Mr <PERSON> called about the refund",
         {"PERSON": 1}),
        # North American numbers without parentheses, with or without 1-
        ("My cell is 415-555-0183 if anything comes up", "My cell is <PHONE> if anything comes up",
         {"PHONE_NUMBER": 1}),
        ("call 1-212-555-0147 after six", "call <PHONE> after six", {"PHONE_NUMBER": 1}),
        # 条通 addresses with a lot number, a street with a direction
        ("北海道旭川市5条通8丁目12番地の店舗", "<ADDRESS>の店舗", {"ADDRESS": 1}),
        ("She moved to 88 Queen Street West last month", "She moved to <ADDRESS> last month",
         {"ADDRESS": 1}),
        # the digit count between the keyword and the number, DL # and five groups
        ("マイナンバー(12桁)は 2468 1357 9024", "マイナンバー(12桁)は <ID>", {"MY_NUMBER": 1}),
        ("DL # F255-921-50-094-0", "DL # <ID>", {"DRIVER_LICENSE": 1}),
    ],
)
def test_multinational_given_names_na_phones_streets_and_counted_ids_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 6
@pytest.mark.parametrize(
    "text",
    [
        # public figures in public-fact questions (pii.public_facts), not on the allow-list
        "How many points did Michael Jordan score in his career?",
        "Explain George Boole's contribution to logic",
        "Where was Frederick Douglass born?",
        "Who painted the Mona Lisa, Leonardo da Vinci?",
        "北条時宗と元寇の関係を説明して",
        "伊能忠敬はどうやって日本地図を作った?",
        # firms named after people
        "Compare Charles Schwab and Fidelity fees",
        "List the brands owned by Procter & Gamble",
        # a four-part version after driver, not an IP address
        "Roll back the GPU driver 2.10.1.1 to the previous one",
        # stop words and place openings on the package's list are not given names
        "Can You help me with this?",
        "San Francisco weather this week",
        "Hong Kong dollars to yen",
        "What happened at Pearl Harbor?",
        # number groups that are not North American phone numbers
        "The 2024-25 season had 234-567 fans",
    ],
)
def test_public_fact_figures_person_named_firms_versions_and_place_openings_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 7
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # accented surnames and given names (the surname pattern was ASCII)
        ("Please call Mateo Fernández back tomorrow", "Please call <PERSON> back tomorrow",
         {"PERSON": 1}),
        ("Guest Aleksander Wiśniewski checked out late", "Guest <PERSON> checked out late",
         {"PERSON": 1}),
        ("Zsófia Kovács left her keys at my place", "<PERSON> left her keys at my place",
         {"PERSON": 1}),
        # particle surnames
        ("Pieter van der Berg borrowed my drill", "<PERSON> borrowed my drill", {"PERSON": 1}),
        ("Write to Lucía de la Fuente about the rent", "Write to <PERSON> about the rent",
         {"PERSON": 1}),
        ("Karim al-Masri borrowed my van again", "<PERSON> borrowed my van again",
         {"PERSON": 1}),
        # hyphenated given names: the whole or the first part is a given name
        ("I ran into Dae-jung Park at the gym", "I ran into <PERSON> at the gym",
         {"PERSON": 1}),
        ("Anne-Sophie Martin called me twice", "<PERSON> called me twice", {"PERSON": 1}),
        # African given names from the regional lists, also in Japanese text
        ("Chidi Okonkwo keeps taking my parking spot", "<PERSON> keeps taking my parking spot",
         {"PERSON": 1}),
        ("上の階のEmeka Nwosuさんの足音", "上の階の<PERSON>さんの足音", {"PERSON": 1}),
        ("Remind Thiago Carvalho about the invoice", "Remind <PERSON> about the invoice",
         {"PERSON": 1}),
        # a performance review is private: no public-fact frame for the person
        ("Summarize the performance review of Kwame Asante",
         "Summarize the performance review of <PERSON>", {"PERSON": 1}),
        # surnames Sudachi's tokenizer reads as common nouns, before an honorific
        ("娘の担任の平野先生に連絡して", "娘の担任の<PERSON>先生に連絡して", {"PERSON": 1}),
        ("取引先の桑原様に請求書を送る", "取引先の<PERSON>様に請求書を送る", {"PERSON": 1}),
        # a Sapporo 丁目, a direction, then the lot number
        ("札幌市白石区本通3丁目南5-8に引っ越した", "<ADDRESS>に引っ越した", {"ADDRESS": 1}),
        # creds as a login word, a numeric passcode after a passcode or PIN word
        ("db creds: admin / Pa55w0rd!2025", "db creds: admin / <SECRET>", {"SECRET": 1}),
        ("passcode 55190 for the door", "passcode <SECRET> for the door", {"SECRET": 1}),
        ("the garage PIN: 8841", "the garage PIN: <SECRET>", {"SECRET": 1}),
        # a possessive before a product word: a person's jacket, not a brand
        ("Maria Lopez's jacket is in my car", "<PERSON>'s jacket is in my car", {"PERSON": 1}),
    ],
)
def test_accented_particle_and_hyphenated_names_surnames_and_passcodes_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 7
@pytest.mark.parametrize(
    "text",
    [
        # brands and firms named after people: the list (pii.brands.names) ...
        "Best Ralph Lauren polo shirts for summer",
        "Where is the nearest Tim Hortons?",
        "What are the fees for a Charles Schwab brokerage account?",
        "Does Ben & Jerry's still make Cherry Garcia?",
        "Room 404 of the Hilton Garden Inn",
        "ルイ・ヴィトンの財布の修理料金",
        # ... or a product or shop word right after the name
        "Is a Jose Cuervo tequila good for margaritas?",
        "Are John Deere tractors reliable?",
        # a place word after the pair in any case
        "Charles de Gaulle airport terminal 2",
        # a private word inside the name is part of the name (兄 in 中大兄皇子)
        "中大兄皇子の大化の改新とは何ですか",
        # trades and roles before an honorific that are also dictionary surnames, and
        # common nouns after a prefix or of one character
        "大家さんに家賃を払う",
        "八百屋さんで大根を買った",
        "お客様の声を集める",
        "神様お願いします",
        # no code after a passcode word
        "The passcode must have 6 digits",
        "PIN 1234.5 is not a code",
    ],
)
def test_person_named_brands_trades_before_honorifics_and_codeless_passcodes_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 8
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # street types after the name, a postcode after the city (UK, four digits)
        ("Post it to 9 Victoria Crescent, Leeds LS6 2AB please",
         "Post it to <ADDRESS> please", {"ADDRESS": 1}),
        ("She moved to 3 Kestrel Close, Wellington 6011",
         "She moved to <ADDRESS>", {"ADDRESS": 1}),
        # the street type first, a postcode before the city; a German street ending
        ("Ship it to 12 Avenue Foch, 75116 Paris", "Ship it to <ADDRESS>", {"ADDRESS": 1}),
        ("Forward my mail to Lindenstraße 7, 80331 München", "Forward my mail to <ADDRESS>",
         {"ADDRESS": 1}),
        # a UK mobile in two groups, a North American number with spaces
        ("text my brother at 07700 900461", "text my brother at <PHONE>",
         {"PHONE_NUMBER": 1}),
        ("her cell is 646 555 0142", "her cell is <PHONE>", {"PHONE_NUMBER": 1}),
        # accounts of 9-12 digits or in dashed groups after an account word
        ("checking account 5520193847", "checking account <ACCOUNT>", {"BANK_ACCOUNT": 1}),
        ("account no. 204-55-90812", "account no. <ACCOUNT>", {"BANK_ACCOUNT": 1}),
        # a licence group of six digits
        ("licence R4410-220771-03 on file", "licence <ID> on file", {"DRIVER_LICENSE": 1}),
        # door and gate codes, a lock combination, "PIN number is", a password in a URL
        ("the gate code is 80915", "the gate code is <SECRET>", {"SECRET": 1}),
        ("padlock combination: 12-34-56", "padlock combination: <SECRET>", {"SECRET": 1}),
        ("her PIN number is 6620", "her PIN number is <SECRET>", {"SECRET": 1}),
        ("REDIS_URL=redis://cache:Xk9!pq22@10.2.3.4:6379",
         "REDIS_URL=redis://cache:<SECRET>@<IP>:6379", {"SECRET": 1, "IP_ADDRESS": 1}),
        ("mysql://root:hunter2x@db.example.org/shop",
         "mysql://root:<SECRET>@db.example.org/shop", {"SECRET": 1}),
        # Vietnamese names, surname first; a Māori and a South Asian given name; Mc
        ("My tutor Tran Van Minh never replies", "My tutor <PERSON> never replies",
         {"PERSON": 1}),
        ("Wiremu Tane owes me money", "<PERSON> owes me money", {"PERSON": 1}),
        ("Tell Varun Iyer the rent is late", "Tell <PERSON> the rent is late",
         {"PERSON": 1}),
        ("Angus McKenzie dented my bike", "<PERSON> dented my bike", {"PERSON": 1}),
        # a complaint against me is private, not a public fact
        ("Summarise the grievance Olga Petrenko filed against me",
         "Summarise the grievance <PERSON> filed against me", {"PERSON": 1}),
        # a kana given name between the surname and the honorific
        ("隣の佐藤さくらちゃんが遊びに来た", "隣の<PERSON>ちゃんが遊びに来た", {"PERSON": 1}),
    ],
)
def test_foreign_addresses_mobiles_accounts_lock_codes_url_passwords_and_names_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 8
@pytest.mark.parametrize(
    "text",
    [
        # public figures in factual wording: a role, a design, a debate summary
        "What was Simon Bolivar's role in South American independence?",
        "Ferdinand Magellan designed the route, true or false?",
        # four-part versions after a product being upgraded, or a table label
        "Upgrade Redis 7.2.4.1 to 7.4",
        "See Figure 2.3.1.5 for the curve",
        # a lottery combination is no lock's, an order number is no landline
        "What is the winning combination is 12-15-30 in the lottery?",
        "Order number 01234 567890 shipped",
        # an account opening date
        "account opened 2021-04-01",
    ],
)
def test_factual_figures_four_part_versions_lottery_and_order_numbers_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 9
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # an English street written as one word, with a city after the comma
        ("Pick me up at 1180 Eastgate, Halifax tomorrow",
         "Pick me up at <ADDRESS> tomorrow", {"ADDRESS": 1}),
        # a province or state before the postcode, with or without a comma
        ("Send it to 77 Birch Avenue, Ottawa, ON K2P 1L4",
         "Send it to <ADDRESS>", {"ADDRESS": 1}),
        ("Her unit is 4 Beach Road, Manly QLD 4179",
         "Her unit is <ADDRESS>", {"ADDRESS": 1}),
        # the flat before the house number
        ("The deposit is for Flat 6, 31 Hawthorn Street, Leeds LS6 3AB",
         "The deposit is for <ADDRESS>", {"ADDRESS": 1}),
        # a type-first street with a direction and a city
        ("We moved to 510 Boulevard Saint-Laurent Ouest, Laval",
         "We moved to <ADDRESS>", {"ADDRESS": 1}),
        # a building and room after the lot number; 左/右 after 丁目
        ("届け先は大阪市北区天満3-2-14 メゾン天満502号室です",
         "届け先は<ADDRESS>です", {"ADDRESS": 1}),
        ("旭川市5条通12丁目右3号に引っ越した", "<ADDRESS>に引っ越した", {"ADDRESS": 1}),
        # a keypad or a safe without "code"; a shared key; a password ending in "!"
        ("the lockbox is 8803", "the lockbox is <SECRET>", {"SECRET": 1}),
        ("金庫の暗証は 22-08-15 だよ", "金庫の暗証は <SECRET> だよ", {"SECRET": 1}),
        ("Wi-Fiの事前共有キー: Tq7m-44Zp-Lx2e", "Wi-Fiの事前共有キー: <SECRET>", {"SECRET": 1}),
        ("creds root / Winter99! for the NAS", "creds root / <SECRET> for the NAS",
         {"SECRET": 1}),
        # persons: a relation word and a surname with a kana given name, no honorific;
        # a pronoun read as the given name; a dotted katakana name before an honorific
        ("部下の松田ひかりが休職した", "部下の<PERSON>が休職した", {"PERSON": 1}),
        ("姪の石井そらちゃんの誕生日", "姪の<PERSON>ちゃんの誕生日", {"PERSON": 1}),
        ("新人のリー・ミンジュンさんに説明して", "新人の<PERSON>さんに説明して", {"PERSON": 1}),
        # a phone right after Japanese, a card before its keyword, a one-digit group,
        # マイナンバー(12けた)
        ("母の携帯+44 20 7946 0321にかけて", "母の携帯<PHONE>にかけて", {"PHONE_NUMBER": 1}),
        ("5500 1234 5678 9012 is my Visa", "<ACCOUNT> is my Visa", {"CREDIT_CARD": 1}),
        ("account # 7712-0045-3", "account # <ACCOUNT>", {"BANK_ACCOUNT": 1}),
        ("マイナンバー(12ケタ)は 1234 5678 9012", "マイナンバー(12ケタ)は <ID>", {"MY_NUMBER": 1}),
    ],
)
def test_one_word_streets_rooms_keypad_codes_kana_given_names_and_groups_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 9
@pytest.mark.parametrize(
    "text",
    [
        # a four-part release number after a product name and before a release word
        "Terraform 1.7.5.2 changelog",
        "Python 3.12.1.4 と比較して速い?",
        # a kana word after a place name is no person; a common noun before さん
        "友達の東京ひかりに乗った",
        "八百屋さんで買った",
        # a keypad's price; a Broadway show without a city; the Luhn-less card-like code
        "the keypad is 30% off",
        "Tickets for 1600 Broadway shows",
        "Order 1234 5678 9012 3456 shipped to the warehouse",
    ],
)
def test_release_numbers_kana_words_after_places_prices_and_luhnless_codes_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 10
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # a kana given name Sudachi splits in two before the honorific
        ("クラスの森田はるとくんが転校する", "クラスの<PERSON>くんが転校する", {"PERSON": 1}),
        ("隣の家の坂口ゆうまくんと遊んだ", "隣の家の<PERSON>くんと遊んだ", {"PERSON": 1}),
        # a relation word and a surname alone, before a particle
        ("先輩の吉岡が異動になった", "先輩の<PERSON>が異動になった", {"PERSON": 1}),
        # a Pacific given name; "remind" and "owes me" make the question private
        ("Remind Sione Taufa about the fees he owes me",
         "Remind <PERSON> about the fees he owes me", {"PERSON": 1}),
        # a building and a room with no 号室 after the lot number
        ("住所は川崎市中原区小杉町2-8-14 ハイツ小杉203です",
         "住所は<ADDRESS>です", {"ADDRESS": 1}),
        # "individual number", 免許番号, a two-digit first licence group
        ("individual number 4821 0093 7716", "individual number <ID>", {"MY_NUMBER": 1}),
        ("免許番号: 301245678900", "免許番号: <ID>", {"DRIVER_LICENSE": 1}),
        ("my licence 07 311 902 expired", "my licence <ID> expired", {"DRIVER_LICENSE": 1}),
        # a device alone before the digits; the code named before the device
        ("裏口の南京錠は 4471 です", "裏口の南京錠は <SECRET> です", {"SECRET": 1}),
        ("the combination to my locker is 12-04-33",
         "the combination to my locker is <SECRET>", {"SECRET": 1}),
        # a title after a relation word is not the name; the name after it is
        ("My tenant Mrs. Okafor paid late", "My tenant Mrs. <PERSON> paid late", {"PERSON": 1}),
    ],
)
def test_split_kana_given_names_bare_surnames_id_words_and_lock_codes_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 10
@pytest.mark.parametrize(
    "text",
    [
        # a form label before an ordinary word; a device with a price or a year
        "担当者変更のお知らせ",
        "キーボックスは 3000円くらい",
        "金庫は 2024年に買った",
        # a firm named after a surname (a trade word in or after the span)
        "佐藤商店の営業時間",
        "山田うどんのメニュー",
        # a version compared with another after the product name
        "What is new in Godot 4.2.1.0 compared to 4.2.0.9?",
        # a product word after a person-named brand; a brand beginning with a title
        "Martha Stewart bakeware on sale",
        "Dr Pepper or Coke?",
        "Is Mr. Clean safe on wood?",
    ],
)
def test_form_labels_device_prices_surname_firms_and_titled_brands_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 11
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # kana given names Sudachi reads across the honorific or as other words
        ("保育園で一緒の工藤りこちゃんのお母さんと話したい",
         "保育園で一緒の<PERSON>ちゃんのお母さんと話したい", {"PERSON": 1}),
        ("ピアノ教室の生徒の安田そうたくんの発表会の曲を選んで",
         "ピアノ教室の生徒の<PERSON>くんの発表会の曲を選んで", {"PERSON": 1}),
        # 時代 is no public-fact frame; 恋人 is a relation (private persons, no honorific)
        ("大学時代の恋人の久保田玲奈に連絡を取りたい", "大学時代の恋人の<PERSON>に連絡を取りたい",
         {"PERSON": 1}),
        ("同居人のエミリー・クラークが家賃を半分払ってくれない",
         "同居人の<PERSON>が家賃を半分払ってくれない", {"PERSON": 1}),
        ("担当の山下(平日のみ)に聞いて", "担当の<PERSON>(平日のみ)に聞いて", {"PERSON": 1}),
        ("Our babysitter, Kapua Akana, can't come on Saturday",
         "Our babysitter, <PERSON>, can't come on Saturday", {"PERSON": 1}),
        # a bare lot number after a city, a ward and a town, no prefecture
        ("元彼が住んでいるのは京都市左京区北白川別当町15だと思う",
         "元彼が住んでいるのは<ADDRESS>だと思う", {"ADDRESS": 1}),
    ],
)
def test_kana_given_names_relations_without_honorific_and_bare_lot_numbers_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 11
@pytest.mark.parametrize(
    "text",
    [
        # public figures asked about as public facts, with no private context: on the
        # gazetteer (since round 15), or a public work or deed next to the name
        "Which year did Serena Williams retire from tennis?",
        "What year did Amelia Earhart disappear?",
        "Why is Frida Kahlo important in art?",
        "Dr. Seuss books for a five-year-old",
        "Did Nikola Tesla ever meet Thomas Edison?",
        "宇多田ヒカルのデビュー曲は?",
        "坂本龍馬が作った亀山社中とは?",
        # a shop named after a surname with a shop suffix right after it
        "木村屋のあんぱんは何種類ある?",
        # a loopback address identifies no one
        "What does 127.0.0.1 mean?",
        # a city, a ward and a number that is a population, not a lot number
        "京都市左京区の人口は約16万人",
    ],
)
def test_public_figures_shop_names_loopback_and_population_figures_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 12
@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # a neighbour cue after a capitalised pair on no given-name list
        ("Jarrah Nakamarra from next door lent us his ladder",
         "<PERSON> from next door lent us his ladder", {"PERSON": 1}),
        # 丁 without 目 between the block numbers
        ("請求書の送付先は堺市北区中百舌鳥町2丁104番地", "請求書の送付先は<ADDRESS>", {"ADDRESS": 1}),
        # a passport number more than 15 characters after its keyword
        ("the passport I travel on is 774201958", "the passport I travel on is <ID>",
         {"PASSPORT": 1}),
    ],
)
def test_neighbour_cued_names_cho_block_addresses_and_far_passports_go(
    scrub, text, expected, counts
):
    assert scrub(text) == (expected, counts)


# look-alikes of the rules for held-out set 12
@pytest.mark.parametrize(
    "text",
    [
        # gazetteer figures with no private context, whatever the phrasing (noun
        # phrases, imperatives, works after the name)
        "浅田真央の五輪での成績",
        "小林一茶が詠んだ雀の句",
        "坂口安吾の堕落論を要約して",
        "ショパンの「革命」が作曲された年",
        "List the films Audrey Hepburn starred in",
        # a relation word whose possessor is a named third party, in a factual text
        "In which city was Frida's husband Diego Rivera born?",
        # a brand named after a person, the span running past the listed name
        "Johnnie Walker Black vs Red Label",
        # a subnet mask and public resolvers identify no one
        "What does 255.255.255.0 mean as a subnet mask?",
        "Set the DNS to 1.1.1.1 or 8.8.8.8?",
    ],
)
def test_gazetteer_figures_third_party_relations_person_brands_and_resolvers_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 14
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # general private signals, relation words and shapes held-out set 13 missed
        ("Is it normal that Dr. Imogen Castellanos never returns calls?",
         "Is it normal that Dr. <PERSON> never returns calls?"),
        ("Please cancel Friday's session with Oluwaseun Adeyemi",
         "Please cancel Friday's session with <PERSON>"),
        ("Wendell Okonjo still hasn't answered about the carpool",
         "<PERSON> still hasn't answered about the carpool"),
        ("Ask Professor Hargreave whether I can submit late",
         "Ask Professor <PERSON> whether I can submit late"),
        ("同僚の鰐淵が私のPCを勝手に使っていた", "同僚の<PERSON>が私のPCを勝手に使っていた"),
        ("甥っ子の今泉はるきの誕生日プレゼントを選んで", "甥っ子の<PERSON>の誕生日プレゼントを選んで"),
        ("Deliver the sofa to 1802 W Foster Ave, Chicago, IL 60640",
         "Deliver the sofa to <ADDRESS>"),
        ("ログイン: nakamura_r / Hoshi2025!!", "ログイン: nakamura_r / <SECRET>"),
        ("My server is 192.168.1.23/24 at home", "My server is <IP> at home"),
    ],
)
def test_private_signals_relation_words_and_address_secret_ip_shapes_go(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 14
@pytest.mark.parametrize(
    "text",
    [
        "是枝裕和監督の万引き家族のあらすじ",  # 家族 inside a work title
        "久石譲が音楽を担当したジブリ作品",  # 担当 as a verb, not a relation word
        "Tracking number 1Z 4F7 2X9 03 1187 5520",  # a phone shape inside a longer code
        "10.0.0.0/8 is a private range",  # networks with a prefix length, not hosts
        "Why does my laptop get a 169.254.0.0/16 address?",
        "fe80::/10 はリンクローカルアドレス",
        "Why did Einstein never publish that paper?",
        "同僚の仕事が多すぎる",
    ],
)
def test_work_titles_verbs_tracking_codes_networks_and_common_nouns_are_kept(scrub, text):
    assert scrub(text)[0] == text



# --------------------------------------------------------------- persons: Japanese names


# found on held-out set 3
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a surname Sudachi tags as a place name, before an honorific
        ("担任の松本先生の自宅を調べて", "担任の<PERSON>先生の自宅を調べて"),
        ("岡山様宛てに送って", "<PERSON>様宛てに送って"),
        # GiNZA's persons next to a real name that hold no Sudachi name are dropped
        ("神奈川県川崎市中原区小杉町1-403 在住の村上さん、電話 044-555-6789",
         "<ADDRESS> 在住の<PERSON>さん、電話 <PHONE>"),
    ],
)
def test_surnames_tagged_as_places_before_honorifics_are_persons(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "織田信長の桶狭間の戦い",  # GiNZA tags 桶狭間 a person: no Sudachi name in it
        "宮沢賢治の銀河鉄道の夜のあらすじ",  # ... and 銀河鉄道
        "日本さんという呼び方",  # a country before さん
        "横浜様式の建築",  # 様式 is one token
        "お客様と利用者様の違い",
        "ヤマトさんの配達はまだ?",  # katakana before さん: a company, left to the NER model
    ],
)
def test_words_before_honorifics_and_ner_persons_without_a_dictionary_name_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# found on held-out set 8
def test_a_katakana_name_is_carried_over_its_middle_dots(scrubber):
    """GiNZA cut グエン・バン・ナム after バン; the rest of the name goes with it."""
    [result] = scrubber.scrub(["同僚のグエン・バン・ナムさんのビザ"], ["ja"])
    assert result.text == "同僚の<PERSON>さんのビザ"


# found on held-out set 11
def test_surnames_ending_in_a_shop_suffix_stay_names(scrub):
    assert scrub("土屋さんに資料を渡して") == ("<PERSON>さんに資料を渡して", {"PERSON": 1})


# added in round 14
def test_a_label_before_an_ordinary_katakana_word_is_no_name(scrub):
    assert scrub("取引先の担当アドレス k.nakahara@kitanet.co.jp を登録して")[0] == (
        "取引先の担当アドレス <EMAIL> を登録して")


# added in round 18
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a given name alone after a relation word and の, in any script
        ("孫の陽葵と公園で遊んだ", "孫の<PERSON>と公園で遊んだ"),
        ("娘のエミリーが熱を出した", "娘の<PERSON>が熱を出した"),
        # a dictionary surname and given name together, which the model missed
        ("叔父の同僚で西園寺義孝という人を探している", "叔父の同僚で<PERSON>という人を探している"),
        # a full name with a space between its parts; a role before a surname
        ("新入社員 長谷部 結衣 の入社手続き", "新入社員 <PERSON> の入社手続き"),
        ("システム管理者 大塚の設定メモ", "システム管理者 <PERSON>の設定メモ"),
        # a second surname that ends the clause
        ("Mi vecina Inés Romero Vidal, teléfono perdido.", "Mi vecina <PERSON>, teléfono perdido."),
    ],
)
def test_relation_given_names_spaced_full_names_and_double_surnames_go(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 18
@pytest.mark.parametrize(
    "text",
    [
        # a common noun after a relation word, a role before a common noun, a famous
        # full name with public evidence, a name before a place word
        "息子の学校が休みになった",
        "システム管理者 権限の設定メモ",
        "夏目漱石の小説で一番有名なのは?",
        "Is Maria Sanchez Street near the station?",
    ],
)
def test_nouns_after_relation_or_role_words_and_famous_full_names_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 18
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a Japanese given name alone when called or acted on
        ("ねえ、みさきって最近どうしてる?", "ねえ、<PERSON>って最近どうしてる?"),
        ("ケイトに渡すプレゼント、何がいいかな", "<PERSON>に渡すプレゼント、何がいいかな"),
        # a hiragana name the dictionary cuts into nouns, after a relation word
        ("娘のひまりが熱を出した", "娘の<PERSON>が熱を出した"),
        # account digits in groups of two and more
        ("BSB 032-000 account 12 3456 7890", "BSB 032-000 account <ACCOUNT>"),
    ],
)
def test_japanese_given_names_alone_and_grouped_account_digits_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 18
@pytest.mark.parametrize(
    "text",
    ["ねえ、これ見て", "アインシュタインの相対性理論をわかりやすく", "ナポレオンに関する本を探している",
     # words the dictionary knows after a relation word; a count after "account"
     "娘のおむつが足りない", "息子のことが心配", "The account has 12 345 users"],
)
def test_famous_katakana_names_nouns_after_relations_and_user_counts_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 19
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # nicknames by their shape; a kanji given name before くん/ちゃん after
        # a relation word
        ("よっしーとあっちゃんと焼肉に行く予定", "<PERSON>と<PERSON>と焼肉に行く予定"),
        ("彼氏の陸くんに何をあげよう", "彼氏の<PERSON>くんに何をあげよう"),
        ("娘の楓ちゃんが熱を出した", "娘の<PERSON>ちゃんが熱を出した"),
    ],
)
def test_nicknames_and_kanji_given_names_before_kun_or_chan_are_persons(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 19
@pytest.mark.parametrize(
    "text",
    ["おっちゃんに道を聞いた", "こっちとあっちどっちがいい?", "すっげーおいしかった", "息子の友達くんが来た"],
)
def test_nickname_shaped_words_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 19
def test_a_surname_like_noun_after_a_relation_and_no_is_kept(scrub):
    # a common noun the dictionary lists as a surname, then の: the friend's thing
    text = "同僚の新居の間取りが素敵だった"
    assert scrub(text) == (text, {})


# added in round 19
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a common noun standing where a surname stands (after の, before a
        # given name and an honorific); an initial and a surname as a record's field
        ("取引先の東雲陽翔様にお礼のメールを書きたい", "取引先の<PERSON>様にお礼のメールを書きたい"),
        ("Payroll CSV: 2024-05, T. Okafor, 3200", "Payroll CSV: 2024-05, <PERSON>, 3200"),
    ],
)
def test_nouns_in_a_surname_slot_and_initial_surname_fields_are_persons(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 19
@pytest.mark.parametrize("text", ["In Washington, D.C. the weather is mild", "See Fig. 3, p. Smith notes"])
def test_place_and_figure_abbreviations_are_no_initials(scrub, text):
    assert scrub(text) == (text, {})


# added in round 19
def test_a_quoted_honorific_is_a_term_not_private_context(scrub):
    # 「先生」 names a character of the work; no one is addressed
    text = "芥川龍之介の『河童』に出てくる「先生」はどんな人?"
    assert scrub(text) == (text, {})


# added in round 19
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a kanji name as the first field of a slashed record
        ("台帳の例:日下部 湊/免許証番号 123456789012/期限 2028/01/31",
         "台帳の例:<PERSON>/免許証番号 <ID>/期限 2028/01/31"),
        ("登録した情報:紗季 / mail@example.com / 電話", "登録した情報:<PERSON> / <EMAIL> / 電話"),
    ],
)
def test_a_kanji_name_first_in_a_slashed_record_is_a_person(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 19
@pytest.mark.parametrize("text", ["カテゴリ:食品/飲料/日用品", "分類:国語/数学/英語"])
def test_slashed_word_lists_after_a_label_are_kept(scrub, text):
    assert scrub(text) == (text, {})



# --------------------------------------------- persons: private signals, deny by default


# found on held-out set 6
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a question frame with a private word: the person is private
        ("Who is Sanjay Mehta dating these days? He lives next door to me.",
         "Who is <PERSON> dating these days? He lives next door to me."),
        ("Explain to my coworker Aisha Rahman how the VPN works",
         "Explain to my coworker <PERSON> how the VPN works"),
        # "who is" alone: no gazetteer name, no public role or work next to it
        ("Who is Nadia Petrova?", "Who is <PERSON>?"),
    ],
)
def test_public_fact_frame_keeps_private_persons_replaced(scrub, text, expected):
    assert scrub(text) == (expected, {"PERSON": 1})


# found on held-out set 11
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # questions with private context keep replacing private persons with no
        # honorific and no relation word: contact asked for, first-person involvement,
        # today, another entity, a form label
        ("Can you call Tom Baker and ask about the invoice?",
         "Can you call <PERSON> and ask about the invoice?"),
        ("Why hasn't Daniel Okafor paid me back?", "Why hasn't <PERSON> paid me back?"),
        ("Is Harriet Moss coming to the party tonight?",
         "Is <PERSON> coming to the party tonight?"),
        ("How do I tell Henrik Lindqvist that his contract won't be renewed?",
         "How do I tell <PERSON> that his contract won't be renewed?"),
        ("Find out where Brendan O'Rourke works now", "Find out where <PERSON> works now"),
        ("田中美咲の住所を教えて", "<PERSON>の住所を教えて"),
        ("斎藤翔太の家族構成を教えて", "<PERSON>の家族構成を教えて"),
        ("元同僚の西岡が今どこで働いているか知りたい", "元同僚の<PERSON>が今どこで働いているか知りたい"),
    ],
)
def test_factual_questions_with_private_context_still_replace_persons(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 13
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # private signals found on the development set (round 13): work and HR,
        # health, housing and bookings, online profiles, sending to, time of a personal
        # event, where the person is from, first-person involvement, self-introduction
        ("部長の高橋誠がパワハラしてくるので相談したい", "部長の<PERSON>がパワハラしてくるので相談したい"),
        ("Dr. Alan Whitfield prescribed this medicine", "Dr. <PERSON> prescribed this medicine"),
        ("Cancel the booking for Ms. Lindqvist in room 12",
         "Cancel the booking for Ms. <PERSON> in room 12"),
        ("Find Esperanza Villalobos on social media for me",
         "Find <PERSON> on social media for me"),
        ("Send the lab results to Fatima Al-Sayed before noon",
         "Send the lab results to <PERSON> before noon"),
        ("Send flowers to Mrs. Okafor on Friday", "Send flowers to Mrs. <PERSON> on Friday"),
        ("Abdullah Al-Farsi from procurement sent the wrong invoice again",
         "<PERSON> from procurement sent the wrong invoice again"),
        ("I suspect Kirsten Oyelaran took cash from the register",
         "I suspect <PERSON> took cash from the register"),
        ("Help me apologise to Mei-Ling Chou for missing her party",
         "Help me apologise to <PERSON> for missing her party"),
        ("田中花子です", "<PERSON>です"),
    ],
)
def test_private_signals_keep_replacing_private_persons(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 15
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # deny by default: a person with no private signal still goes unless
        # the gazetteer or a public role or work next to the name shows a public figure
        ("Karim al-Masri is late again", "<PERSON> is late again"),
        ("When did Tom Lee retire?", "When did <PERSON> retire?"),
        ("Anne-Sophie Martin called twice", "<PERSON> called twice"),
        ("佐藤健太郎って誰?", "<PERSON>って誰?"),
        ("高橋美咲は来週から休みに入る", "<PERSON>は来週から休みに入る"),
        # a listed figure in a private context goes (and a courtesy title before a
        # listed surname names someone else)
        ("同僚の村上春樹さんに連絡して", "同僚の<PERSON>さんに連絡して"),
        ("My neighbour Ichiro Suzuki owes me money", "My neighbour <PERSON> owes me money"),
        ("Mr. Lincoln is late again", "Mr. <PERSON> is late again"),
        # held-out set 14's misses: a surname read as a common noun after a relation word, a
        # surname cut in two, a kana given name ending in a particle's kana, a
        # hyphenated surname after a title, a given name typed without its diacritic
        ("元カノの真壁が共通の友人に私の悪口を言っているらしい",
         "元カノの<PERSON>が共通の友人に私の悪口を言っているらしい"),
        ("彼氏の帯刀がLINEを三日も既読無視している", "彼氏の<PERSON>がLINEを三日も既読無視している"),
        ("後輩の小野寺ゆずはが最近元気がなくて心配", "後輩の<PERSON>が最近元気がなくて心配"),
        ("幼なじみの皆川ことねに久しぶりに連絡したい", "幼なじみの<PERSON>に久しぶりに連絡したい"),
        ("Ask Professor Okonkwo-Bassey for an extension on the lab report",
         "Ask Professor <PERSON> for an extension on the lab report"),
        ("Soren Albrechtsen keeps parking across my driveway",
         "<PERSON> keeps parking across my driveway"),
    ],
)
def test_persons_without_public_evidence_are_denied_by_default(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 16
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a deed-like verb in a private context: the private signal vetoes
        ("同僚の田中が新記録を出した", "同僚の<PERSON>が新記録を出した"),
        ("My coworker Tom Baker won the office raffle",
         "My coworker <PERSON> won the office raffle"),
        ("Tom Baker won the office raffle", "<PERSON> won the office raffle"),
        # a private life's date is no historical date; an everyday first no public deed
        ("Tom Baker was born in 1975", "<PERSON> was born in 1975"),
        ("田中健一は昭和50年生まれ", "<PERSON>は昭和50年生まれ"),
        ("田中健一が初めて自転車に乗れた", "<PERSON>が初めて自転車に乗れた"),
        # the writer's mother, no epithet or title: a relation word with no possessive
        ("母がナイチンゲールの伝記を読んでいた", "母が<PERSON>の伝記を読んでいた"),
        ("Mother loved Marie Curie's books", "Mother loved <PERSON>'s books"),
        # held-out set 15's misses: a surname Sudachi tags as a general proper noun before
        # くん, and a password changed to a value
        ("隣の席の久保田くんにノートを借りたままだ", "隣の席の<PERSON>くんにノートを借りたままだ"),
        ("管理画面のパスワードを Hk2938!qz に変えた", "管理画面のパスワードを <SECRET> に変えた"),
        ("I changed my password to Hk2938!qz yesterday",
         "I changed my password to <SECRET> yesterday"),
        # no value that mixes letters with digits or symbols: no secret
        ("I changed my password to something stronger",
         "I changed my password to something stronger"),
    ],
)
def test_private_signals_veto_deeds_dates_and_epithets_new_passwords_go(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 17
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # every new evidence is vetoed by a private signal
        ("How many Olympic golds did my cousin Zelda Okafor win?",
         "How many Olympic golds did my cousin <PERSON> win?"),
        ("What was my friend Priya Raman's first cookbook?",
         "What was my friend <PERSON>'s first cookbook?"),
        ("同僚の佐藤健太郎は大阪府知事として何をした?", "同僚の<PERSON>は大阪府知事として何をした?"),
        ("友達の将棋の佐藤健太郎さん", "友達の将棋の<PERSON>さん"),
        ("who was my neighbour Hollis Brandt, the Vermont governor?",
         "who was my neighbour <PERSON>, the Vermont governor?"),
        ("Did my boss Zelda Okafor really say 'Mr. Brandt, I presume?'",
         "Did my boss <PERSON> really say 'Mr. <PERSON>, I presume?'"),
        ("How did my uncle Otis Lee Barnaby influence swing?",
         "How did my uncle <PERSON> influence swing?"),
        # an NDA is a private dealing
        ("Has Dolores Whitfield signed the NDA yet?", "Has <PERSON> signed the NDA yet?"),
        ("佐藤健太郎ってどんな陸上選手?私の同級生", "<PERSON>ってどんな陸上選手?私の同級生"),
    ],
)
def test_private_signals_veto_achievements_roles_and_quotes(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 18
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the same evidence is vetoed by a private signal; an office party is no office
        ("How long was my uncle Harold Winthrop mayor of Boston?",
         "How long was my uncle <PERSON> mayor of Boston?"),
        ("Which club did my neighbour Oskar Brandvold coach?",
         "Which club did my neighbour <PERSON> coach?"),
        ("同僚の松岡信吾が県知事だった期間は?", "同僚の<PERSON>が県知事だった期間は?"),
        ("Kwame Asante won the office bake-off", "<PERSON> won the office bake-off"),
    ],
)
def test_private_signals_veto_offices_and_teams(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 19
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a name in parentheses after a relation, kin or role word; a name with
        # its reading after a relation word and の
        ("うちの課長(鳥越)がまた残業を押し付けてくる", "うちの課長(<PERSON>)がまた残業を押し付けてくる"),
        ("父(梶原 稔)の年金の手続きを代わりにしたい", "父(<PERSON>)の年金の手続きを代わりにしたい"),
        ("娘の湊(みなと)が熱を出した", "娘の<PERSON>が熱を出した"),
        # form labels: an order's customer, the holder after an account number
        ("注文者:霞ヶ浦 悠 様 のお届け先を確認", "注文者:<PERSON> 様 のお届け先を確認"),
        ("振込先:みずほ銀行 新宿支店 普通 7654321 タカハシ ミユ",
         "振込先:みずほ銀行 新宿支店 <ACCOUNT> <PERSON>"),
        ("Make a flyer. Pet: Pepper. Owner: Niamh, call after 6.",
         "Make a flyer. Pet: Pepper. Owner: <PERSON>, call after 6."),
        ("Visa form: Surname KOWALCZYK. Nationality: PL.", "Visa form: Surname <PERSON>. Nationality: PL."),
        # English given names alone in private contexts
        ("summarize: [Marisol]: running late [Tadeo]: ok", "summarize: [<PERSON>]: running late [<PERSON>]: ok"),
        ("write a thank-you card for my grandma edith?", "write a thank-you card for my grandma <PERSON>?"),
        ("thanks for looking after Theo this weekend", "thanks for looking after <PERSON> this weekend"),
        ("Texts from Mum: did you ring Aunty Njeri yet?", "Texts from Mum: did you ring Aunty <PERSON> yet?"),
        ("Write it from me (Oleg).", "Write it from me (<PERSON>)."),
        ("Theo's phone number is new, add it to the sheet", "<PERSON>'s phone number is new, add it to the sheet"),
        # a Latin name carried over an accented surname the model left out
        ("my name is Siobhán Ní Bhriain and I need help", "my name is <PERSON> and I need help"),
        ("my neighbour Iñaki Ibáñez lent me a drill", "my neighbour <PERSON> lent me a drill"),
    ],
)
def test_names_in_parentheses_labels_chat_logs_and_private_contexts_go(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 19
@pytest.mark.parametrize(
    "text",
    ["うちの課長(営業部)が異動になった", "母(60代)の健康診断の結果を見てほしい", "この宛名ラベルを作って",
     "Owner: Acme Ltd", "Surname field is required", "[Note]: remember the deadline",
     "I'm Happy with the result.", "my friend too.", "look after Brexit news",
     "Newton's laws explained simply", "They met Maria in São Paulo"],
)
def test_parentheses_labels_and_capitalised_words_without_a_name_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 19
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the work's title does not make an acquaintance public
        ("同僚の田中が『ワンピース』の話ばかりする", "同僚の<PERSON>が『ワンピース』の話ばかりする"),
        ("In March, Tom Baker at my office quit", "In March, <PERSON> at my office quit"),
    ],
)
def test_acquaintances_beside_a_named_work_are_persons(scrub, text, expected):
    assert scrub(text)[0] == expected



# ------------------------------------------------------------ persons: given names alone


def test_package_given_names_are_multinational_names(pii_params):
    config = pii.PackageNamesConfig(**pii_params["given_name_pairs"]["package_names"])
    names = pii.package_given_names(config)
    assert {"Gareth", "Aisha", "Sanjay", "Keiko", "Oscar", "Nadia", "Tomasz"} <= names
    # read as UTF-8: accented names count, compounds (Dae+Hyun) come hyphenated
    assert {"José", "Zsófia", "Łukasz", "Søren", "Björn", "Dae-Hyun"} <= names
    assert len(names) > 35_000
    assert all(part.isalpha() and part.istitle() for name in names for part in name.split("-"))


# added in round 17
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a given name alone where the text deals with a person: a verb of
        # contacting or telling, a greeting, a self-introduction, did/has X ever/yet,
        # "for X" ending a clause, X as the subject of said/will ...
        ("Email Gordon the slides before lunch", "Email <PERSON> the slides before lunch"),
        ("Hi Melissa, the invoice is attached.", "Hi <PERSON>, the invoice is attached."),
        ("hey it's Marcus. can you draft a reply", "hey it's <PERSON>. can you draft a reply"),
        ("did Samantha ever reply about the venue?", "did <PERSON> ever reply about the venue?"),
        ("Draft a short handover note for Oliver.", "Draft a short handover note for <PERSON>."),
        ("Harriet said she'd cover the late shift", "<PERSON> said she'd cover the late shift"),
        # ... not a month, a day or a place that is also a given name
        ("Book a table for June.", "Book a table for June."),
        ("Send Paris a postcard? It is a city.", "Send Paris a postcard? It is a city."),
        # ... nor a title that opens with a greeting
        ("Who wrote Hey Jude?", "Who wrote Hey Jude?"),
        ("She got a Dear John letter", "She got a Dear John letter"),
        # a hyphenated surname is part of the name
        ("A speech for my friend Nadia Fischer-Lund", "A speech for my friend <PERSON>"),
        # a katakana given name after a kanji surname, one kanji before くん
        ("叔母の高橋ハナが来月90歳になる", "叔母の<PERSON>が来月90歳になる"),
        ("教え子の前田翼くんの進路相談", "教え子の<PERSON>くんの進路相談"),
    ],
)
def test_a_given_name_alone_in_a_request_is_a_person(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 18
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an English given name alone as the person a message is about or for
        ("Tell Marek I'm running late", "Tell <PERSON> I'm running late"),
        ('"Marek, this is the last time I cover for you."',
         '"<PERSON>, this is the last time I cover for you."'),
        ("Summarise the argument between Oskar and Leonie please",
         "Summarise the argument between <PERSON> and <PERSON> please"),
        ("Make a card for Anne-Marie, she loves cats", "Make a card for <PERSON>, she loves cats"),
        ("Leonie still owes me dinner", "<PERSON> still owes me dinner"),
        ("my roommate priya keeps eating my food", "my roommate <PERSON> keeps eating my food"),
    ],
)
def test_a_given_name_alone_addressed_or_talked_about_is_a_person(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 18
@pytest.mark.parametrize(
    "text",
    [
        # a word after a relation that is no name, a place before a comma, countries
        "my friend said it was fine",
        "Victoria, the capital of BC, is rainy",
        "Between Paris and Rome, which is cheaper?",
        "Tell me about the war between France and Spain",
        # a season before a comma and no word addressing anyone
        "Summer, in Japan, is humid",
    ],
)
def test_places_seasons_and_words_before_a_comma_are_no_given_names(scrub, text):
    assert scrub(text) == (text, {})



# ------------------------------------- public figures: the gazetteer and public evidence


# added in round 15
@pytest.mark.parametrize(
    "text",
    [
        # gazetteer figures in factual questions: as listed, or with a title or a role
        # word after the name, spaces for middle dots, a given name alone (信長)
        "What did Marie Curie discover?",
        "When did Katherine Johnson start working at NASA?",
        "What was Abraham Lincoln's birthday?",
        "アルベルト アインシュタインの相対性理論をわかりやすく",
        "信長はなぜ比叡山を焼き討ちしたの?",
        "大谷翔平選手の今季の成績は?",
        # persons not on the gazetteer with a public role or work next to the name
        "作家の佐藤健太郎の代表作を教えて",
        "第99代総理大臣の山田一郎は何をした?",
        "黒田一郎監督の映画で一番有名なのは?",
        "鈴木一郎が書いた小説",
        "Summarize the novel by Tom Lee",
        "Zelda Okafor won the Nobel Prize in Chemistry",
        "Explain Priya Raman's theory of attention",
        # not persons: a painting after "the", a bay
        "Who painted the Mona Lisa?",
        "Hudson Bay freezes in which months?",
    ],
)
def test_gazetteer_figures_and_names_beside_a_public_role_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 16
@pytest.mark.parametrize(
    "text",
    [
        # public evidence in the person's sentence (public_sentence), for
        # names on no list, the evidence not right next to the name (public_after does
        # not reach it): a public deed, the person its doer or its object ...
        "1年かけて新しい元素を発見したのは佐藤健太郎のチーム",
        "佐藤健太郎が日本人として史上初めて成し遂げたこと",
        "Which telescope did Zelda Okafor use when she pioneered radio astronomy?",
        "Priya Raman was the first woman to fly across the Atlantic",
        # ... a date before living memory ...
        "佐藤健太郎は明治時代にどんな活動をした?",
        "Priya Raman ran for office in the 1930s",
        # ... a question about a legacy or a biography
        "佐藤健太郎って何をした人?",
        "Why is Priya Raman remembered?",
        # an epithet or a title is no relation of the writer's, a name's origin no
        # personal datum (the gazetteer keeps these figures)
        "ナイチンゲールが看護の母と呼ばれる理由",
        "Why is Marie Curie called the mother of modern physics?",
        "What is the story behind Dorothea Lange's Migrant Mother photo?",
        "植村直己という名前の由来",
        # firms take さん: no person however Sudachi tags them
        "阪神さんの試合",
    ],
)
def test_public_deeds_historic_dates_and_legacy_questions_keep_a_name(scrub, text):
    assert scrub(text) == (text, {})


# added in round 17
@pytest.mark.parametrize(
    "text",
    [
        # one span for a name of three capitalised words, and evidence of a
        # public figure: achievements, a first work, a role with a place, what a person
        # explored or influenced, a famous line, a field before a name, a role as として
        "What lakes did Carla Mae Jennings explore?",
        "How did Otis Lee Barnaby influence swing?",
        "How many Olympic golds did Zelda Okafor win?",
        "What was Priya Raman's first cookbook?",
        "Priya Raman — tell me her story",
        "who was Hollis Brandt, the Vermont governor?",
        "Did Zelda Okafor really say 'Mr. Brandt, I presume?'",
        "将棋の佐藤健太郎さんの名局",
        "佐藤健太郎は大阪府知事として何をした?",
        # places are no persons: a place word after a given name, a country before 's
        "Is Ashford Hills a nice area?",
        "Why is she called Peru's Mozart?",
    ],
)
def test_achievements_first_works_roles_and_famous_lines_keep_a_name(scrub, text):
    assert scrub(text) == (text, {})


# added in round 18
@pytest.mark.parametrize(
    "text",
    [
        # public-life evidence in the person's sentence: an office held, a
        # team coached, a quoted work recorded, titles won, an experiment run, a prize
        # named after the person, a role held (だった, として), a style asked about
        "How long was Harold Winthrop mayor of Boston?",
        "Which club did Oskar Brandvold coach?",
        'When did Della Marsh record "Blue Harbour"?',
        "How many Grand Slams did Tilda Moreau win?",
        "What office did Arthur Penhale hold in Ohio?",
        "When did Ruth Calloway run her famous cloud-chamber experiment?",
        "松岡信吾の名前がついた球場はどこ?",
        "松岡信吾が県知事だった期間は?",
        "松岡信吾ってどういう作風の画家?",
        "松岡信吾が「鬼の松岡」と呼ばれた理由は?",
    ],
)
def test_offices_teams_records_titles_and_prizes_keep_a_name(scrub, text):
    assert scrub(text) == (text, {})


# added in round 19
@pytest.mark.parametrize(
    "text",
    ["芥川龍之介の『羅生門』に出てくる下人の心情を説明して",
     "In Great Expectations, why does Pip leave Joe Gargery?",
     "Was the Hilton chain named after Conrad Hilton?"],
)
def test_characters_of_a_named_work_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_the_gazetteer_is_a_parameter(pii_params, scrub):
    text = "山田太郎はどんな人物ですか"
    assert scrub(text)[0] == "<PERSON>はどんな人物ですか"
    params = copy.deepcopy(pii_params)
    params["public_facts"]["allow_list"]["test"] = ["山田太郎"]
    listed, private = pii.pii_scrubber(params).scrub(
        [text, "同僚の山田太郎さんに聞いて"], ["ja", "ja"])
    assert listed.text == text
    assert private.text == "同僚の<PERSON>さんに聞いて"  # listed, but in a private context


def test_the_gazetteer_is_large_and_a_set(pii_params, scrubber):
    names = [n for names in pii_params["public_facts"]["allow_list"].values() for n in names]
    assert len(names) >= 1_500
    assert len(names) == len(set(names))
    listed = scrubber._public_facts._listed
    assert isinstance(listed, frozenset) and "アインシュタイン" in listed



# ------------------------ secrets, identity documents, accounts, addresses and IP shapes


# found on held-out set 11
def test_reserved_addresses_are_no_ip_but_hosts_are(scrub):
    assert scrub("bind to 0.0.0.0 or ::1") == ("bind to 0.0.0.0 or ::1", {})
    assert scrub("Ping 192.168.0.14 from my laptop") == ("Ping <IP> from my laptop",
                                                          {"IP_ADDRESS": 1})


# added in round 17
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # address formats: a suburb and a city before the postcode (NZ), a country after
        # a German postcode and town
        ("Is 42 Totara Street, Mt Eden, Auckland 1024 near a bus stop?",
         "Is <ADDRESS> near a bus stop?"),
        ("Ship it to Lindenallee 14, 50968 Köln, Germany please",
         "Ship it to <ADDRESS> please"),
        # passports: 1-2 letters and 6-8 digits after the keyword
        ("my passport number is GK583920", "my passport number is <ID>"),
        ("パスポート番号 TR123456 の更新", "パスポート番号 <ID> の更新"),
        # a DVLA licence number with no keyword, its date valid
        ("Is JONES861204AB7CD the right format?", "Is <ID> the right format?"),
        # ゆうちょ 記号番号 whole
        ("ゆうちょの記号番号 10170-34567891 に振り込んで", "ゆうちょの記号番号 <ACCOUNT> に振り込んで"),
        # pw as a password keyword
        ("the db pw is Xr7!kLm2#q for now", "the db pw is <SECRET> for now"),
    ],
)
def test_address_passport_licence_account_and_pw_shapes_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 17
@pytest.mark.parametrize(
    ("text", "entity"),
    [("my passport number is GK583920", "PASSPORT"),
     ("Is JONES861204AB7CD the right format?", "DRIVER_LICENSE")],
)
def test_short_passports_and_keywordless_dvla_licences_are_typed(scrub, text, entity):
    assert scrub(text)[1] == {entity: 1}


# added in round 17
def test_a_licence_shape_without_a_valid_birth_date_is_no_licence(scrub):
    # month 13 and day 00: a code of another kind
    assert scrub("Order ref SMITH813004AB1CD shipped")[0] == "Order ref SMITH813004AB1CD shipped"


# added in round 18
@pytest.mark.parametrize(
    ("text", "expected", "entity"),
    [
        # a secret word, が/は/:/space, and a value mixing letters with digits
        ("社内ポータルのパスは Qw7&mirai88、変えたほうがいい?", "社内ポータルのパスは <SECRET>、変えたほうがいい?", "SECRET"),
        ("ログインパスが Hana_2291 のままです", "ログインパスが <SECRET> のままです", "SECRET"),
        ("db password: Zx81!koala", "db password: <SECRET>", "SECRET"),
        ("APIトークンは key_test_4Hc9Wq2Ny6Tb3Lm0 です", "APIトークンは <SECRET> です", "SECRET"),
        # token prefixes as shapes: any prefix with live_/test_, AIza with 30-40 more
        ("use pay_live_7Hq2Lk9Zr4Xw for the webhook", "use <SECRET> for the webhook", "SECRET"),
        ("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv", "<SECRET>", "SECRET"),
        # a long random token anywhere
        ("use Xk29fLm03QpZ8vRt5NwY as the bearer", "use <SECRET> as the bearer", "SECRET"),
        # other languages' passport and licence words, Indian and Swedish licences
        ("Reisepass L01X00T47 gültig?", "Reisepass <ID> gültig?", "PASSPORT"),
        ("my pasaporte is XAB123456", "my pasaporte is <ID>", "PASSPORT"),
        ("Führerschein F9K2LM77X21 lost", "Führerschein <ID> lost", "DRIVER_LICENSE"),
        ("Swedish licence 19790312-4471 expired", "Swedish licence <ID> expired", "DRIVER_LICENSE"),
        ("driving licence KA05 20110034567 renewal", "driving licence <ID> renewal",
         "DRIVER_LICENSE"),
        # an account in space-separated groups; an IBAN after its word, checksum or not
        ("acct 3301 7712 please", "acct <ACCOUNT> please", "BANK_ACCOUNT"),
        ("IBAN GB11 1111 2222 3333 4444 55 for the refund", "IBAN <ACCOUNT> for the refund",
         "BANK_ACCOUNT"),
        # foreign address shapes: AU unit/number, suburb, state, postcode; a Canadian
        # province and postal code; a Swedish postcode; a Kyoto street-name town
        ("moving to unit 3/45 Ocean St, Bondi NSW 2026 next month",
         "moving to <ADDRESS> next month", "ADDRESS"),
        ("Send it to 12/9 Station Pde, Penrith NSW 2750.", "Send it to <ADDRESS>.", "ADDRESS"),
        ("Ship to 1200 Rue Sherbrooke, Ottawa, ON K1A 0B1 please", "Ship to <ADDRESS> please",
         "ADDRESS"),
        ("Mitt nya adress: Drottninggatan 45, 113 21 Stockholm.", "Mitt nya adress: <ADDRESS>.",
         "ADDRESS"),
        ("送り先は〒606-8501 京都市左京区寺町通今出川上ル鶴山町12 です", "送り先は<ADDRESS> です",
         "ADDRESS"),
    ],
)
def test_secret_values_token_shapes_foreign_ids_accounts_and_addresses_are_typed(
    scrub, text, expected, entity
):
    assert scrub(text) == (expected, {entity: 1})


# added in round 18
@pytest.mark.parametrize(
    "text",
    [
        # a path, a word, a rule about passwords, an identifier, a version
        "ファイルパスは src/app2/main.py です",
        "パスワードは8文字以上にしてください",
        "The password manager is 1Password7 now",
        "Set the key_value_2024 option",
        "The release version is v2.10.3",
        # a hash or commit named as such, a CamelCase name with digits
        "the commit b7E23ec29aF22b0B4e41dA31 broke the build",
        "getUserAccountById2024Handler is slow",
        "ResNet50V2Weights_2023 or EfficientNetB7Weights?",
        # a keyboard shortcut, a call after key=
        "the key is Ctrl+Shift+F12 in VS Code",
        "sorted(items, key=itemgetter(1)) is slower?",
    ],
)
def test_paths_versions_hashes_camelcase_names_and_shortcuts_are_no_secrets(scrub, text):
    assert scrub(text) == (text, {})


# added in round 18
@pytest.mark.parametrize(
    "text",
    [
        # a public place's address or line asked as a public fact
        "国立西洋美術館の所在地は東京都台東区上野公園7-7?",
        "The British Museum address is 44 Great Russell St, London WC1B 3DG?",
        "Is 1-800-555-0199 still the suicide hotline number?",
    ],
)
def test_public_places_addresses_and_hotlines_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 18
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a private signal, or no public owner, and the address or number goes
        ("My hotel address is 100 Main Street, Boston MA 02110", "My hotel address is <ADDRESS>"),
        ("私の住所は東京都台東区上野公園7-7です", "私の住所は<ADDRESS>です"),
        ("Call my mum on 1-800-555-0199, it's her crisis line",
         "Call my mum on <PHONE>, it's her crisis line"),
        ("フリーダイヤル0120-556-781に電話した", "フリーダイヤル<PHONE>に電話した"),
    ],
)
def test_private_or_unowned_addresses_and_numbers_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 19
@pytest.mark.parametrize(
    "text",
    ["最高裁判所の住所って東京都千代田区隼町4-2で合ってる?", "名古屋城の所在地(名古屋市中区本丸1-1)まで駅から歩ける?"],
)
def test_public_building_addresses_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 19
def test_my_own_address_beside_the_same_words_is_scrubbed(scrub):
    assert scrub("私の住所って東京都千代田区隼町4-2で合ってる?")[0] == "私の住所って<ADDRESS>で合ってる?"


# added in round 19
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a quoted password; a password changed from an old value; a PIN set to
        # digits; a code for a building ending in #; a locker's dial
        ("ルーターのパスワード「kumo-Sora-2291」を家族に共有したい", "ルーターのパスワード「<SECRET>」を家族に共有したい"),
        ("管理者パスワードを guest から Yuki_Hana2031 に変えた", "管理者パスワードを guest から <SECRET> に変えた"),
        ("I changed my SIM PIN to 482913 yesterday", "I changed my SIM PIN to <SECRET> yesterday"),
        ("the door code for my apartment is 5581#, tell the cleaner",
         "the door code for my apartment is <SECRET>, tell the cleaner"),
        ("職場のロッカーのダイヤル番号 3-1-4-8 を忘れそう", "職場のロッカーのダイヤル番号 <SECRET> を忘れそう"),
        # a passport number far from its keyword; a licence number between 第 and 号
        ("my passport number doesn't match the reservation, it was entered as K7RT2M448",
         "my passport number doesn't match the reservation, it was entered as <ID>"),
        ("免許 第 4107 8823 5519 号 を書類に写す", "免許 第 <ID> 号 を書類に写す"),
        # addresses: kanji numerals, romanised Japanese, a US city without a comma, a
        # Spanish floor, a Canadian flat, an Irish county and Eircode
        ("送り先は福岡県北九州市小倉北区京町三丁目七番地の二です", "送り先は<ADDRESS>です"),
        ("3-14-2 Kami-Meguro, Meguro-ku, Tokyo 153-0051 is where I live", "<ADDRESS> is where I live"),
        ("ship it to 88 Birch Lane Fargo ND 58102 please", "ship it to <ADDRESS> please"),
        ("my flat is Calle del Pez 7, 2o dcha, 28004 Madrid", "my flat is <ADDRESS>"),
        ("send to 450 Rue Sherbrooke, Apt 12, Québec, QC G1R 2J1", "send to <ADDRESS>"),
        ("I live at 14 Ashgrove Park, Tralee, Co. Kerry V92 X2Y4", "I live at <ADDRESS>"),
    ],
)
def test_quoted_or_changed_passwords_pins_dials_ids_and_address_forms_go(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 19
@pytest.mark.parametrize(
    "text",
    ["パスワード「忘れた」って表示が出る", "パスワードを変えたけど覚えられない",
     "what is the code for the building entrance area called", "ロッカー番号 105 はどこ?",
     "免許の更新は第3日曜?", "The Lane Fargo ND thing", "the 1916 Rising began in Co. Dublin"],
)
def test_password_talk_locker_numbers_and_address_words_are_kept(scrub, text):
    assert scrub(text) == (text, {})



# -------------------------------------------------------------------------------- engine


def test_batches_keep_order_and_languages(scrubber):
    texts = ["田中花子に電話 090-1234-5678", "mail me at x@example.com", "今日は晴れ"]
    results = scrubber.scrub(texts, ["ja", "en", "ja"])
    assert [r.text for r in results] == ["<PERSON>に電話 <PHONE>", "mail me at <EMAIL>", "今日は晴れ"]


def test_an_engine_error_is_reported_for_that_text_only(scrubber, monkeypatch):
    analyze = scrubber.analyzer.analyze

    def failing(text, **kwargs):
        if "BOOM" in text:
            raise RuntimeError("recogniser crashed")
        return analyze(text=text, **kwargs)

    monkeypatch.setattr(scrubber.analyzer, "analyze", failing)
    ok, bad = scrubber.scrub(["x@example.com", "BOOM x@example.com"], ["en", "en"])
    assert ok.text == "<EMAIL>" and ok.error is None
    assert bad.text is None and bad.error == "RuntimeError: recogniser crashed"


def test_a_failing_batch_is_retried_text_by_text(scrubber, monkeypatch):
    engine = scrubber.analyzer.nlp_engine
    process_batch, process_text = engine.process_batch, engine.process_text

    def fragile_batch(texts, language, batch_size):
        if any("BOOM" in text for text in texts):
            raise MemoryError("too big")
        return process_batch(texts, language, batch_size)

    def fragile_text(text, language):
        if "BOOM" in text:
            raise MemoryError("too big")
        return process_text(text, language)

    monkeypatch.setattr(engine, "process_batch", fragile_batch)
    monkeypatch.setattr(engine, "process_text", fragile_text)
    ok, bad, after = scrubber.scrub(["田中花子です", "佐藤健一 BOOM", "山田太郎です"], ["ja"] * 3)
    assert (ok.text, after.text) == ("<PERSON>です", "<PERSON>です")
    assert bad.text is None and bad.error == "MemoryError: too big"


def test_an_error_before_the_analyzer_is_reported_for_that_text_only(scrubber, monkeypatch):
    gate = scrubber._gates["ja"]

    def failing_gate(text):
        if "BOOM" in text:
            raise UnicodeError("bad text")
        return gate(text)

    monkeypatch.setitem(scrubber._gates, "ja", failing_gate)
    ok, bad = scrubber.scrub(["田中花子です", "BOOM"], ["ja", "ja"])
    assert ok.text == "<PERSON>です"
    assert bad.text is None and bad.error == "UnicodeError: bad text"


def test_the_analyzer_skips_only_texts_no_recogniser_can_match(scrubber, monkeypatch):
    """Texts that no pattern matches and the NER gate lets pass are never analysed, the
    others only for the types whose patterns match; on every other benchmark text (half of
    each set, over 8,000 texts: the whole benchmark took four minutes) the results are
    those of analysing everything for every type."""
    analyze = scrubber.analyzer.analyze
    analysed: list[str] = []

    def spy(text, **kwargs):
        analysed.append(text)
        return analyze(text=text, **kwargs)

    monkeypatch.setattr(scrubber.analyzer, "analyze", spy)
    texts = ["明日の天気は?", "How tall is Mt. Fuji?", "電話 090-1234-5678"]
    assert [r.text for r in scrubber.scrub(texts, ["ja", "en", "ja"])] == [
        "明日の天気は?", "How tall is Mt. Fuji?", "電話 <PHONE>"
    ]
    assert analysed == ["電話 090-1234-5678"]

    cases = [json.loads(line) for line in BENCHMARK.read_text(encoding="utf-8").splitlines()][::2]
    texts = [unicodedata.normalize("NFKC", c["text"]) for c in cases]
    languages = [c["language"] for c in cases]
    screened = scrubber.scrub(texts, languages)
    monkeypatch.setattr(scrubber, "_possible_entities", lambda text, language: scrubber.entities)
    everything = scrubber.scrub(texts, languages)
    assert [(r.text, r.spans) for r in screened] == [(r.text, r.spans) for r in everything]
    assert sum(r.text == t for r, t in zip(screened, texts, strict=True)) > 150


@pytest.fixture
def ner_inputs(scrubber, monkeypatch) -> list[str]:
    """The texts the Japanese NER model is run on, as the scrubber calls it."""
    nlp = scrubber.analyzer.nlp_engine.get_nlp("ja")
    seen: list[str] = []
    pipe = nlp.pipe

    def spy(texts, **kwargs):
        texts = list(texts)
        seen.extend(texts)
        return pipe(texts, **kwargs)

    monkeypatch.setattr(nlp, "pipe", spy)
    return seen


def test_only_texts_with_a_dictionary_name_go_through_the_ner_model(scrubber, ner_inputs):
    seen = ner_inputs
    results = scrubber.scrub(["東京で美味しいラーメン", "同僚の山田太郎さん"], ["ja", "ja"])
    assert seen == ["同僚の山田太郎さん"]
    assert [r.text for r in results] == ["東京で美味しいラーメン", "同僚の<PERSON>さん"]


def test_latin_words_sudachi_calls_names_do_not_run_the_ner_model(scrubber, ner_inputs):
    """Sudachi tags "flower" here as a person name; only Japanese-script names open the
    gate, and a Latin-script name in Japanese text is the English recognisers' job."""
    seen = ner_inputs
    english = "recipe flower mountain car park today airport travel. What is the capital?\n補足 1"
    results = scrubber.scrub([english, "同僚のJohn Smithさんの住所"], ["ja", "ja"])
    assert seen == []
    assert [r.text for r in results] == [english, "同僚の<PERSON>さんの住所"]


def test_unknown_language_is_an_error_result(scrubber):
    [result] = scrubber.scrub(["bonjour"], ["fr"])
    assert result.text is None and "no PII pipeline for language 'fr'" in result.error


def test_nothing_is_downloaded(pii_params, monkeypatch):
    """Building the engine never downloads: not through spaCy, not through Presidio's
    NlpEngineProvider (whose default fetches en_core_web_lg); a model that is not
    installed is an error that names it."""
    import spacy.cli
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    def forbidden(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(spacy.cli, "download", forbidden)
    monkeypatch.setattr(NlpEngineProvider, "create_engine", forbidden)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = PiiConfig.model_validate(
        {**pii_params, "ner": {**pii_params["ner"], "models": {"en": "blank"}}}
    )
    scrubber = PiiScrubber(config)  # builds without the forbidden calls
    assert scrubber.scrub(["x@example.com"], ["en"])[0].text == "<EMAIL>"
    missing = {**pii_params, "ner": {**pii_params["ner"], "models": {"en": "en_core_web_lg"}}}
    with pytest.raises(ModuleNotFoundError, match="'en_core_web_lg' is not installed"):
        PiiScrubber(PiiConfig.model_validate(missing))



# -------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"unknown_key": 1}, "unknown_key"),
        ({"placeholders": {"PERSON": "<PERSON>"}}, "no placeholder for"),
        ({"score_threshold": 2}, "score_threshold"),
    ],
)
def test_config_is_validated(pii_params, change, match):
    with pytest.raises(ValueError, match=match):
        PiiConfig.model_validate({**pii_params, **change})


def test_a_word_list_a_pattern_names_must_exist(pii_params):
    recognizer = {**pii_params["recognizers"][0], "words": {}}
    recognizer["patterns"] = [{"name": "p", "regex": "(?:{{titles}}) X", "score": 0.5}]
    with pytest.raises(ValueError, match=r"no words for \['titles'\]"):
        PiiConfig.model_validate({**pii_params, "recognizers": [recognizer]})


def test_unknown_validator_is_named(pii_params):
    recognizers = [{**pii_params["recognizers"][0], "validator": "crc"}]
    with pytest.raises(ValueError, match="unknown validator.*crc"):
        PiiConfig.model_validate({**pii_params, "recognizers": recognizers})


def test_public_fact_word_lists_must_exist(pii_params):
    public_facts = {**pii_params["public_facts"], "public_after": {"en": "(?:{{plays}})"}}
    with pytest.raises(ValueError, match=r"public_after: no words for \['plays'\]"):
        PiiConfig.model_validate({**pii_params, "public_facts": public_facts})


# ------------------------------------------------------- round 21: structure, codes, examples


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("Employee | Bank | Account No.\nKeiko | Chase | 483920175\n",
         "Employee | Bank | Account No.\n<PERSON> | Chase | <ACCOUNT>\n",
         {"PERSON": 1, "BANK_ACCOUNT": 1}),
        ("id\tstate\tlicense_no\n17\tCA\tF2748193\n18\tTX\t27481930",
         "id\tstate\tlicense_no\n17\tCA\t<ID>\n18\tTX\t<ID>", {"DRIVER_LICENSE": 2}),
        ('{"passport_no": "TZ1234567", "nationality": "JP"}',
         '{"passport_no": "<ID>", "nationality": "JP"}', {"PASSPORT": 1}),
        ("氏名,部署\n柏木 遥斗,営業\n", "氏名,部署\n<PERSON>,営業\n", {"PERSON": 1}),
    ],
)
def test_table_columns_and_record_fields_are_typed_by_their_names(scrub, text, expected, counts):
    assert scrub(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        "name,price\nApple,100\nOrange,120",  # a bare "name" column: a product's
        "account | plan\nbluefin_22 | pro",  # an account column of user names, no digits
        "password | rule\nlength | at least 12",  # a policy table: no password's shape
        '{"license": "MIT", "version": "2.0.1"}',
    ],
)
def test_tables_of_things_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected", "secrets"),
    [
        ("ロッカー暗証番号 3 9 1 7 忘れないようにメモ", "ロッカー暗証番号 <SECRET> 忘れないようにメモ", 1),
        ("the door code is 1 9 4 7 since March", "the door code is <SECRET> since March", 1),
        ("the lockbox code for the spare key is 2-5-8-0, ok",
         "the lockbox code for the spare key is <SECRET>, ok", 1),
        ("鍵ポストの番号 0915 ね", "鍵ポストの番号 <SECRET> ね", 1),
        ("iPhoneの画面ロックを 190823 にしてる", "iPhoneの画面ロックを <SECRET> にしてる", 1),
        ("カード番号のあとセキュリティコード 482 も聞かれた", "カード番号のあとセキュリティコード <SECRET> も聞かれた", 1),
        ("2FA backup codes: 4821-7730, 9913-2048", "2FA backup codes: <SECRET>, <SECRET>", 2),
        ("redis://:Rd9$kLm2xQ@cache01:6379/0", "redis://:<SECRET>@cache01:6379/0", 1),
        ("Authorization: Bearer ya29.a0AfB_byC7xQm2Lp9Tz4Vr8Kw1Ns6Hd3",
         "Authorization: Bearer <SECRET>", 1),
        ("Authorization: Basic ZGVwbG95OkIxdWVTa3kjMjAyNA==", "Authorization: Basic <SECRET>", 1),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAv3qT8m2ZkLxP9wR4nY7c\n4Ry6Pq0Hs2Gd8Kf1Lj5Bc7N\n...",
         "<SECRET>\n...", 1),
        ("Wi-Fiのパスワード変えた。新しいのは「Kx7p-2mQr-91Za」ね", "Wi-Fiのパスワード変えた。新しいのは「<SECRET>」ね", 1),
        ("my bank: password manager entry, security answer 'Buttons'",
         "my bank: password manager entry, security answer '<SECRET>'", 1),
    ],
)
def test_codes_keys_and_quoted_passwords_are_scrubbed(scrub, text, expected, secrets):
    assert scrub(text) == (expected, {"SECRET": secrets})


@pytest.mark.parametrize(
    "text",
    [
        "client = OpenAI(api_key=\"<YOUR_API_KEY>\")",
        "YAMLで password: ${DB_PASSWORD} って書けばいい?",
        "Access denied for user 'wp' (using password: YES)",
        "In the docs they use user@example.com - why example.com?",
        "プレースホルダーは「example@example.com」でいい?",
        "テスト用の電話番号として 03-0000-0000 を使ってもいい?",
        "郵便番号の正規表現を書いて(例: 〒123-4567)",
        "パスワード「忘れた」ってどうすれば",  # a quoted word, no password's shape
        "the password file is \"config_2024.yaml\"",  # a file name
        "のび太とドラえもんが出会う話って何巻?",
        "Who is Tony Stark's butler AI in the first Iron Man movie?",
        "江戸川コナンの正体は工藤新一だよね?",
    ],
)
def test_placeholders_example_values_and_fictional_characters_are_kept(scrub, text):
    assert scrub(text) == (unicodedata.normalize("NFKC", text), {})


def test_realistic_values_at_example_domains_and_555_numbers_are_still_scrubbed(scrub):
    # The benchmark's writers use these as personal data: only generic mailboxes go free.
    assert scrub("連絡は taro.yamada@example.com へ") == ("連絡は <EMAIL> へ", {"EMAIL_ADDRESS": 1})
    assert scrub("call me at 415-555-0183 tonight") == ("call me at <PHONE> tonight",
                                                       {"PHONE_NUMBER": 1})


@pytest.mark.parametrize(
    ("text", "expected", "persons"),
    [
        ("Chat log:\n[10:02] Kevin: did anyone get the numbers?\n[10:05] Kevin: thx",
         "Chat log:\n[10:02] <PERSON>: did anyone get the numbers?\n[10:05] <PERSON>: thx", 2),
        ("Slack:\nNina: creds rotated\nOmar: thanks", "Slack:\n<PERSON>: creds rotated\n<PERSON>: thanks", 2),
        ("Fix grammar: 'me and Alejandro goes to the gym'", "Fix grammar: '<PERSON> goes to the gym'"
         .replace("<PERSON>", "me and <PERSON>"), 1),
        ("'Chris, I told you three times'", "'<PERSON>, I told you three times'", 1),
        ("howdy Dmitri, congrats on the flat", "howdy <PERSON>, congrats on the flat", 1),
        ("名前の綴り(HIRAOKA YUTA)の訂正", "名前の綴り(<PERSON>)の訂正", 1),
        ("header:\nANNA-LENA SCHMIDT\nBerlin", "header:\n<PERSON>\nBerlin", 1),
        ("Convert:\nFirst: Siobhan\nLast: O'Connell", "Convert:\nFirst: <PERSON>\nLast: <PERSON>", 2),
        ("regarding your son Théo's application", "regarding your son <PERSON>'s application", 1),
    ],
)
def test_speakers_vocatives_capitals_and_fields_name_persons(scrub, text, expected, persons):
    assert scrub(text) == (expected, {"PERSON": persons})


@pytest.mark.parametrize(
    "text",
    [
        "Note: the build is green",  # one line, no exchange, not a name
        "WELCOME HOME\nNEW YORK",  # capitals without a given name
        "Q: what is a mutex?\nA: a lock",
    ],
)
def test_labels_and_capitals_that_name_no_one_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_documentation_values_and_fields_are_validated(pii_params):
    with pytest.raises(ValueError, match=r"documentation_values: unknown entity type.*PASSWORD"):
        PiiConfig.model_validate({**pii_params, "documentation_values": {"PASSWORD": "x"}})
    fields = {**pii_params["fields"], "values": {"PERSON": ".*"}}
    with pytest.raises(ValueError, match="names and values must list the same entity types"):
        PiiConfig.model_validate({**pii_params, "fields": fields})


# ------------------------------------------- round 22: prose passwords, lists, possessives


@pytest.mark.parametrize(
    ("text", "expected", "secrets"),
    [
        ("hey the wifi pw changed to blueberry-kettle-47 bc", "hey the wifi pw changed to <SECRET> bc", 1),
        ("ネットバンキングのパスワード、Hanako0723!にしてる", "ネットバンキングのパスワード、<SECRET>にしてる", 1),
        ("Our admin password for the EHR is Clinic2024! and", "Our admin password for the EHR is <SECRET> and", 1),
        ("初期パスワードからNasAdm1n-kobeに変えた", "初期パスワードから<SECRET>に変えた", 1),
        ("キーボックスの番号、4719だって", "キーボックスの番号、<SECRET>だって", 1),
        ("通用口の暗証番号が2580#に変わった", "通用口の暗証番号が<SECRET>に変わった", 1),
        ("my garage keypad code its 1-9-7-3-# ok", "my garage keypad code its <SECRET> ok", 1),
        ("ロッカーの番号錠、3-7-1-9に設定した", "ロッカーの番号錠、<SECRET>に設定した", 1),
        ("社用スマホのPINが918273で", "社用スマホのPINが<SECRET>で", 1),
        ("Lockbox is on the left railing, code 0419.", "Lockbox is on the left railing, code <SECRET>.", 1),
        ("gate code *4417, side door", "gate code <SECRET>, side door", 1),
        ("アプリパスワードwxqa pkzt mrbe jchoを入れた", "アプリパスワード<SECRET>を入れた", 1),
        ("sticky note: 'router admin Tp-L1nk#88, wifi Goldfish2016'",
         "sticky note: 'router admin <SECRET>, wifi <SECRET>'", 2),
        ("パスワード管理表を作りたい。\nAmazon ak7!Rm2qZ\n楽天 rakuten_mama1985\n",
         "パスワード管理表を作りたい。\nAmazon <SECRET>\n楽天 <SECRET>\n", 2),
    ],
)
def test_passwords_and_codes_in_prose_are_scrubbed(scrub, text, expected, secrets):
    assert scrub(text) == (expected, {"SECRET": secrets})


@pytest.mark.parametrize(
    "text",
    [
        "Does my router support Wi-Fi 6E or only wifi 5?",
        "The router RT-AX88U vs Archer AX55: which one?",
        "password: changeme and api_key: YOUR_API_KEY_HERE. What should I change?",
        "楽天モバイルのカスタマーセンター 050-5434-4653 って公式番号?",
        "Explain Niels Bohr's model of the atom to a child",
        "In which city was Frida's husband Diego Rivera born?",
        "Invoice payee: Lindqvist Snickeri AB, Storgatan",
        "おばあちゃんの家に行く",
    ],
)
def test_models_examples_public_lines_and_public_families_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected", "persons"),
    [
        ("she said you have a room? I'm Marisol's friend", "she said you have a room? I'm <PERSON>'s friend", 1),
        ("we met at Mike's party", "we met at <PERSON>'s party", 1),
        ("この手紙を英訳して。「James様 先日は」", "この手紙を英訳して。「<PERSON>様 先日は」", 1),
        ("アメリカの友達Emilyに年賀状", "アメリカの友達<PERSON>に年賀状", 1),
        ("I'll send the files tonight. — Megan", "I'll send the files tonight. — <PERSON>", 1),
        ("Write a polite reminder to Sanjay that he owes me", "Write a polite reminder to <PERSON> that he owes me", 1),
        ("Her fiancé is Nate, they met", "Her fiancé is <PERSON>, they met", 1),
        ("Our kids Sam and Lily want to read it", "Our kids <PERSON> and <PERSON> want to read it", 2),
        ("contacts:\nSarah K - 090-1234-5678", "contacts:\n<PERSON> - <PHONE>", 1),
        ("I'm Ingrid and my number is", "I'm <PERSON> and my number is", 1),
        ("a thank-you note to Coach Rivera", "a thank-you note to Coach <PERSON>", 1),
        ("My Japanese friend Kenji gave me", "My Japanese friend <PERSON> gave me", 1),
        ("ローマ字氏名はKOBAYASHI MAOで書く", "ローマ字氏名は<PERSON>で書く", 1),
        ("visa form: surname HARTLEY, given names SIMON JAMES.",
         "visa form: surname <PERSON>, given names <PERSON>.", 2),
        ("このLINE、どう思う?\nゆうこ「昨日のこと、まだ?」\n自分「別に」", "このLINE、どう思う?\n<PERSON>「昨日のこと、まだ?」\n自分「別に」", 1),
        ("娘が「みーちゃんのママ」って", "娘が「<PERSON>のママ」って", 1),
        ("中学の同窓会。幹事は田中とさとみで", "中学の同窓会。幹事は<PERSON>と<PERSON>で", 2),
    ],
)
def test_possessives_honorifics_signatures_lists_and_speakers_name_persons(
        scrub, text, expected, persons):
    scrubbed, counts = scrub(text)
    assert scrubbed == expected
    assert counts["PERSON"] == persons


# ------------------------------- round 23: records, bookings, chats in lower case, licences


@pytest.mark.parametrize(
    ("text", "expected", "entity", "count"),
    [
        ("Row 1: Walsh, Brenda | exp 11/26", "Row 1: <PERSON> | exp 11/26", "PERSON", 1),
        ("residence card name is GARCIA LOPEZ, ANA.", "residence card name is <PERSON>.", "PERSON", 1),
        ("Passenger: HUANG/XIAOMING MR, Flight NH10", "Passenger: <PERSON> MR, Flight NH10", "PERSON", 1),
        ("hey kenji, attaching the invoice", "hey <PERSON>, attaching the invoice", "PERSON", 1),
        ("so my ex (jess) still has my login", "so my ex (<PERSON>) still has my login", "PERSON", 1),
        ("my little sister sammy used my card", "my little sister <PERSON> used my card", "PERSON", 1),
        ("The manager, Kyle, won't pick up.", "The manager, <PERSON>, won't pick up.", "PERSON", 1),
        ("'Dear Ngozi and Femi, we'd love to come!'", "'Dear <PERSON> and <PERSON>, we'd love to come!'", "PERSON", 2),
        ("we'd love to come. Love, Alexis'", "we'd love to come. Love, <PERSON>'", "PERSON", 1),
        ("a text to my landlord, mr. okafor, the sink", "a text to my landlord, mr. <PERSON>, the sink", "PERSON", 1),
        ("both cards say KIM MINSEO. The ward office", "both cards say <PERSON>. The ward office", "PERSON", 1),
        ("pay to acct (name: N. Ferreira) by friday", "pay to acct (name: <PERSON>) by friday", "PERSON", 1),
        ("It says D4120-55831-0927 on my license but", "It says <ID> on my license but", "DRIVER_LICENSE", 1),
        ("免許証の番号って何?自分のは第301902458817号", "免許証の番号って何?自分のは第<ID>号", "DRIVER_LICENSE", 1),
        ("my Texas DL: the number is 31884502", "my Texas DL: the number is <ID>", "DRIVER_LICENSE", 1),
        # \w is Japanese letters too: the number right after 第 and before 号, and a code
        # right after は, are still taken (a Latin-only boundary)
        ("免許証の番号って何を表してるの?自分のは第301902458817号なんだけど",
         "免許証の番号って何を表してるの?自分のは第<ID>号なんだけど", "DRIVER_LICENSE", 1),
        ("リカバリーコードは1234-5678と8765-4321です", "リカバリーコードは<SECRET>と<SECRET>です", "SECRET", 2),
        ("'@deepa per my last message'", "'@<PERSON> per my last message'", "PERSON", 1),
        ("chat: [9:02] dev_arjun: who broke prod", "chat: [9:02] <PERSON>: who broke prod", "PERSON", 1),
        ("sshできない。ユーザーはhiro、ポート22", "sshできない。ユーザーは<PERSON>、ポート22", "PERSON", 1),
        ("メモ:ユーザー名 s.kubota", "メモ:ユーザー名 <PERSON>", "PERSON", 1),
        ("the staging password is still Winter2024! and nobody", "the staging password is still <SECRET> and nobody",
         "SECRET", 1),
        ("本番DBのパス変わりました→ Zq8#vL2pWx。共有は口頭で", "本番DBのパス変わりました→ <SECRET>。共有は口頭で", "SECRET", 1),
        ("オートロックの暗証番号が「4821#」なんだけど", "オートロックの暗証番号が「<SECRET>」なんだけど", "SECRET", 1),
        ("暗証番号4桁は 2580 で", "暗証番号4桁は <SECRET> で", "SECRET", 1),
        ("スマートロックのゲスト用コード 739204 を送る", "スマートロックのゲスト用コード <SECRET> を送る", "SECRET", 1),
    ],
)
def test_records_bookings_lowercase_chats_licences_handles_and_passwords_are_scrubbed(
        scrub, text, expected, entity, count):
    assert scrub(text) == (expected, {entity: count})


@pytest.mark.parametrize(
    "text",
    [
        "hey there, how do I reset a router?",
        "Is mr. right a real thing or a myth?",
        "Paris, France is lovely in spring.",
        "The MIT license version 2.0 allows reuse",
        "I LOVE NEW YORK.",
        "Input/Output: see section 3",
        "@channel prod is down",
        "class Foo:\n    @property\n    def bar(self): ...",
        "Use @media queries for mobile",
        "ユーザー名はrootでログインしないで",
        "the login page shows an error",
        "reset-password.html returns 404 after the ResetPassword2FA change",
    ],
)
def test_greetings_titles_capitals_mentions_system_users_and_code_that_name_no_one_are_kept(
        scrub, text):
    assert scrub(text) == (text, {})


# ----------------------------- round 24: lists of names, kin words, teams, one-time codes


@pytest.mark.parametrize(
    ("text", "expected", "entity", "count"),
    [
        ("seating chart. Table 2: Chloe, Mateo, and Ivan.", "seating chart. Table 2: <PERSON>, <PERSON>, and <PERSON>.",
         "PERSON", 3),
        ("Emergency contact: husband Karim, 090", "Emergency contact: husband <PERSON>, 090", "PERSON", 1),
        ("hey, its jen from accounting, the invoices", "hey, its <PERSON> from accounting, the invoices", "PERSON", 1),
        ("the box where Kevin from ops keeps the exports", "the box where <PERSON> from ops keeps the exports",
         "PERSON", 1),
        ("The account holder is listed as Mme Claire Dubois.", "The account holder is listed as Mme <PERSON>.",
         "PERSON", 1),
        ("name on card Robert J. Kim, for the", "name on card <PERSON>, for the", "PERSON", 1),
        ("passport copy, name ELENA MARTINEZ RUIZ (Spain)", "passport copy, name <PERSON> (Spain)", "PERSON", 1),
        ("\"Tayo was absent. -- Funke (mom)\"", "\"Tayo was absent. -- <PERSON> (mom)\"", "PERSON", 1),
        ("お疲れさまです、経理の岡田です。", "お疲れさまです、経理の<PERSON>です。", "PERSON", 1),
        ("はると君のお迎え", "<PERSON>のお迎え", "PERSON", 1),
        ("ジュンソくんにもよろしく", "<PERSON>にもよろしく", "PERSON", 1),
        ("the alarm is 4402. write a note", "the alarm is <SECRET>. write a note", "SECRET", 1),
        ("オートロックの番号が #4826 なんだけど", "オートロックの番号が <SECRET> なんだけど", "SECRET", 1),
        ("They asked for my debit PIN, 9072, and I gave it", "They asked for my debit PIN, <SECRET>, and I gave it",
         "SECRET", 1),
        ("3Dセキュアのパスワード(Ymz_0731)も入れた", "3Dセキュアのパスワード(<SECRET>)も入れた", "SECRET", 1),
        ("ルーターのPW fX3q9Lz2 で接続", "ルーターのPW <SECRET> で接続", "SECRET", 1),
        ("ワンタイムパスワード「482 019」を聞かれた", "ワンタイムパスワード「<SECRET>」を聞かれた", "SECRET", 1),
        ("「AWS_SECRET_ACCESS_KEY=wJ7rXqU2nP/K9mEaT3vB+Yh5sLd8cF0gZo1iRk4W」これって",
         "「AWS_SECRET_ACCESS_KEY=<SECRET>」これって", "SECRET", 1),
        ("Dues go to Wells Fargo checking 7730219845. Can you", "Dues go to Wells Fargo checking <ACCOUNT>. Can you",
         "BANK_ACCOUNT", 1),
        ("I pasted exp 11/27 cvv 318 in a chat", "I pasted exp 11/27 cvv <SECRET> in a chat", "SECRET", 1),
        ("the email on it and the password was dragon2008. what", "the email on it and the password was <SECRET>. what",
         "SECRET", 1),
        ("管理画面に admin / Rt#9920kq で入れた", "管理画面に admin / <SECRET> で入れた", "SECRET", 1),
        ("webhook https://hooks.slack.com/services/T04ZK8/B07QX2/pL9aQmX3vR7tYz2k を消したい",
         "webhook <SECRET> を消したい", "SECRET", 1),
    ],
)
def test_name_lists_kin_words_teams_and_one_time_codes_are_scrubbed(scrub, text, expected, entity, count):
    assert scrub(text) == (expected, {entity: count})


@pytest.mark.parametrize(
    "text",
    [
        "Capitals: Paris, Berlin, and Madrid.",
        "the 2FA code is six digits long",
        "東京の天気です",
        "ワンちゃんとネコちゃん、どっちが飼いやすい?",
        "This is Major Tom to ground control",
    ],
)
def test_place_lists_code_words_and_pets_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # The rest of a name after its part was read: ・-joined katakana parts (a kanji
        # surname last), a quoted nickname and surname, a generation suffix.
        ("会員番号 77812、ニコラス・ペトロフ、連絡先はメールで", "会員番号 77812、<PERSON>、連絡先はメールで",
         {"PERSON": 1}),
        ("家族会員にする娘の名前は エリカ・ロペス・鈴木。", "家族会員にする娘の名前は <PERSON>。", {"PERSON": 1}),
        ("I'm Oluwaseun \"Seun\" Bakare, data engineer", "I'm <PERSON>, data engineer", {"PERSON": 1}),
        ("My dad (Walter Brennan Jr., lives alone)", "My dad (<PERSON>, lives alone)", {"PERSON": 1}),
        # Given names listed beside a private person, and a name's other mentions.
        ("interviewers: me, Femi, and Daniel Cho. Femi liked her SQL.",
         "interviewers: me, <PERSON>, and <PERSON>. <PERSON> liked her SQL.", {"PERSON": 3}),
        ("roster: Mateo, Zoe K., Liam Ortiz", "roster: <PERSON>, <PERSON>, <PERSON>", {"PERSON": 3}),
        ("Tell Hamid the deck is late. Hamid said he'd fix it.",
         "Tell <PERSON> the deck is late. <PERSON> said he'd fix it.", {"PERSON": 2}),
        ("can u and Ahmed fix it before standup", "can u and <PERSON> fix it before standup", {"PERSON": 1}),
        ("Passengers MR ARJUN SHARMA (window), MRS KAVYA SHARMA (aisle)",
         "Passengers MR <PERSON> (window), MRS <PERSON> (aisle)", {"PERSON": 2}),
        # The account type with the number; ゆうちょ's 記号 with its 番号.
        ("渋谷支店 普通 7284015 山田花子", "渋谷支店 <ACCOUNT> <PERSON>", {"BANK_ACCOUNT": 1, "PERSON": 1}),
        ("ゆうちょ銀行 記号12150 番号38475610 です", "ゆうちょ銀行 記号<ACCOUNT> です", {"BANK_ACCOUNT": 1}),
        # Security answers further on in the sentence, not the question.
        ("合言葉を「初めて飼ったペットの名前」にしてて答えは「ぽち丸」なんだけど",
         "合言葉を「初めて飼ったペットの名前」にしてて答えは「<SECRET>」なんだけど", {"SECRET": 1}),
        ("秘密の質問の答え、『好きな食べ物』を「たこやき」にしてる", "秘密の質問の答え、『好きな食べ物』を「<SECRET>」にしてる",
         {"SECRET": 1}),
        ("My security question is \"maiden name\" and the answer I set was Fitzgerald. Help",
         "My security question is \"maiden name\" and the answer I set was <SECRET>. Help", {"SECRET": 1}),
        ("security question answer is my first car 'Dodge Neon 98'",
         "security question answer is my first car '<SECRET>'", {"SECRET": 1}),
        # A name after a kin word and a space (or の and a spaced full name), a kana name
        # in parentheses after one; a given name after a role word.
        ("扶養親族(長女 陽菜)の個人番号", "扶養親族(長女 <PERSON>)の個人番号", {"PERSON": 1}),
        ("故人は祖父の岡田 勝利、喪主は叔父です。", "故人は祖父の<PERSON>、喪主は叔父です。", {"PERSON": 1}),
        ("弟(ひろし)の免許証", "弟(<PERSON>)の免許証", {"PERSON": 1}),
        ("うちの子(けんと、小3)が友達とケンカした", "うちの子(<PERSON>、小3)が友達とケンカした", {"PERSON": 1}),
        ("Network guy (Arjun) says routing is fine.", "Network guy (<PERSON>) says routing is fine.",
         {"PERSON": 1}),
        ("Host: Wiremu & Aroha. Quiet street.", "Host: <PERSON> & <PERSON>. Quiet street.", {"PERSON": 2}),
        ("a Craigslist buyer, Omar, who wants", "a Craigslist buyer, <PERSON>, who wants", {"PERSON": 1}),
        # A lock's number said further on, and an old and a new code.
        ("暗証番号(4桁)を3回間違えた。番号は 5284 だと思ってた", "暗証番号(4桁)を3回間違えた。番号は <SECRET> だと思ってた",
         {"SECRET": 1}),
        ("オートロック番号を 1470 から 2589 に変更決定", "オートロック番号を <SECRET> から <SECRET> に変更決定",
         {"SECRET": 2}),
    ],
)
def test_name_parts_listed_names_mentions_account_types_and_answers_are_scrubbed(
        scrub, text, expected, counts):
    assert scrub(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        "ジョン・レノンの代表曲は?",
        "Who painted the Mona Lisa, Leonardo da Vinci?",
        "Countries I visited: France, Spain, and Portugal.",
        "Meeting on Monday, Tuesday and Wednesday.",
        "暗証番号の変更は2024年までに。番号は 4桁です。",
        "秘密の質問は「母の旧姓は?」です。",
        "THE MR BEAN SHOW airs at 9.",
        "父 会社員、母 パート、兄 大学生です。",
        "母(60代)と父(70歳)の保険。",
        "母 から連絡があった。",
        "The host is Paris.",
    ],
)
def test_public_names_their_neighbours_dates_and_questions_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # A chat log's speakers before a colon, each speaking twice; a form's labels stay.
        ("要約して\nさくら:明日何時?\nケンケン:10時!\nさくら:了解\nケンケン:またね",
         "要約して\n<PERSON>:明日何時?\n<PERSON>:10時!\n<PERSON>:了解\n<PERSON>:またね", {"PERSON": 4}),
        # Names in capitals after a holder or name word; a name after "text from".
        ("ordinary account, holder MURAKAMI YUTO.", "ordinary account, holder <PERSON>.", {"PERSON": 1}),
        ("氏名 MATSUMOTO MEGUMI。大使館に", "氏名 <PERSON>。大使館に", {"PERSON": 1}),
        ("Reply to this text from Emily: 'running late'", "Reply to this text from <PERSON>: 'running late'",
         {"PERSON": 1}),
        # Kin words with a colon, and a name said to be one.
        ("妻:花子、長男:さくら", "妻:<PERSON>、長男:<PERSON>", {"PERSON": 2}),
        ("母は葵って名前で、スマホに不慣れです。", "母は<PERSON>って名前で、スマホに不慣れです。", {"PERSON": 1}),
        # A bare Japanese licence number after 免許は or in parentheses after a licence.
        ("今の免許は809123862303で、来月ハワイに", "今の免許は<ID>で、来月ハワイに", {"DRIVER_LICENSE": 1}),
        ("a US driver's license and a Japanese one (303237955313).",
         "a US driver's license and a Japanese one (<ID>).", {"DRIVER_LICENSE": 1}),
        # Random-looking quoted passwords by a password word; PIN in parentheses; a lock code.
        ("パスワード「jMUybfClSj」って強度的に大丈夫?", "パスワード「<SECRET>」って強度的に大丈夫?", {"SECRET": 1}),
        ("Is '4wdPMd2B68' a strong enough password?", "Is '<SECRET>' a strong enough password?", {"SECRET": 1}),
        ("asked for my old PIN (2442) and", "asked for my old PIN (<SECRET>) and", {"SECRET": 1}),
        ("画面ロック解除コードを0850から変えたい", "画面ロック解除コードを<SECRET>から変えたい", {"SECRET": 1}),
        # A quoted password's quotes stay outside the placeholder.
        ("パスワードは 'Summer2024!' にした", "パスワードは '<SECRET>' にした", {"SECRET": 1}),
    ],
)
def test_chat_speakers_holders_kin_colons_bare_licences_and_quoted_passwords_are_scrubbed(
        scrub, text, expected, counts):
    assert scrub(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        "履歴書\n氏名:なし\n現住所:東京都\n電話:なし\n備考:特になし",
        "file name README TXT is missing",
        "Is 'ResNet50V2' a good model name?",
        "the bank says it's fine. Any ideas?",
        "the router password is still the default one on the sticker",
        "the API key is in the URL so I redacted half",
        "父は会社員です。",
        "my Wi-Fi network 'CasaLuz_5G' keeps dropping, the password is fine",
    ],
)
def test_form_labels_file_names_model_names_and_replies_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # User names in logs and VPN settings; a role word capitalised before a pair.
        ("WARN login failed user=okada from 10.2.3.4", "WARN login failed user=<PERSON> from <IP>",
         {"PERSON": 1, "IP_ADDRESS": 1}),
        ("auth-user-pass with user jdoyle / pass", "auth-user-pass with user <PERSON> / pass", {"PERSON": 1}),
        ("Received $1,450 from Tenant Yusuf Demir for the flat.",
         "Received $1,450 from Tenant <PERSON> for the flat.", {"PERSON": 1}),
        ("my little bro Ethan made a new account", "my little bro <PERSON> made a new account", {"PERSON": 1}),
        ("Bring Steph and the kids.", "Bring <PERSON> and the kids.", {"PERSON": 1}),
        # Japanese lists of foreign names in katakana, kana names before a parenthesis,
        # Latin names with an honorific.
        ("参加: 大野、ラージ・パテル", "参加: <PERSON>、<PERSON>", {"PERSON": 2}),
        ("元カレのゆうき(佐藤悠希)からまた連絡", "元カレの<PERSON>(<PERSON>)からまた連絡", {"PERSON": 2}),
        ("「Smithさん、添付します。」", "「<PERSON>さん、添付します。」", {"PERSON": 1}),
        # Security answers listed by their question; a password after a colon further on;
        # backup codes one per line; a PIN quoted a few characters on; a host key.
        ("Security question answers: mother's maiden name = Castellano, first pet = Pickles.",
         "Security question answers: mother's maiden name = <SECRET>, first pet = <SECRET>.", {"SECRET": 2}),
        ("made his password his dog's name + birthday: Biscuit0412. why bad",
         "made his password his dog's name + birthday: <SECRET>. why bad", {"SECRET": 1}),
        ("Recovery codes for my authenticator:\n7hd9-2kq4\nxm3p-88vt\nWhere to keep them?",
         "Recovery codes for my authenticator:\n<SECRET>\n<SECRET>\nWhere to keep them?", {"SECRET": 2}),
        ("2段階認証のバックアップコード、\n3819 2274\n6620 1935\nこれ保管でいい?",
         "2段階認証のバックアップコード、\n<SECRET>\n<SECRET>\nこれ保管でいい?", {"SECRET": 2}),
        ("暗証番号を4桁の「0712」にしてた", "暗証番号を4桁の「<SECRET>」にしてた", {"SECRET": 1}),
        ("Our Zoom host key is 604913 and", "Our Zoom host key is <SECRET> and", {"SECRET": 1}),
        # A table's PW column.
        ("サイト|ID|PW\n楽天|rakuten_user|Ueda0618!!", "サイト|ID|PW\n楽天|rakuten_user|<SECRET>", {"SECRET": 1}),
    ],
)
def test_log_users_role_words_katakana_lists_answers_codes_and_pw_columns_are_scrubbed(
        scrub, text, expected, counts):
    assert scrub(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        "sort code 20-45-77 is Barclays' branch code",
        "What's a good password manager? Compare Bitwarden and KeePass.",
        "Zoom: Appleさんの新製品、Googleさんの検索",
        "login ok user=root from the console",
        "Bring the kids.",
    ],
)
def test_bank_codes_password_compounds_firms_and_system_users_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The flat or house number before the street, the state, postcode and country
        # after the city, a district number, a slash-separated label line.
        ("my tenant at 4B, 221 Larchmont Ave, Yonkers, NY 10705 is late",
         "my tenant at <ADDRESS> is late"),
        ("住所が12 Wattle Street, Fitzroy VIC 3065, Australia。EMSの宛名", "住所が<ADDRESS>。EMSの宛名"),
        ("came to 88 Harcourt Street, Dublin 2 and left", "came to <ADDRESS> and left"),
        ("TO: 1450 Brickell Bay Dr #2204 / Miami FL 33131 / tel", "TO: <ADDRESS> / tel"),
        # A Japanese building with its floor or room; a lot number after U+2212.
        ("京都市左京区北白川西町87番地 ハイム北白川2F に引っ越しました", "<ADDRESS> に引っ越しました"),
        ("「沖縄県那覇市おもろまち4丁目1-9 302号」だと", "「<ADDRESS>」だと"),
        ("新住所は〒060-0042 札幌市中央区大通西11丁目4−2 ライオンズ大通502号です", "新住所は<ADDRESS>です"),
    ],
)
def test_addresses_are_carried_over_their_flats_buildings_states_and_countries(scrub, text, expected):
    scrubbed, counts = scrub(text)
    assert (scrubbed, counts.get("ADDRESS")) == (expected, 1)


def test_an_address_is_not_carried_into_another_entity():
    from presidio_analyzer import RecognizerResult

    from so8t_kedro.records.pii.addresses import _AddressExtender
    from so8t_kedro.records.pii.config import AddressPartsConfig

    extender = _AddressExtender(AddressPartsConfig(before=r"\d{1,4}[A-Z],\s", after=r",\s[A-Z]{2}"))
    text = "4B, 221 Main St, NY"
    address = RecognizerResult("ADDRESS", 4, 15, 0.8)
    flat = RecognizerResult("SECRET", 0, 2, 0.8)  # another entity where the flat is
    extender.extend(text, [address, flat])
    assert (address.start, address.end) == (4, 19)


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        # Secrets in code and on command lines.
        ("server.login('me@sakura-mail.jp', 'gM7!vR2pQw')", "server.login('<EMAIL>', '<SECRET>')",
         {"EMAIL_ADDRESS": 1, "SECRET": 1}),
        ("redis-cli -h db -p 6379 -a 'Rd!s_Pr0d_88'", "redis-cli -h db -p 6379 -a '<SECRET>'", {"SECRET": 1}),
        ("SECRET_KEY = 'dj4ng0-x9!k2#v@p7m$q1w&e5r(t8y)u3i'", "SECRET_KEY = '<SECRET>'", {"SECRET": 1}),
        ("+ curl -u deploy:7f3c9a1e2b4d6f80 https://nexus.internal/",
         "+ curl -u deploy:<SECRET> https://nexus.internal/", {"SECRET": 1}),
        ("BitLocker 回復キー 418902-337645-120087-556391-774420-093318-661207-208845 を聞かれた",
         "BitLocker 回復キー <SECRET> を聞かれた", {"SECRET": 1}),
        # One-time codes further on; passports listed on the lines after the word.
        ("her bank otp codes keep coming. latest one was 660193. how do i", 
         "her bank otp codes keep coming. latest one was <SECRET>. how do i", {"SECRET": 1}),
        ("ワンタイムパスワードが 528 417 って来た", "ワンタイムパスワードが <SECRET> って来た", {"SECRET": 1}),
        ("同行者のパスポート番号を送る。\n父 TK5510238\n母 TK5510239", "同行者のパスポート番号を送る。\n父 <ID>\n母 <ID>",
         {"PASSPORT": 2}),
        # Persons: me (X), a hyphenated name in parentheses, list items with a note,
        # plural relations, a kana name after a relation, a spaced kanji given name,
        # a dotted katakana name before a spaced honorific, Japanese names in romaji.
        ("secretary — me (Lucy).", "secretary — me (<PERSON>).", {"PERSON": 1}),
        ("for my wife (Hye-jin) — her number", "for my wife (<PERSON>) — her number", {"PERSON": 1}),
        ("attendees - Priya Raman, Tomasz (remote), me", "attendees - <PERSON>, <PERSON> (remote), me",
         {"PERSON": 2}),
        ("Kids are Maya (7) and Leo (4).", "Kids are <PERSON> (7) and <PERSON> (4).", {"PERSON": 2}),
        ("妹のさくらが結婚する。さくらとTomは大学で出会った。", "妹の<PERSON>が結婚する。<PERSON>とTomは大学で出会った。",
         {"PERSON": 2}),
        ("相談者:3年4組 青木 陸斗の保護者。", "相談者:3年4組 <PERSON>の保護者。", {"PERSON": 1}),
        ("営業の田中 部長に確認して。", "営業の<PERSON> 部長に確認して。", {"PERSON": 1}),
        ("担当の ミラー・ジェシカ 様宛てで", "担当の <PERSON> 様宛てで", {"PERSON": 1}),
        ("同行者:Kimura Haruka / 生年月日 1994/08/21", "同行者:<PERSON> / 生年月日 1994/08/21", {"PERSON": 1}),
        ("namae wa WATANABE REN desu.", "namae wa <PERSON> desu.", {"PERSON": 1}),
    ],
)
def test_secrets_in_code_codes_further_on_and_more_person_forms_are_scrubbed(scrub, text, expected, counts):
    assert scrub(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        'token_type = "bearer"',
        'cache_key = "user_profile_v2"',
        "The OTP is 6 digits and expires in 300 seconds.",
        "妹のおかげで助かった。妹のことが心配。",
        "Toyota Camry or Honda Civic?",
        "What novels did Haruki Murakami write?",
    ],
)
def test_code_words_short_codes_relation_phrases_roles_and_famous_romaji_names_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("出席 田中、ラジェシュ、鈴木(議長)。", "出席 <PERSON>、<PERSON>、<PERSON>(議長)。", {"PERSON": 3}),
        ("Thanks again! Love, Hannah & Kwame", "Thanks again! Love, <PERSON> & <PERSON>", {"PERSON": 2}),
        ("'yo Kevin send me the invoice by friday ok'", "'yo <PERSON> send me the invoice by friday ok'",
         {"PERSON": 1}),
        ("Our club treasurer Yvonne needs the IBAN.", "Our club treasurer <PERSON> needs the IBAN.", {"PERSON": 1}),
        ("書類。氏名 Rahmawati Dewi、住所は未定。", "書類。氏名 <PERSON>、住所は未定。", {"PERSON": 1}),
        ("メモ帳:楽天→ Rk_2023x、ヤフー→ Yh00_2023xx。パスワード移行中",
         "メモ帳:楽天→ Rk_2023x、ヤフー→ Yh00_2023xx。パスワード移行中", {}),
        ("パスワードのメモ:楽天→ Rk_2023x、ヤフー→ Yh00_2023xx。", "パスワードのメモ:楽天→ <SECRET>、ヤフー→ <SECRET>。",
         {"SECRET": 2}),
        ("router admin page won't take the old login. I changed it to 'Pumpkin$oup77' last year",
         "router admin page won't take the old login. I changed it to '<SECRET>' last year", {"SECRET": 1}),
        ("which security answer I used: the question was first pet and I put 'Biscuit2009'.",
         "which security answer I used: the question was first pet and I put '<SECRET>'.", {"SECRET": 1}),
        ("暗証番号、家族で共有してるのが「0417」なんだけど", "暗証番号、家族で共有してるのが「<SECRET>」なんだけど",
         {"SECRET": 1}),
        ("暗証番号(4桁)は 8821 で合ってる", "暗証番号(4桁)は <SECRET> で合ってる", {"SECRET": 1}),
        ("ワンタイムパスワード 47 19 03 がメールで来た", "ワンタイムパスワード <SECRET> がメールで来た", {"SECRET": 1}),
    ],
)
def test_katakana_list_names_sign_offs_arrows_and_codes_said_further_on(scrub, text, expected, counts):
    assert scrub(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        "買い物リスト:コーヒー、ミルク、パン",
        "My security question is 'name of your first pet'. Is that a bad idea?",
    ],
)
def test_shopping_lists_and_quoted_questions_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_japanese_script_goes_through_the_japanese_pipeline_whatever_the_record_says(scrubber):
    text = "Translate this to English: '来週の打ち合わせは田口さんも参加します。'"
    [as_english] = scrubber.scrub([text], ["en"])
    [as_japanese] = scrubber.scrub([text], ["ja"])
    assert as_english.text == as_japanese.text == (
        "Translate this to English: '来週の打ち合わせは<PERSON>さんも参加します。'")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("名簿\n1. 東 大翔(幹事)\n2. 福田 ひより\n3. グエン・ヴァン・アン\n五十音順に",
         "名簿\n1. <PERSON>(幹事)\n2. <PERSON>\n3. <PERSON>\n五十音順に"),
        ("table:\nName, Email, Phone\nRuth Adeyemi, ruth.adeyemi@protonmail.com, +44 20 7946 3812",
         "table:\nName, Email, Phone\n<PERSON>, <EMAIL>, <PHONE>"),
        ("CSV:\nfirst,last,city\nEthan,Brooks,Boulder", "CSV:\nfirst,last,city\n<PERSON>,<PERSON>,Boulder"),
        ("CSV\n社員番号,氏名,振込口座\n1021,堀 誠,2039485", "CSV\n社員番号,氏名,振込口座\n1021,<PERSON>,<ACCOUNT>"),
    ],
)
def test_numbered_rosters_and_name_columns_beside_contacts_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["Products:\nName, Price\nWidget Pro, 12.00", "手順\n1. 電源 オン\n2. 設定 画面\n3. 完了"],
)
def test_product_tables_and_numbered_steps_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_a_bare_name_column_needs_its_contact_column_named_too():
    from so8t_kedro.records.pii.config import FieldsConfig

    with pytest.raises(ValueError, match="bare_name_column and contact_column go together"):
        FieldsConfig(languages=["en"], names={}, values={}, bare_name_column="name", score=0.6)


# added in round 31
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a given name alone with no cue beside it, in a first-person text
        ("Plan our picnic: the Hendersons, Margot and Felix, bring the salad.",
         "Plan our picnic: the Hendersons, <PERSON> and <PERSON>, bring the salad."),
        ("my carpool: Soren drives Monday and I take Tuesday",
         "my carpool: <PERSON> drives Monday and I take Tuesday"),
        # ... the name alone (no accented place after it is its surname)
        ("We met Maria in São Paulo", "We met <PERSON> in São Paulo"),
        # ... not in a text with no first person, nor after an article or a preposition,
        # nor beside another capitalised word (a full name, a place)
        ("The play casts Margot as the lead.", "The play casts Margot as the lead."),
        ("I paid with my Visa and drove from Denver", "I paid with my Visa and drove from Denver"),
        ("We flew into Ho Chi Minh last May", "We flew into Ho Chi Minh last May"),
        # a Latin name right after kana, before an honorific
        ("旅行で知り合ったMatteoさんに連絡したい", "旅行で知り合った<PERSON>さんに連絡したい"),
        # a name cut inside its word by the model is carried to the word's end
        ("保護者欄:3組 木村陽向 の父です", "保護者欄:3組 <PERSON> の父です"),
        # ... not over an honorific or a title
        ("部長の岡本さんへ。岡本部長、お世話になりました。",
         "部長の<PERSON>さんへ。<PERSON>部長、お世話になりました。"),
        # a name the dictionary lists, said of a kin word with は, or before くん
        ("弟は健太、従兄の翔くんも来る", "弟は<PERSON>、従兄の<PERSON>くんも来る"),
        ("母は元気です。弟くんは受験生。", "母は元気です。弟くんは受験生。"),
        # a quoted name or handle before an honorific
        ("出品者の「みかん姫」さんから返信がない", "出品者の「<PERSON>」さんから返信がない"),
    ],
)
def test_lone_given_names_cut_names_and_quoted_names_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a code said further on in the sentence of a word for one
        ("The shed padlock combo, if you need it, is 31-07-22.",
         "The shed padlock combo, if you need it, is <SECRET>."),
        ("My PIN got reset by the bank so I set it to 6093 yesterday",
         "My PIN got reset by the bank so I set it to <SECRET> yesterday"),
        ("宅配ボックスの暗証番号、今週から 5826 になりました", "宅配ボックスの暗証番号、今週から <SECRET> になりました"),
        ("recovery codes for my account: 4HQ7-TZ82 and M9PX-31KD",
         "recovery codes for my account: <SECRET> and <SECRET>"),
        # ... not a year, a length or a count
        ("I changed my PIN in 2021 and it must be 6 digits", "I changed my PIN in 2021 and it must be 6 digits"),
        ("パスワードは 12 文字以上、2024年から必須", "パスワードは 12 文字以上、2024年から必須"),
    ],
)
def test_codes_further_on_in_a_sentence_about_one_are_secrets(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 32
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # nicknames after their label, or quoted after a word for a friend or a player
        ("取引相手(ニックネーム:もちこ)から返信がない", "取引相手(ニックネーム:<PERSON>)から返信がない"),
        ("ゲームのフレンド「ソラ」に謝りたい", "ゲームのフレンド「<PERSON>」に謝りたい"),
        # a kana name after a relation word and の, before ちゃん
        ("元カレのたっくんから連絡が来た", "元カレの<PERSON>から連絡が来た"),
        ("娘の友達のりなちゃんが泊まりに来る", "娘の友達の<PERSON>ちゃんが泊まりに来る"),
        # a listed surname after a relation word and の, before a work title
        ("上司の松井課長に相談したい", "上司の<PERSON>課長に相談したい"),
        # a Latin given name after a Japanese role word and a colon
        ("PTAの連絡:書記:Priyanka", "PTAの連絡:書記:<PERSON>"),
        # Japanese given names in romaji count as given names alone
        ("Relay team order: Haruto, Minato, Kaito.", "Relay team order: <PERSON>, <PERSON>, <PERSON>."),
    ],
)
def test_nicknames_relations_roles_and_romaji_given_names_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        # characters known by a courtesy title stay in a public-fact frame
        "Who is older in the stories, Sherlock Holmes or Dr. Watson?",
        "Why does Elizabeth Bennet turn down Mr. Darcy at first?",
        # product and framework names
        "Is the Model Y Long Range worth the extra cost?",
        "How do I change the port of a Spring Boot service?",
        # a country after "for"
        "Which plug adapter do I need for France?",
    ],
)
def test_titled_characters_product_names_and_countries_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_a_titled_character_is_listed_only_with_its_title(scrub):
    # "Mr. Darcy" is Austen's; a private Darcy, or a Mr. Darcy who is a neighbour, goes
    assert scrub("My neighbour Mr. Darcy blocks my drive")[0] == "My neighbour Mr. <PERSON> blocks my drive"
    assert scrub("Text Darcy that I'm late")[0] == "Text <PERSON> that I'm late"


# added in round 33
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the writer's own name after a greeting or in parentheses after 私
        ("お世話になっております、吉岡です。先日の件です。", "お世話になっております、<PERSON>です。先日の件です。"),
        ("ミスの原因は私(藤井)の確認不足です", "ミスの原因は私(<PERSON>)の確認不足です"),
        # a letter's signature before より, not a kin word
        ("いつもありがとう\nさくらより", "いつもありがとう\n<PERSON>より"),
        ("いつもありがとう\n母より", "いつもありがとう\n母より"),
        # a name called at the start, a surname before a work title, a holder before 名義
        ("健太、昨日はごめん。", "<PERSON>、昨日はごめん。"),
        ("承認者は村井課長です", "承認者は<PERSON>課長です"),
        ("口座は(西川名義)です", "口座は(<PERSON>名義)です"),
        ("口座は法人名義です", "口座は法人名義です"),
        # a hiragana chat speaker where another line has one; a form's label is no speaker
        ("要約して\nあやね:何時?\nみのり:7時", "要約して\n<PERSON>:何時?\n<PERSON>:7時"),
        ("名前:ひかり\n趣味:読書", "名前:<PERSON>\n趣味:読書"),
        # a listed name after a kin title even where the word is more often something else
        ("Place cards: Uncle Theo, Grandma Rose", "Place cards: Uncle <PERSON>, Grandma <PERSON>"),
        # "from X" closing a card, a person's laptop
        ("Write the card and sign it from Imogen.", "Write the card and sign it from <PERSON>."),
        ("The printer rejects Carmen's laptop", "The printer rejects <PERSON>'s laptop"),
    ],
)
def test_signatures_self_introductions_speakers_and_titled_surnames_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I flew in from Manila last week.", "I flew in from Manila last week."),
        ("パスポートを更新した。番号が変わって、新:MZ4410276になった", "パスポートを更新した。番号が変わって、新:<ID>になった"),
        ("免許証の番号「410233890172」って控えられた", "免許証の番号「<ID>」って控えられた"),
        ("鍵のパスフレーズは「kumo-no-ue-88」のはず", "鍵のパスフレーズは「<SECRET>」のはず"),
    ],
)
def test_places_stay_and_passports_licences_and_passphrases_further_on_go(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 34
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("うちの湊、今日も元気です", "うちの<PERSON>、今日も元気です"),
        ("父正和の年金の手続き", "父<PERSON>の年金の手続き"),
        ("拾った方は飼い主のあずさまでご連絡を", "拾った方は飼い主の<PERSON>までご連絡を"),
        ("「スズキ」と名乗る男から電話が来た", "「<PERSON>」と名乗る男から電話が来た"),
        ("[Noor] who's bringing snacks\n[Ivan] me", "[<PERSON>] who's bringing snacks\n[<PERSON>] me"),
        ("I told Priya the plan already", "I told <PERSON> the plan already"),
        ("Your access is ready. Thanks, Lucinda (HR)", "Your access is ready. Thanks, <PERSON> (HR)"),
        ("Emergency list:\nMarisol 07700 900812", "Emergency list:\n<PERSON> <PHONE>"),
    ],
)
def test_names_after_uchi_kin_owners_brackets_and_sign_offs_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ログイン用: sora.m@outlook.jp / Umi$Kaze88", "ログイン用: <EMAIL> / <SECRET>"),
        ("パスワードumino0815を変えたい", "パスワード<SECRET>を変えたい"),
        ('my seed phrase is "apple river stone cloud piano tiger lemon brave olive night sugar frame"',
         'my seed phrase is "<SECRET>"'),
        ("the bot token MTA5ODc2NTQzMjEwOTg3NjU0Mw.Gk3dQz.aB9cD8eF7gH6iJ5kL4mN3oP2qR1sT0uVwXyZ leaked",
         "the bot token <SECRET> leaked"),
        ("Send it to 5-3-1 Minami Aoyama, Minato-ku, Tokyo 107-0062 please",
         "Send it to <ADDRESS> please"),
        ("Adres: ul. Kwiatowa 7/12, 00-950 Warszawa", "Adres: <ADDRESS>"),
        ("Deliver to 41 W 57th St, New York, NY 10019", "Deliver to <ADDRESS>"),
        ("The form wants my DL number. Mine is Ohio 48219375.", "The form wants my DL number. Mine is Ohio <ID>."),
        # ... and a password said to be set is no password; the number 42 is no contact
        ("Your temporary password is set. Log in now.", "Your temporary password is set. Log in now."),
    ],
)
def test_secrets_addresses_and_licences_by_their_shape_go(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["紫式部と清少納言は実際に会ったことがあるの?", "名探偵コナンの本名は工藤新一?",
     "Write a haiku about the number 42 and Douglas Adams.",
     "ハチの飼い主の上野英三郎博士について教えて"],
)
def test_public_figures_said_to_meet_or_by_real_name_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 35
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Party RSVPs:\nMarisol - yes\nDeclan (maybe)\nIngrid K.",
         "Party RSVPs:\n<PERSON> - yes\n<PERSON> (maybe)\n<PERSON>"),
        ("INSERT INTO staff VALUES ('Harriet Lowe', 'sales');", "INSERT INTO staff VALUES ('<PERSON>', 'sales');"),
        ("Lease: Lessee Tomasz Nowak, Lessor Jane Holt.", "Lease: Lessee <PERSON>, Lessor <PERSON>."),
        ("Plan Ezra's christening lunch", "Plan <PERSON>'s christening lunch"),
        ("hi, it's Anouk again about the refund", "hi, it's <PERSON> again about the refund"),
        ("whatsapp msg from Callum: running late", "whatsapp msg from <PERSON>: running late"),
        ("Someone is at the gate. Desmond can you look?", "Someone is at the gate. <PERSON> can you look?"),
        ("Haruへ。元気?", "<PERSON>へ。元気?"),
        ("「至急連絡して」ってまさみから来た", "「至急連絡して」って<PERSON>から来た"),
    ],
)
def test_list_lines_quoted_pairs_parties_and_senders_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["Rota:\nMon - early\nTue - late", "Groceries:\nMilk - 2\nBread (rye)",
     "Is 'John Doe' a placeholder name in court papers?", "What is the song 'Eleanor Rigby' about?"],
)
def test_day_rotas_shopping_lists_and_quoted_titles_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_words_of_grammar_after_a_relation_are_no_names(scrub):
    # ため is listed as a name too; 友達のために is "for a friend"
    text = "友達のために区役所へ行く"
    assert scrub(text) == (text, {})


# added in round 36
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Seats: me (Ines), Tobias, Mum.", "Seats: me (<PERSON>), <PERSON>, Mum."),
        ("cousin Ava + her bf Mateo", "cousin <PERSON> + her bf <PERSON>"),
        ("Table booked under Moretti, Chiara.", "Table booked under <PERSON>."),
        ("Old passport issued to ANNA MARIA KOWALSKA", "Old passport issued to <PERSON>"),
        ("カードの裏の3桁は 271 です", "カードの裏の3桁は <SECRET> です"),
        ("my debit card pin 5093 is on a post-it", "my debit card pin <SECRET> is on a post-it"),
        ("NY DL for my daughter: 618 204 937", "NY DL for my daughter: <ID>"),
        ("Ship to 3 Oak Row, Bray, Co. Wicklow, A98 X2T4 please",
         "Ship to <ADDRESS> please"),
        ("ゆうまへ\n卒業おめでとう", "<PERSON>へ\n卒業おめでとう"),
        ("相手は「ぷりん」って人です", "相手は「<PERSON>」って人です"),
        ("ねえ、みゆき先輩に聞いてみて", "ねえ、<PERSON>先輩に聞いてみて"),
    ],
)
def test_lists_with_parentheses_bookings_codes_in_prose_and_addressees_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


# added in round 37
@pytest.mark.parametrize(
    "text",
    [
        "Was 221B Baker Street a real address in Conan Doyle's day?",
        "What's the address of the Empire State Building? 20 W 34th St right?",
        "明治神宮の住所って公開されてるけど、渋谷区代々木神園町1-1で合ってる?",
        "Does rails 7.1.3.2 fix the CVE?",
        "Spotify track ID 6rqhFgbbKwnb9MLmUQDhG6 — which song is it?",
    ],
)
def test_landmark_addresses_versions_and_media_ids_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_a_private_address_beside_a_landmark_question_still_goes(scrub):
    assert scrub("I moved to 20 W 34th St, New York last week")[0] == "I moved to <ADDRESS> last week"


@pytest.mark.parametrize(
    "text",
    ["What makes a password strong, in general terms?", "Why is bcrypt used for password hashing?",
     "the email said password changed. Am I hacked?"],
)
def test_a_word_before_a_mark_after_password_is_no_value(scrub, text):
    assert scrub(text) == (text, {})


def test_the_pass_label_of_a_user_slash_pass_line_is_no_value(scrub):
    assert scrub("# user: ops7 / pass: Wq4#nL8!zz")[0] == "# user: ops7 / pass: <SECRET>"


@pytest.mark.parametrize(
    "text",
    ["How do I get into my ex's Instagram without the 2FA code?",
     "What's my roommate's Netflix password? I know his email.",
     "今、父の右腕が上がらなくなって、ろれつも回ってない",
     "録音アプリ、バッグに入れたままでちゃんと入る?",
     "うちの親、毒親とかいうレベルじゃない",
     "マッチングアプリで「投資で稼いでる」っていう人によく会う"],
)
def test_services_adverbs_kin_and_quoted_phrases_of_the_seed_requests_are_kept(scrub, text):
    # false alarms of rounds 31-37 on the shipped seed requests (their data-quality
    # report counted 48 persons at 1ebad3f, 35 before the rounds)
    assert scrub(text) == (text, {})


# added in round 38
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("明日ははるとママが迎えに来るって", "明日は<PERSON>ママが迎えに来るって"),
        ("帰りはみおのお母さんの車で送ってもらう", "帰りは<PERSON>のお母さんの車で送ってもらう"),
        ("LINEでけいすけくんから連絡が来た", "LINEで<PERSON>くんから連絡が来た"),
        ("「あかり、今どこ?」って送ったのに既読にならない", "「<PERSON>、今どこ?」って送ったのに既読にならない"),
        ("サークル宛:「書記のなつみです。議事録を送ります」", "サークル宛:「書記の<PERSON>です。議事録を送ります」"),
        ("昨日ゆかぽんと原宿に行った", "昨日<PERSON>と原宿に行った"),
        ("氏名 松岡 ひかり(まつおか ひかり)", "氏名 <PERSON>(<PERSON>)"),
        ("出席:大野、金子(修)、西村", "出席:<PERSON>、<PERSON>、<PERSON>"),
        ("職員名簿\n平井 保 内線2201\n三宅 剛 内線2202", "職員名簿\n<PERSON> 内線2201\n<PERSON> 内線2202"),
        ("委任者藤田 誠(代理人は妻)", "委任者<PERSON>(代理人は妻)"),
        ("0456123(楽天銀行の方)に振り込んでおいて", "<ACCOUNT>(楽天銀行の方)に振り込んでおいて"),
        ("落札者nao_vintageさんから連絡がない", "落札者<PERSON>さんから連絡がない"),
    ],
)
def test_kana_names_by_their_cue_notes_rosters_and_transfers_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chat log\nken.t: deploy is done\nyuna: thanks!\nken.t: rollback if it breaks",
         "chat log\n<PERSON>: deploy is done\n<PERSON>: thanks!\n<PERSON>: rollback if it breaks"),
        ("[10:14] Priya S: I'll bring the cake", "[10:14] <PERSON>: I'll bring the cake"),
        ("Hello all, Oksana here. Back on Monday.", "Hello all, <PERSON> here. Back on Monday."),
        ("Hi, I'm Declan from billing.", "Hi, I'm <PERSON> from billing."),
        ("Pickup list: Ana Ruiz (aunt of Noah)", "Pickup list: <PERSON> (aunt of <PERSON>)"),
        ("Review for Oliver Grant: a strong year. He paired Oliver and Priya.",
         "Review for <PERSON>: a strong year. He paired <PERSON> and <PERSON>."),
        ("The Okonkwos at 14 Elm Ct have a new dog", "The <PERSON> at <ADDRESS> have a new dog"),
        ("「Haruka、駅に着いた?」", "「<PERSON>、駅に着いた?」"),
    ],
)
def test_chat_speakers_greetings_wards_and_families_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('DB_PASS = "Tq8#mv2Lr!5x"', 'DB_PASS = "<SECRET>"'),
        ("鍵のパスフレーズはsora-no-kujira-7で合ってる?", "鍵のパスフレーズは<SECRET>で合ってる?"),
        ("彼のパスワードってまだkenta0707なの?", "彼のパスワードってまだ<SECRET>なの?"),
        ("The door code for the shed is 4#7731.", "The door code for the shed is <SECRET>."),
        ("can't log into the NAS at home with Harbor#5521 anymore",
         "can't log into the NAS at home with <SECRET> anymore"),
        ("ops: DBのパス変えた?\nmina: Wv7!kR2#pz9 にしたよ",
         # (since round 48 the chat speaker mina, a given name, goes too)
         "ops: DBのパス変えた?\n<PERSON>: <SECRET> にしたよ"),
        ("77 Linden st apt 4 Cambridge MA 02139 is my address", "<ADDRESS> is my address"),
        ("Unit 2, 9 Highgate, Leeds LS6 3AB", "<ADDRESS>"),
        ("Morada: Rua do Carmo 12, 1200-093 Lisboa", "Morada: <ADDRESS>"),
    ],
)
def test_secrets_in_code_and_prose_and_addresses_with_postcodes_go(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["みなさん、おつかれさまです", "おひさまさん、きょうもありがとう", "なお、明日は休講です",
     "うちのママが言ってた", "ともだちのママに会った", "クレヨンしんちゃんの映画を観た",
     "Q: what is a mutex?\nA: a lock\nQ: and a semaphore?",
     "Mum: dinner at 7\nDad: ok\nMum: bring bread",
     "kubectl create secret generic app --from-literal=username=app",
     "Click here. Sign here."],
)
def test_words_before_cues_roles_and_system_users_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 39
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[12/9/24, 08:01:44] Tomás: running late", "[12/9/24, 08:01:44] <PERSON>: running late"),
        ("LINE履歴\n09:12\tゆうだい\t了解!\n09:13\tみさき\tありがと", "LINE履歴\n09:12\t<PERSON>\t了解!\n09:13\t<PERSON>\tありがと"),
        ("| 番号 | 氏名 |\n|---|---|\n| 7 | 森 はるか |", "| 番号 | 氏名 |\n|---|---|\n| 7 | <PERSON> |"),
        ("取引先の이서연さん(Lee Seo-yeon)に連絡", "取引先の<PERSON>さん(<PERSON>)に連絡"),
        ("同僚のチャン・ティ・マイ(Tran Thi Mai)さんの歓迎会", "同僚の<PERSON>(<PERSON>)さんの歓迎会"),
        ("Discordの表示名は「Kai R」です", "Discordの表示名は「<PERSON>」です"),
        ("--\n山田工業株式会社\n総務課 村上 浩二\n", "--\n山田工業株式会社\n総務課 <PERSON>\n"),
        ("町内会名簿\n0101 タナカ ユウキ\n0102 イノウエ サキ", "町内会名簿\n0101 <PERSON>\n0102 <PERSON>"),
        ("明日は午後から出社します。宜しくお願いします。三浦", "明日は午後から出社します。宜しくお願いします。<PERSON>"),
        ("元気にしてる?また連絡するね。ゆうこ", "元気にしてる?また連絡するね。<PERSON>"),
        ("ねえはるかー、宿題おわった?", "ねえ<PERSON>ー、宿題おわった?"),
        ("うちの娘のあおいが熱を出しました", "うちの娘の<PERSON>が熱を出しました"),
        ("Thanks to Greta and Omar for the help", "Thanks to <PERSON> and <PERSON> for the help"),
        ("Hey all, Femi is out sick today.", "Hey all, <PERSON> is out sick today."),
        ("The caller said she was Nadia from the bank.", "The caller said she was <PERSON> from the bank."),
    ],
)
def test_chat_exports_tables_other_scripts_signatures_and_rosters_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ログイン用のパス「mk_sora2019」を教えた", "ログイン用のパス「<SECRET>」を教えた"),
        ("ssh in with deploy / Sn0w!Fall#2024 and restart nginx",
         "ssh in with deploy / <SECRET> and restart nginx"),
        ("Your code is 730155. Don't share it.", "Your code is <SECRET>. Don't share it."),
        ("call me 555-0143 when you land", "call me <PHONE> when you land"),
        ("Illinois CDL roster:\nAna Ruiz – R512-7734-2209", "Illinois CDL roster:\n<PERSON> – <ID>"),
        ("my ph licence is K03-19-044512", "my ph licence is <ID>"),
        ("Sumitomo Mitsui, futsu 5521039", "Sumitomo Mitsui, futsu <ACCOUNT>"),
        ("代金は4417203(みずほ銀行 普通)にお振込みください", "代金は<ACCOUNT>(みずほ銀行 普通)にお振込みください"),
        ("name,url,username\nMail,https://mail.example,ken.ito.1990@qq.com", "name,url,username\nMail,https://mail.example,<EMAIL>"),
        ("住所は富山県高岡市中川本町3番地の7です", "住所は<ADDRESS>です"),
        ("Adres: Ul. Piękna 7 m. 3, 00-549 Warszawa, Poland", "Adres: <ADDRESS>"),
        ("Anschrift: Bergstraße 8, 2. OG rechts, 69117 Heidelberg", "Anschrift: <ADDRESS>"),
        ("My address: 2-7-14-303 Kamata, Ota-ku, Tokyo", "My address: <ADDRESS>"),
        ("부산광역시 해운대구 해운대로 570, 1203호로 보내주세요", "<ADDRESS>로 보내주세요"),
        ("inet 10.0.0.7/24 brd 10.0.0.255 scope global eth0", "inet <IP> brd 10.0.0.255 scope global eth0"),
        ("同乗者 ジョン・スミスさん(アメリカ)の免許", "同乗者 <PERSON>さん(アメリカ)の免許"),
    ],
)
def test_quoted_passes_local_numbers_licences_accounts_and_foreign_addresses_go(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["commit 9af3\nDate:   Tue Apr 16 14:22:07 2024 +0900",
     "池田屋事件で新選組が襲撃した池田屋は京都のどこ?",
     "源頼朝と源義経は実際に会ったことがありますか?",
     "羽生善治さんの永世七冠はいつ?タイトル数も一緒に教えて",
     'api_key = os.environ["OPENAI_API_KEY"]\nif not api_key:\n    raise SystemExit(1)',
     ".env.example\nDB_PASSWORD=\nAPI_KEY=your-api-key-here"],
)
def test_dates_broadcasts_inns_historical_meetings_and_env_lookups_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 40
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("免許って12桁だよね?私のは302914775061って書いてある", "免許って12桁だよね?私のは<ID>って書いてある"),
        ("あのさ、ちえみの電話番号わかる?", "あのさ、<PERSON>の電話番号わかる?"),
        ("「タク」こと大西さんの誕生日会", "「<PERSON>」こと<PERSON>さんの誕生日会"),
        ("配信では「月影ルナ」って名前で活動してる", "配信では「<PERSON>」って名前で活動してる"),
        ("「まっつん」っていうインスタの人から連絡が来た", "「<PERSON>」っていうインスタの人から連絡が来た"),
        ("長男そうまと次女ひなは同じ園です", "長男<PERSON>と次女<PERSON>は同じ園です"),
        ("Tenant: Ana Silva, unit 1204-855 Burrard St, Vancouver, BC V6Z 2K7",
         "Tenant: <PERSON>, unit <ADDRESS>"),
        ("Our new analyst Olga Petrova (Ольга Петрова) starts today", "Our new analyst <PERSON> (<PERSON>) starts today"),
        ("sshpass -p 'Qm7#vL2!xz' ssh admin@10.2.0.9", "sshpass -p '<SECRET>' ssh admin@<IP>"),
        ("WA driver license WDL4K8Z2M7QQ renewal", "WA driver license <ID> renewal"),
    ],
)
def test_twelve_digits_quoted_handles_kin_forms_units_and_cyrillic_readings_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["When are Taylor Swift's Eras Tour dates in Tokyo?", "「さくら」って名前の駅、日本にいくつある?",
     "娘はなにも言わなかった"],
)
def test_tour_dates_station_names_and_particles_after_kin_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 41
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("インスタのIDはsaki_0413だよ", "インスタのIDは<PERSON>だよ"),
        ("自治会 名簿\n301号室 李 明 080-1234-5678", "自治会 名簿\n301号室 <PERSON> <PHONE>"),
        ("Thanks, Kimura-san, for the package.", "Thanks, <PERSON>-san, for the package."),
        ("Aiko、明日の会議の資料送ったよ", "<PERSON>、明日の会議の資料送ったよ"),
        ("Dana, here's the code for the shed", "<PERSON>, here's the code for the shed"),
        ("西田 陽菜(にしだ ひな)さんの件", "<PERSON>(<PERSON>)さんの件"),
        ("パスワードは初回に変更してください。 総務 中川", "パスワードは初回に変更してください。 総務 <PERSON>"),
        ("The PIN on my card 4111 1111 1111 1111 is 7730, keep it safe",
         "The PIN on my card <ACCOUNT> is <SECRET>, keep it safe"),
        ("Mail it to 8 rue Victor Hugo, 33000 Bordeaux", "Mail it to <ADDRESS>"),
        ("Ship to Salma Benali, 14 Rue Allal Ben Abdellah, Apt 2, Rabat 10000, thanks",
         "Ship to <PERSON>, <ADDRESS>, thanks"),
    ],
)
def test_instagram_ids_rooms_romanised_honorifics_vocatives_and_postcodes_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["豊臣秀吉の幼名は日吉丸ですか?", "ベーカー街221Bは実在する?",
     "Who is Anakin Skywalker's mother in the prequels?",
     "DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/DBNAME",
     "10:15:03 INFO request_id=7f3c GET /api/v1/items 200"],
)
def test_childhood_names_fictional_streets_placeholders_and_api_paths_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_a_service_user_in_a_connection_url_is_no_person(scrub):
    # the writers of the benchmark leave service accounts in URLs unlabelled (appuser,
    # reporting, oauth2): only the password goes
    assert scrub("git clone https://deploy:ghp_x8Kq2mZ@github.com/x/y.git is failing")[0] == (
        "git clone https://deploy:<SECRET>@github.com/x/y.git is failing")


# added in round 42
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("借用書\n借主 大森 健太\n金額 50,000円", "借用書\n借主 <PERSON>\n金額 50,000円"),
        ("掃除当番\n月曜:杉山\n火曜:井上", "掃除当番\n月曜:<PERSON>\n火曜:<PERSON>"),
        ("Intake form\nName: Maria T. Lopez\nDOB: 02/11/1975", "Intake form\nName: <PERSON>\nDOB: 02/11/1975"),
        ("見つけた方はゆい(080-1111-2222)まで連絡ください", "見つけた方は<PERSON>(<PHONE>)まで連絡ください"),
        ("くまきち(本名は知らない)が来なかった", "<PERSON>(本名は知らない)が来なかった"),
        ('requests.get(url, auth=("sato_k", "Sato#2001"))', 'requests.get(url, auth=("sato_k", "<SECRET>"))'),
    ],
)
def test_lenders_duty_rosters_initials_numbers_in_parentheses_and_auth_tuples_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["ifconfig:\neth0: inet 10.0.0.4\neth0: inet6 fe80::1", "Nelson Mandela's prisoner number was 46664.",
     "The genesis block hash is 000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f."],
)
def test_interfaces_public_figures_numbers_and_hashes_are_no_persons_or_ids(scrub, text):
    counts = scrub(text)[1]
    assert "PERSON" not in counts and "MY_NUMBER" not in counts


def test_my_number_after_a_possessive_is_the_document(scrub):
    assert scrub("my wife's My Number card shows 391028475615")[0] == "my wife's My Number card shows <ID>"


# added in round 43
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('sshd: Failed password for user "mtanaka" from 10.0.0.9 port 22', 'sshd: Failed password for user "<PERSON>" from <IP> port 22'),
        ("docker login -u pkowal -p x registry.local", "docker login -u <PERSON> -p x registry.local"),
        ("フリガナ:サトウ ハナコ", "フリガナ:<PERSON>"),
        ("Adress: Kungsgatan 7C, 411 19 Göteborg", "Adress: <ADDRESS>"),
        ("Hello, I'm Emma from the Leeds office.", "Hello, I'm <PERSON> from the Leeds office."),
        ("Totals: Chloe $12.00, Ravi $9.50", "Totals: <PERSON> $12.00, <PERSON> $9.50"),
        ("my old licence shows number 512 804 366 on the back", "my old licence shows number <ID> on the back"),
        ("my sister Mai - everyone calls her \"Bean\" - turns 30", "my sister <PERSON> - everyone calls her \"<PERSON>\" - turns 30"),
        ("受取人 Choi Seo-yeon、口座は新韓銀行", "受取人 <PERSON>、口座は新韓銀行"),
        ("Signed by Maria T. Gonzalez and witnessed", "Signed by <PERSON> and witnessed"),
    ],
)
def test_log_users_readings_nordic_streets_offices_bills_and_korean_names_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["Is Austin, Texas named after Stephen F. Austin?",
     "How do I get to the Eiffel Tower (Champ de Mars, 5 Av. Anatole France) by metro?",
     "why does `docker login -u ci-bot -p $TOKEN registry` warn?"],
)
def test_public_founders_landmarks_and_pipeline_users_are_kept(scrub, text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("kana", "romaji", "folded"),
    [("りょうへい", "ryouhei", "ryohei"), ("ちなつ", "chinatsu", "chinatsu"),
     ("まっちゃ", "matcha", "matcha"), ("はっと", "hatto", "hatto"), ("ゆうこ", "yuuko", "yuko"),
     ("じゅん", "jun", "jun"), ("ゆー", "yuu", "yu"), ("しょうた", "shouta", "shota")],
)
def test_hiragana_is_read_in_hepburn_romaji_and_long_vowels_fold(kana, romaji, folded):
    from so8t_kedro.records.pii.text import folded_romaji, hiragana_romaji

    assert hiragana_romaji(kana) == romaji
    assert folded_romaji(romaji) == folded


@pytest.mark.parametrize("kana", ["ゃあ", "はっ", "ーあ", "カナ"])
def test_kana_hepburn_cannot_read_is_none(kana):
    from so8t_kedro.records.pii.text import hiragana_romaji

    assert hiragana_romaji(kana) is None


def test_romaji_spellings_people_type_fold_together():
    from so8t_kedro.records.pii.text import folded_romaji

    assert {folded_romaji(name) for name in ("Shouta", "Shota", "Shohta")} == {"shota"}
    assert folded_romaji("Ohno") == folded_romaji("Oono") == "ono"


# added in round 44
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("旅券の氏名はローマ字でSATO MISAKIで合ってる?", "旅券の氏名はローマ字で<PERSON>で合ってる?"),
        ("ローマ字はShun'ichi Kurodaでいい?", "ローマ字は<PERSON>でいい?"),
        ("rails:\n  SECRET_KEY_BASE: 4f8a1c9e7b2d6053a1e8c7f2b9d4e6a0c3b5d7f9e1a2c4b6", "rails:\n  SECRET_KEY_BASE: <SECRET>"),
        ("連絡網\nA班 坂口 090-3321-8874\nB班 浜田 080-1192-5530", "連絡網\nA班 <PERSON> <PHONE>\nB班 <PERSON> <PHONE>"),
        ("受付当番:早番 松井、遅番 Tuan、夜勤 Anjali", "受付当番:早番 <PERSON>、遅番 <PERSON>、夜勤 <PERSON>"),
        ("口座名義(カナ):ヨシダ ミホ", "口座名義(カナ):<PERSON>"),
        ("```\nid,name,kana,email\n7,吉田 美穂,ヨシダ ミホ,m.yoshida@example.jp\n```", "```\nid,name,kana,email\n7,<PERSON>,<PERSON>,<EMAIL>\n```"),
        ("留学生の李 娜さん(リー・ナー)の電話", "留学生の<PERSON>さん(<PERSON>)の電話"),
        ("お誕生日おめでとう! 東京のお土産送ったよ ゆかより", "お誕生日おめでとう! 東京のお土産送ったよ <PERSON>より"),
        ("わたしはしおり、よろしくね", "わたしは<PERSON>、よろしくね"),
        ("上司から「Mikey」って呼ばれてる後輩", "上司から「<PERSON>」って呼ばれてる後輩"),
        ("運転免許証\n番号 4410-2298-1107\n有効期限 2027年", "運転免許証\n番号 <ID>\n有効期限 2027年"),
        ("担任の先生からのお知らせです。明日は遠足です。担任 森田", "担任の先生からのお知らせです。明日は遠足です。担任 <PERSON>"),
    ],
)
def test_romaji_in_japanese_rosters_shifts_kana_columns_and_letters_signed_in_kana_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<yuki_ops> is the build green?\n<marek> yes, deployed at 10:02", "<<PERSON>> is the build green?\n<<PERSON>> yes, deployed at 10:02"),
        ("[10:11] dana: who has the staging creds?\n[10:13] dana: ok thanks Omar", "[10:11] <PERSON>: who has the staging creds?\n[10:13] <PERSON>: ok thanks <PERSON>"),
        ("my name's priya nair and my card number is 4111111111111111", "my name's <PERSON> and my card number is <ACCOUNT>"),
        ("my snap is lily.k.2004 add me", "my snap is <PERSON> add me"),
        ("our clan leader (ign ShadowFoxx) got banned", "our clan leader (ign <PERSON>) got banned"),
        ("Note: Uncle Rafael's new number is 555-0142", "Note: Uncle <PERSON>'s new number is 555-0142"),
        ("FYI our landlord Gary gave us the code", "FYI our landlord <PERSON> gave us the code"),
        ("Please reset it.\n— Facilities Team (Howard)", "Please reset it.\n— Facilities Team (<PERSON>)"),
        ("me: Nina can u send the file\nNina: here it is", "me: <PERSON> can u send the file\n<PERSON>: here it is"),
        ("Last name O'Brien, first name Aidan", "Last name <PERSON>, first name <PERSON>"),
        ("氏名:Reyes, Ana Lucia\n国籍:フィリピン", "氏名:<PERSON>\n国籍:フィリピン"),
        ("Plus-ones:\n- Sam & Priya — 2", "Plus-ones:\n- <PERSON> & <PERSON> — 2"),
        ("Cleanup crew:\nSun AM — Nora, Idris\nSun PM — Kemal, Anouk", "Cleanup crew:\nSun AM — <PERSON>, <PERSON>\nSun PM — <PERSON>, <PERSON>"),
    ],
)
def test_irc_speakers_lower_case_names_social_handles_kin_possessives_and_rosters_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["From: HR\nTo: IT\nSubject: laptop refresh", "徳川15代将軍の名前を教えて", "<div> hello</div>\n<span> world</span>",
     "The teams — Spain, France — met twice.", "氏名はローマ字で書いてください",
     "My friend's Instagram is private. Can I see her posts?"],
)
def test_departments_lineages_html_and_katakana_words_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 45
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hey nina, tell marcus to start without me. - jess", "hey <PERSON>, tell <PERSON> to start without me. - <PERSON>"),
        ("pls don't share w/ tom yet", "pls don't share w/ <PERSON> yet"),
        ("name: lucy chen\naddr: 88 clementina st #4, san francisco ca 94105", "name: <PERSON>\naddr: <ADDRESS>"),
        ("192.168.0.12  iPhone (Rosa)\n192.168.0.15  DESKTOP-7HQ2K", "<IP>  iPhone (<PERSON>)\n<IP>  DESKTOP-7HQ2K"),
        ("**Ben**: you around?\n**Tyler**: yep", "**<PERSON>**: you around?\n**<PERSON>**: yep"),
        ('const user = { first: "chris", last: "delgado", dob: "1988-02-11" };', 'const user = { first: "<PERSON>", last: "<PERSON>", dob: "1988-02-11" };'),
        ("DL S530-2849-7721-04\nLN SCHULTZ\nADDR 901 E JOHNSON ST MADISON WI 53703", "DL <ID>\nLN <PERSON>\nADDR <ADDRESS>"),
        ("BEGIN:VCARD\nADR:;;Via Garibaldi 18;Torino;;10122;Italy\nEND:VCARD", "BEGIN:VCARD\nADR:;;<ADDRESS>\nEND:VCARD"),
        ("also the wifi pw at the cabin is lakeside_2288 btw", "also the wifi pw at the cabin is <SECRET> btw"),
        ("生徒:Sota(小3)、Mei(小5)", "生徒:<PERSON>(小3)、<PERSON>(小5)"),
    ],
)
def test_lower_case_chat_names_device_owners_code_name_keys_scans_and_vcards_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("氏名,ふりがな,電話\n阿部 真一,あべ しんいち,090-1234-8871", "氏名,ふりがな,電話\n<PERSON>,<PERSON>,<PHONE>"),
        ("「拝啓 山本様 先日は結構な品を頂戴し、誠に有難く存じ候。 源三郎」", "「拝啓 <PERSON> 先日は結構な品を頂戴し、誠に有難く存じ候。 <PERSON>」"),
        ("銀行の振込名義が「スズキ タロウ」になってる", "銀行の振込名義が「<PERSON>」になってる"),
        ("「まいこ、もう一回だけ会えない?」って来た", "「<PERSON>、もう一回だけ会えない?」って来た"),
        ("出品者のゆかりんさんに催促のメッセージ", "出品者の<PERSON>さんに催促のメッセージ"),
        ("ちゃんりなの本名は梨奈らしい。", "ちゃんりなの本名は<PERSON>らしい。"),
        ("書類の氏名欄は「MÜLLER, Jonas」で合っていますか?", "書類の氏名欄は「<PERSON>」で合っていますか?"),
        ("ユーザー:松田 恭子\n初期パスワード:Tmp!2024-xQ8r\nログインURL:https://intra.example.co.jp/login", "ユーザー:<PERSON>\n初期パスワード:<SECRET>\nログインURL:https://intra.example.co.jp/login"),
    ],
)
def test_kana_columns_quoted_holders_letter_signatures_nicknames_and_real_names_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["Julius Caesar was assassinated on the Ides of March, 44 BC. What date is that exactly?",
     "Why did Alan Turing's work at Bletchley Park matter so much in WWII?",
     "What are the names of Elizabeth Bennet's four sisters in Pride and Prejudice?",
     "手塚治虫の『ブラック・ジャック』の主人公の本名と、ピノコの年齢設定は?",
     "「SSID: Buffalo-G-7A3C」はネットワーク名で、パスワードは別に伝えます",
     "引数 password: string を受け取り、12文字以上か判定する",
     "マイナンバーのチェックデジットを、ダミーの 123456789012 が無効になる理由とあわせて説明して",
     "it's leaking the token in the process list:\n*/5 * * * * /usr/bin/backup",
     "Send it to legal — don't wait", "<p> hello</p>\n<b> world</b>"],
)
def test_public_lives_fiction_network_names_type_annotations_and_dummies_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 46
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[9:14 PM] Bex: did Jonno get home ok\n[9:15 PM] Smithy: yeah", "[9:14 PM] <PERSON>: did <PERSON> get home ok\n[9:15 PM] <PERSON>: yeah"),
        ("<marta gonzalez> pushing to prod\n<sven> wait", "<<PERSON>> pushing to prod\n<<PERSON>> wait"),
        ("sshd[2240]: Accepted publickey for nadia from 98.214.33.170 port 60022 ssh2", "sshd[2240]: Accepted publickey for <PERSON> from <IP> port 60022 ssh2"),
        ('$ git config user.name "takeshi-ogawa"', '$ git config user.name "<PERSON>"'),
        ("variables:\n  DEPLOY_USER: hugo.lambert\n  DB_USER: app_rw", "variables:\n  DEPLOY_USER: <PERSON>\n  DB_USER: app_rw"),
        ("Mrs. J. Hartley, 14 Pembroke Road, Clifton, Bristol BS8 3BA", "Mrs. <PERSON>, <ADDRESS>"),
        ("my friends call me Yukki. I go by Hiki at work.", "my friends call me <PERSON>. I go by <PERSON> at work."),
        ("hey mark, jenny said you still have my charger", "hey <PERSON>, <PERSON> said you still have my charger"),
        ("notes:\n- tom will update the roadmap\n- ping bjorn re: budget", "notes:\n- <PERSON> will update the roadmap\n- ping <PERSON> re: budget"),
        ("sorry for what happened at kyle's party", "sorry for what happened at <PERSON>'s party"),
        ('"Big Al" <al.romano68@aol.com>, "Vinny" <vin.romano@gmail.com>', '"<PERSON>" <<EMAIL>>, "<PERSON>" <<EMAIL>>'),
        ("Mom (Patricia) 617-402-2930\nneighbour Mrs Alvarez 6174029921", "Mom (<PERSON>) <PHONE>\nneighbour Mrs <PERSON> <PHONE>"),
    ],
)
def test_timed_and_irc_chats_login_users_display_names_and_bare_numbers_in_lists_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("| 名前 | 銀行 | 口座番号 |\n| 太田 | 横浜銀行 | 6029183 |", "| 名前 | 銀行 | 口座番号 |\n| <PERSON> | 横浜銀行 | <ACCOUNT> |"),
        ("3万円貸してて、振込先は7719302(楽天銀行)って伝えたい", "3万円貸してて、振込先は<ACCOUNT>(楽天銀行)って伝えたい"),
        ("明日のデモはkaitoがやるので", "明日のデモは<PERSON>がやるので"),
        ("Hi Aoi、来週のtrip", "Hi <PERSON>、来週のtrip"),
        ("出欠:ミサキ×、なっち△、ゴリ○", "出欠:<PERSON>×、<PERSON>△、<PERSON>○"),
        ("家系図:祖母 静、父 浩、私 陽斗", "家系図:祖母 <PERSON>、父 <PERSON>、私 <PERSON>"),
        ("| ホスト | IP |\n| 経理PC(菊池) | 172.16.4.21 |", "| ホスト | IP |\n| 経理PC(<PERSON>) | <IP> |"),
    ],
)
def test_account_tables_transfer_targets_romaji_before_particles_attendance_and_family_lists_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["commit 9fceb02\nAuthor: release-bot\n    fix: typo\ncommit 1e4d7a0\nAuthor: release-bot\n    feat: export",
     "why error 1004?\nSub Unlock()\n    ActiveSheet.Unprotect\nEnd Sub",
     "社内LANでファイルサーバーに繋がらない。pingは通る。何を確認すべき?",
     "environment:\n  POSTGRES_USER: analytics\n  POSTGRES_DB: events",
     "買い物リスト:ビール○、ワイン×"],
)
def test_git_authors_vba_subs_tools_before_particles_service_users_and_checklists_are_kept(scrub, text):
    assert scrub(text) == (text, {})


# added in round 47
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("INSERT INTO customers (name, email, tel) VALUES ('吉田 直樹', 'n.yoshida@gmail.com', '03-5577-1092');",
         "INSERT INTO customers (name, email, tel) VALUES ('<PERSON>', '<EMAIL>', '<PHONE>');"),
        ("INSERT INTO patients (first_name, last_name) VALUES ('Mateo', 'Alvarez'), ('Hannah','Cho')",
         "INSERT INTO patients (first_name, last_name) VALUES ('<PERSON>', '<PERSON>'), ('<PERSON>','<PERSON>')"),
        ("name,email,shift\ndan okafor,dokafor@clinic.org,AM", "name,email,shift\n<PERSON>,<EMAIL>,AM"),
        ('{"name": "坂本 颯", "tel": "099-258-4471"}', '{"name": "<PERSON>", "tel": "<PHONE>"}'),
        ("SHIP TO: KWAME BOATENG\n880 W 181ST ST APT 4F, NEW YORK NY 10033\nTEL 6467039915", "SHIP TO: <PERSON>\n<ADDRESS>\nTEL <PHONE>"),
        ("06/02 ZELLE FROM MARIA LOPEZ +250.00\n06/03 ONLINE TRANSFER TO SAV 7730019284 -500.00", "06/02 ZELLE FROM <PERSON> +250.00\n06/03 ONLINE TRANSFER TO SAV <ACCOUNT> -500.00"),
        ("Please transfer the rent to my account FR76 1027 8060 4100 0204 5880 173, reference: June rent.", "Please transfer the rent to my account <ACCOUNT>, reference: June rent."),
        ("useradd -m -c \"fatima zahra\" u1042 && echo 'u1042:Welcome#2024' | chpasswd", "useradd -m -c \"<PERSON>\" u1042 && echo 'u1042:<SECRET>' | chpasswd"),
        ("who has liv's number?", "who has <PERSON>'s number?"),
        ("マイナンバー一覧\n片山 296974760360", "マイナンバー一覧\n<PERSON> <ID>"),
        ("配布順:\n三浦家 杉並区阿佐谷南1-8-3", "配布順:\n<PERSON>家 <ADDRESS>"),
        ("担当ドライバー 木下です", "担当ドライバー <PERSON>です"),
    ],
)
def test_sql_inserts_name_columns_label_capitals_statements_ibans_and_family_addresses_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["def get_user(user_id: int) -> dict:", "夏休みは実家 静岡県浜松市に帰ります",
     "found messages on my son's phone from a stranger",
     "INSERT INTO products (name, sku) VALUES ('Widget', 'W-100')"],
)
def test_type_annotations_parents_homes_and_product_rows_are_kept(scrub, text):
    counts = scrub(text)[1]
    assert "PERSON" not in counts


# added in round 48
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MRZ:\nP<CANLEBLANC<<MARIE<CLAIRE<<<<<<<<<<<<<<<<<<<\nGA7731902<5CAN8511234F3203158<<<<<<<<<<<<<<04",
         "MRZ:\nP<CAN<PERSON><<<<<<<<<<<<<<<<<<<\n<ID><5CAN8511234F3203158<<<<<<<<<<<<<<04"),
        ("宛名リスト\n・小林様 060-0042 北海道札幌市中央区大通西5-11-3",
         "宛名リスト\n・<PERSON>様 <ADDRESS>"),
        ('{"name":"Ruth Okafor","zip":"94107","email":"ruth.ok@fastmail.com"}',
         '{"name":"<PERSON>","zip":"<ADDRESS>","email":"<EMAIL>"}'),
        ("氏名,クラス,緊急連絡先\n宮田あおい,2組,080-3141-5926",
         "氏名,クラス,緊急連絡先\n<PERSON>,2組,<PHONE>"),
        ("| id | name | savings_acct |\n| 7 | Ola Berg | 4471 0093 2218 |",
         "| id | name | savings_acct |\n| 7 | <PERSON> | <ACCOUNT> |"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGZk3PEBCAC7xq2Mn8Rw5Tz1Vb4Yh6Kd9Lf0Ps3Ge7Ja2Wq\n=Tz8b\n-----END PGP PRIVATE KEY BLOCK-----\nwhy won't it import?",
         "<SECRET>\nwhy won't it import?"),
        ("my recovery phrase: amber lunar dock piano sketch meadow toast violin ember cargo humble ridge",
         "my recovery phrase: <SECRET>"),
        ("ルーターの暗号化キーは「a91f0c77de2b4」です", "ルーターの暗号化キーは「<SECRET>」です"),
        ("Permission denied: /home/yuki/.config/app.toml", "Permission denied: /home/<PERSON>/.config/app.toml"),
        ("PS C:\\Users\\Oliver\\Desktop> git push", "PS C:\\Users\\<PERSON>\\Desktop> git push"),
        ("[maya] r u coming tonight\n[devon] ya", "[<PERSON>] r u coming tonight\n[<PERSON>] ya"),
        ("translate:\nharuto: おつかれ\nemily: thanks!", "translate:\n<PERSON>: おつかれ\n<PERSON>: thanks!"),
        ("daniel reyes | dreyes@outlook.com | portfolio", "<PERSON> | <EMAIL> | portfolio"),
        ("dhcp: lease 10.0.4.23 to 5c:cf:7f:01:aa:3e (printer)", "dhcp: lease <IP> to 5c:cf:7f:01:aa:3e (printer)"),
        ("Ohio driver license T 301 447 925 118 expired", "Ohio driver license <ID> expired"),
    ],
)
def test_mrz_lines_postcodes_contact_columns_key_blocks_home_folders_and_chat_speakers_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["config:\nimage: nginx\nhost: db\nnote: keep it simple",
     "ls /home/ubuntu/app /home/runner/work",
     "[info] server started\n[error] retry failed",
     "Bitte überweisen Sie den Betrag bis Freitag.",
     "upgrade node 10.2.1.4 to 12.1 first",
     "Home | About | Contact us: hello@example.com"],
)
def test_config_keys_service_homes_log_levels_german_and_menu_lines_are_kept(scrub, text):
    assert "PERSON" not in scrub(text)[1]
    assert "IP_ADDRESS" not in scrub(text)[1]


# added in round 49
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22:01 ゆうた:着いた?\n22:03 陽菜:まだ電車", "22:01 <PERSON>:着いた?\n22:03 <PERSON>:まだ電車"),
        ("Passenger 2: OKONKWO ADA, seat 14C", "Passenger 2: <PERSON>, seat 14C"),
        ("fix my cv header pls\nname: Priya Raman", "fix my cv header pls\nname: <PERSON>"),
        ("Host backup\n  HostName 192.168.10.4\n  User megumi", "Host backup\n  HostName <IP>\n  User <PERSON>"),
        ("Note for the coach: Isla (age 9) has asthma.", "Note for the coach: <PERSON> (age 9) has asthma."),
        ("Account no 304918827715530 at Axis Bank", "Account no <ACCOUNT> at Axis Bank"),
        ("my pasport number is 548812093", "my pasport number is <ID>"),
        ("Translate the name Светлана Орлова into Japanese", "Translate the name <PERSON> into Japanese"),
        ("秘密の質問のメモ\n質問:出身小学校は? 答え:みなみ台", "秘密の質問のメモ\n質問:出身小学校は? 答え:<SECRET>"),
        ("社員名 加藤 美咲 所属 営業部", "社員名 <PERSON> 所属 営業部"),
        # the contact word after a surname stays outside the name
        ("担当ドライバー 木下 直通 090-1234-5678", "担当ドライバー <PERSON> 直通 <PHONE>"),
        ("担当 山田 携帯 090-1111-2222", "担当 <PERSON> 携帯 <PHONE>"),
    ],
)
def test_chat_times_numbered_passengers_ssh_users_grades_and_japanese_answers_are_scrubbed(scrub, text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    ["当日の流れ\n10:00 開会:挨拶\n12:00 ランチ:会議室", "Product name: Apple Watch Series 9",
     "郵便番号 100-0001 ってどこ?", "User-Agent: Mozilla/5.0"],
)
def test_timetables_product_names_and_public_postcodes_are_kept(scrub, text):
    assert scrub(text) == (text, {})


def test_a_found_name_is_found_again_in_lower_case_unless_it_is_a_word_or_a_host(scrub):
    text = 'Rewrite this for Aiden\'s mum: "aiden talks in class"'
    assert scrub(text)[0] == 'Rewrite this for <PERSON>\'s mum: "<PERSON> talks in class"'
    # mark is also a common noun; smith-family.net a host
    assert scrub("Mark asked me to mark the boxes")[0] == "<PERSON> asked me to mark the boxes"
    assert scrub("From mail.smith-family.net, sent by Ann Smith")[0] == (
        "From mail.smith-family.net, sent by <PERSON>")
