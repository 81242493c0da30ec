"""Russian customer mail for spam tests: ham in a language the spamassassin corpus lacks.

Two sources: customer requests written for these tests (billing, access,
delivery, bugs; plain text, HTML from webmail clients, an attached scan), and
real Russian prose, the news article quoted in corpora/mime/mail-parser/
mail_test_1, cut into paragraphs that customers paste into a question.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from maildesk.core.parse import parse_mail
from maildesk.intake.sources import iter_messages

SENDERS = (
    ("Анна Петрова", "anna.petrova@yandex.ru"),
    ("Игорь Смирнов", "i.smirnov@mail.ru"),
    ("Ольга Кузнецова", "olga.k@gmail.com"),
    ("Дмитрий Волков", "volkov@stroy-invest.ru"),
    ("Елена Соколова", "buh@ooo-romashka.ru"),
    ("Сергей Попов", "s.popov@bk.ru"),
)

GREETINGS = ("Здравствуйте!", "Добрый день.", "Добрый вечер!", "Здравствуйте,", "Привет!")
SIGN_OFFS = (
    "Спасибо заранее.",
    "С уважением,",
    "Жду ответа, спасибо!",
    "Заранее благодарю.",
    "Хорошего дня!",
)

# (subject, body): what a customer of a subscription service writes.
REQUESTS = (
    (
        "Не приходит счёт за ноябрь",
        "Не приходит счёт за ноябрь, хотя в личном кабинете "
        "написано, что он выставлен. Проверьте, пожалуйста, на какой адрес он ушёл.",
    ),
    (
        "Двойное списание",
        "С карты дважды списали оплату за подписку 14 числа. Прошу вернуть "
        "лишний платёж. Номер договора 4471-2023, выписку из банка прикладываю.",
    ),
    (
        "Не могу войти в личный кабинет",
        "После смены пароля не получается войти: пишет "
        "«неверный логин или пароль». Восстановление пароля письмо не присылает.",
    ),
    (
        "Вопрос по тарифу",
        "Подскажите, пожалуйста, можно ли перейти с тарифа «Базовый» на "
        "«Команда» в середине месяца и как тогда пересчитают оплату?",
    ),
    (
        "Закрывающие документы",
        "Нужны акт и счёт-фактура за третий квартал для бухгалтерии. "
        "Реквизиты организации не менялись. Можно прислать сканы сегодня?",
    ),
    (
        "Ошибка при выгрузке отчёта",
        "При выгрузке отчёта в Excel появляется ошибка 500. "
        "Пробовал в двух браузерах, результат одинаковый. Скриншот ниже.",
    ),
    (
        "Доставка задерживается",
        "Заказ оформлен неделю назад, статус до сих пор «собирается». "
        "Когда ожидать доставку? Трек-номера тоже нет.",
    ),
    (
        "Смена реквизитов",
        "У нашей компании изменился юридический адрес. Что нужно "
        "прислать, чтобы вы обновили данные в договоре и в счетах?",
    ),
    (
        "Не работает уведомление",
        "Перестали приходить уведомления о новых заявках на почту. "
        "В настройках всё включено, папку «Спам» проверил.",
    ),
    (
        "Отмена подписки",
        "Хочу отменить автопродление подписки с января. Подскажите, как это "
        "сделать, в настройках кнопки не нашла.",
    ),
    (
        "Добавить сотрудника",
        "Нам нужно добавить ещё трёх сотрудников в аккаунт. Как это "
        "сделать и сколько это будет стоить в месяц?",
    ),
    (
        "Счёт на оплату",
        "Пришлите, пожалуйста, счёт на оплату годовой подписки на "
        "юридическое лицо. Реквизиты во вложении.",
    ),
    (
        "Не открывается приложение",
        "Мобильное приложение закрывается сразу после запуска. "
        "Телефон Samsung, Android 14, приложение обновлено вчера.",
    ),
    (
        "Возврат товара",
        "Получил заказ, но одна позиция пришла с браком. Как оформить "
        "возврат или замену? Фото прикладываю.",
    ),
    (
        "Повторно: нет ответа",
        "Пишу повторно, ответа на прошлое письмо так и не получил. "
        "Проблема с доступом к отчётам до сих пор не решена.",
    ),
    (
        "Изменить email для входа",
        "Прошу изменить адрес электронной почты для входа в "
        "аккаунт на новый, старый ящик больше не используется.",
    ),
    (
        "Интеграция с 1С",
        "Есть ли у вас интеграция с 1С: Бухгалтерия? Если да, где можно "
        "прочитать инструкцию по настройке обмена?",
    ),
    (
        "Продление лицензии",
        "Срок лицензии истекает в конце месяца. Подготовьте, пожалуйста, "
        "счёт на продление на тех же условиях.",
    ),
)


def customer_mail(
    subject: str, body: str, index: int, *, html: bool = False, attachment: bool = False
) -> bytes:
    """One customer mail as a webmail client sends it (UTF-8, sometimes with HTML)."""
    name, address = SENDERS[index % len(SENDERS)]
    text = (
        f"{GREETINGS[index % len(GREETINGS)]}\n\n{body}\n\n"
        f"{SIGN_OFFS[index % len(SIGN_OFFS)]}\n{name}\n"
    )
    message = EmailMessage()
    message["From"] = f"{name} <{address}>"
    message["To"] = "support@example.com"
    message["Subject"] = subject
    sent = datetime(2025, 11, 3, 9, 0, tzinfo=UTC) + timedelta(hours=5 * index)
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = f"<ru-{index}-{abs(hash(subject)) % 10**8}@{address.split('@')[1]}>"
    message.set_content(text)
    if html:
        paragraphs = "".join(f"<div>{line}</div>" for line in text.splitlines() if line)
        message.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    if attachment:
        message.add_attachment(
            b"%PDF-1.4\n% scan\n", maintype="application", subtype="pdf", filename="скан.pdf"
        )
    return message.as_bytes()


def constructed() -> list[bytes]:
    """The written requests, each in three forms: plain, webmail HTML, and with a scan."""
    mails: list[bytes] = []
    for i, (subject, body) in enumerate(REQUESTS):
        mails.append(customer_mail(subject, body, i))
        mails.append(customer_mail(subject, body, i + 1, html=True))
        mails.append(customer_mail(f"Re: {subject}", body, i + 2, attachment=True))
    return mails


def article_paragraphs(mail_parser_dir: Path) -> list[str]:
    """Paragraphs of real Russian prose from mail_test_1 (the news article it quotes)."""
    ((_, raw),) = iter_messages([mail_parser_dir / "mail_test_1"])
    text = parse_mail(raw).text
    start = text.index("Информационный раздел")
    paragraphs = [p.strip() for p in text[start:].splitlines()]
    return [p for p in paragraphs if len(p) > 120 and not re.search(r"https?://|@", p)]


def quoting_customers(mail_parser_dir: Path) -> Iterator[bytes]:
    """Customers asking about a passage of the real article, pasted into their mail."""
    for i, paragraph in enumerate(article_paragraphs(mail_parser_dir)):
        subject = ("Вопрос по проверкам", "Как это касается нас?", "Уточнение")[i % 3]
        body = (
            f"Прочитали новость и не поняли, что нам теперь делать:\n\n{paragraph}\n\n"
            "Это повлияет на наш договор с вами?"
        )
        yield customer_mail(subject, body, 100 + i, html=i % 2 == 1)
