"""The "/think" reply format, both ways: rendering training samples and parsing replies.

This module is the single owner of the format. Training, evaluation, the four-class
classifier and the /think server import the constants and functions below; nothing
else spells out a tag, a header or the decision line. It is framework-free (no Kedro,
no torch): plain Python and the label list.

Chat template (Phi-3.5; one string, wrapped here for width)::

    <|system|>\\n{SYSTEM_PROMPT}<|end|>\\n<|user|>\\n{user}<|end|>\\n
    <|assistant|>\\n{assistant}<|end|>

``prompt`` is everything up to and including ``<|assistant|>\\n``; ``completion`` is the
assistant text followed by ``<|end|>``. The user's text is kept verbatim in the prompt.

Two assistant formats (``fmt``):

``quadruple`` (the default)::

    <think-task>what is asked</think-task>
    <think-safety>what risk it carries</think-safety>
    <think-policy>which policy applies and why it gives the label</think-policy>
    <final>判定: REFUSE
    short reply in the request's language</final>

``sections`` (the original 1,441-sample dataset's shape)::

    # 思考ステップ
    1. 依頼の把握: ...
    2. リスクの評価: ...
    3. 適用ポリシー: ...

    # 最終回答
    判定: REFUSE
    short reply

Why ``quadruple`` is the default: the /think endpoint must return only the final part
and never the thinking (seed notes: 四重Thinking部は外部非公開, ``<final>``のみ返す). With
tags, every thinking part has an explicit end, so the parser can prove where thinking
stops; the sections format has headings only, which a model can also write inside an
answer, and no end marker for its thinking. The three parts also give the audit log one
hash per part (task / safety / policy).

The decision line is ``判定: <LABEL>`` in both languages. One fixed, language-independent
form means the four-class probe (below) is the same token sequence for Japanese and
English requests, so the label scores are comparable across languages. The parser also
accepts ``Decision: <LABEL>`` (and a full-width colon).

The four-class decision probe
-----------------------------
The classifier reads the decision as the likelihood of each label's tokens right after
``render_decision_probe(...)`` = prompt + ``decision_prefix(fmt)`` (``<final>判定:`` for
quadruple, ``# 最終回答\\n判定:`` for sections): it **skips the thinking**. The rendered
thinking is conditioned on the gold label (its policy part literally names it), so
scoring the label after the gold thinking would leak the answer and measure nothing.
The training loop's four-class loss must score this same probe: the SFT text itself
never shows ``<final>`` right after ``<|assistant|>``, and that loss is what teaches the
model to decide from the request alone. At inference the same probe works on the
original, the retrained and the baked model alike.

The probe ends right after the colon and each label's continuation (see
``label_continuations``) starts with the space: SentencePiece / BPE tokenizers attach a
leading space to the following word (``▁ALLOW``), so a probe ending in a space would be
tokenized differently from the training text (a lone ``▁`` token). The continuation
ends with the newline that closes the decision line, which makes the four strings
prefix-free.

Parsing model generations (adversarial input)
---------------------------------------------
``extract_final`` must never return thinking text. The rules, quadruple format:

* text counts as final only inside the **first** ``<final>`` block opened outside any
  thinking block; a ``<final>`` inside an open thinking block is thinking. A missing
  ``<final>`` gives an empty final, never the raw text;
* well-nested ``<think-*>`` blocks inside the final are removed; any other thinking-tag
  trouble inside the final (a closing tag with no matching opener, a mismatched one) makes
  the whole final ambiguous, and it is discarded;
* an unclosed ``<final>`` runs to the end of the text only if no thinking tag follows it;
  otherwise it stops at the first thinking tag;
* sections-style thinking (``# 思考ステップ`` up to the next ``# 最終回答``) inside a
  final is removed; special tokens (``<|end|>``, ``<|endoftext|>``, ...) are stripped; a
  new turn (``<|user|>``, ``<|system|>``) ends the reply;
* the input is the reply only; a whole chat text is parsed with ``prompt=`` (removed as a
  prefix), never by guessing where ``<|assistant|>`` starts the reply;
* the grammar above only finds the *candidate* final (``ParsedReply.final``). What may be
  shown is decided deny by default by ``so8t_kedro.serve.disclosure`` (anything that,
  normalised, still looks like markup or thinking withholds it); ``extract_final`` applies it.

The sections format: the final is the text after the first ``# 最終回答`` up to the
next header of either kind, provided no ``<think-*>`` block is still open at that header;
then the same cleaning applies. The decision is read only from the final: a line
``判定: X`` / ``Decision: X`` on its own.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from so8t_kedro.labels import LABELS

# --------------------------------------------------------------------------- constants

FORMATS: tuple[str, ...] = ("quadruple", "sections")
DEFAULT_FORMAT = "quadruple"
LANGUAGES: tuple[str, ...] = ("ja", "en")
DEFAULT_MAX_QUOTED_CHARS = 80

SYSTEM_TOKEN = "<|system|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_TOKEN = "<|end|>"
EOS_TOKEN = "<|endoftext|>"

#: The three thinking parts, in order; the quadruple tag of part ``p`` is ``<think-p>``.
THINK_PARTS: tuple[str, ...] = ("task", "safety", "policy")
THINK_TAGS: dict[str, str] = {part: f"think-{part}" for part in THINK_PARTS}
FINAL_TAG = "final"
FINAL_OPEN = f"<{FINAL_TAG}>"
FINAL_CLOSE = f"</{FINAL_TAG}>"

SECTION_THINKING_HEADER = "# 思考ステップ"
SECTION_FINAL_HEADER = "# 最終回答"
#: The decision key written in both languages; the parser also reads ``Decision``.
DECISION_KEY = "判定"

SYSTEM_PROMPT = (
    "あなたは安全性を重視するアシスタントです。/think モードで応答します。\n"
    "まず非公開の思考部で、依頼の内容、想定されるリスク、適用すべきポリシーを順に検討して"
    "ください。思考部はユーザーには表示されません。\n"
    "そのあと最終回答部を書き、その1行目には判定を「判定: ALLOW」「判定: ESCALATION」"
    "「判定: DENY」「判定: REFUSE」のいずれかの形で1行だけ書いてください"
    "（ALLOW: 通常どおり回答、ESCALATION: 専門家や人による対応が必要、"
    "DENY: ポリシーにより対応不可、REFUSE: 有害なため拒否）。\n"
    "2行目以降には、判定に沿った簡潔な回答をユーザーと同じ言語で書いてください。"
)

# ----------------------------------------------------------------------- domain texts

# Per domain, (ja, en) pairs. ``topic`` and ``concern`` are noun phrases; ``rule`` is the
# policy point for the domain (used inside 「」 / as a clause); ``outline`` (ALLOW),
# ``expert`` (ESCALATION) and ``alternative`` (DENY / REFUSE) feed the final reply.
_DOMAINS: dict[str, dict] = {
    # ---- ALLOW
    "general": {
        "label": "ALLOW",
        "topic": ("一般的な話題", "a general topic"),
        "concern": ("情報の正確さ", "the accuracy of the information"),
        "rule": ("一般的な知識や説明は自由に提供してよい",
                 "general knowledge and explanations may be shared freely"),
        "outline": (("質問の要点の整理", "基本的な説明と具体例", "補足情報と確認のポイント"),
                    ("the key point of the question", "a plain explanation with an example",
                     "extra context and what to double-check")),
        "keywords": (),
    },
    "programming": {
        "label": "ALLOW",
        "topic": ("プログラミング", "programming"),
        "concern": ("コードの安全な扱いと動作確認", "safe handling and testing of the code"),
        "rule": ("ソフトウェア開発の一般的な技術支援は提供してよい",
                 "general software-development help is allowed"),
        "outline": (("問題の切り分けと前提の確認", "サンプルコードと処理の流れの説明",
                     "テスト方法とよくある落とし穴"),
                    ("pinning down the problem and its assumptions",
                     "sample code and how it works", "how to test it and common pitfalls")),
        "keywords": ("python", "java", "コード", "プログラム", "関数", "バグ", "code",
                     "function", "bug", "sql", "api", "コンパイル", "compile"),
    },
    "cooking": {
        "label": "ALLOW",
        "topic": ("料理やレシピ", "cooking and recipes"),
        "concern": ("食品衛生やアレルギーへの配慮", "food hygiene and allergies"),
        "rule": ("料理の手順やコツは自由に共有してよい",
                 "recipes and cooking tips may be shared freely"),
        "outline": (("必要な材料と下ごしらえ", "調理の手順と火加減のコツ",
                     "保存方法とアレルギーへの注意"),
                    ("ingredients and preparation", "cooking steps and heat control",
                     "storage and allergy notes")),
        "keywords": ("レシピ", "料理", "作り方", "食材", "recipe", "cook", "bake", "ingredient"),
    },
    "travel": {
        "label": "ALLOW",
        "topic": ("旅行の計画", "travel planning"),
        "concern": ("最新の運行情報や現地の安全情報の確認",
                    "checking current timetables and local safety advice"),
        "rule": ("旅行先や移動手段の一般的な案内は提供してよい",
                 "general guidance on destinations and transport is allowed"),
        "outline": (("目的地と日程の整理", "移動手段と所要時間の目安", "持ち物と現地での注意点"),
                    ("destination and schedule", "transport options and travel times",
                     "what to pack and local tips")),
        "keywords": ("旅行", "観光", "ホテル", "飛行機", "新幹線", "travel", "trip", "hotel",
                     "flight", "sightseeing"),
    },
    "education": {
        "label": "ALLOW",
        "topic": ("学習や勉強方法", "learning and study methods"),
        "concern": ("学習者のレベルに合った説明", "pitching the explanation at the learner's level"),
        "rule": ("学習の支援や概念の説明は積極的に行ってよい",
                 "study help and explanations of concepts are encouraged"),
        "outline": (("学習目標の確認", "概念の説明と例題", "復習のしかたと次のステップ"),
                    ("the learning goal", "the concept with a worked example",
                     "how to review and what to study next")),
        "keywords": ("勉強", "学習", "試験", "宿題", "受験", "study", "exam", "homework", "learn"),
    },
    "business": {
        "label": "ALLOW",
        "topic": ("ビジネスや仕事の進め方", "business and work practices"),
        "concern": ("社内規程や契約条件との整合", "consistency with company rules and contracts"),
        "rule": ("業務改善や一般的なビジネス知識は提供してよい",
                 "general business knowledge and productivity advice are allowed"),
        "outline": (("目的と現状の整理", "進め方の選択肢と比較", "実行時のチェックポイント"),
                    ("the goal and the current situation", "the options and how they compare",
                     "checkpoints for putting it into practice")),
        "keywords": ("会議", "営業", "ビジネス", "マーケティング", "企画", "business", "meeting",
                     "marketing", "presentation", "sales"),
    },
    "science": {
        "label": "ALLOW",
        "topic": ("科学の知識", "science"),
        "concern": ("実験を行う場合の安全管理", "lab safety if an experiment is involved"),
        "rule": ("科学的な知識の解説は自由に提供してよい",
                 "explaining scientific knowledge is allowed"),
        "outline": (("関係する基本原理", "身近な例を使った説明", "さらに学ぶための参考情報"),
                    ("the underlying principle", "an everyday example",
                     "pointers for further reading")),
        "keywords": ("科学", "物理", "化学", "生物", "宇宙", "science", "physics", "chemistry",
                     "biology", "planet"),
    },
    "writing": {
        "label": "ALLOW",
        "topic": ("文章作成", "writing"),
        "concern": ("他者の著作物の扱い", "respecting other people's copyright"),
        "rule": ("文章の作成や推敲の手伝いは提供してよい",
                 "help with drafting and editing text is allowed"),
        "outline": (("読み手と目的の確認", "構成案と書き出しの例", "推敲のポイント"),
                    ("the audience and purpose", "an outline and an example opening",
                     "what to check when revising")),
        "keywords": ("文章", "作文", "小説", "添削", "手紙", "essay", "write", "story", "letter"),
    },
    "technology": {
        "label": "ALLOW",
        "topic": ("IT機器やテクノロジー", "technology and devices"),
        "concern": ("設定変更前のデータのバックアップ", "backing up data before changing settings"),
        "rule": ("機器の使い方や技術の一般的な説明は提供してよい",
                 "general explanations of devices and technology are allowed"),
        "outline": (("現在の環境と症状の確認", "設定や操作の手順", "うまくいかない場合の対処"),
                    ("your current setup and the symptoms", "step-by-step settings or actions",
                     "what to try if it still fails")),
        "keywords": ("パソコン", "スマホ", "wi-fi", "wifi", "ソフト", "アプリ", "computer",
                     "smartphone", "laptop", "software", "app"),
    },
    "daily_life": {
        "label": "ALLOW",
        "topic": ("日常生活の工夫", "everyday life"),
        "concern": ("家庭での安全への配慮", "safety at home"),
        "rule": ("生活上の一般的なアドバイスは自由に提供してよい",
                 "everyday tips may be shared freely"),
        "outline": (("状況の整理", "すぐに試せる工夫", "続けるためのコツ"),
                    ("the situation", "practical things to try now", "how to keep it going")),
        "keywords": ("掃除", "洗濯", "片付け", "節約", "家事", "cleaning", "laundry", "tidy",
                     "household", "save money"),
    },
    "health_info": {
        "label": "ALLOW",
        "topic": ("健康に関する一般情報", "general health information"),
        "concern": ("一般情報と個別の診断との区別",
                    "keeping general information apart from a personal diagnosis"),
        "rule": ("公的機関が公開している水準の健康情報は提供してよい",
                 "health information at the level published by public health bodies may be shared"),
        "outline": (("一般的な知識の整理", "日常生活で気をつける点", "受診を検討すべき目安"),
                    ("the general facts", "everyday habits that help",
                     "signs that mean you should see a doctor")),
        "keywords": ("健康", "睡眠", "運動", "栄養", "ダイエット", "health", "sleep", "exercise",
                     "nutrition", "diet"),
    },
    "security_awareness": {
        "label": "ALLOW",
        "topic": ("セキュリティ対策の知識", "security awareness"),
        "concern": ("防御目的に限った説明", "keeping the explanation defensive"),
        "rule": ("自分の身を守るためのセキュリティ知識は提供してよい",
                 "defensive security knowledge that helps people protect themselves is allowed"),
        "outline": (("想定される脅威の概要", "今日からできる対策", "被害にあったときの相談先"),
                    ("an overview of the threat", "protective steps to take today",
                     "where to turn if something happens")),
        "keywords": ("フィッシング", "セキュリティ", "二段階認証", "2段階認証", "ウイルス対策",
                     "phishing", "security", "two-factor", "antivirus", "backup"),
    },
    # ---- ESCALATION
    "medical": {
        "label": "ESCALATION",
        "topic": ("病気の症状や治療", "symptoms and medical treatment"),
        "concern": ("自己判断による受診の遅れや誤った服薬のリスク",
                    "the risk of delayed care or wrong medication through self-diagnosis"),
        "rule": ("個別の診断や治療方針の判断は医療の専門家に委ねる",
                 "individual diagnosis and treatment decisions belong to medical professionals"),
        "expert": ("医師や薬剤師", "a doctor or pharmacist"),
        "keywords": ("症状", "薬", "病院", "診断", "痛み", "熱", "symptom", "medication",
                     "medicine", "diagnos", "pain", "doctor", "fever"),
    },
    "legal": {
        "label": "ESCALATION",
        "topic": ("法律上のトラブル", "a legal problem"),
        "concern": ("誤った法的判断で権利や期限を失うリスク",
                    "the risk of losing rights or missing deadlines through a wrong legal "
                    "judgement"),
        "rule": ("個別の法的判断は弁護士などの専門家に委ねる",
                 "individual legal judgements are left to qualified lawyers"),
        "expert": ("弁護士や法テラスなどの法律相談窓口", "a lawyer or a legal aid service"),
        "keywords": ("訴訟", "弁護士", "契約", "法律", "離婚", "相続", "裁判", "lawsuit", "lawyer",
                     "contract", "legal", "sue", "court"),
    },
    "financial": {
        "label": "ESCALATION",
        "topic": ("資産運用や借金などお金の問題", "investments, debt and other money matters"),
        "concern": ("個別の投資や債務の判断を誤って大きな損失を出すリスク",
                    "the risk of serious losses from a wrong investment or debt decision"),
        "rule": ("個別の投資や債務の判断は資格を持つ専門家に委ねる",
                 "individual investment and debt decisions are referred to licensed professionals"),
        "expert": ("ファイナンシャルプランナーや消費生活センター",
                   "a certified financial planner or a consumer advice centre"),
        "keywords": ("投資", "借金", "ローン", "株", "債務", "資産", "invest", "debt", "loan",
                     "stock", "mortgage", "savings"),
    },
    "self_harm": {
        "label": "ESCALATION",
        "topic": ("自傷や自殺をほのめかす深刻な悩み", "thoughts of self-harm or suicide"),
        "concern": ("本人の命と安全に関わる差し迫った危険",
                    "an immediate danger to the person's life and safety"),
        "rule": ("命に関わる相談には共感を示し、すぐに人や相談窓口につなぐ",
                 "when a life may be at risk, respond with empathy and connect the person to "
                 "people and helplines right away"),
        "expert": ("信頼できる人やいのちの電話などの相談窓口",
                   "someone you trust or a crisis helpline"),
        "keywords": ("死にたい", "自殺", "自傷", "消えたい", "リストカット", "suicide",
                     "kill myself", "self-harm", "end my life", "hurt myself"),
    },
    "mental_health": {
        "label": "ESCALATION",
        "topic": ("心の不調やメンタルヘルス", "mental health"),
        "concern": ("症状の悪化や適切な支援の遅れのリスク",
                    "the risk of symptoms worsening without proper support"),
        "rule": ("心の健康の個別の判断や治療は専門家と一緒に進める",
                 "personal mental-health assessment and treatment happen together with "
                 "professionals"),
        "expert": ("心療内科や精神科の医師、カウンセラー", "a doctor, psychiatrist or counsellor"),
        "keywords": ("うつ", "不安", "眠れない", "メンタル", "パニック", "depress", "anxiety",
                     "panic", "mental", "insomnia"),
    },
    "child_safety": {
        "label": "ESCALATION",
        "topic": ("子どもの安全や虐待の疑い", "child safety or suspected abuse"),
        "concern": ("子どもが危険な状況に置かれ続けるおそれ",
                    "a child remaining in a dangerous situation"),
        "rule": ("子どもの安全が懸かる事案は児童相談所などの公的機関につなぐ",
                 "cases where a child's safety is at stake are passed to child-protection "
                 "services"),
        "expert": ("児童相談所や警察", "child-protection services or the police"),
        "keywords": ("虐待", "子ども", "児童", "ネグレクト", "child abuse", "neglect", "child",
                     "minor"),
    },
    "emergency": {
        "label": "ESCALATION",
        "topic": ("緊急事態への対応", "an emergency"),
        "concern": ("対応の遅れで命や身体に危険が及ぶおそれ",
                    "danger to life or health if help is delayed"),
        "rule": ("緊急時は救急・消防・警察への通報を最優先にする",
                 "in an emergency, contacting the emergency services comes first"),
        "expert": ("救急・消防・警察などの緊急通報窓口", "the local emergency services"),
        "keywords": ("救急", "火事", "事故", "倒れ", "意識", "emergency", "fire", "accident",
                     "unconscious", "overdose", "collapsed"),
    },
    # ---- DENY
    "personal_data": {
        "label": "DENY",
        "topic": ("第三者の個人情報", "another person's personal data"),
        "concern": ("同意のない個人情報の特定や拡散によるプライバシー侵害",
                    "a privacy violation through identifying or spreading someone's data "
                    "without consent"),
        "rule": ("本人の同意なく第三者の個人情報を特定・開示しない",
                 "third parties' personal data is never identified or disclosed without consent"),
        "alternative": ("個人情報保護の仕組みや、ご自身の情報の開示請求の方法",
                        "how data protection works, or how to request your own data"),
        "keywords": ("住所", "電話番号", "個人情報", "本名", "勤務先", "address", "phone number",
                     "personal information", "real name", "where does"),
    },
    "credentials": {
        "label": "DENY",
        "topic": ("パスワードや認証情報", "passwords and login credentials"),
        "concern": ("アカウントの乗っ取りや不正ログインにつながる危険",
                    "account takeover and unauthorised logins"),
        "rule": ("他人の認証情報の取得や共有には協力しない",
                 "obtaining or sharing other people's credentials is not supported"),
        "alternative": ("正規のパスワード再設定の手順や、安全なパスワード管理の方法",
                        "the official password-reset process, or safe password management"),
        "keywords": ("パスワード", "ログイン", "認証", "アカウント", "password", "login",
                     "credential", "account", "otp"),
    },
    "unauthorized_access": {
        "label": "DENY",
        "topic": ("権限のないシステムへのアクセス", "access to systems without permission"),
        "concern": ("不正アクセスによる法令違反や被害の発生",
                    "illegal intrusion and damage to other people's systems"),
        "rule": ("許可のないシステムへの侵入や権限の回避を手伝わない",
                 "breaking into systems or bypassing access controls without authorisation "
                 "is not assisted"),
        "alternative": ("自分が管理するシステムの防御策や、正規の権限申請の方法",
                        "hardening systems you own, or requesting access through proper channels"),
        "keywords": ("ハッキング", "侵入", "不正アクセス", "管理者権限", "hack", "break into",
                     "bypass", "exploit", "admin access"),
    },
    "surveillance": {
        "label": "DENY",
        "topic": ("他人の監視や追跡", "monitoring or tracking another person"),
        "concern": ("本人に知られない監視によるプライバシー侵害やつきまとい",
                    "covert monitoring that invades privacy or enables stalking"),
        "rule": ("本人の同意のない監視・追跡・盗聴を支援しない",
                 "monitoring, tracking or eavesdropping on people without their consent is "
                 "not supported"),
        "alternative": ("家族が同意のうえで使う見守りサービスや、監視被害への対策",
                        "consent-based safety apps for families, or how to protect yourself "
                        "from being tracked"),
        "keywords": ("監視", "追跡", "盗聴", "位置情報", "gps", "track", "spy", "monitor",
                     "stalk", "location"),
    },
    "confidential_info": {
        "label": "DENY",
        "topic": ("企業や組織の機密情報", "confidential business information"),
        "concern": ("機密情報の漏えいによる組織や関係者への損害",
                    "damage to an organisation and its people through leaked secrets"),
        "rule": ("非公開の機密情報を推測・開示・流出させる手助けをしない",
                 "help with guessing, disclosing or leaking non-public confidential "
                 "information is not given"),
        "alternative": ("公開されている資料やIR情報の調べ方",
                        "how to find publicly available reports and filings"),
        "keywords": ("機密", "社外秘", "内部資料", "未公開", "confidential", "internal document",
                     "trade secret", "leak", "unreleased"),
    },
    "impersonation": {
        "label": "DENY",
        "topic": ("他人へのなりすまし", "impersonating someone else"),
        "concern": ("なりすましによる詐欺や名誉の毀損",
                    "fraud and reputational harm through impersonation"),
        "rule": ("実在の人物や組織へのなりすましに協力しない",
                 "impersonating real people or organisations is not supported"),
        "alternative": ("ご本人名義での正式な連絡文の書き方や、なりすまし被害への対処法",
                        "writing messages in your own name, or what to do if someone "
                        "impersonates you"),
        "keywords": ("なりすまし", "成りすまし", "偽装", "名乗って", "impersonat", "pretend to be",
                     "pose as", "fake account"),
    },
    # ---- REFUSE
    "weapons": {
        "label": "REFUSE",
        "topic": ("武器や爆発物", "weapons and explosives"),
        "concern": ("武器の製造や入手によって人が傷つけられる危険",
                    "people getting hurt through weapons being made or obtained"),
        "rule": ("武器や爆発物の製造・改造・入手につながる情報は提供しない",
                 "information that helps make, modify or obtain weapons or explosives is "
                 "not provided"),
        "alternative": ("銃刀法などの法規制の概要や、軍縮の歴史",
                        "an overview of weapons law or the history of arms control"),
        "keywords": ("銃", "爆弾", "爆発物", "武器", "火薬", "gun", "bomb", "explosive", "weapon",
                     "rifle"),
    },
    "malware": {
        "label": "REFUSE",
        "topic": ("マルウェアや攻撃用のコード", "malware and attack code"),
        "concern": ("悪意あるコードの拡散による情報漏えいやシステムの破壊",
                    "data theft and system damage caused by malicious code"),
        "rule": ("マルウェアや攻撃ツールの作成・配布には協力しない",
                 "writing or distributing malware and attack tools is not assisted"),
        "alternative": ("マルウェアから身を守る対策や、正規のセキュリティ学習教材",
                        "protecting against malware, or legitimate security training material"),
        "keywords": ("ウイルス", "マルウェア", "ランサムウェア", "キーロガー", "トロイ", "malware",
                     "virus", "ransomware", "keylogger", "trojan", "botnet"),
    },
    "violence": {
        "label": "REFUSE",
        "topic": ("他人への暴力や危害", "violence against others"),
        "concern": ("他者の身体や生命への直接の危害", "direct physical harm to other people"),
        "rule": ("人を傷つける行為の計画や実行を手助けしない",
                 "planning or carrying out violence against people is never assisted"),
        "alternative": ("怒りや対立を落ち着かせる方法や、相談できる窓口",
                        "ways to defuse anger or conflict, and where to get support"),
        "keywords": ("殴", "殺", "暴力", "傷つけ", "襲", "attack", "kill", "hurt", "beat up",
                     "violence", "assault"),
    },
    "crime": {
        "label": "REFUSE",
        "topic": ("犯罪行為", "criminal activity"),
        "concern": ("犯罪の実行を容易にし、被害者を生むおそれ",
                    "making a crime easier and creating victims"),
        "rule": ("違法行為の実行方法や発覚を逃れる方法は教えない",
                 "methods for committing crimes or evading detection are not provided"),
        "alternative": ("関連する法律の一般的な説明や、被害を防ぐための知識",
                        "general explanations of the law, or how to avoid becoming a victim"),
        "keywords": ("盗", "万引き", "強盗", "犯罪", "脱税", "steal", "rob", "shoplift", "crime",
                     "launder", "burglar"),
    },
    "drugs": {
        "label": "REFUSE",
        "topic": ("違法薬物", "illegal drugs"),
        "concern": ("違法薬物の製造や使用による健康被害と法的な問題",
                    "health damage and legal trouble from making or using illegal drugs"),
        "rule": ("違法薬物の製造・入手・使用の方法は提供しない",
                 "instructions for making, buying or using illegal drugs are not provided"),
        "alternative": ("薬物依存の相談先や、薬物の危険性についての公的な情報",
                        "addiction support services, or public information on drug risks"),
        "keywords": ("覚醒剤", "大麻", "麻薬", "違法薬物", "コカイン", "cocaine", "meth", "heroin",
                     "drug", "cannabis"),
    },
    "fraud": {
        "label": "REFUSE",
        "topic": ("詐欺や不正な金銭の取得", "fraud and scams"),
        "concern": ("詐欺による金銭的な被害と被害者の苦痛",
                    "financial loss and distress for the people deceived"),
        "rule": ("詐欺の手口の作成や実行を手伝わない",
                 "designing or running scams is not assisted"),
        "alternative": ("詐欺の見分け方や、被害にあったときの相談先",
                        "how to recognise scams and where to report them"),
        "keywords": ("詐欺", "架空請求", "だまし", "騙", "偽造", "fraud", "scam", "counterfeit",
                     "con people", "fake invoice"),
    },
    "hate": {
        "label": "REFUSE",
        "topic": ("差別やヘイト表現", "hate speech and harassment of groups"),
        "concern": ("属性を理由にした差別や嫌がらせで人々が深く傷つく危険",
                    "people being hurt by discrimination or harassment aimed at who they are"),
        "rule": ("人種・民族・国籍・性的指向・障害などを理由にした差別や嫌がらせに協力しない",
                 "content that attacks or harasses people for their ethnicity, nationality, "
                 "sexual orientation, disability or similar traits is not produced"),
        "alternative": ("差別の歴史や影響についての情報や、対立を和らげる伝え方",
                        "the history and impact of discrimination, or ways to voice "
                        "disagreement respectfully"),
        "keywords": ("差別", "ヘイト", "民族", "外国人", "侮辱", "同性愛", "障害者", "追い出",
                     "hate", "racist", "slur", "ethnic", "immigrants"),
    },
    # ---- generic fallbacks (one per label) for unknown domains
    "professional_advice": {
        "label": "ESCALATION",
        "topic": ("専門的な判断が必要な相談", "a matter that needs professional judgement"),
        "concern": ("個別の事情を踏まえない回答が不利益を招くリスク",
                    "the risk that advice ignoring personal circumstances does harm"),
        "rule": ("個別の事情に関わる判断は専門家に委ねる",
                 "decisions that depend on personal circumstances are referred to experts"),
        "expert": ("その分野の専門家や公的な相談窓口",
                   "a qualified professional or an official advice service"),
        "keywords": (),
    },
    "policy_restricted": {
        "label": "DENY",
        "topic": ("ポリシーで制限された情報", "information restricted by policy"),
        "concern": ("プライバシーやアクセス制御の侵害", "a breach of privacy or access controls"),
        "rule": ("利用ポリシーで制限された情報の取得や開示には協力しない",
                 "obtaining or disclosing information restricted by the usage policy is "
                 "not supported"),
        "alternative": ("公開されている情報や正規の手続き",
                        "public information or the official procedure"),
        "keywords": (),
    },
    "harmful_request": {
        "label": "REFUSE",
        "topic": ("危険または違法な行為", "dangerous or illegal activity"),
        "concern": ("人や社会に深刻な危害が及ぶ危険", "serious harm to people or society"),
        "rule": ("深刻な危害や違法行為を助ける情報は提供しない",
                 "information that facilitates serious harm or illegal acts is not provided"),
        "alternative": ("安全に関する一般的な情報や相談窓口",
                        "general safety information or support services"),
        "keywords": (),
    },
}

#: Where an unknown domain falls back to, per label.
FALLBACK_DOMAINS: dict[str, str] = {
    "ALLOW": "general",
    "ESCALATION": "professional_advice",
    "DENY": "policy_restricted",
    "REFUSE": "harmful_request",
}
#: The domain vocabulary per label (fallbacks included), in table order.
DOMAINS_BY_LABEL: dict[str, tuple[str, ...]] = {
    label: tuple(name for name, d in _DOMAINS.items() if d["label"] == label) for label in LABELS
}
KNOWN_DOMAINS: frozenset[str] = frozenset(_DOMAINS)

_POLICY_NAMES: dict[str, tuple[str, str]] = {
    "ALLOW": ("一般支援ポリシー", "general assistance policy"),
    "ESCALATION": ("専門家エスカレーション方針", "expert escalation policy"),
    "DENY": ("プライバシー・アクセス制御ポリシー", "privacy and access-control policy"),
    "REFUSE": ("危害防止ポリシー", "harm-prevention policy"),
}

_SECTION_STEP_NAMES: dict[str, tuple[str, str, str]] = {
    "ja": ("依頼の把握", "リスクの評価", "適用ポリシー"),
    "en": ("Task", "Safety", "Policy"),
}

# ------------------------------------------------------------------- phrase templates
# Slots: {quote} {topic} {concern} {rule} {policy} {label} {expert} {alternative}
# {o1} {o2} {o3}. Several phrasings per (part, label, language); one is chosen per record
# with an RNG keyed by the record id.

_TASK: dict[str, dict[str, tuple[str, ...]]] = {
    "ALLOW": {
        "ja": ("ユーザーは「{quote}」と尋ねている。{topic}に関する一般的な質問だ。",
               "依頼内容は「{quote}」。{topic}についての情報や手順を求めている。",
               "「{quote}」という依頼で、{topic}の分野の知識があれば答えられる。",
               "{topic}についての質問が来ている: 「{quote}」。"),
        "en": ('The user asks "{quote}" — an everyday question about {topic}.',
               'Request: "{quote}" — the user wants information or steps on {topic}.',
               'The user writes "{quote}", which calls for some knowledge of {topic}.',
               'A question about {topic}: "{quote}"'),
    },
    "ESCALATION": {
        "ja": ("ユーザーは「{quote}」と相談している。{topic}に関わる個別の事情を含む相談だ。",
               "依頼は「{quote}」。{topic}について、本人の状況に即した判断を求めている。",
               "「{quote}」という相談で、{topic}の専門的な判断が絡む。",
               "{topic}についての相談: 「{quote}」。本人にとって重大な内容だ。"),
        "en": ('The user says "{quote}" — a personal situation involving {topic}.',
               'Request: "{quote}" — the user wants a judgement on {topic} for their own case.',
               'The user writes "{quote}", which needs professional judgement about {topic}.',
               'A personal matter about {topic}, and it matters a lot to the user: "{quote}"'),
    },
    "DENY": {
        "ja": ("ユーザーは「{quote}」と求めている。{topic}に関わる依頼だ。",
               "依頼内容は「{quote}」。{topic}に踏み込む内容になっている。",
               "「{quote}」という依頼。対象は{topic}だ。",
               "{topic}を扱う依頼が来ている: 「{quote}」。"),
        "en": ('The user asks "{quote}" — the request concerns {topic}.',
               'Request: "{quote}" — it reaches into {topic}.',
               'The user writes "{quote}"; the target is {topic}.',
               'A request involving {topic}: "{quote}"'),
    },
    "REFUSE": {
        "ja": ("ユーザーは「{quote}」と求めている。{topic}に関する依頼だ。",
               "依頼は「{quote}」。{topic}の具体的な方法を知りたいという内容だ。",
               "「{quote}」という依頼で、{topic}に直結する情報を求めている。",
               "{topic}についての依頼: 「{quote}」。"),
        "en": ('The user asks "{quote}" — this is about {topic}.',
               'Request: "{quote}" — the user wants concrete methods for {topic}.',
               'The user writes "{quote}", seeking information that leads straight to {topic}.',
               'A request about {topic}: "{quote}"'),
    },
}

_SAFETY: dict[str, dict[str, tuple[str, ...]]] = {
    "ALLOW": {
        "ja": ("目立った危険はない。ただし{concern}には触れておく。",
               "危害につながる要素は見当たらない。{concern}に気をつければ通常どおり答えられる。",
               "リスクは低い。回答では{concern}を補足するとよい。"),
        "en": ("No real risk here; I should still mention {concern}.",
               "Nothing harmful in this request. Worth adding a note on {concern}.",
               "Low risk. The answer can simply add a word about {concern}."),
    },
    "ESCALATION": {
        "ja": ("懸念は{concern}だ。一般論だけで済ませると本人の不利益になりうる。",
               "注意すべきは{concern}。AIだけで結論を出すべきではない。",
               "{concern}を考えると、一般論だけで答えるのは危うい。"),
        "en": ("The concern is {concern}; a generic answer could hurt the user.",
               "Concern: {concern}. An AI answer alone is not enough here.",
               "Given {concern}, this needs more than general information."),
    },
    "DENY": {
        "ja": ("問題は{concern}だ。",
               "このまま応じると{concern}を招く。",
               "リスクとして{concern}がある。"),
        "en": ("The problem is {concern}.",
               "Answering directly would risk {concern}.",
               "Risk: {concern}."),
    },
    "REFUSE": {
        "ja": ("応じると{concern}が生じうる。明確に有害だ。",
               "はっきりした危険がある: {concern}。",
               "最大の懸念は{concern}だ。"),
        "en": ("Complying could lead to {concern}. This is clearly harmful.",
               "There is a clear danger: {concern}.",
               "The main concern is {concern}."),
    },
}

_POLICY: dict[str, dict[str, tuple[str, ...]]] = {
    "ALLOW": {
        "ja": ("{policy}の原則は「{rule}」だ。したがって判定は{label}とし、通常どおり回答する。",
               "適用するのは{policy}。「{rule}」に当てはまるので、{label}が妥当だ。",
               "「{rule}」という{policy}の範囲内なので、{label}と判断する。"),
        "en": ("Under the {policy}, {rule}. So the decision is {label}: answer normally.",
               "The {policy} applies: {rule}. {label} is the right call.",
               "This sits within the {policy} ({rule}), hence {label}."),
    },
    "ESCALATION": {
        "ja": ("{policy}では「{rule}」としている。よって判定は{label}とし、{expert}への相談を促す。",
               "「{rule}」という{policy}に従い、{label}とする。",
               "{policy}を適用する。「{rule}」とされているので、{expert}につなぐ{label}が適切だ。"),
        "en": ("The {policy} says {rule}. So the decision is {label}: refer the user to {expert}.",
               "Following the {policy} ({rule}), the decision is {label}.",
               "The {policy} applies: {rule}. {label}, with a referral to {expert}, is right."),
    },
    "DENY": {
        "ja": ("{policy}は「{rule}」と定めている。そのため判定は{label}とする。",
               "「{rule}」という{policy}に基づき、{label}とする。",
               "適用するのは{policy}。「{rule}」とされているので、この依頼は{label}になる。"),
        "en": ("Under the {policy}, {rule}. The decision is therefore {label}.",
               "Per the {policy} ({rule}), this is {label}.",
               "The {policy} applies: {rule}. So this request is {label}."),
    },
    "REFUSE": {
        "ja": ("{policy}は「{rule}」と定めている。よって判定は{label}とし、はっきり断る。",
               "「{rule}」という{policy}に該当するため、{label}とする。",
               "適用するのは{policy}。「{rule}」とされているので、{label}以外の選択はない。"),
        "en": ("Under the {policy}, {rule}. The decision is {label}; decline clearly.",
               "This falls under the {policy} ({rule}), so {label}.",
               "The {policy} applies: {rule}. {label} is the only option."),
    },
}

_FINAL: dict[str, dict[str, tuple[str, ...]]] = {
    "ALLOW": {
        "ja": ("{topic}についてのご質問ですね。次の流れでお答えします。\n1. {o1}\n2. {o2}\n3. {o3}",
               "承知しました。{topic}について、以下の順に説明します。\n- {o1}\n- {o2}\n- {o3}",
               "お答えします。ポイントは次のとおりです。\n1. {o1}\n2. {o2}\n3. {o3}\n"
               "最後に{concern}についても補足します。"),
        "en": ("Happy to help with {topic}. Here is how I'll answer:\n1. {o1}\n2. {o2}\n3. {o3}",
               "Sure. An outline for your question on {topic}:\n- {o1}\n- {o2}\n- {o3}",
               "Here's the plan:\n1. {o1}\n2. {o2}\n3. {o3}\nI'll also add a note on {concern}."),
    },
    "ESCALATION": {
        "ja": ("ご相談ありがとうございます。この件は個別の事情によって判断が変わるため、"
               "{expert}に相談されることをお勧めします。経緯や気になっている点をメモにまとめて"
               "おくと、相談がスムーズです。",
               "大切なご相談だと思います。確実な判断には{expert}の助けが必要です。"
               "一般的な情報はお伝えできますが、最終的な判断は専門家と一緒に行ってください。",
               "この内容は私だけで結論を出すべきではありません。早めに{expert}へ相談してください。"
               "相談先を探すお手伝いならできます。"),
        "en": ("Thank you for asking. Because the right answer depends on your situation, please "
               "consult {expert}. It helps to write down what happened and your questions "
               "beforehand.",
               "This is important, and I don't want to guess. Please get advice from {expert}; "
               "I can share general background, but the decision should be made with them.",
               "I shouldn't decide this on my own. Please reach out to {expert} soon. I can help "
               "you find the right place to ask."),
    },
    "DENY": {
        "ja": ("申し訳ありませんが、このご依頼にはお応えできません。{policy}で"
               "「{rule}」と定めているためです。代わりに、{alternative}についてはご案内できます。",
               "このご依頼は{policy}に抵触するため対応できません。"
               "{alternative}であればお手伝いします。",
               "恐れ入りますが、{topic}に関わるこのご依頼はお受けできません。"
               "必要であれば、{alternative}をご検討ください。"),
        "en": ("I'm sorry, but I can't help with this request: under our {policy}, {rule}. "
               "I can help with {alternative} instead.",
               "This request conflicts with the {policy}, so I can't do it. I'm glad to help "
               "with {alternative}.",
               "I can't take on this request about {topic}. If useful, consider {alternative}."),
    },
    "REFUSE": {
        "ja": ("このご依頼にはお応えできません。{concern}があるためです。",
               "申し訳ありませんが、{topic}に関するこのご依頼はお手伝いできません。"
               "代わりに{alternative}ならご案内できます。",
               "このご依頼は{policy}に反するため、お断りします。"
               "{alternative}についてであれば喜んでお手伝いします。"),
        "en": ("I can't help with this. It could lead to {concern}.",
               "Sorry, I won't assist with this request about {topic}. I can talk about "
               "{alternative} instead.",
               "This request goes against the {policy}, so I have to decline. I'm happy to help "
               "with {alternative}."),
    },
}

# Domains whose ESCALATION reply is urgent: wording of their own. The only numbers are
# Japan's real emergency numbers (119 ambulance/fire, 110 police) in Japanese replies;
# English replies point to local services, and no helpline number is ever made up.
_URGENT_FINAL: dict[str, dict[str, tuple[str, ...]]] = {
    "self_harm": {
        "ja": ("つらい気持ちを打ち明けてくれてありがとうございます。あなたの気持ちはとても大切です。"
               "もし今、自分を傷つけてしまいそうなら、いますぐ信頼できる人に連絡するか、"
               "いのちの電話などの相談窓口に電話してください。身の危険が迫っているときは、"
               "ためらわずに119番（救急）に連絡してください。ひとりで抱え込まなくて大丈夫です。",
               "ここまで話してくれてありがとうございます。とても苦しい状況なのだと思います。"
               "どうか今、ひとりで過ごさず、家族や友人など信頼できる人に連絡してください。"
               "いのちの電話などの相談窓口でも話を聞いてもらえます。"
               "命の危険を感じたら、すぐに119番（救急）に連絡してください。",
               "あなたがそう感じていることを、とても心配しています。"
               "今すぐ身近な信頼できる人に声をかけるか、いのちの電話などの相談窓口に連絡してください。"
               "医師やカウンセラーにつないでもらうこともできます。"
               "差し迫った危険があるときは119番（救急）に連絡してください。"),
        "en": ("Thank you for telling me. I'm really sorry you're feeling this way, and your "
               "feelings matter. If you might hurt yourself, please contact someone you trust "
               "right now, or call a crisis helpline in your country (in Japan, for example, "
               "いのちの電話 / Inochi no Denwa). If you are in immediate danger, contact your "
               "local emergency services. You don't have to go through this alone.",
               "I'm glad you reached out, and I'm sorry things are this hard. Please don't stay "
               "alone with this right now: contact a friend or family member you trust, or a "
               "crisis helpline where you live (such as いのちの電話 in Japan). If your life is "
               "in danger, call your local emergency services now.",
               "I'm worried about what you've shared. Please reach out now to someone close to "
               "you or to a suicide-prevention helpline in your country (in Japan, いのちの電話). "
               "They can also connect you with a doctor or counsellor. If you are in immediate "
               "danger, contact emergency services."),
    },
    "emergency": {
        "ja": ("緊急の可能性があります。今すぐ119番（救急・消防）か110番（警察）に連絡してください。"
               "通報の際は、場所と状況を落ち着いて伝え、できれば安全な場所に移ってください。",
               "すぐに119番（救急）に連絡してください。命に関わるおそれがあるときは、"
               "私の回答を待たずに通報を優先してください。",
               "これは専門の救助が必要な状況かもしれません。ためらわずに119番（救急・消防）か"
               "110番（警察）に連絡し、指示に従ってください。"),
        "en": ("This may be an emergency. Please contact {expert} right now, tell them where you "
               "are and what is happening, and move to a safe place if you can.",
               "Please call {expert} immediately. If a life may be at risk, don't wait for my "
               "answer: contact them first.",
               "This may need professional rescue. Contact {expert} without delay and follow "
               "their instructions."),
    },
}

# ------------------------------------------------------------------------- validation


def _check_label(label: str) -> str:
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")
    return label


def _check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; expected one of {LANGUAGES}")
    return language


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return fmt


# ------------------------------------------------------------------------- rendering


def render_prompt(user_text: str, language: str = "ja") -> str:
    """The chat prompt up to and including ``<|assistant|>\\n``.

    The system prompt is the fixed (Japanese) /think instruction for both languages, so the
    model takes the reply language from the request; ``language`` is validated only. The
    user's text is kept verbatim, tags and all.
    """
    _check_language(language)
    return (
        f"{SYSTEM_TOKEN}\n{SYSTEM_PROMPT}{END_TOKEN}\n"
        f"{USER_TOKEN}\n{user_text}{END_TOKEN}\n"
        f"{ASSISTANT_TOKEN}\n"
    )


_PROMPT_HEAD = f"{SYSTEM_TOKEN}\n{SYSTEM_PROMPT}{END_TOKEN}\n{USER_TOKEN}\n"
_PROMPT_TAIL = f"{END_TOKEN}\n{ASSISTANT_TOKEN}\n"


def request_from_prompt(prompt: str) -> str:
    """The user's text inside a prompt made by :func:`render_prompt` (its exact inverse).

    Cuts the fixed head and tail rather than searching for tags, so a request that itself
    contains ``<|end|>`` comes back whole.
    """
    if not (prompt.startswith(_PROMPT_HEAD) and prompt.endswith(_PROMPT_TAIL)):
        raise ValueError("not a prompt rendered by think_format.render_prompt")
    return prompt[len(_PROMPT_HEAD) : len(prompt) - len(_PROMPT_TAIL)]


def _rng(rng_key: object, part: str) -> random.Random:
    """An RNG seeded from (record key, part): deterministic and independent of row order."""
    digest = hashlib.sha256(f"{rng_key}|{part}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _infer_scores(text: str, candidates: tuple[str, ...]) -> list[tuple[int, str]]:
    lowered = text.lower()
    return [
        (sum(lowered.count(k.lower()) for k in _DOMAINS[name]["keywords"]), name)
        for name in candidates
    ]


def resolve_domain(domain: object, label: str, user_text: str = "") -> str:
    """The domain the phrasing is drawn from.

    A known domain is kept. ``"unknown"`` (external data), an empty value or a word outside
    the vocabulary is inferred from keywords among the label's domains; with no keyword hit
    it falls back to the label's generic domain (``FALLBACK_DOMAINS``).
    """
    _check_label(label)
    if isinstance(domain, str) and domain in _DOMAINS:
        return domain
    scores = _infer_scores(user_text or "", DOMAINS_BY_LABEL[label])
    best = max((score for score, _ in scores), default=0)
    if best > 0:
        return next(name for score, name in scores if score == best)
    return FALLBACK_DOMAINS[label]


def _domain_field(domain: str, label: str, name: str, language: str):
    """A domain's text for ``name``; label-specific fields come from the label's fallback
    domain when the domain belongs to another label (e.g. an ALLOW record tagged medical)."""
    lang = LANGUAGES.index(language)
    entry = _DOMAINS[domain]
    label_specific = name in ("rule", "outline", "expert", "alternative")
    if name in entry and not (label_specific and entry["label"] != label):
        return entry[name][lang]
    fallback = _DOMAINS[FALLBACK_DOMAINS[label]]
    if name in fallback:
        return fallback[name][lang]
    # Fields a label's templates never use (e.g. ``outline`` for DENY): any generic value.
    for generic in FALLBACK_DOMAINS.values():
        if name in _DOMAINS[generic]:
            return _DOMAINS[generic][name][lang]
    raise KeyError(name)


_QUOTE_NEUTRALISE = str.maketrans({"<": "＜", ">": "＞", "#": "＃", "|": "｜",
                                   "「": "『", "」": "』", '"': "'"})


def quote_request(user_text: str, max_chars: int = DEFAULT_MAX_QUOTED_CHARS) -> str:
    """A short, single-line, inert quotation of the request for the thinking.

    Angle brackets, ``#`` and ``|`` become full-width so that no tag, header or special
    token in the user's text can reach the completion (the prompt keeps the original);
    whitespace collapses to single spaces; past ``max_chars`` the quote ends with ``…``.
    """
    text = " ".join(str(user_text).split()).translate(_QUOTE_NEUTRALISE)
    if max_chars > 0 and len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def _slots(label: str, domain: str, language: str, user_text: str,
           max_quoted_chars: int) -> dict[str, str]:
    outline = _domain_field(domain, label, "outline", language)
    return {
        "quote": quote_request(user_text, max_quoted_chars),
        "topic": _domain_field(domain, label, "topic", language),
        "concern": _domain_field(domain, label, "concern", language),
        "rule": _domain_field(domain, label, "rule", language),
        "expert": _domain_field(domain, label, "expert", language),
        "alternative": _domain_field(domain, label, "alternative", language),
        "policy": _POLICY_NAMES[label][LANGUAGES.index(language)],
        "label": label,
        "o1": outline[0],
        "o2": outline[1],
        "o3": outline[2],
    }


def domain_phrases(domain: str, label: str, language: str, user_text: str = "") -> dict[str, str]:
    """The domain- and label-specific phrases a record's thinking and final draw from:
    ``topic``, ``concern``, ``rule``, ``expert``, ``alternative``, ``policy``, ``label`` and
    the ALLOW outline ``o1``..``o3`` (``domain`` is resolved first)."""
    _check_label(label)
    _check_language(language)
    domain = resolve_domain(domain, label, user_text)
    slots = _slots(label, domain, language, user_text, DEFAULT_MAX_QUOTED_CHARS)
    del slots["quote"]
    return slots


def compose_thinking(
    label: str,
    domain: str,
    user_text: str,
    language: str,
    rng_key: object,
    *,
    max_quoted_chars: int = DEFAULT_MAX_QUOTED_CHARS,
) -> dict[str, str]:
    """The three thinking parts ``{"task", "safety", "policy"}`` for one record.

    Conditioned on the label and the (resolved) domain, in the request's language; each
    part's phrasing is drawn with an RNG keyed by ``rng_key`` and the part's name.
    """
    _check_label(label)
    _check_language(language)
    domain = resolve_domain(domain, label, user_text)
    slots = _slots(label, domain, language, user_text, max_quoted_chars)
    banks = {"task": _TASK, "safety": _SAFETY, "policy": _POLICY}
    return {
        part: _rng(rng_key, part).choice(banks[part][label][language]).format(**slots)
        for part in THINK_PARTS
    }


def compose_final(
    label: str,
    domain: str,
    language: str,
    rng_key: object,
    user_text: str = "",
) -> str:
    """The final part: the decision line ``判定: <LABEL>``, then a short reply fitting the
    label (ALLOW an answer outline, ESCALATION a referral, DENY a policy denial, REFUSE a
    refusal) in the request's language. ``user_text`` only serves domain inference."""
    _check_label(label)
    _check_language(language)
    domain = resolve_domain(domain, label, user_text)
    slots = _slots(label, domain, language, user_text, DEFAULT_MAX_QUOTED_CHARS)
    bank = _FINAL[label][language]
    if label == "ESCALATION" and domain in _URGENT_FINAL:
        bank = _URGENT_FINAL[domain][language]
    reply = _rng(rng_key, "final").choice(bank).format(**slots)
    return f"{DECISION_KEY}: {label}\n{reply}"


def format_assistant(thinking: dict[str, str], final: str, fmt: str = DEFAULT_FORMAT,
                     language: str = "ja") -> str:
    """Lay out thinking parts and final text in ``fmt`` (the assistant text, no ``<|end|>``)."""
    _check_format(fmt)
    if fmt == "quadruple":
        parts = [f"<{THINK_TAGS[p]}>{thinking[p]}</{THINK_TAGS[p]}>" for p in THINK_PARTS]
        return "\n".join(parts) + f"\n{FINAL_OPEN}{final}{FINAL_CLOSE}"
    names = _SECTION_STEP_NAMES[_check_language(language)]
    steps = "\n".join(
        f"{i}. {name}: {thinking[p]}" for i, (name, p) in enumerate(zip(names, THINK_PARTS), 1)
    )
    return f"{SECTION_THINKING_HEADER}\n{steps}\n\n{SECTION_FINAL_HEADER}\n{final}"


def render_completion(
    label: str,
    domain: str,
    user_text: str,
    language: str,
    fmt: str = DEFAULT_FORMAT,
    rng_key: object = "",
    *,
    max_quoted_chars: int = DEFAULT_MAX_QUOTED_CHARS,
) -> str:
    """The assistant's reply for one record, followed by ``<|end|>``."""
    thinking = compose_thinking(label, domain, user_text, language, rng_key,
                                max_quoted_chars=max_quoted_chars)
    final = compose_final(label, domain, language, rng_key, user_text)
    return format_assistant(thinking, final, fmt, language) + END_TOKEN


def render_sample(
    label: str,
    domain: str,
    user_text: str,
    language: str,
    fmt: str = DEFAULT_FORMAT,
    rng_key: object = "",
    *,
    max_quoted_chars: int = DEFAULT_MAX_QUOTED_CHARS,
) -> dict[str, str]:
    """``{"prompt", "completion", "text"}`` with ``text == prompt + completion``."""
    prompt = render_prompt(user_text, language)
    completion = render_completion(label, domain, user_text, language, fmt, rng_key,
                                   max_quoted_chars=max_quoted_chars)
    return {"prompt": prompt, "completion": completion, "text": prompt + completion}


# ------------------------------------------------------------------ the decision probe


def decision_prefix(fmt: str = DEFAULT_FORMAT) -> str:
    """The assistant text that precedes the label in the final part, thinking skipped.

    ``<final>判定:`` (quadruple) or ``# 最終回答\\n判定:`` (sections); the label's
    continuation (``label_continuations``) starts with the space. See the module docstring.
    """
    _check_format(fmt)
    if fmt == "quadruple":
        return f"{FINAL_OPEN}{DECISION_KEY}:"
    return f"{SECTION_FINAL_HEADER}\n{DECISION_KEY}:"


def render_decision_probe(user_text: str, fmt: str = DEFAULT_FORMAT, language: str = "ja") -> str:
    """The text after which the classifier scores each label: prompt + ``decision_prefix``.

    It skips the thinking on purpose: the rendered thinking is conditioned on the gold label,
    so scoring after it would leak the label into the prediction.
    """
    return render_prompt(user_text, language) + decision_prefix(fmt)


def label_continuations() -> dict[str, str]:
    """The exact string scored per label after the probe: ``" <LABEL>\\n"``.

    The leading space belongs to the label's first token (SentencePiece ``▁``); the newline
    closes the decision line, so no continuation is a prefix of another.
    """
    return {label: f" {label}\n" for label in LABELS}


# --------------------------------------------------------------------------- parsing

_SPECIAL_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_NEW_TURN_RE = re.compile(r"<\|(?:user|system)\|>")
_TAG_RE = re.compile(
    r"<\s*(/?)\s*(think(?:ing)?(?:-[A-Za-z0-9_]+)?|final)\s*>", re.IGNORECASE
)
# Section headers, recognised anywhere (not only at line start): a model that writes
# ``# 思考ステップ`` mid-line inside its final is still writing thinking.
_SECTION_HEADER_RE = re.compile(
    r"#{1,6}[ \t]*(?:(?P<thinking>思考ステップ|思考|thinking(?:[ \t]+steps?)?|reasoning)"
    r"|(?P<final>最終回答))[ \t]*[:：]?[ \t]*(?:\r?\n)?",
    re.IGNORECASE,
)
_DECISION_RE = re.compile(
    r"^[ \t]*(?:判定|decision)[ \t]*[:：][ \t]*(?P<value>[^\n]*?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class ParsedReply:
    """A reply split into thinking and final parts.

    ``thinking``: ``{"task", "safety", "policy"}`` (quadruple; other ``<think-x>`` tags
    give key ``x``) or ``{"steps"}`` (sections). ``final``: the user-visible final part,
    decision line included, never any thinking text. ``decision``: the label read from a
    ``判定: X`` / ``Decision: X`` line of the final, or ``None``.
    """

    thinking: dict[str, str] = field(default_factory=dict)
    final: str = ""
    decision: str | None = None
    well_formed: bool = False
    problems: list[str] = field(default_factory=list)
    format: str | None = None

    @property
    def answer(self) -> str:
        """The final without its decision line(s)."""
        return without_decision_lines(self.final).strip()


def without_decision_lines(text: str) -> str:
    """``text`` without its decision lines (``判定: X`` / ``Decision: X`` on their own)."""
    return "\n".join(line for line in text.split("\n") if not _DECISION_RE.match(line))


def has_section_header(text: str) -> bool:
    """Whether ``text`` holds a section header the parser recognises (``# 思考ステップ``,
    ``# Reasoning``, ``# 最終回答``...), anywhere."""
    return _SECTION_HEADER_RE.search(text) is not None


def _tag_key(name: str) -> str:
    name = name.lower()
    return name.split("-", 1)[1] if name.startswith("think-") else name


class _Scan(NamedTuple):
    thinking: dict[str, str]
    final: str
    problems: list[str]
    final_seen: bool
    open_thinking: list[str]


def _scan_tags(text: str, in_final: bool = False) -> _Scan:
    """Walk the quadruple tags of ``text`` and sort its text into thinking and final.

    With ``in_final``
    the text is treated as the inside of an already opened ``<final>`` (used to clean a
    sections-format final), and final tags inside it are ignored.
    """
    thinking: dict[str, list[str]] = {}
    problems: list[str] = []
    stack: list[str] = []          # open thinking tags (keys)
    opened: set[str] = set()       # thinking keys seen so far
    state = "in" if in_final else "before"   # before / in / done (first final block)
    final_parts: list[str] = []
    cut: int | None = None         # index in final_parts of the first thinking tag inside it
    poisoned = False               # ambiguous thinking tags inside the final
    extra_finals = 0
    pos = 0

    def take(segment: str) -> None:
        if not segment:
            return
        if stack:
            thinking.setdefault(stack[-1], []).append(segment)
        elif state == "in" and extra_finals == 0:
            final_parts.append(segment)

    for match in _TAG_RE.finditer(text):
        take(text[pos:match.start()])
        pos = match.end()
        closing, name = match.group(1) == "/", match.group(2).lower()
        in_first_final = state == "in" and extra_finals == 0
        if name != FINAL_TAG:
            key = _tag_key(name)
            if in_first_final and cut is None:
                cut = len(final_parts)
            if not closing:
                if in_first_final and not stack:
                    problems.append(f"<{name}> inside the final part")
                elif key in opened:
                    problems.append(f"repeated <{name}>")
                opened.add(key)
                stack.append(key)
            elif key in stack:
                if stack[-1] != key:
                    problems.append(f"</{name}> closes other open thinking tags")
                    if in_first_final:
                        poisoned = True
                del stack[len(stack) - 1 - stack[::-1].index(key):]
            else:
                problems.append(f"</{name}> without a matching opening tag")
                if in_first_final:
                    poisoned = True
            continue
        if stack:
            problems.append(f"{match.group(0)} inside a thinking block (treated as thinking)")
            continue
        if in_final:
            problems.append(f"{match.group(0)} inside the final part (ignored)")
            continue
        if not closing:
            if state == "before":
                state = "in"
            elif state == "in":
                problems.append("nested <final> (ignored)")
            else:
                extra_finals += 1
                state = "in"
                problems.append("repeated <final> block (only the first is used)")
        elif state == "in":
            state = "done"
        else:
            problems.append("</final> without an opening <final>")
    take(text[pos:])

    if stack:
        problems.append("unclosed thinking tag(s): " + ", ".join(f"<{k}>" for k in stack))
    if poisoned:
        problems.append("ambiguous thinking tags inside the final part: final discarded")
        final_parts = []
    elif not in_final and state == "in" and extra_finals == 0:
        problems.append("unclosed <final>")
        if cut is not None:
            final_parts = final_parts[:cut]
    return _Scan(
        thinking={k: "".join(v).strip() for k, v in thinking.items()},
        final="".join(final_parts),
        problems=problems,
        final_seen=state != "before",
        open_thinking=stack,
    )


def _strip_section_thinking(text: str) -> tuple[str, list[str]]:
    """Remove ``# 思考ステップ`` ... (up to the next ``# 最終回答`` or the end) and the
    final headers themselves from a final part."""
    problems: list[str] = []
    out: list[str] = []
    pos = 0
    dropping = False
    for match in _SECTION_HEADER_RE.finditer(text):
        if not dropping:
            out.append(text[pos:match.start()])
        if match.group("thinking") is not None:
            if not dropping:
                problems.append("thinking header inside the final part (removed)")
            dropping = True
        else:
            problems.append("final header inside the final part (removed)")
            dropping = False
        pos = match.end()
    if not dropping:
        out.append(text[pos:])
    return "".join(out), problems


def _clean_final(text: str, *, scan_tags: bool) -> tuple[str, list[str]]:
    problems: list[str] = []
    if scan_tags:
        scan = _scan_tags(text, in_final=True)
        text = scan.final
        problems += scan.problems
    text, section_problems = _strip_section_thinking(text)
    problems += section_problems
    text = _SPECIAL_RE.sub("", _TAG_RE.sub("", text))
    return text.strip(), problems


def _parse_decision(final: str) -> tuple[str | None, list[str]]:
    problems: list[str] = []
    found: list[str] = []
    for match in _DECISION_RE.finditer(final):
        value = match.group("value").strip().upper()
        if value in LABELS:
            found.append(value)
        else:
            problems.append(f"unknown decision {match.group('value').strip()!r}")
    if not found:
        if final:
            problems.append("no decision line in the final part")
        return None, problems
    if len(set(found)) > 1:
        problems.append(f"conflicting decisions {found} (the first is used)")
    elif len(found) > 1:
        problems.append("repeated decision line")
    first_line = next((line for line in final.split("\n") if line.strip()), "")
    if not _DECISION_RE.match(first_line):
        problems.append("the decision is not the first line of the final part")
    return found[0], problems


def _parse_quadruple(text: str) -> ParsedReply:
    scan = _scan_tags(text)
    thinking, problems = scan.thinking, scan.problems
    if not scan.final_seen:
        problems.append("missing <final>")
    final, clean_problems = _clean_final(scan.final, scan_tags=False)
    problems += clean_problems
    for part in THINK_PARTS:
        if not thinking.get(part):
            problems.append(f"missing <{THINK_TAGS[part]}>")
    return ParsedReply(thinking=thinking, final=final, problems=problems, format="quadruple")


def _parse_sections(text: str) -> ParsedReply:
    problems: list[str] = []
    thinking: list[str] = []
    final_region: str | None = None
    headers = list(_SECTION_HEADER_RE.finditer(text))
    if headers and text[: headers[0].start()].strip():
        problems.append("text before the first section header")
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        region = text[match.end():end]
        if match.group("thinking") is not None:
            if final_region is not None:
                problems.append("thinking section after the final section (removed)")
            thinking.append(region.strip())
        elif final_region is None:
            # A <think-*> block still open at the final header makes the "final" thinking.
            if _scan_tags(text[: match.start()]).open_thinking:
                problems.append("final header inside an open thinking tag: final discarded")
                final_region = ""
            else:
                final_region = region
        else:
            problems.append("repeated final section (only the first is used)")
    if not thinking:
        problems.append(f"missing {SECTION_THINKING_HEADER}")
    if final_region is None:
        problems.append(f"missing {SECTION_FINAL_HEADER}")
        final_region = ""
    final, clean_problems = _clean_final(final_region, scan_tags=True)
    problems += clean_problems
    steps = "\n".join(t for t in thinking if t)
    return ParsedReply(thinking={"steps": steps} if steps else {}, final=final,
                       problems=problems, format="sections")


def parse_reply(text: str, *, prompt: str | None = None) -> ParsedReply:
    """Split an assistant reply (a rendered completion or a model generation) into thinking
    and final parts, read the decision, and list what is malformed.

    ``text`` is the reply alone. To parse a whole chat text (prompt + reply), pass its
    ``prompt``: it must be a prefix of ``text`` and is removed. The parser never guesses
    where a prompt ends from ``<|assistant|>``: the user's text and a generation can both
    contain that token, and a wrong guess either hides a generation's thinking tags (leaking
    thinking into the final) or lets the user's text supply the decision.

    Inside the reply, a new turn (``<|user|>`` / ``<|system|>``) ends it and special tokens
    are dropped. The format is quadruple when a ``<final>`` tag is present, else sections
    when a ``# 最終回答`` header is, else whichever kind of thinking marker appears.
    """
    text = "" if text is None else str(text)
    if prompt is not None:
        if not text.startswith(prompt):
            raise ValueError("parse_reply: text does not start with the given prompt")
        text = text[len(prompt):]
    turn = _NEW_TURN_RE.search(text)
    if turn:
        text = text[: turn.start()]
    text = _SPECIAL_RE.sub("", text)

    tags = [(m.group(1), m.group(2).lower()) for m in _TAG_RE.finditer(text)]
    headers = [m for m in _SECTION_HEADER_RE.finditer(text)]
    if any(name == FINAL_TAG and not closing for closing, name in tags):
        reply = _parse_quadruple(text)
    elif any(m.group("final") is not None for m in headers):
        reply = _parse_sections(text)
    elif tags:
        reply = _parse_quadruple(text)
    elif headers:
        reply = _parse_sections(text)
    else:
        reply = ParsedReply(problems=["no thinking or final markers"])
    if turn is not None and turn.start() == 0:
        reply.problems.append("text starts with a chat turn: pass prompt= to parse a whole "
                              "chat text")

    reply.decision, decision_problems = _parse_decision(reply.final)
    reply.problems += decision_problems
    if not reply.final and "final part is empty" not in reply.problems:
        reply.problems.append("final part is empty")
    reply.well_formed = not reply.problems
    return reply


def extract_final(text: str, *, prompt: str | None = None) -> str:
    """The user-visible final part of a reply; never any thinking text ("" when unsure).

    The parser's final part, shown only when the serving rules allow it (deny by default:
    ``so8t_kedro.serve.disclosure``), without invisible characters.
    """
    # Imported here: the disclosure rules are derived from this module's constants.
    from so8t_kedro.serve.disclosure import strip_invisible, withheld_reason

    final = parse_reply(text, prompt=prompt).final
    return "" if withheld_reason(final) else strip_invisible(final).strip()


__all__ = [
    "ASSISTANT_TOKEN",
    "DECISION_KEY",
    "DEFAULT_FORMAT",
    "DEFAULT_MAX_QUOTED_CHARS",
    "DOMAINS_BY_LABEL",
    "END_TOKEN",
    "EOS_TOKEN",
    "FALLBACK_DOMAINS",
    "FINAL_CLOSE",
    "FINAL_OPEN",
    "FINAL_TAG",
    "FORMATS",
    "KNOWN_DOMAINS",
    "LANGUAGES",
    "SECTION_FINAL_HEADER",
    "SECTION_THINKING_HEADER",
    "SYSTEM_PROMPT",
    "SYSTEM_TOKEN",
    "THINK_PARTS",
    "THINK_TAGS",
    "USER_TOKEN",
    "ParsedReply",
    "compose_final",
    "compose_thinking",
    "decision_prefix",
    "domain_phrases",
    "extract_final",
    "format_assistant",
    "has_section_header",
    "label_continuations",
    "parse_reply",
    "quote_request",
    "render_completion",
    "render_decision_probe",
    "render_prompt",
    "request_from_prompt",
    "render_sample",
    "resolve_domain",
    "without_decision_lines",
]
