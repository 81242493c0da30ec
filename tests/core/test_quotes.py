"""Quote and signature stripping: what a customer receives when staff answer by mail.

Samples are small constructed replies in the formats the named clients write."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from maildesk.core.parse import parse_mail
from maildesk.core.quotes import strip_reply

OUTLOOK_RU = """\
Добрый день!

Счёт отправили повторно, проверьте папку «Спам».

С уважением,
Анна Смирнова
Служба поддержки

________________________________
От: Иван Петров <ivan@example.ru>
Отправлено: 23 ноября 2026 г. 10:00
Кому: support@example.com
Тема: Счёт не пришёл

Здравствуйте, счёт не пришёл.
"""

OUTLOOK_EN = """\
Hi Ivan,

The invoice was sent again.

Best regards,
Ann

-----Original Message-----
From: Ivan Petrov <ivan@example.ru>
Sent: Monday, November 23, 2026 10:00 AM
To: support@example.com
Subject: Invoice missing

Hello, the invoice never arrived.
"""

OUTLOOK_EN_RULE = """\
Restarting the spooler fixed it.

Get Outlook for iOS
________________________________
From: Ivan Petrov <ivan@example.ru>
Sent: Monday, November 23, 2026 10:00:00 AM
To: support@example.com <support@example.com>
Subject: Printer on fire

The printer is on fire.
"""

ORIGINAL_MESSAGE_ONLY = """\
Done, see the attached log.

-----Original Message-----
The printer is on fire.
"""

GMAIL_EN = """\
Thanks, the patch is live.

On Mon, Nov 23, 2026 at 10:00 AM Ivan Petrov <ivan@example.ru> wrote:

> The site is down.
>
> Ivan
"""

GMAIL_EN_WRAPPED = """\
Thanks, the patch is live.

On Mon, Nov 23, 2026 at 10:00 AM Ivan Petrov from the Example Company <
ivan@example.ru> wrote:

> The site is down.
"""

GMAIL_RU = """\
Проверили, всё работает.

пн, 23 нояб. 2026 г. в 10:00, Иван Петров <ivan@example.ru>:

> Сайт не открывается.
"""

THUNDERBIRD_RU = (
    "Проверил, работает.\n\n23.11.2026 10:00, Иван Петров пишет:\n"
    "> Сайт не открывается.\n> -- \n> Иван\n"
)

YANDEX = """\
Пароль сброшен, письмо со ссылкой отправлено.

23.11.2026, 10:00, "Иван Петров" <ivan@example.ru>:
> Не могу войти.
"""

MAILRU = """\
Пароль сброшен.

Понедельник, 23 ноября 2026, 10:00 +03:00 от Иван Петров <ivan@example.ru>:
> Не могу войти.
"""

APPLE_MAIL = """\
Yes, Friday works.

> On 23 Nov 2026, at 10:00, Ann Lee <ann@example.com> wrote:
>
> Can we move the call to Friday?
"""

APPLE_MAIL_DESKTOP = """\
Yes, Friday works.

On 23 Nov 2026, at 10:00, Ann Lee <ann@example.com> wrote:

Can we move the call to Friday?
"""

GERMAN = """\
Ist erledigt.

Am 23.11.2026 um 10:00 schrieb Ann Lee <ann@example.com>:
> Bitte das Passwort zurücksetzen.
"""

BOTTOM_POSTED_RU = """\
23.11.2026 10:00, Иван Петров пишет:
> Сайт не открывается с телефона.

Проверили: на телефоне включён старый DNS. Смените его на 1.1.1.1.
Если не поможет, напишите.
"""

BOTTOM_POSTED_EN = """\
On Mon, Nov 23, 2026 at 10:00 AM Ivan Petrov <ivan@example.ru> wrote:
> The site is down.

It is back up now: the certificate had expired.
"""

GNUS = """\
It is in the manual, chapter 3.
Bob
Ann Lee <ann@example.com> writes:

> Where is the option documented?
"""

INTERLEAVED = """\
Hi Ivan,

> 1. Is the invoice paid?
Yes, on Friday.

> 2. When does the licence expire?
On 1 December.

Ann
"""

SIGNATURES = [
    ("dash-dash-space", "Fixed.\n\n-- \nAnn Lee\nSupport\n", "Fixed."),
    ("dash-dash", "Fixed.\n\n--\nAnn Lee\n", "Fixed."),
    ("best regards", "Fixed.\n\nBest regards,\nAnn Lee\nACME support\n", "Fixed."),
    ("с уважением", "Исправили.\n\nС уважением,\nАнна\n+7 495 000-00-00\n", "Исправили."),
    ("sent from iphone", "Fixed.\n\nSent from my iPhone\n", "Fixed."),
    ("отправлено с iphone", "Исправили.\n\nОтправлено с iPhone\n", "Исправили."),
    ("get outlook", "Fixed.\n\nGet Outlook for Android\n", "Fixed."),
]

PLAIN_CASES = [
    ("outlook ru", OUTLOOK_RU, "Добрый день!\n\nСчёт отправили повторно, проверьте папку «Спам»."),
    ("outlook en", OUTLOOK_EN, "Hi Ivan,\n\nThe invoice was sent again."),
    ("outlook en, rule and mobile", OUTLOOK_EN_RULE, "Restarting the spooler fixed it."),
    ("original message line", ORIGINAL_MESSAGE_ONLY, "Done, see the attached log."),
    ("gmail en", GMAIL_EN, "Thanks, the patch is live."),
    ("gmail en, wrapped attribution", GMAIL_EN_WRAPPED, "Thanks, the patch is live."),
    ("gmail ru", GMAIL_RU, "Проверили, всё работает."),
    ("thunderbird ru", THUNDERBIRD_RU, "Проверил, работает."),
    ("yandex", YANDEX, "Пароль сброшен, письмо со ссылкой отправлено."),
    ("mail.ru", MAILRU, "Пароль сброшен."),
    ("apple mail ios", APPLE_MAIL, "Yes, Friday works."),
    ("apple mail desktop, no > marks", APPLE_MAIL_DESKTOP, "Yes, Friday works."),
    ("german", GERMAN, "Ist erledigt."),
    ("gnus, name right above the attribution", GNUS, "It is in the manual, chapter 3.\nBob"),
    (
        "bottom-posted ru keeps the answer",
        BOTTOM_POSTED_RU,
        "Проверили: на телефоне включён старый DNS. Смените его на 1.1.1.1.\n"
        "Если не поможет, напишите.",
    ),
    ("bottom-posted en", BOTTOM_POSTED_EN, "It is back up now: the certificate had expired."),
    (
        "interleaved keeps every answer",
        INTERLEAVED,
        "Hi Ivan,\n\nYes, on Friday.\n\nOn 1 December.\n\nAnn",
    ),
    *SIGNATURES,
]


@pytest.mark.parametrize(("name", "text", "expected"), PLAIN_CASES, ids=[c[0] for c in PLAIN_CASES])
def test_relays_only_the_writers_new_text(name: str, text: str, expected: str) -> None:
    result = strip_reply(text, None)
    assert result.text == expected
    assert not result.whole
    assert result.html is None


KEPT_CASES = [
    (
        "a header-like line in the writer's own text",
        "Please check the form.\nTo: must be your own address, not the list.\n"
        "Then send it again and tell me what you see.\n",
    ),
    (
        "a dash line above a long text is no signature",
        "Steps:\n--\nOpen the settings page and find the section called Mail.\n"
        "Choose the account you use for support and open its details.\n"
        "Switch the outgoing server to port 587 and turn on STARTTLS.\n"
        "Save, wait a minute, then send yourself a test message.\n"
        "If the test bounces, forward the bounce to us unchanged.\n"
        "We will read the headers and tell you what the relay says.\n"
        "Do not change the password while we look into it.\n",
    ),
    (
        "a mention of a reply is not an attribution",
        "On Monday Ivan wrote: the fix is not deployed yet.\nWe deploy on Tuesday.\n",
    ),
    (
        "a greeting with more after it is text",
        "Hi Ivan, thanks for the quick fix\n",
    ),
    (
        "an address and a time without a date is no attribution",
        "Call me at 10:00 or write to ann@example.com:\n\nthe number is in my profile.\n",
    ),
    (
        "regards in the middle of a sentence",
        "Regards from the whole team and thanks for the patience while we moved the\n"
        "servers to the new data centre last week.\n",
    ),
]


@pytest.mark.parametrize(("name", "text"), KEPT_CASES, ids=[c[0] for c in KEPT_CASES])
def test_keeps_text_that_only_looks_like_a_quote_or_signature(name: str, text: str) -> None:
    result = strip_reply(text, None)
    assert result.text == text.strip()
    assert result.removed_lines == 0


WHOLE_CASES = [
    ("only quotes", "> The site is down.\n> Ivan\n"),
    ("only a greeting", "Hi Ivan,\n\nOn Mon, Nov 23, 2026 at 10:00 AM Ivan wrote:\n> x\n"),
    ("только приветствие", "Здравствуйте!\n\n23.11.2026 10:00, Иван Петров пишет:\n> Сайт упал.\n"),
    ("only a signature", "-- \nAnn Lee\n\n> The site is down.\n"),
    ("greeting with a name", "Добрый день, Иван Петрович!\n\n> Сайт упал.\n"),
    ("dear mr", "Dear Mr. Petrov,\n\n> The site is down.\n"),
]


@pytest.mark.parametrize(("name", "text"), WHOLE_CASES, ids=[c[0] for c in WHOLE_CASES])
def test_stripping_to_nothing_relays_the_reply_whole(name: str, text: str) -> None:
    result = strip_reply(text, None)
    assert result.whole
    assert result.text == text.strip()
    assert result.removed_lines == 0


@pytest.mark.timeout(20)
def test_a_long_reply_full_of_on_is_stripped_in_time() -> None:
    # email-reply-parser alone takes about a minute on this (a cubic regex over "On")
    own = "On Monday the job ran. On Tuesday it failed.\n" * 1000
    result = strip_reply(own + "\n> old\n", None)
    assert result.text == own.strip()


def test_counts_removed_lines_that_said_something() -> None:
    result = strip_reply(GMAIL_EN, None)
    # the attribution, "> The site is down.", ">", "> Ivan"; blank lines are layout
    assert result.removed_lines == 4
    assert strip_reply("Just this.\r\n", None) == strip_reply("Just this.", None)


OUTLOOK_HTML = """\
<html><head><style>p {color: red}</style></head><body>
<div dir="ltr"><p>Счёт отправили повторно.</p><p>С уважением,<br>Анна</p></div>
<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" color="#000000">
<b>От:</b> Иван Петров &lt;ivan@example.ru&gt;<br><b>Отправлено:</b> 23 ноября 2026 г. 10:00<br>
<b>Кому:</b> support@example.com<br><b>Тема:</b> Счёт</font><div>&nbsp;</div></div>
<div class="BodyFragment"><div class="PlainText">Здравствуйте, счёт не пришёл.</div></div>
</body></html>"""
OUTLOOK_HTML_TEXT = (
    "Счёт отправили повторно.\n\nС уважением,\nАнна\n\n________________________________\n"
    "От: Иван Петров <ivan@example.ru>\nОтправлено: 23 ноября 2026 г. 10:00\n"
    "Кому: support@example.com\nТема: Счёт\n\nЗдравствуйте, счёт не пришёл.\n"
)

OUTLOOK_DESKTOP_HTML = """\
<html><body><div class="WordSection1"><p class="MsoNormal">Restarted the spooler.</p>
<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">
<p class="MsoNormal"><b>From:</b> Ivan Petrov &lt;ivan@example.ru&gt;<br><b>Sent:</b> Monday,
November 23, 2026 10:00 AM<br><b>To:</b> support@example.com<br><b>Subject:</b> Printer</p></div>
<p class="MsoNormal">The printer is on fire.</p></div></body></html>"""

OUTLOOK_WEB_HTML = (
    '<div class="elementToProof">Try <b>links -dump</b> instead.</div>'
    '<hr style="display: inline-block; width: 98%;"><div style="direction: ltr;">'
    "<b>From:</b>&nbsp;Karen &lt;karen@example.org&gt;<br><b>Sent:</b>&nbsp;Friday, August 9,"
    ' 2024 8:08 PM</div><div id="divRplyFwdMsg" dir="ltr"><b>To:</b>&nbsp;Paul</div>'
    "<div><b>Subject:</b>&nbsp;Re: screenshots</div><div>How do I take a screenshot?</div>"
)

GMAIL_HTML = (
    '<div dir="ltr">Thanks, the patch is live.<br clear="all"><div><br></div>'
    '<span class="gmail_signature_prefix">-- </span><br><div dir="ltr" class="gmail_signature" '
    'data-smartmail="gmail_signature">Ann Lee<br>ACME</div></div><br>'
    '<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">'
    "On Mon, Nov 23, 2026 at 10:00 AM Ivan Petrov &lt;"
    '<a href="mailto:ivan@example.ru">ivan@example.ru</a>&gt; wrote:<br></div>'
    '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid '
    'rgb(204,204,204);padding-left:1ex"><div dir="ltr">The site is down.</div></blockquote></div>'
)

THUNDERBIRD_HTML = """\
<html><head><meta http-equiv="content-type" content="text/html; charset=UTF-8"></head>
<body><p>Проверил, работает.</p>
<pre class="moz-signature" cols="72">--&#32;
Анна</pre>
<div class="moz-cite-prefix">23.11.2026 10:00, Иван Петров пишет:<br></div>
<blockquote type="cite" cite="mid:1@example.ru">Сайт не открывается.</blockquote>
</body></html>"""

YANDEX_HTML = (
    "<div>Пароль сброшен.</div><div>&nbsp;</div>"
    '<div>23.11.2026, 10:00, "Иван Петров" &lt;ivan@example.ru&gt;:</div>'
    "<blockquote><div>Не могу войти.</div></blockquote>"
)

APPLE_HTML = (
    '<html><body style="word-wrap: break-word;"><div>Yes, Friday works.</div><div><br>'
    '<blockquote type="cite"><div>On 23 Nov 2026, at 10:00, Ann Lee &lt;ann@example.com&gt; '
    'wrote:</div><br class="Apple-interchange-newline"><div>Can we move the call?</div>'
    '</blockquote></div><div id="AppleMailSignature">Sent from my iPhone</div></body></html>'
)

HTML_CASES = [
    ("outlook divRplyFwdMsg", OUTLOOK_HTML_TEXT, OUTLOOK_HTML, "Счёт отправили повторно",
     ["не пришёл", "Отправлено", "С уважением", "Анна", "color"]),
    ("outlook desktop", "Restarted the spooler.\n\nFrom: Ivan\nSent: x\nTo: y\nSubject: z\n",
     OUTLOOK_DESKTOP_HTML, "Restarted the spooler.", ["on fire", "From:"]),
    ("outlook web, header split around divRplyFwdMsg", "Try links -dump instead.",
     OUTLOOK_WEB_HTML, "<b>links -dump</b>", ["Karen", "Friday", "Paul", "screenshot?"]),
    ("gmail", GMAIL_EN, GMAIL_HTML, "Thanks, the patch is live.",
     ["site is down", "wrote:", "Ann Lee"]),
    ("thunderbird", THUNDERBIRD_RU, THUNDERBIRD_HTML, "Проверил, работает.",
     ["пишет", "не открывается", "Анна"]),
    ("yandex", YANDEX, YANDEX_HTML, "Пароль сброшен.", ["Иван", "Не могу войти"]),
    ("apple mail", APPLE_MAIL, APPLE_HTML, "Yes, Friday works.",
     ["wrote:", "move the call", "iPhone"]),
]


@pytest.mark.parametrize(
    ("name", "text", "html", "kept", "gone"), HTML_CASES, ids=[c[0] for c in HTML_CASES]
)
def test_cuts_html_quotes_in_the_tree(
    name: str, text: str, html: str, kept: str, gone: list[str]
) -> None:
    result = strip_reply(text, html)
    assert result.html is not None
    assert kept in result.html
    for fragment in gone:
        assert fragment not in result.html


def test_relayed_html_is_sanitised() -> None:
    html = (
        '<p onclick="steal()">Fixed, see <a href="https://example.com/kb/1" target="_blank">'
        'the article</a> and <a href="javascript:alert(1)">this</a>.</p>'
        '<script>alert(1)</script><style>p{}</style><img src="https://tracker.example/p.gif">'
        '<p style="color:red" class="x"><b>Bold</b> <i>it</i></p>'
    )
    result = strip_reply("Fixed, see the article and this.\n\nBold it", html)
    assert result.html is not None
    for bad in ("onclick", "script", "alert", "<style", "<img", "tracker", "style=", "class="):
        assert bad not in result.html
    assert 'href="https://example.com/kb/1"' in result.html
    assert 'rel="noopener noreferrer nofollow"' in result.html
    assert "<b>Bold</b>" in result.html


def test_html_that_keeps_no_text_is_rebuilt_from_the_relayed_text() -> None:
    html = "<blockquote>The site is down.</blockquote>"
    result = strip_reply("It is back <up> now.\n\n> The site is down.", html)
    assert result.html == "<p>It is back &lt;up&gt; now.</p>"


def test_whole_reply_relays_the_sanitised_html_too() -> None:
    result = strip_reply("> quoted only", "<blockquote>quoted only</blockquote><script>x</script>")
    assert result.whole
    assert result.html == "<blockquote>quoted only</blockquote>"


def _eml(tmp_path: Path, body: str, html: str | None = None) -> Path:
    message = EmailMessage()
    message["From"] = "Ann Lee <ann@example.com>"
    message["To"] = "support@example.com"
    message["Subject"] = "Re: [MD-7] Счёт"
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    path = tmp_path / "reply.eml"
    path.write_bytes(message.as_bytes())
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maildesk", "quote", "strip", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_what_would_be_relayed_as_json(tmp_path: Path) -> None:
    done = _cli(str(_eml(tmp_path, OUTLOOK_RU, OUTLOOK_HTML)), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["text"] == "Добрый день!\n\nСчёт отправили повторно, проверьте папку «Спам»."
    assert "Счёт отправили повторно" in data["html"]
    assert "не пришёл" not in data["html"]
    assert data["removed_lines"] == 9  # signature 3, rule 1, reply header 4, history 1
    assert data["whole"] is False


def test_cli_plain_output_says_what_was_removed(tmp_path: Path) -> None:
    done = _cli(str(_eml(tmp_path, "Hi Ivan,\n\n> The site is down.\n")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Hi Ivan,\n\n> The site is down.")
    assert "removed 0 lines" in done.stdout
    assert "relayed whole" in done.stdout


def test_cli_html_only_mail(tmp_path: Path) -> None:
    message = EmailMessage()
    message["From"] = "ann@example.com"
    message["Subject"] = "Re: x"
    message.set_content(GMAIL_HTML, subtype="html")
    path = tmp_path / "html.eml"
    path.write_bytes(message.as_bytes())
    data = json.loads(_cli(str(path), "--json").stdout)
    assert data["text"] == "Thanks, the patch is live."
    assert "site is down" not in data["html"]


def _bad_input(tmp: Path, kind: str) -> Path:
    if kind == "a directory":
        return tmp
    if kind == "not a mail":
        (tmp / "notes.txt").write_bytes(b"just some notes\nno headers here\n")
        return tmp / "notes.txt"
    return tmp / "missing.eml"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing file", "No such file or directory"),
        ("a directory", "Is a directory"),
        ("not a mail", "not a mail"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(tmp_path: Path, kind: str, message: str) -> None:
    done = _cli(str(_bad_input(tmp_path, kind)))
    assert done.returncode == 1
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_real_threaded_replies_lose_every_quote(corpora: Path) -> None:
    box = mailbox.mbox(str(corpora / "threads" / "blinux-list-threads.mbox"), create=False)
    replies = 0
    for message in box:
        if not message["In-Reply-To"]:
            continue
        mail = parse_mail(message.as_bytes())
        result = strip_reply(mail.text, mail.html)
        replies += 1
        assert result.text.strip(), mail.message_id
        quoted = [line for line in result.text.splitlines() if line.startswith(">")]
        assert not quoted, (mail.message_id, quoted[:3])
    assert replies == 322
