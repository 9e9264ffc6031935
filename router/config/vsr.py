"""Reader for vLLM Semantic Router's canonical v0.3 layout (``version: v0.3``, ``providers``,
``routing.modelCards``, ``routing.signals``, ``routing.decisions``, ``global``).

It translates a v0.3 document into the router's own layout (the one internal model: ``Config``),
and says what it did in a ``ConfigReport``: what is used, what is ignored (runtime knobs that do not
change routing, with the reason) and what is not supported (errors naming the feature and where it
is). Nothing is dropped without a line in the report. ``fusion-router convert`` prints the result.

Facts about the reference (field names, shapes, defaults) come from its v0.3 config structs; the
mapping and every word here are ours.
"""

from __future__ import annotations

import re
from typing import Any

from router.config.base import NAME_PATTERN
from router.config.reference import (
    UNSUPPORTED_ALGORITHMS,
    UNSUPPORTED_LEAF_TYPES,
    UNSUPPORTED_PLUGINS,
    UNSUPPORTED_SIGNAL_SECTIONS,
    not_supported,
)
from router.config.report import VSR_V03, ConfigReport
from router.config.signals import BY_LEAF
from router.decisions.selection.registry import SELECTIONS
from router.looper.registry import ALGORITHMS
from router.signals.mmlu import MMLU_CATEGORY_NAMES

DOMAIN_SIGNAL = "vsr_domains"  # the one router domain signal that holds every v0.3 domain as a category
# Cosine similarity to the winning subject's centroid (14 MMLU subjects): 0.2 keeps the clear winners
# of a hand-checked prompt set (tests/compat) and drops small talk that resembles no subject. The
# reference's own threshold is a classifier probability, a different scale.
DOMAIN_THRESHOLD = 0.2
_ENV = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")
_NAME_OK = re.compile(NAME_PATTERN)
# vLLM-SR's defaults for an omitted global.router.auto_model_names (vllm-sr/auto, auto, auto_model_name).
_DEFAULT_AUTO = ["vllm-sr/auto", "auto"]
_LANGUAGE_DEFAULT_CONFIDENCE = 0.3  # vLLM-SR's language threshold when 0 or omitted
_UNKNOWN = "a vLLM-SR setting fusion-router does not implement (or a misspelling)"


def is_v03(data: Any) -> bool:
    """vLLM-SR's canonical layout: a ``v0.x`` version string, or its sections (``providers``,
    ``routing.modelCards``, ``listeners``); the router's own layout has ``backends`` and ``models``."""
    if not isinstance(data, dict):
        return False
    version = data.get("version")
    if isinstance(version, str) and version.lower().startswith("v"):
        return True
    routing = data.get("routing")
    has_cards = isinstance(routing, dict) and "modelCards" in routing
    return ("backends" not in data and "models" not in data) and ("providers" in data or has_cards or "listeners" in data)


def read_v03(data: dict[str, Any], report: ConfigReport) -> dict[str, Any]:
    """The router-layout equivalent of a v0.3 document; problems land in ``report``."""
    report.format = VSR_V03
    return _Reader(data, report).read()


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _enabled(block: Any) -> bool:
    return isinstance(block, dict) and block.get("enabled") is True


def _backend_name(model: str, ref: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", f"{model}_{ref}").strip("-._") or "backend"
    return name if _NAME_OK.match(name) else f"b-{name}"


class _Reader:
    def __init__(self, data: dict[str, Any], report: ConfigReport):
        self.data = data
        self.report = report
        self.families: dict[str, dict[str, str]] = {}
        self.default_effort: str | None = None
        self.models: dict[str, dict[str, Any]] = {}  # native models by name
        self.backends: list[dict[str, Any]] = []
        self.loras: dict[str, str] = {}  # LoRA name → base model card
        self.referenced: set[str] = set()
        self.domain_names: set[str] = set()

    # -- reporting --------------------------------------------------------------------------------

    def refuse(self, where: str, feature: str, why: str) -> None:
        self.report.refuse(not_supported(feature, why, where))

    def unknown_keys(self, block: dict[str, Any], known: set[str], where: str) -> None:
        for key in block:
            if key not in known:
                self.refuse(f"{where}.{key}", f"`{key}`", _UNKNOWN)

    # -- top level --------------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        d = self.data
        version = d.get("version")
        if version is not None and str(version).lower() not in ("v0.3", "0.3"):
            self.refuse("version", f"config version {version!r}", "this reader reads vLLM-SR's canonical v0.3 layout")
        self.unknown_keys(d, {"version", "listeners", "providers", "routing", "global", "entrypoints", "recipes"}, "(top level)")
        if d.get("listeners"):
            self.report.ignore(
                "listeners",
                "Envoy listeners are Envoy's: `fusion-router envoy-config --listen-port`, or the chart's envoy.listenerPort",
            )
        if d.get("entrypoints") or d.get("recipes"):
            self.refuse(
                "recipes" if d.get("recipes") else "entrypoints",
                "recipes and entrypoints",
                "per-model-name routing profiles; fusion-router has one routing profile per config",
            )
        providers = _mapping(d.get("providers"))
        routing = _mapping(d.get("routing"))
        self.unknown_keys(providers, {"defaults", "models"}, "providers")
        self.unknown_keys(routing, {"modelCards", "signals", "projections", "decisions", "strategy"}, "routing")
        self._defaults(_mapping(providers.get("defaults")))
        cards = {c.get("name"): (i, c) for i, c in enumerate(_items(routing.get("modelCards"))) if isinstance(c, dict)}
        for name, (_, card) in cards.items():
            for lora in _items(card.get("loras")):
                if isinstance(lora, dict) and lora.get("name"):
                    self.loras.setdefault(str(lora["name"]), str(name))
        for i, m in enumerate(_items(providers.get("models"))):
            self._provider_model(_mapping(m), f"providers.models[{i}]")
        for _name, (i, card) in cards.items():
            self._model_card(card, f"routing.modelCards[{i}]")
        self._strategy(routing.get("strategy"), "routing.strategy")
        if routing.get("projections") and any(_mapping(routing.get("projections")).values()):
            self.refuse("routing.projections", "routing.projections", UNSUPPORTED_LEAF_TYPES["projection"])
        signals = self._signals(_mapping(routing.get("signals")))
        decisions = [
            out
            for i, dec in enumerate(_items(routing.get("decisions")))
            if (out := self._decision(_mapping(dec), f"routing.decisions[{i}]")) is not None
        ]
        native: dict[str, Any] = {"version": 1, "global": self._global(_mapping(d.get("global")))}
        default = _mapping(providers.get("defaults")).get("default_model")
        if default:
            self.referenced.add(str(default))
            native["default_model"] = str(default)
        self._lora_aliases()
        self._unbound(cards)
        native["backends"] = self.backends
        native["models"] = list(self.models.values())
        self.report.used[:0] = [
            f"providers.models + routing.modelCards → {len(self.models)} models on {len(self.backends)} backends",
            f"routing.decisions → {len(decisions)} decisions",
        ]
        native["routing"] = {"signals": signals, "decisions": decisions}
        if not native["models"]:
            self.report.refuse(
                "providers.models: no model has a backend (providers.models[].backend_refs[].endpoint or "
                "base_url); fusion-router needs at least one model to route to"
            )
        return native

    # -- providers --------------------------------------------------------------------------------

    def _defaults(self, defaults: dict[str, Any]) -> None:
        self.unknown_keys(defaults, {"default_model", "reasoning_families", "default_reasoning_effort"}, "providers.defaults")
        for name, fam in _mapping(defaults.get("reasoning_families")).items():
            fam = _mapping(fam)
            self.families[str(name)] = {"type": fam.get("type", ""), "parameter": fam.get("parameter", "")}
        effort = defaults.get("default_reasoning_effort")
        self.default_effort = str(effort) if effort else None
        if self.families:
            self.report.use(
                "providers.defaults.reasoning_families → models[].reasoning_family (how each backend is told to think)"
            )

    def _provider_model(self, m: dict[str, Any], at: str) -> None:
        self.unknown_keys(
            m,
            {
                "name",
                "reasoning_family",
                "provider_model_id",
                "backend_refs",
                "pricing",
                "reliability",
                "api_format",
                "external_model_ids",
            },
            at,
        )
        name = str(m.get("name") or "")
        if not name:
            self.report.refuse(f"{at}.name: required field is missing")
            return
        refs = [_mapping(r) for r in _items(m.get("backend_refs"))]
        if m.get("api_format") not in (None, "", "openai"):
            self.refuse(
                f"{at}.api_format",
                f"api_format {m['api_format']!r}",
                "fusion-router speaks the OpenAI chat-completions API to every backend",
            )
        if m.get("reliability"):
            self.report.ignore(
                "providers.models[].reliability",
                "load-balancing, retries, outlier detection and health checks are Envoy cluster settings: set them on your Envoy (envoy/README.md)",
            )
        refs_with_target = [(j, r) for j, r in enumerate(refs) if r.get("endpoint") or r.get("base_url")]
        if len(refs_with_target) > 1:
            self.refuse(
                f"{at}.backend_refs",
                f"{len(refs_with_target)} backend_refs for one model",
                "weighted endpoints per model; give each endpoint its own model, or balance them in one Envoy cluster",
            )
        backend: dict[str, Any] | None = None
        for j, ref in refs_with_target[:1]:
            backend = self._backend_ref(name, ref, f"{at}.backend_refs[{j}]")
        for j, ref in enumerate(refs):
            if not (ref.get("endpoint") or ref.get("base_url")):
                self.report.refuse(f"{at}.backend_refs[{j}]: needs endpoint or base_url")
        model: dict[str, Any] = {"name": name, "backend": backend["name"] if backend else ""}
        served = self._served_id(m, refs_with_target[0][1] if refs_with_target else {})
        if served and served != name:
            model["served_model_id"] = served
        family = m.get("reasoning_family")
        if family:
            if family not in self.families:
                self.report.refuse(
                    f"{at}.reasoning_family: {family!r} is not in providers.defaults.reasoning_families "
                    f"(declared: {sorted(self.families) or 'none'})"
                )
            else:
                model["reasoning_family"] = dict(self.families[family])
        pricing = _mapping(m.get("pricing"))
        if pricing:
            model["pricing"] = {k: pricing[k] for k in ("currency", "prompt_per_1m", "completion_per_1m") if k in pricing}
            extra = sorted(set(pricing) - {"currency", "prompt_per_1m", "completion_per_1m"})
            if extra:
                self.report.ignore(
                    "providers.models[].pricing." + "/".join(extra), "fusion-router orders by prompt and completion prices only"
                )
        if backend is not None:
            self.models[name] = model

    def _served_id(self, m: dict[str, Any], ref: dict[str, Any]) -> str | None:
        ids = _mapping(m.get("external_model_ids"))
        kind = ref.get("type") or ref.get("provider") or "vllm"
        if ids:
            self.report.use("providers.models[].external_model_ids[<backend type>] → models[].served_model_id")
        return ids.get(kind) or m.get("provider_model_id") or None

    def _backend_ref(self, model: str, ref: dict[str, Any], at: str) -> dict[str, Any] | None:
        self.unknown_keys(
            ref,
            {
                "name",
                "endpoint",
                "protocol",
                "weight",
                "type",
                "base_url",
                "provider",
                "auth_header",
                "auth_prefix",
                "extra_headers",
                "api_version",
                "chat_path",
                "api_key",
                "api_key_env",
            },
            at,
        )
        if ref.get("provider") not in (None, "", "openai", "vllm"):
            self.refuse(
                f"{at}.provider",
                f"provider {ref['provider']!r}",
                "only OpenAI-compatible backends (vLLM, OpenAI and compatible APIs)",
            )
        if ref.get("auth_header") not in (None, "", "Authorization", "authorization"):
            self.refuse(f"{at}.auth_header", f"auth_header {ref['auth_header']!r}", "keys go in `Authorization: Bearer <key>`")
        if ref.get("auth_prefix") not in (None, "", "Bearer"):
            self.refuse(f"{at}.auth_prefix", f"auth_prefix {ref['auth_prefix']!r}", "keys go in `Authorization: Bearer <key>`")
        for key, why in (
            ("extra_headers", "per-backend extra request headers (a decision's header_mutation sets headers)"),
            ("api_version", "API versions in the query string (Azure OpenAI)"),
        ):
            if ref.get(key):
                self.refuse(f"{at}.{key}", key, why)
        if ref.get("chat_path") not in (None, "", "/chat/completions", "/v1/chat/completions"):
            self.refuse(
                f"{at}.chat_path", f"chat_path {ref['chat_path']!r}", "requests keep the client's /v1/chat/completions path"
            )
        if ref.get("type") not in (None, "", "vllm", "chat", "openai"):
            self.refuse(f"{at}.type", f"backend type {ref['type']!r}", "only chat-completions backends")
        if ref.get("endpoint"):
            endpoint = str(ref["endpoint"]).strip()
            scheme = str(ref.get("protocol") or "http").lower()
            url = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
        else:
            url = str(ref["base_url"]).strip()
        backend: dict[str, Any] = {"name": _backend_name(model, str(ref.get("name") or "primary")), "endpoint": url}
        api_key = ref.get("api_key")
        if isinstance(api_key, str) and api_key:
            env = _ENV.match(api_key)
            if env:
                backend["api_key_env"] = env.group(1)
            else:
                self.refuse(
                    f"{at}.api_key",
                    "a literal api_key in the config",
                    "name the environment variable that holds it: api_key_env (or api_key: ${VAR})",
                )
        if ref.get("api_key_env"):
            backend["api_key_env"] = str(ref["api_key_env"])
        if "weight" in ref:
            self.report.ignore(
                "providers.models[].backend_refs[].weight", "one backend per model: it gets all of that model's traffic"
            )
        self.backends.append(backend)
        return backend

    def _model_card(self, card: dict[str, Any], at: str) -> None:
        self.unknown_keys(
            card,
            {
                "name",
                "param_size",
                "context_window_size",
                "description",
                "capabilities",
                "loras",
                "quality_score",
                "modality",
                "tags",
            },
            at,
        )
        model = self.models.get(str(card.get("name")))
        if model is None:
            return
        if card.get("param_size"):
            model["param_size"] = str(card["param_size"])
        if card.get("description"):
            model["description"] = str(card["description"])
        loras = [str(lo["name"]) for lo in _items(card.get("loras")) if isinstance(lo, dict) and lo.get("name")]
        if loras:
            model["loras"] = loras
        descriptive = sorted(
            k for k in ("context_window_size", "capabilities", "quality_score", "modality", "tags") if card.get(k)
        )
        if descriptive:
            self.report.ignore(
                "routing.modelCards[]." + "/".join(descriptive),
                "model metadata the reference's selection algorithms read; static routing and the loopers do not",
            )

    def _lora_aliases(self) -> None:
        """A LoRA named where a model is expected is that adapter on its base model's backend: vLLM
        serves an adapter under its own name."""
        for name in sorted(self.referenced):
            base = self.loras.get(name)
            if name in self.models or base is None or base not in self.models:
                continue
            self.models[name] = {
                "name": name,
                "backend": self.models[base]["backend"],
                "served_model_id": name,
                "description": f"LoRA adapter {name} on {base}",
            }
            self.report.use(f"{name}: LoRA adapter of {base}, served by {base}'s backend under its own name")

    def _unbound(self, cards: dict[Any, tuple[int, dict[str, Any]]]) -> None:
        for name, (i, _) in cards.items():
            if name not in self.models:
                if name in self.referenced:
                    self.report.refuse(
                        f"routing.modelCards[{i}]: {name!r} is routed to but has no providers.models entry "
                        "with a backend_refs endpoint"
                    )
                else:
                    self.report.ignore(
                        "routing.modelCards[] without providers.models binding",
                        "a model card no decision routes to and no backend serves",
                    )

    # -- routing ----------------------------------------------------------------------------------

    def _strategy(self, value: Any, at: str) -> None:
        if value in (None, "", "priority"):
            return
        self.refuse(at, f"strategy {value!r}", "decisions are chosen by priority, then rule confidence")

    def _signals(self, signals: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {}
        readers = {
            "keywords": self._keyword,
            "embeddings": self._embedding,
            "language": self._language,
            "context": self._context,
            "complexity": self._complexity,
            "jailbreak": self._jailbreak,
            "pii": self._pii,
        }
        for section, items in signals.items():
            at = f"routing.signals.{section}"
            if section in UNSUPPORTED_SIGNAL_SECTIONS:
                if items:
                    self.refuse(at, f"{section} signals", UNSUPPORTED_SIGNAL_SECTIONS[section])
                continue
            if section == "domains":
                domain = self._domains(_items(items), at)
                if domain is not None:
                    out["domains"] = [domain]
                continue
            if section not in readers:
                self.refuse(at, f"signal section `{section}`", _UNKNOWN)
                continue
            converted = [readers[section](_mapping(s), f"{at}[{j}]") for j, s in enumerate(_items(items))]
            out[section] = [c for c in converted if c is not None]
            if out[section]:
                self.report.use(f"{at}: {len(out[section])} signal(s)")
        if any(out.get(s) for s in ("embeddings", "complexity", "domains")):
            self.report.use(
                "similarity thresholds are kept as written, but they were tuned for the reference's embedding "
                "model; fusion-router scores with models/embedding (all-MiniLM-L6-v2): check them with "
                "`fusion-router classify`"
            )
        return out

    def _common(self, s: dict[str, Any], at: str, known: set[str]) -> dict[str, Any]:
        self.unknown_keys(s, known | {"name", "description"}, at)
        out: dict[str, Any] = {"name": s.get("name")}
        if s.get("description"):
            out["description"] = s["description"]
        return out

    def _keyword(self, s: dict[str, Any], at: str) -> dict[str, Any] | None:
        out = self._common(
            s,
            at,
            {
                "operator",
                "keywords",
                "case_sensitive",
                "method",
                "fuzzy_match",
                "fuzzy_threshold",
                "bm25_threshold",
                "ngram_threshold",
                "ngram_arity",
            },
        )
        method = str(s.get("method") or "").lower()
        if method in ("bm25", "ngram"):
            self.refuse(
                f"{at}.method", f"keyword method {method!r}", "keywords match as words, substrings or regular expressions"
            )
            return None
        if s.get("fuzzy_match"):
            self.refuse(
                f"{at}.fuzzy_match",
                "fuzzy keyword matching",
                "keywords match exactly (as words, substrings or regular expressions)",
            )
            return None
        if method not in ("", "regex"):
            self.refuse(f"{at}.method", f"keyword method {method!r}", _UNKNOWN)
            return None
        # vLLM-SR quotes keywords and adds word boundaries unless the method is ``regex``.
        out["method"] = "regex" if method == "regex" else "word"
        out["operator"] = s.get("operator", "OR")
        out["keywords"] = s.get("keywords")
        if "case_sensitive" in s:
            out["case_sensitive"] = bool(s["case_sensitive"])
        return out

    def _embedding(self, s: dict[str, Any], at: str) -> dict[str, Any] | None:
        out = self._common(s, at, {"threshold", "candidates", "aggregation_method", "query_modality"})
        if s.get("query_modality") not in (None, "", "text"):
            self.refuse(f"{at}.query_modality", f"query_modality {s['query_modality']!r}", "embedding signals read text")
            return None
        for key in ("threshold", "candidates", "aggregation_method"):
            if key in s and s[key] not in (None, ""):
                out[key] = s[key]
        return out

    def _language(self, s: dict[str, Any], at: str) -> dict[str, Any] | None:
        out = self._common(s, at, {"threshold"})
        threshold = s.get("threshold") or 0
        out["min_confidence"] = threshold if threshold > 0 else _LANGUAGE_DEFAULT_CONFIDENCE
        return out

    def _context(self, s: dict[str, Any], at: str) -> dict[str, Any] | None:
        out = self._common(s, at, {"min_tokens", "max_tokens"})
        for key in ("min_tokens", "max_tokens"):
            if s.get(key) not in (None, "", 0, "0"):
                out[key] = s[key]
        return out

    def _complexity(self, s: dict[str, Any], at: str) -> dict[str, Any] | None:
        out = self._common(s, at, {"threshold", "hard", "easy", "composer"})
        if s.get("composer"):
            self.refuse(
                f"{at}.composer", "complexity composer rules", "a complexity signal's level comes from its exemplars alone"
            )
            return None
        for level in ("hard", "easy"):
            block = _mapping(s.get(level))
            self.unknown_keys(block, {"candidates", "image_candidates"}, f"{at}.{level}")
            if block.get("image_candidates"):
                self.refuse(f"{at}.{level}.image_candidates", "image exemplars", "signals read the text of a request")
                return None
            out[level] = block.get("candidates") or []
        out["threshold"] = s.get("threshold") or 0.0
        return out

    def _guard_scope(self, s: dict[str, Any], where: str) -> None:
        if "include_history" in s and not s["include_history"]:
            self.report.ignore(
                f"{where}.include_history: false",
                "guards read every message a model reads (system, user, tool results), the history included",
            )

    def _jailbreak(self, s: dict[str, Any], at: str) -> dict[str, Any] | None:
        out = self._common(s, at, {"method", "threshold", "include_history", "jailbreak_patterns", "benign_patterns"})
        method = str(s.get("method") or "classifier")
        if method != "classifier":
            self.refuse(f"{at}.method", f"jailbreak method {method!r}", "jailbreak signals use the classifier (models/jailbreak)")
            return None
        if s.get("jailbreak_patterns") or s.get("benign_patterns"):
            self.report.ignore(
                "routing.signals.jailbreak[].jailbreak_patterns/benign_patterns",
                "the reference reads them only for its contrastive methods",
            )
        self._guard_scope(s, "routing.signals.jailbreak[]")
        if "threshold" in s:
            out["threshold"] = s["threshold"]
        return out

    def _pii(self, s: dict[str, Any], at: str) -> dict[str, Any] | None:
        out = self._common(s, at, {"threshold", "include_history", "pii_types_allowed"})
        self._guard_scope(s, "routing.signals.pii[]")
        if "threshold" in s:
            out["threshold"] = s["threshold"]
        if s.get("pii_types_allowed"):
            out["pii_types_allowed"] = s["pii_types_allowed"]
            self.report.use("routing.signals.pii[].pii_types_allowed: vLLM-SR labels mapped onto the PII model's labels")
        return out

    def _domains(self, items: list[Any], at: str) -> dict[str, Any] | None:
        categories = []
        for j, raw in enumerate(items):
            s = _mapping(raw)
            self.unknown_keys(s, {"name", "description", "mmlu_categories", "model_scores", "system_prompt"}, f"{at}[{j}]")
            if s.get("system_prompt"):
                self.report.ignore(
                    "routing.signals.domains[].system_prompt",
                    "not part of vLLM-SR's v0.3 domain schema: the "
                    "reference ignores it too; a decision's system_prompt plugin sets the prompt",
                )
            cat: dict[str, Any] = {"name": s.get("name")}
            if s.get("description"):
                cat["description"] = s["description"]
            if s.get("mmlu_categories"):
                cat["mmlu_categories"] = s["mmlu_categories"]
            elif s.get("name") in MMLU_CATEGORY_NAMES:
                # The reference's classifier reports MMLU subjects; a domain named after one matches it.
                cat["mmlu_categories"] = [s["name"]]
            if s.get("model_scores"):
                self.report.ignore(
                    "routing.signals.domains[].model_scores",
                    "per-domain model scores feed the reference's selection algorithms; a decision routes to its first modelRef",
                )
            categories.append(cat)
            self.domain_names.add(str(s.get("name")))
        if not categories:
            return None
        self.report.use(
            f"{at}: {len(categories)} domain(s) → categories of the `{DOMAIN_SIGNAL}` domain signal "
            "(built-in MMLU descriptions and examples for mmlu_categories)"
        )
        return {"name": DOMAIN_SIGNAL, "threshold": DOMAIN_THRESHOLD, "categories": categories}

    # -- decisions --------------------------------------------------------------------------------

    def _decision(self, dec: dict[str, Any], at: str) -> dict[str, Any] | None:
        self.unknown_keys(
            dec,
            {
                "name",
                "description",
                "priority",
                "tier",
                "output_contract",
                "output_contract_spec",
                "rules",
                "modelRefs",
                "algorithm",
                "adaptations",
                "plugins",
                "candidateIterations",
                "emits",
                "annotations",
            },
            at,
        )
        ok = True
        for key, why in (
            ("output_contract", "output contracts on responses"),
            ("output_contract_spec", "output contracts on responses"),
            ("adaptations", "decision adaptations"),
            ("candidateIterations", "candidate iterations (DSL FOR blocks)"),
            ("emits", "EMIT directives (response retention)"),
        ):
            if dec.get(key):
                self.refuse(f"{at}.{key}", key, why)
                ok = False
        if dec.get("tier"):
            self.refuse(f"{at}.tier", "decision tiers", "decisions are chosen by priority, then rule confidence")
            ok = False
        if dec.get("annotations"):
            self.report.ignore("routing.decisions[].annotations", "non-executable metadata")
        out: dict[str, Any] = {"name": dec.get("name")}
        for key in ("description", "priority"):
            if dec.get(key) not in (None, ""):
                out[key] = dec[key]
        rules = self._rule(dec.get("rules"), f"{at}.rules", top=True)
        if rules is False:
            ok = False
        elif rules is not None:
            out["rules"] = rules
        refs = [
            r
            for j, raw in enumerate(_items(dec.get("modelRefs")))
            if (r := self._model_ref(_mapping(raw), f"{at}.modelRefs[{j}]")) is not None
        ]
        if refs:
            out["modelRefs"] = refs
        algorithm = self._algorithm(_mapping(dec.get("algorithm")), f"{at}.algorithm")
        if algorithm is False:
            ok = False
        elif algorithm:
            out["algorithm"] = algorithm
        plugins = [
            p
            for j, raw in enumerate(_items(dec.get("plugins")))
            if (p := self._plugin(_mapping(raw), f"{at}.plugins[{j}]")) is not None
        ]
        if plugins:
            out["plugins"] = plugins
        return out if ok else None

    def _rule(self, node: Any, at: str, top: bool = False) -> Any:
        """The router rule, None for a catch-all, False when something in it is not supported."""
        if node is None or node == {}:
            return None if top else node
        if not isinstance(node, dict):
            return node
        if node.get("type"):
            kind = str(node["type"])
            self.unknown_keys(node, {"type", "name", "label", "predicate", "on_error"}, at)
            for key in ("label", "predicate", "on_error"):
                if node.get(key) not in (None, ""):
                    self.refuse(
                        f"{at}.{key}",
                        f"rule-leaf `{key}`",
                        "a leaf names a signal; the signal's own settings decide when it matches",
                    )
                    return False
            if kind in UNSUPPORTED_LEAF_TYPES:
                self.refuse(f"{at}.type", f"{kind} signals", UNSUPPORTED_LEAF_TYPES[kind])
                return False
            if kind not in BY_LEAF:
                self.refuse(f"{at}.type", f"signal type {kind!r}", _UNKNOWN)
                return False
            return {"type": kind, "name": node.get("name")}
        self.unknown_keys(node, {"operator", "conditions"}, at)
        conditions = _items(node.get("conditions"))
        if top and not conditions and node.get("operator", "AND") in ("AND", "OR"):
            return None  # vLLM-SR's unconditional decision
        out = []
        bad = False
        for k, cond in enumerate(conditions):
            rule = self._rule(cond, f"{at}.conditions[{k}]")
            bad = bad or rule is False
            out.append(rule)
        return False if bad else {"operator": node.get("operator"), "conditions": out}

    def _model_ref(self, ref: dict[str, Any], at: str) -> dict[str, Any] | None:
        self.unknown_keys(ref, {"model", "lora_name", "weight", "use_reasoning", "reasoning_description", "reasoning_effort"}, at)
        name = str(ref.get("model") or "")
        self.referenced.add(name)
        out: dict[str, Any] = {"model": name}
        if ref.get("weight"):
            out["weight"] = ref["weight"]
        # vLLM-SR treats an omitted use_reasoning as false (and tells a thinking-by-default model so).
        use = bool(ref.get("use_reasoning") or False)
        out["use_reasoning"] = use
        effort = ref.get("reasoning_effort") or (self.default_effort if use else None)
        if effort:
            out["reasoning_effort"] = str(effort)
        if ref.get("lora_name"):
            out["lora_name"] = str(ref["lora_name"])
        if ref.get("reasoning_description"):
            self.report.ignore("routing.decisions[].modelRefs[].reasoning_description", "documentation only")
        return out

    def _algorithm(self, algo: dict[str, Any], at: str) -> Any:
        if not algo:
            return None
        kind = str(algo.get("type") or "")
        if kind in ("", "static"):
            self.unknown_keys(algo, {"type", "on_error"}, at)
            return None
        if kind in SELECTIONS:  # weighted, cost_aware, latency_aware: the settings block as written
            self.unknown_keys(algo, {"type", "on_error", kind}, at)
            self.report.use(f"{at}: {kind} selection")
            return {"type": kind, kind: dict(_mapping(algo.get(kind)))}
        if kind in UNSUPPORTED_ALGORITHMS or kind not in ALGORITHMS:
            self.refuse(f"{at}.type", f"algorithm {kind!r}", UNSUPPORTED_ALGORITHMS.get(kind, _UNKNOWN))
            return False
        self.unknown_keys(algo, {"type", "on_error", kind}, at)
        settings = dict(_mapping(algo.get(kind)))
        if algo.get("on_error") and "on_error" not in settings and "on_error" in ALGORITHMS[kind].settings.model_fields:
            settings["on_error"] = algo["on_error"]
        known = set(ALGORITHMS[kind].settings.model_fields)
        for key in list(settings):
            if key not in known:
                self.refuse(f"{at}.{kind}.{key}", f"`{key}`", _UNKNOWN)
                settings.pop(key)
        self.report.use(f"{at}: {kind} looper")
        return {"type": kind, kind: settings}

    def _plugin(self, plugin: dict[str, Any], at: str) -> dict[str, Any] | None:
        self.unknown_keys(plugin, {"type", "configuration"}, at)
        kind = str(plugin.get("type") or "")
        cfg = _mapping(plugin.get("configuration"))
        if kind in UNSUPPORTED_PLUGINS or kind not in ("system_prompt", "header_mutation"):
            if cfg.get("enabled") is False:
                self.report.ignore(f"routing.decisions[].plugins[type={kind}] (enabled: false)", "disabled")
            else:
                self.refuse(f"{at}.type", f"the {kind} plugin", UNSUPPORTED_PLUGINS.get(kind, _UNKNOWN))
            return None
        out: dict[str, Any]
        if kind == "system_prompt":
            self.unknown_keys(cfg, {"enabled", "system_prompt", "mode"}, f"{at}.configuration")
            out = {k: cfg[k] for k in ("enabled", "system_prompt", "mode") if k in cfg and cfg[k] not in (None, "")}
            out.setdefault("system_prompt", "")
        else:
            self.unknown_keys(cfg, {"add", "update", "delete"}, f"{at}.configuration")
            out = {k: cfg[k] for k in ("add", "update", "delete") if cfg.get(k)}
        return {"type": kind, "configuration": out}

    # -- global -----------------------------------------------------------------------------------

    def _global(self, g: dict[str, Any]) -> dict[str, Any]:
        self.unknown_keys(g, {"router", "services", "stores", "integrations", "model_catalog"}, "global")
        out: dict[str, Any] = {}
        router = self._router(_mapping(g.get("router")))
        if router:
            out["router"] = router
        self._services(_mapping(g.get("services")))
        self._stores(_mapping(g.get("stores")))
        looper = self._integrations(_mapping(g.get("integrations")))
        if looper:
            out["integrations"] = {"looper": looper}
        self._model_catalog(_mapping(g.get("model_catalog")))
        return out

    def _router(self, r: dict[str, Any]) -> dict[str, Any]:
        at = "global.router"
        self.unknown_keys(
            r,
            {
                "config_source",
                "strategy",
                "auto_model_name",
                "auto_model_names",
                "include_config_models_in_list",
                "clear_route_cache",
                "streamed_body",
                "skip_processing",
                "model_selection",
                "learning",
            },
            at,
        )
        out: dict[str, Any] = {}
        self._strategy(r.get("strategy"), f"{at}.strategy")
        if r.get("auto_model_names") is not None:
            out["auto_model_names"] = [str(n) for n in _items(r["auto_model_names"]) if str(n).strip()]
        elif r.get("auto_model_name"):
            out["auto_model_names"] = list(dict.fromkeys([*_DEFAULT_AUTO, str(r["auto_model_name"])]))
        if r.get("config_source") not in (None, "", "file"):
            self.refuse(
                f"{at}.config_source",
                f"config_source {r['config_source']!r}",
                "the config is a file (hot-reloaded when it changes)",
            )
        if _enabled(r.get("learning")):
            self.refuse(f"{at}.learning", "router learning", "routing is what the config says; nothing is learned online")
        if _enabled(r.get("skip_processing")):
            self.refuse(f"{at}.skip_processing", "skip_processing", "every chat-completions request is classified")
        for key, why in (
            ("include_config_models_in_list", "GET /v1/models lists the auto aliases, looper slugs and configured models"),
            ("clear_route_cache", "fusion-router always clears Envoy's route cache after it sets the cluster header"),
            ("streamed_body", "the body mode is Envoy's (ext_proc processing_mode); the router reads both"),
            (
                "model_selection",
                "global selection settings feed the reference's selection algorithms; a decision routes to its first modelRef",
            ),
        ):
            if key in r:
                self.report.ignore(f"{at}.{key}", why)
        return out

    def _services(self, s: dict[str, Any]) -> None:
        at = "global.services"
        self.unknown_keys(
            s,
            {"api", "response_api", "observability", "authz", "ratelimit", "management_api", "router_replay", "startup_status"},
            at,
        )
        for key, why in (
            ("response_api", "the OpenAI Responses API (fusion-router serves /v1/chat/completions)"),
            ("router_replay", "request/response capture for replay"),
            ("ratelimit", "rate limiting (use Envoy's rate-limit filter)"),
        ):
            if _enabled(s.get(key)) or (key == "ratelimit" and _mapping(s.get(key)).get("providers")):
                self.refuse(f"{at}.{key}", key, why)
            elif key in s:
                self.report.ignore(f"{at}.{key}", "not enabled")
        authz = _mapping(s.get("authz"))
        if authz.get("providers") or _enabled(authz):
            self.refuse(f"{at}.authz", "authz (per-user credentials and role bindings)", "backend keys come from api_key_env")
        elif "authz" in s:
            self.report.ignore(f"{at}.authz", "not enabled")
        for key, why in (
            ("api", "the reference's classification HTTP API; fusion-router's admin port serves /metrics, /readyz and /config"),
            ("observability", "metrics are on the admin port (/metrics); tracing is global.observability.tracing (OTLP/HTTP)"),
            ("management_api", "the reference's management API"),
            ("startup_status", "the reference's startup status store"),
        ):
            if key in s:
                self.report.ignore(f"{at}.{key}", why)

    def _stores(self, s: dict[str, Any]) -> None:
        at = "global.stores"
        self.unknown_keys(s, {"response_cache", "semantic_cache", "memory", "vector_store"}, at)
        for key, why in (
            ("memory", "agentic memory (on for every decision when enabled here)"),
            ("vector_store", "vector stores (file search, RAG, memory)"),
        ):
            if _enabled(s.get(key)):
                self.refuse(f"{at}.{key}", key, why)
            elif key in s:
                self.report.ignore(f"{at}.{key}", "not enabled")
        for key in ("response_cache", "semantic_cache"):
            # The cache store acts only for decisions with a response_cache plugin (refused on its own).
            if key in s:
                self.report.ignore(f"{at}.{key}", "the cache store serves decisions' response_cache plugins only")

    def _integrations(self, i: dict[str, Any]) -> dict[str, Any]:
        at = "global.integrations"
        self.unknown_keys(i, {"tools", "looper"}, at)
        if "tools" in i:
            # The tools database acts only for decisions with tools/tool_selection plugins (refused on their own).
            self.report.ignore(f"{at}.tools", "the tools database serves decisions' tools and tool_selection plugins only")
        looper = _mapping(i.get("looper"))
        self.unknown_keys(
            looper,
            {
                "endpoint",
                "grpc_max_msg_size_mb",
                "max_response_bytes_mb",
                "timeout_seconds",
                "retry_count",
                "headers",
                "remom",
                "fusion",
                "flow",
                "confidence",
            },
            f"{at}.looper",
        )
        out: dict[str, Any] = {}
        for key in ("endpoint", "timeout_seconds", "max_response_bytes_mb"):
            if looper.get(key):
                out[key] = looper[key]
        for name in ALGORITHMS:
            names = _mapping(looper.get(name)).get("model_names")
            if names:
                out[name] = {"model_names": list(names)}
        for key, why in (
            ("grpc_max_msg_size_mb", "the router's gRPC limits are its own"),
            ("retry_count", "looper sub-calls are not retried (Envoy retries when they go through it)"),
            ("headers", "looper sub-calls carry the router's own headers"),
            ("flow", "the workflows looper is not supported; its slugs are not served"),
        ):
            if looper.get(key):
                self.report.ignore(f"{at}.looper.{key}", why)
        if out:
            self.report.use(f"{at}.looper → global.integrations.looper")
        return out

    def _model_catalog(self, c: dict[str, Any]) -> None:
        at = "global.model_catalog"
        self.unknown_keys(c, {"embeddings", "system", "external", "kbs", "modules"}, at)
        semantic = _mapping(_mapping(c.get("embeddings")).get("semantic"))
        cfg = _mapping(semantic.get("embedding_config"))
        if cfg.get("backend") == "openai_compatible" or cfg.get("model_type") == "remote":
            self.refuse(
                f"{at}.embeddings.semantic", "a remote embedding service", "embeddings come from the local models/embedding model"
            )
        elif semantic:
            self.report.ignore(f"{at}.embeddings", "embedding signals use the router's models/embedding (all-MiniLM-L6-v2)")
        if c.get("system"):
            self.report.ignore(
                f"{at}.system",
                "classifier model paths map by capability onto the router's models/ "
                "directories: prompt_guard → models/jailbreak, pii_classifier → models/pii, "
                "domain_classifier → the embedding domain classifier (models/embedding)",
            )
        if c.get("external"):
            self.report.ignore(f"{at}.external", "external models serve features fusion-router does not have")
        if c.get("kbs"):
            self.report.ignore(f"{at}.kbs", "knowledge bases serve kb signals, which fusion-router does not have")
        modules = _mapping(c.get("modules"))
        for key, why in (
            ("hallucination_mitigation", "hallucination detection on responses"),
            ("prompt_compression", "prompt compression"),
        ):
            if _enabled(modules.get(key)):
                self.refuse(f"{at}.modules.{key}", key, why)
        for key in modules:
            if key in ("hallucination_mitigation", "prompt_compression") and _enabled(modules.get(key)):
                continue
            self.report.ignore(
                f"{at}.modules.{key}",
                "module settings of the reference's models; fusion-router's signals carry "
                "their own thresholds and use its models/ directories",
            )
