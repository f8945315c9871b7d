"""Recipes: what a task samples, asks and writes, in a TOML file users can copy and edit.

Prompts and defaults live in the recipes under ``pipelines/`` rather than in code, so changing a
prompt is an edit to a text file and every command built on a recipe agrees. Every key a recipe
may hold is declared once in :data:`SCHEMA` (type, default, bounds, help); the same map validates
files and gives the CLI its option defaults, so the two cannot drift apart.

Built-in recipes ship inside the wheel (``videovlm/pipelines/*.toml``, force-included from the
repo's ``pipelines/``); in an editable install they are read from the repo folder directly.
"""

from __future__ import annotations

import dataclasses
import difflib
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videovlm import tasks
from videovlm.decode import BACKEND_NAMES
from videovlm.dialogue import OVER_BUDGET_RULES, check_language
from videovlm.errors import RecipeError
from videovlm.model import DEFAULT_MAX_NEW_TOKENS, FAMILIES
from videovlm.plan import SEEK_MODES
from videovlm.prepare import FITS
from videovlm.scenes import DETECTORS, SceneSettings
from videovlm.writers import WRITERS

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib



@dataclass(frozen=True)
class Option:
    """One recipe key: its type, default and allowed values, declared once.

    ``default=None`` means "not set": the key is left out of the recipe (generation settings the
    model should not receive unless asked, a detector's own threshold).
    """

    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None


SCHEMA: dict[str, dict[str, Option]] = {
    "sampling": {
        "n": Option(int, 50, "frame budget for the whole video, or each window of a long one",
                    min=1, max=1000),
        "backend": Option(str, "auto", "decoder", choices=BACKEND_NAMES),
        "seek": Option(str, "exact", "exact frames, or the nearest keyframes (faster on long "
                       "files)", choices=SEEK_MODES),
        "fit": Option(str, "squash", "how frames become the model's square images",
                      choices=FITS),
    },
    "scenes": {
        "detector": Option(str, "adaptive", "PySceneDetect detector",
                           choices=tuple(DETECTORS)),
        "threshold": Option(float, None, "detector threshold (unset: the detector's default)",
                            min=0),
        "min_scene_len": Option(float, 0.6, "seconds after a cut before the detector may cut "
                                "again", min=0),
        "min_scene_s": Option(float, 1.0, "scenes shorter than this merge into a neighbour",
                              min=0),
        "max_scene_s": Option(float, 60.0, "scenes longer than this split into equal windows "
                              "(0: never)", min=0),
        "downscale_width": Option(int, 256, "width frames are shrunk to for detection", min=16,
                                  max=4096),
    },
    "windows": {
        "length_s": Option(float, 300.0, "seconds per window: a long video is described window "
                           "by window, each from its own -n frames; find scores every window "
                           "(find.toml: 10)", min=0.1),
        "after_s": Option(float, 600.0, "describing: videos longer than this are cut into "
                          "windows (0: never; --window S sets both this and length_s to S)",
                          min=0),
        "snap_s": Option(float, 10.0, "describing: a window boundary moves to a scene cut this "
                         "close to it (0: never)", min=0),
        "scene_frames": Option(int, 8, "describing: inside a window, scenes too short for this "
                               "many of its frames merge into a neighbour (scene mode)", min=1,
                               max=1000),
        "score_threshold": Option(float, 0.5, "find only: a window whose score (P(yes)) is at "
                                  "least this is part of a range", min=0, max=1),
        "windows_per_call": Option(int, 8, "find only: windows whose prompts decode together in "
                                   "one batched call (1: one at a time)", min=1, max=256),
    },
    "generation": {
        "max_new_tokens": Option(int, DEFAULT_MAX_NEW_TOKENS, "most tokens generated per call",
                                 min=1, max=8192),
        "do_sample": Option(bool, False, "sample instead of greedy decoding"),
        "repetition_penalty": Option(float, 1.0, "penalty on repeated tokens (1.0: none)",
                                     min=0.5, max=3.0),
        "temperature": Option(float, None, "sampling temperature (with do_sample)", min=0.01,
                              max=5.0),
        "top_p": Option(float, None, "nucleus sampling mass (with do_sample)", min=0, max=1),
        "top_k": Option(int, None, "top-k sampling (with do_sample)", min=0),
        "num_beams": Option(int, None, "beam search width", min=1, max=16),
        "no_repeat_ngram_size": Option(int, None, "forbid repeating n-grams of this size",
                                       min=0),
    },
    "dialogue": {
        "subtitles": Option(str, "auto", "subtitles shown with the frames: auto (a sidecar "
                            "file, else a text stream in the video), none, or a subtitle "
                            "file (.srt, .vtt, .ass)"),
        "subtitle_lang": Option(str, None, "language of the subtitles to pick among several "
                                "(en, fr, pt-BR, eng...; unset: the first found)"),
        "over_budget": Option(str, "fewer_frames", "when the dialogue does not fit the "
                              "context: fewer frames, or trim the dialogue",
                              choices=OVER_BUDGET_RULES),
        "transcribe": Option(bool, False, "speech recognition (Whisper) on the audio track: its "
                             "timed text is the dialogue, instead of subtitles"),
        "asr_model": Option(str, None, "the speech-recognition model (a Whisper hub id or "
                            "local folder; unset: $VIDEOVLM_ASR_MODEL or openai/whisper-base)"),
        "asr_language": Option(str, None, "the language spoken (en, fr...; unset: detected)"),
    },
    "outputs": {
        "formats": Option(list, ["json"], "files written per video", choices=(*WRITERS, "all")),
    },
}

# section of each key, for flat overrides (``n=8``, ``max_new_tokens=64``): names are unique
KEY_SECTION: dict[str, str] = {k: s for s, keys in SCHEMA.items() for k in keys}
assert len(KEY_SECTION) == sum(len(keys) for keys in SCHEMA.values()), "schema keys must be unique"

TOP_KEYS: dict[str, Option] = {
    "name": Option(str, None, "the recipe's name (default: the file's name)"),
    "description": Option(str, "", "one line shown by `videovlm pipelines`"),
    "task": Option(str, None, "what the recipe does", choices=tuple(tasks.TASKS)),
    "extends": Option(str, None, "a built-in recipe name or a path this file builds on"),
}

# Placeholders each prompt may use; every prompt may use the frame count and the duration, also
# as SmolVLM2's video intro writes them ({frames_in_words}: "fifty", {duration_hms}: "0:01:05").
_COMMON = ("n_frames", "duration", "frames_in_words", "duration_hms")
PROMPT_KEYS: dict[str, tuple[str, ...]] = {
    "intro": _COMMON,
    "task": (*_COMMON, "start", "end"),
    "scene": (*_COMMON, "start", "end"),
    "summary": (*_COMMON, "descriptions"),
    "question": (*_COMMON, "question", "options", "subtitles"),
    "option": ("letter", "text"),
    "no_subtitles": (),
    "dialogue": ("text", "start", "end"),
    "query": (*_COMMON, "query", "start", "end"),
}
SECTIONS: tuple[str, ...] = (*SCHEMA, "prompts")
MODE_SECTIONS: dict[str, str] = {"scenes": "scenes", "windows": "windows"}
"""Tables that only tasks of one mode read (section -> mode): elsewhere they are refused.
``[windows]`` is also read by the windowed describing tasks (``Task.windowed``); its
``score_threshold`` and ``windows_per_call`` are find's alone, ``after_s``, ``snap_s`` and
``scene_frames`` the describing tasks' alone, ``length_s`` both."""


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: every section filled with its defaults, ready to run."""

    name: str
    description: str
    task: str
    path: str
    sampling: dict[str, Any] = field(default_factory=dict)
    scenes: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    dialogue: dict[str, Any] = field(default_factory=dict)
    extends: str | None = None
    # per model family (``[prompts.smolvlm]``): prompts that replace ``prompts`` for that family
    family_prompts: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """How the task picks and groups frames (the task table's ``mode``)."""
        return tasks.get(self.task).mode

    def has_prompt(self, key: str) -> bool:
        return key in self.prompts

    def uses(self, key: str, placeholder: str) -> bool:
        """Whether prompt ``key`` (any family's text) holds ``{placeholder}``."""
        texts = [self.prompts.get(key), *(t.get(key) for t in self.family_prompts.values())]
        return any(placeholder in {f for _, f, _, _ in string.Formatter().parse(t) if f}
                   for t in texts if t)

    def prompt(self, key: str, family: str | None = None, **values: Any) -> str:
        """The prompt ``key`` (``family``'s own text when the recipe has one) with its
        placeholders filled in (validated on load)."""
        if key not in self.prompts:
            raise RecipeError(f"recipe {self.name!r} has no prompts.{key}")
        text = self.family_prompts.get(family or "", {}).get(key, self.prompts[key])
        # a range not given is the whole video's: 00:00 to its duration
        whole = {"start": "00:00", "end": values.get("duration", "")}
        return text.format_map({**dict.fromkeys(PROMPT_KEYS[key], ""), **whole, **values})

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with some keys replaced, by flat name (``n=8``, ``formats=["srt"]``...).

        ``None`` means "keep the recipe's value", so CLI options can pass straight through.
        Values are checked against :data:`SCHEMA` exactly like a file's.
        """
        sections: dict[str, Any] = {
            "sampling": dict(self.sampling), "scenes": dict(self.scenes),
            "windows": dict(self.windows), "generation": dict(self.generation),
            "outputs": {"formats": list(self.outputs)}, "dialogue": dict(self.dialogue),
        }
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in KEY_SECTION:
                raise RecipeError(f"cannot override {key!r}{_did_you_mean(key, KEY_SECTION)}")
            section = KEY_SECTION[key]
            if key == "formats" and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            where = f"option {key}"
            if section == "windows" and not _uses(section, self.task):
                raise RecipeError(f"{where}: recipe {self.name!r} ({self.task}) is not run in "
                                  "windows")
            sections[section][key] = _check_value(where, SCHEMA[section][key], value)
        if _uses_scenes(self.task):
            _check_scenes(f"recipe {self.name!r}", sections["scenes"])
        _check_dialogue("option ", sections["dialogue"])
        return dataclasses.replace(
            self, sampling=sections["sampling"], scenes=sections["scenes"],
            windows=sections["windows"],
            generation=sections["generation"], outputs=sections["outputs"]["formats"],
            dialogue=sections["dialogue"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (echoed into results so they say how they were made)."""
        return dataclasses.asdict(self)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe by name (``describe``) or a TOML file by path, validated.

    Raises RecipeError with one line naming the file, the key and what to do, for any problem.
    """
    return _load(str(name_or_path))


def list_recipes() -> list[Recipe]:
    """The built-in recipes, by name."""
    return [_load(name) for name in sorted(_builtins())]


def recipe_names() -> list[str]:
    """Names of the built-in recipes, without loading them."""
    return sorted(_builtins())


def default(key: str) -> Any:
    """The schema default of a flat key (``n`` -> 50): for CLI help and option defaults."""
    return SCHEMA[KEY_SECTION[key]][key].default


# -- loading -------------------------------------------------------------------------------------


def _builtins() -> dict[str, Traversable]:
    """Built-in recipe files by name: packaged ones, or the repo's in an editable install."""
    packaged = resources.files("videovlm") / "pipelines"
    if packaged.is_dir():
        folder: Traversable = packaged
    else:
        root = Path(__file__).resolve().parent.parent
        folder = root / "pipelines"
        if not ((root / "pyproject.toml").is_file() and folder.is_dir()):
            return {}
    return {f.name[:-5]: f for f in folder.iterdir() if f.name.endswith(".toml")}


def _is_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or "\\" in text


def _load(name_or_path: str) -> Recipe:
    raw, label, path = _resolve(name_or_path, seen=(), base_dir=None)
    return _build(label, raw, path)


def _resolve(name_or_path: str, seen: tuple[str, ...], base_dir: Path | None
             ) -> tuple[dict[str, Any], str, str]:
    """A recipe file's tables merged over everything it ``extends`` (not yet validated)."""
    raw, label, path = _read(name_or_path, base_dir)
    if path in seen:
        chain = " -> ".join(Path(p).stem for p in (*seen, path))
        raise RecipeError(f"recipe {label}: `extends` loops ({chain}); remove one `extends`")
    _check_layout(label, raw)
    if "extends" in raw:
        parent_dir = None if _is_builtin(path) else Path(path).parent
        parent, _, _ = _resolve(raw["extends"], (*seen, path), parent_dir)
        raw = {**_merge(parent, raw), "extends": raw["extends"]}
    return raw, label, path


def _is_builtin(path: str) -> bool:
    return any(str(f) == path for f in _builtins().values())


def _read(name_or_path: str, base_dir: Path | None) -> tuple[dict, str, str]:
    """Parse one recipe file; returns (tables, label for messages, path)."""
    builtins = _builtins()
    source: Traversable | Path
    if not _is_path(name_or_path) and name_or_path in builtins:
        source = builtins[name_or_path]
    else:
        candidate = Path(name_or_path).expanduser()
        if base_dir is not None and not candidate.is_absolute():
            candidate = base_dir / candidate
        if not candidate.is_file():
            if _is_path(name_or_path):
                raise RecipeError(f"recipe file {name_or_path} not found: check the path")
            known = ", ".join(sorted(builtins)) or "none found"
            raise RecipeError(
                f"unknown recipe {name_or_path!r}{_did_you_mean(name_or_path, builtins)}: "
                f"use a built-in one ({known}) or the path of a .toml file"
            )
        source = candidate
    label = str(source) if _is_path(name_or_path) else f"{name_or_path!r} ({source})"
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {label}: cannot read it ({exc})") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {label} is not valid TOML: {exc}") from exc
    return raw, label, str(source)


def _merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent``, table by table (a child's table only replaces the keys it has)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in parent.items()}
    for key, value in child.items():
        if key == "extends":
            continue
        if key == "prompts" and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = {**out[key], **value}  # a family's table merges key by key, too
            for fam in FAMILIES:
                inherited = out[key].get(fam)
                if not isinstance(inherited, dict):
                    continue
                # a prompt the child rewrites replaces the parent's family text for it too,
                # unless the child gives that family its own: the user's text always shows
                own = value.get(fam) if isinstance(value.get(fam), dict) else {}
                kept = {k: v for k, v in inherited.items() if k not in value}
                merged[fam] = {**kept, **own}
                if not merged[fam]:
                    del merged[fam]
            out[key] = merged
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    if "name" not in child:
        out.pop("name", None)  # a derived recipe is named after its own file
    for section in MODE_SECTIONS:
        if not _uses(section, out.get("task")) and section not in child:
            out.pop(section, None)  # e.g. a scene-mode recipe turned into another task
    return out


def _check_layout(label: str, raw: Mapping[str, Any]) -> None:
    """Only known top-level keys and tables, each of the right kind."""
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise RecipeError(f"recipe {label}: {key} must be a table ([{key}]), "
                                  f"got {_kind(value)}")
        elif key in TOP_KEYS:
            _check_value(f"recipe {label}: {key}", TOP_KEYS[key], value)
        else:
            valid = (*TOP_KEYS, *SECTIONS)
            raise RecipeError(
                f"recipe {label}: unknown key {key!r}{_did_you_mean(key, valid)} "
                f"(valid: {', '.join(valid)})"
            )


def _build(label: str, raw: dict[str, Any], path: str) -> Recipe:
    task = raw.get("task")
    if task is None:
        raise RecipeError(f"recipe {label}: missing `task = \"...\"` (one of "
                          f"{', '.join(tasks.TASKS)})")
    sections: dict[str, dict[str, Any]] = {}
    for section, options in SCHEMA.items():
        given = raw.get(section, {})
        if given and not _uses(section, task):
            users = " or ".join(f'"{t}"' for t in tasks.TASKS if _uses(section, t))
            raise RecipeError(f"recipe {label}: [{section}] only applies to task {users}, "
                              f"not {task!r}; remove the table")
        values: dict[str, Any] = {}
        for key, value in given.items():
            if key not in options:
                raise RecipeError(
                    f"recipe {label}: unknown key {section}.{key}"
                    f"{_did_you_mean(key, options)} (valid in [{section}]: {', '.join(options)})"
                )
            values[key] = _check_value(f"recipe {label}: {section}.{key}", options[key], value)
        for key, option in options.items():
            if key not in values and option.default is not None:
                values[key] = list(option.default) if option.type is list else option.default
        sections[section] = values
    if _uses_scenes(task):
        _check_scenes(f"recipe {label}", sections["scenes"])
    for section in MODE_SECTIONS:
        if not _uses(section, task):
            sections[section] = {}
    _check_dialogue(f"recipe {label}: dialogue.", sections["dialogue"])
    prompts, family_prompts = _check_prompts(label, task, raw.get("prompts", {}))
    return Recipe(
        name=raw.get("name") or Path(path).stem,
        description=raw.get("description", ""),
        task=task,
        path=path,
        sampling=sections["sampling"],
        scenes=sections["scenes"],
        windows=sections["windows"],
        prompts=prompts,
        generation=sections["generation"],
        outputs=sections["outputs"]["formats"],
        dialogue=sections["dialogue"],
        extends=raw.get("extends"),
        family_prompts=family_prompts,
    )


def _uses(section: str, task: str | None) -> bool:
    """Whether ``task`` reads ``section``: every task reads the tables no mode owns, and
    ``[windows]`` is read by find (mode "windows") and by the windowed describing tasks."""
    mode = MODE_SECTIONS.get(section)
    if mode is None:
        return True
    if task not in tasks.TASKS:
        return False
    return tasks.TASKS[task].mode == mode or (section == "windows" and tasks.TASKS[task].windowed)


def _uses_scenes(task: str | None) -> bool:
    return _uses("scenes", task)


def _check_scenes(where: str, scenes: dict[str, Any]) -> None:
    try:
        SceneSettings(**scenes)
    except ValueError as exc:
        raise RecipeError(f"{where}: [scenes] {exc}") from exc


def _check_dialogue(where: str, dialogue: dict[str, Any]) -> None:
    """The subtitle language as a standard tag (``eng`` -> ``en``), checked; ``subtitles``
    is ``auto``, ``none`` or a path (checked when a video is loaded: it may not exist yet).
    ``where`` prefixes the key in messages (``recipe x: dialogue.``, ``option ``)."""
    lang = check_language(dialogue.get("subtitle_lang"), f"{where}subtitle_lang")
    if lang is None:
        dialogue.pop("subtitle_lang", None)
    else:
        dialogue["subtitle_lang"] = lang
    if not str(dialogue.get("subtitles", "auto")).strip():
        raise RecipeError(f"{where}subtitles is empty: give auto, none or a subtitle file")


def _check_prompts(label: str, task: str, prompts: dict[str, Any]
                   ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The task's prompts and the per-family ones (``[prompts.smolvlm]``), each checked: known
    keys, strings, known placeholders, and the placeholders the task needs."""
    spec = tasks.get(task)
    needed, optional = spec.prompts, spec.optional_prompts
    uses = f"task {task!r} uses: {', '.join([*needed, *optional])}"
    plain = {k: v for k, v in prompts.items() if k not in FAMILIES}
    families = {k: v for k, v in prompts.items() if k in FAMILIES}
    _check_prompt_texts(label, "prompts", plain, uses)
    for fam, table in families.items():
        if not isinstance(table, dict):
            raise RecipeError(f"recipe {label}: prompts.{fam} must be a table of {fam} "
                              f"prompts ([prompts.{fam}]), got {_kind(table)}")
        _check_prompt_texts(label, f"prompts.{fam}", table, uses)
        extra = [k for k in table if k not in needed and k not in optional]
        if extra:
            raise RecipeError(f"recipe {label}: prompts.{fam}.{extra[0]} is not a prompt of "
                              f"this task ({uses})")
    for key, required in [*needed.items(), *optional.items()]:
        if key in plain or key in needed:
            _check_needed(label, task, f"prompts.{key}", plain.get(key), required,
                          removable=key in optional)
        for fam, table in families.items():
            if key in table:
                _check_needed(label, task, f"prompts.{fam}.{key}", table[key], required,
                              removable=True)
    keep = {k: v for k, v in plain.items() if k in needed or k in optional}
    for fam, table in families.items():
        if any(k not in keep for k in table):
            missing_base = next(k for k in table if k not in keep)
            raise RecipeError(f"recipe {label}: prompts.{fam}.{missing_base} has no "
                              f"prompts.{missing_base} to stand in for; add it for every family")
    return keep, {fam: dict(table) for fam, table in families.items()}


def _check_needed(label: str, task: str, where: str, text: str | None,
                  required: tuple[str, ...], *, removable: bool) -> None:
    """A prompt the task uses: present, not blank, and holding the placeholders it must."""
    if not text or not text.strip():
        must = f" (with {', '.join('{' + r + '}' for r in required)})" if required else ""
        if removable:
            raise RecipeError(f"recipe {label}: {where} is empty: write one{must} or remove "
                              "the key")
        raise RecipeError(f"recipe {label}: task {task!r} needs {where}{must}")
    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    missing = [r for r in required if r not in fields]
    if missing:
        raise RecipeError(f"recipe {label}: {where} must contain "
                          f"{', '.join('{' + m + '}' for m in missing)}")


def _check_prompt_texts(label: str, where: str, prompts: dict[str, Any], uses: str) -> None:
    """Known prompt keys, strings only, and only the placeholders each key allows."""
    for key, value in prompts.items():
        if key not in PROMPT_KEYS:
            raise RecipeError(
                f"recipe {label}: unknown key {where}.{key}{_did_you_mean(key, PROMPT_KEYS)} "
                f"({uses})"
            )
        if not isinstance(value, str):
            raise RecipeError(f"recipe {label}: {where}.{key} must be a string, "
                              f"got {_kind(value)}")
        allowed = PROMPT_KEYS[key]
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise RecipeError(f"recipe {label}: {where}.{key}: {exc} (write a literal brace as "
                              "{{ or }})") from exc
        for name in fields:
            base = name.split(".")[0].split("[")[0]
            if base not in allowed:
                hint = _did_you_mean(base, allowed, braces=True)
                shown = ", ".join("{" + a + "}" for a in allowed)
                raise RecipeError(f"recipe {label}: {where}.{key} uses unknown placeholder "
                                  f"{{{name}}}{hint} (allowed: {shown})")


def _check_value(where: str, option: Option, value: Any) -> Any:
    """``value`` if it fits ``option`` (ints accepted for floats), else a RecipeError."""
    if option.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if option.type is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RecipeError(f"{where} must be a list of strings (e.g. [\"json\", \"srt\"]), "
                              f"got {_kind(value)}")
        if not value:
            raise RecipeError(f"{where} must not be empty")
        for v in value:
            _check_choice(where, option, v)
        return list(value)
    ok = isinstance(value, option.type) and not (
        option.type is not bool and isinstance(value, bool)
    )
    if not ok:
        raise RecipeError(f"{where} must be {_type_name(option.type)}, got {_kind(value)}")
    if option.choices is not None:
        _check_choice(where, option, value)
    too_low = option.min is not None and value < option.min
    too_high = option.max is not None and value > option.max
    if too_low or too_high:
        bounds = (f"between {_num(option.min)} and {_num(option.max)}" if option.max is not None
                  else f"at least {_num(option.min)}")
        raise RecipeError(f"{where} must be {bounds}, got {value}")
    return value


def _check_choice(where: str, option: Option, value: str) -> None:
    assert option.choices is not None
    if value not in option.choices:
        raise RecipeError(f"{where}: {value!r} is not one of {', '.join(option.choices)}"
                          f"{_did_you_mean(value, option.choices)}")


def _did_you_mean(word: str, candidates: Any, braces: bool = False) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6) or [
        c for c in candidates if word.startswith(c) or c.startswith(word)
    ][:1]
    if not close:
        return ""
    return f" — did you mean {{{close[0]}}}?" if braces else f" — did you mean {close[0]!r}?"


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        t, t.__name__
    )


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return f"{value!r} ({names.get(type(value), type(value).__name__)})"


def _num(x: float | None) -> str:
    return f"{x:g}" if x is not None else "?"
