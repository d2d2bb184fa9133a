"""The offline intent parser: what Neptune understands with no model configured.

Pure and deterministic: a message in, an ``Intent`` (a kind and its slots) out. It reads the message as a person
would skim it: polite openings and closings dropped ("hey neptune, could you please ... thanks"), then the first
rule whose cue words fit, from the most specific (remember, recall, delegate, pause/resume/cancel) to the most
general (run a team on an objective). What no rule takes is ``unknown``: Neptune answers it with what it can do,
never with an error. Names (of teams, workflows, agents) are kept as the user said them; resolving them to ids, or
asking back when a name is ambiguous, is the caller's work, with the workspace's live data.
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class IntentKind(StrEnum):
    CREATE_TEAM = "create_team"
    RUN_TEAM = "run_team"
    CREATE_WORKFLOW = "create_workflow"
    WORKFLOW_STATUS = "workflow_status"
    TEAM_STATUS = "team_status"
    AVAILABILITY = "availability"
    DELEGATE = "delegate"
    REMEMBER = "remember"
    RECALL = "recall"
    LIST_TEAMS = "list_teams"
    PAUSE_EXECUTION = "pause_execution"
    RESUME_EXECUTION = "resume_execution"
    CANCEL_EXECUTION = "cancel_execution"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Intent:
    kind: IntentKind
    slots: dict[str, Any] = field(default_factory=dict)


DEPARTMENTS = {
    "sales": "sales",
    "marketing": "marketing",
    "support": "support",
    "customer support": "support",
    "customer service": "support",
    "operations": "operations",
    "ops": "operations",
}
MAX_MESSAGE_CHARS = 4000

# Openings and closings that carry no intent, dropped until none is left.
_OPENINGS = [
    r"(?:hey|hi|hello|ok|okay|yo|so|alright|right)\b[\s,!:.-]*(?:neptune\b[\s,!:.-]*)?",
    r"neptune\b[\s,!:.-]*",
    r"(?:please|pls|kindly)\b[\s,]*",
    r"(?:can|could|would|will|can't|won't)\s+you\s+(?:please\s+)?",
    r"(?:i|we)\s+(?:want|need|would like|'d like|wanna)\s+(?:you\s+)?to\s+",
    r"(?:i'd|we'd)\s+like\s+(?:you\s+)?to\s+",
    r"(?:go ahead and|quickly|just|now)\s+",
    r"(?:let's|lets)\s+(?=create|make|build|set|spin|start|run|get|have|pause|cancel|stop|resume|list|see|check)",
]
_CLOSINGS = [
    r"[\s,]*(?:please|pls|thanks|thank you|thx|for me|for us|now|right now|asap|if you can|if possible)$",
]
_ARTICLE = r"(?:the|a|an|my|our|your|this|that)\s+"


def normalize(text: str) -> str:
    """Lower case, one space between words, typographic quotes made plain, the end's punctuation and the polite
    openings and closings dropped. Apostrophes inside words stay ("this week's")."""
    line = text[:MAX_MESSAGE_CHARS].replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    line = line.replace("\u201d", '"').casefold()
    line = re.sub(r"\s+", " ", line).strip()
    changed = True
    while changed:
        before = line
        line = line.strip(' \t?!.;,:"')
        for pattern in _OPENINGS:
            line = re.sub(rf"^{pattern}", "", line)
        for pattern in _CLOSINGS:
            line = re.sub(pattern, "", line)
        changed = line != before
    return line


def _clean(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip(" \t?!.;,:\"'")


def _unarticled(value: str) -> str:
    return re.sub(rf"^(?:{_ARTICLE})+", "", _clean(value)).strip()


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "sales", "ops")) and len(word) > 3:
        return word[:-1]
    return word


def _role(text: str) -> str:
    words = _unarticled(text).split()
    if not words:
        return ""
    words = [w for w in words if w not in {"one", "some", "two", "three", "agent", "agents"}] or words
    return " ".join([*words[:-1], _singular(words[-1])])


def _department(text: str) -> str | None:
    for name in sorted(DEPARTMENTS, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", text):
            return DEPARTMENTS[name]
    return None


def _named(value: str, noun: str) -> str:
    """A team's or workflow's name as said: articles, the noun itself and a possessive dropped."""
    name = _unarticled(value)
    name = re.sub(rf"(?:'s)?\s*\b{noun}s?\b.*$", "", name).strip()
    name = re.sub(r"'s$", "", name)
    return _unarticled(name)


# The rules, most specific first -------------------------------------------------------------------------------

_REMEMBER = re.compile(
    r"^(?:remember|note|make a note|take a note|keep in mind|don't forget|do not forget|never forget|store|save|"
    r"record|jot down|write down)\b(?:\s+(?:of|down))?"
    r"(?:\s+for\s+(?:the\s+)?(?P<team_before>[\w' -]+?)\s+team)?[\s,:]*(?:that\s+)?(?P<fact>.+?)"
    r"(?:[\s,]+(?:for|on|in)\s+(?:the\s+)?(?P<team>[\w' -]+?)\s+team(?:'s\s+\w+)?)?$"
)
_RECALL = re.compile(
    r"^(?:what\s+(?:do|did)\s+(?:we|you|i)\s+(?:know|have|remember|recall)\s+(?:about|on|of|regarding)|"
    r"what\s+(?:does|did)\s+(?:the\s+)?memory\s+(?:say|have|know)\s+(?:about|on)|"
    r"what\s+is\s+known\s+about|what's\s+known\s+about|what\s+we\s+know\s+about|"
    r"tell\s+me\s+(?:what\s+(?:we|you)\s+know\s+)?about|(?:do\s+we|do\s+you)\s+(?:know|have)\s+anything\s+"
    r"(?:about|on)|anything\s+(?:about|on)|recall|search\s+(?:the\s+)?memory\s+for|look\s+up|"
    r"find\s+(?:what\s+we\s+know|anything)\s+(?:about|on)|what\s+have\s+we\s+got\s+on|"
    r"remind\s+me\s+(?:about|of|what\s+we\s+know\s+about))\s+(?P<topic>.+)$"
)
_DELEGATE = re.compile(
    r"^(?:delegate|hand\s+off|hand\s+over|hand|assign|give|pass|forward|route)\s+(?P<task>.+?)\s+"
    r"(?:over\s+)?to\s+(?P<agent>.+)$"
)
_ASK_AGENT = re.compile(r"^(?:ask|tell|get|have)\s+(?P<agent>.+?)\s+to\s+(?P<task>.+)$")
_CONTROL = [
    (IntentKind.RESUME_EXECUTION, r"(?:resume|unpause|un-pause|continue|restart|carry on with|pick up)"),
    (IntentKind.PAUSE_EXECUTION, r"(?:pause|suspend|hold|freeze)"),
    (IntentKind.CANCEL_EXECUTION, r"(?:cancel|stop|abort|kill|terminate|halt|call off|end|drop)"),
]
_ON_HOLD = re.compile(r"^(?:put|place)\s+(?P<target>.+?)\s+on\s+hold$")
_CREATE = (
    r"(?:create|make|build|set\s*up|spin\s+up|start|form|assemble|put\s+together|add|design|draft|new|"
    r"i\s+need|we\s+need|give\s+me|get\s+me|establish|define|prepare|configure|automate)"
)
_WORKFLOW_NOUN = r"(?:workflow|work\s+flow|process|pipeline|automation|flow)"
_CREATE_WORKFLOW = re.compile(
    rf"^{_CREATE}\s+(?:up\s+)?(?:(?:{_ARTICLE})|new\s+|another\s+)*(?P<before>[\w' -]*?)\s*{_WORKFLOW_NOUN}\b"
    r"(?:\s+(?:for|to|that|which|around|about|covering|handling|in\s+charge\s+of)\s+(?P<after>.+))?$"
)
_CREATE_TEAM = re.compile(
    rf"^{_CREATE}\s+(?:up\s+)?(?:a\s+|an\s+|new\s+|another\s+|one\s+|me\s+a\s+)*(?P<before>[\w' -]*?)\s*team\b"
    r"(?P<after>.*)$"
)
_TEAM_OF = re.compile(
    r"^(?:(?:for|in)\s+(?P<dept>[\w ]+?)\s*)?(?:(?:with|including|made\s+up\s+of|made\s+of|consisting\s+of|"
    r"that\s+has|having|of|containing|composed\s+of|:)\s*(?P<roles>.+))?$"
)
_STATUS_CUES = re.compile(
    r"\b(?:status|progress|state|how\s+is|how's|hows|how\s+are|how\s+far|doing|going|coming\s+along|update|"
    r"check\s+on|check|where\s+(?:is|are|'s)|done|finished|complete|completed|stuck|happening|look\s+at|"
    r"report\s+on|any\s+news)\b"
)
_AVAILABLE = re.compile(r"\b(?:available|availability|free|idle|not\s+busy|ready\s+to\s+work|can\s+take)\b")
_LIST_TEAMS = re.compile(
    r"^(?:(?:list|show|display|see|get|give|tell)\s+(?:me\s+)?(?:all\s+|a\s+list\s+of\s+)?(?:of\s+)?"
    r"(?:the\s+|my\s+|our\s+|your\s+)?(?:existing\s+|current\s+)?teams(?:\s+(?:i|we)\s+have)?|"
    r"what\s+teams\s+(?:do\s+)?(?:i|we)\s+have|which\s+teams\s+(?:do\s+)?(?:i|we)\s+have|"
    r"what\s+are\s+(?:my|our|the)\s+teams|(?:my|our|all)\s+teams|teams|what\s+teams\s+are\s+there|"
    r"how\s+many\s+teams\s+(?:do\s+)?(?:i|we)\s+have|which\s+teams\s+exist)$"
)
_RUN_TEAM = re.compile(
    r"^(?:run|use|deploy|get|have|let|ask|tell|put|make|task|send|start|kick\s+off|launch|activate|set|"
    r"assign|direct|mobilize|unleash|point|sic)\s+(?:(?:the|my|our)\s+)?(?P<team>[\w' -]+?)\s+team\s+"
    r"(?:(?:to|on|with|for|at|onto|and|working\s+on|to\s+work\s+on|loose\s+on|going\s+on|started\s+on)\s+)?"
    r"(?P<objective>.+)$"
)
_NAME_BEFORE = r"(?:(?:of|on|with|for|is|are|'s|at)\s+)?(?P<name>[\w' -]+?)"
_TEAM_COMMA = re.compile(r"^(?:the\s+)?(?P<team>[\w' -]+?)\s+team[,:]\s*(?P<objective>.+)$")
_RUN_OF = re.compile(
    r"^(?:start|kick\s+off|launch|begin|do)\s+(?:a\s+)?(?:team\s+)?run\s+(?:of|for|with)\s+(?:the\s+)?"
    r"(?P<team>[\w' -]+?)\s+team\s+(?:to|on|for)\s+(?P<objective>.+)$"
)


_FOR_TEAM_FIRST = re.compile(r"^(?P<lead>for\s+(?:the\s+)?[\w' -]+?\s+team)[\s,:]+(?P<rest>.+)$")


def parse(text: str) -> Intent:  # noqa: PLR0912 - one return per rule, in order
    line = normalize(text)
    if not line:
        return Intent(IntentKind.UNKNOWN)
    if (match := _FOR_TEAM_FIRST.match(line)) and _REMEMBER.match(match["rest"]):
        line = f"{match['rest']} {match['lead']}"  # "for the sales team, remember X": remember X for the sales team
    if match := _REMEMBER.match(line):
        fact = _clean(match["fact"])
        team = match["team"] or match["team_before"]
        if fact:
            return Intent(IntentKind.REMEMBER, {"fact": fact, "team": _named(team, "team") if team else None})
    if match := _RECALL.match(line):
        return Intent(IntentKind.RECALL, {"topic": _clean(match["topic"])})
    if match := _DELEGATE.match(line):
        agent = _unarticled(match["agent"])
        if not re.search(r"\bteam\b", agent):
            return Intent(IntentKind.DELEGATE, {"task": _clean(match["task"]), "agent": agent})
    if (match := _ON_HOLD.match(line)) and re.search(rf"\b{_WORKFLOW_NOUN}|execution|run\b", match["target"]):
        return Intent(IntentKind.PAUSE_EXECUTION, {"workflow": _named(match["target"], _WORKFLOW_NOUN)})
    for kind, verb in _CONTROL:
        if match := re.match(rf"^{verb}\s+(?P<target>.+)$", line):
            target = match["target"]
            if re.search(rf"\b(?:{_WORKFLOW_NOUN}|execution|run)\b", target) and not re.search(r"\bteam\b", target):
                return Intent(kind, {"workflow": _named(target, rf"(?:{_WORKFLOW_NOUN}|execution|run)")})
    if (match := _CREATE_WORKFLOW.match(line)) and not _STATUS_CUES.search(line.split()[0]):
        described = match["after"] or match["before"] or ""
        return Intent(IntentKind.CREATE_WORKFLOW, {"description": _unarticled(described)})
    if match := _CREATE_TEAM.match(line):
        return _create_team(match["before"], match["after"])
    if _LIST_TEAMS.match(line):
        return Intent(IntentKind.LIST_TEAMS)
    if _STATUS_CUES.search(line):
        if match := re.search(rf"{_NAME_BEFORE}\s+{_WORKFLOW_NOUN}\b", line):
            return Intent(IntentKind.WORKFLOW_STATUS, {"workflow": _status_name(match["name"])})
        if match := re.search(rf"{_NAME_BEFORE}\s+team\b", line):
            return Intent(IntentKind.TEAM_STATUS, {"team": _status_name(match["name"])})
    if _AVAILABLE.search(line) and re.search(r"\b(?:agents?|who|anyone|anybody|someone|which|any|there)\b", line):
        return Intent(IntentKind.AVAILABILITY, {"capability": _capability(line)})
    for pattern in (_RUN_OF, _RUN_TEAM, _TEAM_COMMA):
        if match := pattern.match(line):
            objective = _clean(match["objective"])
            if objective:
                return Intent(IntentKind.RUN_TEAM, {"team": _named(match["team"], "team"), "objective": objective})
    if match := _ASK_AGENT.match(line):
        agent = _unarticled(match["agent"])
        if not re.search(r"\b(?:team|you|me|us)\b", agent):
            return Intent(IntentKind.DELEGATE, {"task": _clean(match["task"]), "agent": agent})
    return Intent(IntentKind.UNKNOWN)


_STATUS_WORDS = re.compile(
    r"^(?:.*\b(?:status|progress|state|update|news|report|check|look)\s+(?:of|on|for|at|with)\s+)|"
    r"^(?:how\s+(?:is|are|far\s+along\s+is)|how's|hows|where\s+(?:is|are)|where's|is|are|what's\s+happening\s+with|"
    r"what\s+is\s+happening\s+with|what's|whats|what\s+is|give\s+me|show\s+me|show|tell\s+me|check\s+on|check|"
    r"any\s+news\s+on|has|have)\s+"
)


def _status_name(value: str) -> str:
    name = _clean(value)
    previous = None
    while previous != name:
        previous = name
        name = _STATUS_WORDS.sub("", name).strip()
        name = _unarticled(name)
    return name


def _capability(line: str) -> str | None:
    if match := re.search(
        r"\b(?:available|free|idle|ready)\s+(?:for|to\s+do|to\s+handle|to\s+take|to\s+work\s+on|with|in|at)\s+"
        r"(?P<cap>[\w' -]+?)(?:\s+(?:work|tasks?|jobs?))?$",
        line,
    ):
        return _role(match["cap"])
    if match := re.search(
        r"\b(?:which|any|are\s+there\s+any|do\s+we\s+have\s+any|is\s+there\s+an?|is\s+any|are\s+any)\s+"
        r"(?P<cap>[\w' -]+?)\s+(?:agents?\s+)?(?:available|free|idle|ready)\b",
        line,
    ):
        cap = re.sub(r"\b(?:of\s+)?(?:the|my|our|are|is|currently|right|now|still|agents?|ones?)\b", "", match["cap"])
        cap = re.sub(r"\s+", " ", cap).strip()
        if cap and cap not in {"of them", "body"}:
            return _role(cap)
    return None


def _create_team(before: str, after: str) -> Intent:
    before, after = _clean(before), _clean(after)
    department = _department(before)
    roles: list[str] = []
    if match := _TEAM_OF.match(after):
        if match["dept"] and department is None:
            department = _department(match["dept"])
        if match["roles"]:
            roles = _roles(match["roles"])
    elif after and department is None:
        department = _department(after)
    elif after and re.search(r",|\band\b|\bplus\b", after):  # "a sales team: lead qualifier, proposal writer"
        roles = _roles(after)
    if department is None and before:
        department = None
    return Intent(IntentKind.CREATE_TEAM, {"department": department, "roles": roles})


def _roles(text: str) -> list[str]:
    parts = re.split(r"\s*(?:,|;|&|\+|\band\b|\bplus\b|\bas well as\b|\balong with\b)\s*", text)
    roles = [_role(part) for part in parts]
    return [r for r in roles if r and r not in {"agent", "member"}]
