"""Text out of mail bytes: header values and bodies decoded whatever their charset says
(unknown charsets, windows-1251/koi8-r without labels, 8-bit bytes in headers)."""

from __future__ import annotations

import email.header
import re

# Labels whose real-world content is a superset of what they name.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-1": "windows-1252",
    "us-ascii": "windows-1252",
}


def decode_header_value(value: object) -> str:
    """Decode RFC 2047 words and stray 8-bit bytes; never raises, never loses text silently."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        chunks = email.header.decode_header(value)
    else:
        text = str(value)
        if "=?" not in text:
            return fix_surrogates(text)
        try:
            chunks = email.header.decode_header(text)
        except Exception:
            return fix_surrogates(text)
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(fix_surrogates(chunk))
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset; unknown or wrong ones fall back, never raising."""
    if charset:
        try:
            return data.decode(_CHARSET_ALIASES.get(charset.lower(), charset))
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(guess_cyrillic(data), errors="replace")


def guess_cyrillic(data: bytes) -> str:
    """Pick windows-1251 or koi8-r for unlabelled 8-bit Russian text.

    In windows-1251 lowercase Cyrillic is 0xE0-0xFF; in koi8-r it is 0xC0-0xDF.
    Running Russian text is mostly lowercase, so the busier range wins.
    """
    high = [b for b in data if b >= 0xC0]
    if not high:
        return "latin-1"
    upper_range = sum(1 for b in high if b >= 0xE0)
    return "windows-1251" if upper_range * 2 >= len(high) else "koi8-r"


# What the stdlib's surrogateescape makes of a byte 0x80-0xff it could not decode.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def fix_surrogates(text: str) -> str:
    # The stdlib decodes 8-bit header bytes as surrogateescape; recover them.
    if not _ESCAPED_BYTE.search(text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    return decode_bytes(data, None)
