"""Cleaning rules: NFKC, whitespace, language, dedup key and each PII type."""

from __future__ import annotations

from collections import Counter

import pytest

from so8t_kedro.pipelines.data_processing.nodes import (
    dedup_key,
    detect_language,
    luhn_valid,
    my_number_valid,
    normalise_text,
    scrub_pii,
)

# ------------------------------------------------------------------ normalise_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ｔｅｓｔ１２３", "test123"),  # full-width ASCII
        ("ｶﾀｶﾅ", "カタカナ"),  # half-width katakana
        ("①②", "12"),  # circled digits
        ("㍻", "平成"),  # square era name
        ("ﬁle", "file"),  # ligature
        ("ＡＢＣ！？", "ABC!?"),
        ("Ｔｅｌ：０９０", "Tel:090"),
        ("e\u0301", "\u00e9"),  # composed
    ],
)
def test_normalise_text_applies_nfkc(raw, expected):
    assert normalise_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  a \t b  ", "a b"),
        ("a\u3000\u3000b", "a b"),  # ideographic spaces
        ("a\u00a0b", "a b"),  # no-break space
        ("a\r\nb\rc", "a\nb\nc"),  # CRLF and CR
        ("a  \n  b", "a\nb"),  # spaces around a newline
        ("a\n\n\n\n\nb", "a\n\nb"),  # at most one blank line
        ("a\u2028b", "a\nb"),  # line separator
        ("a\u200bb\u200d", "ab"),  # zero-width characters
        ("\ufeffhello", "hello"),  # stray BOM
        ("a\x00b\x07c\x1b", "abc"),  # control characters
        ("\n\t  \n", ""),
    ],
)
def test_normalise_text_collapses_whitespace_and_controls(raw, expected):
    assert normalise_text(raw) == expected


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("こんにちは", "ja"),
        ("カタカナだけ", "ja"),
        ("漢字", "ja"),
        ("Please explain 東京", "ja"),
        ("hello world", "en"),
        ("Ünïcödé façade", "en"),
        ("12345 !?", "en"),
    ],
)
def test_detect_language(text, language):
    assert detect_language(text) == language


def test_dedup_key_ignores_case_width_whitespace_and_punctuation():
    base = dedup_key("hello world")
    assert base == "helloworld"
    for variant in [
        "Hello, World!",
        "  HELLO   world.",
        "ＨＥＬＬＯ　ＷＯＲＬＤ！",
        "hello-world?",
        "«hello» world",
    ]:
        assert dedup_key(variant) == base, variant
    assert dedup_key("こんにちは。") == dedup_key("こんにちは") == dedup_key("「こんにちは」")
    assert dedup_key("hello word") != base
    assert dedup_key("ALLOW 1") != dedup_key("ALLOW 2")


# ---------------------------------------------------------------------- PII helpers


def scrub(text: str) -> tuple[str, dict[str, int]]:
    counts: Counter = Counter()
    return scrub_pii(normalise_text(text), counts), {k: v for k, v in counts.items() if v}


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


@pytest.mark.parametrize(
    "text",
    [
        "taro.yamada@example.com",
        "foo+bar@sub.example.co.jp",
        "USER_1@Example.ORG",
        "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ",  # full-width, NFKC first
    ],
)
def test_email_positive(text):
    assert scrub(f"連絡先は {text} です") == ("連絡先は <EMAIL> です", {"EMAIL": 1})


@pytest.mark.parametrize(
    "text", ["@username", "a@b", "foo@localhost", "C@T", "x@y.z", "me at example dot com"]
)
def test_email_negative(text):
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
def test_phone_positive(number):
    assert scrub(f"電話は {number} まで") == ("電話は <PHONE> まで", {"PHONE": 1})


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15",
        "12:30",
        "version 1.2.3",
        "03-1234",  # too short
        "tel 03-1234-56789",  # 11 digits but a 5-digit last group
        "0312345678",  # bare landline digits are not taken (order numbers look alike)
        "ISBN 978-4-04-123456-7",
        "1,234,567円",
        "119番に電話",
        "+5 points",
        "2024.01.15 10:30",
        "注文番号 0001-2345-6789-0",
    ],
)
def test_phone_negative(text):
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
def test_credit_card_positive(number):
    assert scrub(f"card {number} exp 12/29") == ("card <CREDIT_CARD> exp 12/29", {"CREDIT_CARD": 1})


def test_credit_card_followed_by_three_digits():
    assert scrub("4111 1111 1111 1111 123 months") == (
        "<CREDIT_CARD> 123 months",
        {"CREDIT_CARD": 1},
    )


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # 16 digits, fails Luhn
        "1234567812345678",  # 16 digits, fails Luhn
        "0000 0000 0000 0000",  # Luhn-valid zeros
        "1234 5678 9012 3456 7890",  # 20 digits
        "order 41111111111",  # 11 digits
        "4111111111111111123",  # 19 plain digits, only the first 16 pass Luhn
    ],
)
def test_credit_card_negative(text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123456789018", "<MY_NUMBER>"),  # valid check digit
        ("番号 1234 5678 9018 です", "番号 <MY_NUMBER> です"),
        ("9876-5432-1093", "<MY_NUMBER>"),
        # after a keyword even an invalid check digit is taken
        ("マイナンバー 1234 5678 9012 から", "マイナンバー <MY_NUMBER> から"),
        ("私の個人番号は123456789012です", "私の個人番号は<MY_NUMBER>です"),
        ("my number is 1234-5678-9012", "my number is <MY_NUMBER>"),
    ],
)
def test_my_number_positive(text, expected):
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
def test_my_number_negative(text):
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
        "北海道札幌市中央区北一条西2丁目",
        "京都府京都市左京区吉田本町36-1",
        "東京都千代田区千代田１－１",  # full-width digits and dash
    ],
)
def test_address_positive(address):
    assert scrub(f"住所は{address}です") == ("住所は<ADDRESS>です", {"ADDRESS": 1})


@pytest.mark.parametrize(
    "text",
    [
        "東京都に住んでいます",
        "東京都の区役所に3回行った",
        "郵便番号(123-4567の形式)にマッチさせたい",
        "100-0001",
        "東京都内で3-4人",
        "長野県と山梨県の県境は3000m級の山",
    ],
)
def test_address_negative(text):
    assert scrub(text) == (text, {})


def test_scrub_counts_every_replacement_by_type():
    text = (
        "a@example.com と b@example.org に連絡、電話 090-1234-5678 / +1 555-123-4567、"
        "カード 4111 1111 1111 1111、〒100-0001"
    )
    scrubbed, counts = scrub(text)
    assert counts == {"EMAIL": 2, "PHONE": 2, "CREDIT_CARD": 1, "ADDRESS": 1}
    assert scrubbed == (
        "<EMAIL> と <EMAIL> に連絡、電話 <PHONE> / <PHONE>、カード <CREDIT_CARD>、<ADDRESS>"
    )


def test_scrub_does_not_count_placeholders_already_in_the_text():
    assert scrub("literal <PHONE> and <EMAIL>") == ("literal <PHONE> and <EMAIL>", {})
